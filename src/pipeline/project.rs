//! `project.yaml`: parsing and validation with upstream's rules and messages, in upstream's
//! order (pipeline.md §1.2–1.7), plus the checks upstream lacks (dependency cycles, versions
//! above the latest).
//!
//! The YAML is first read into an ordered JSON-like tree (`serde_json::Value` with
//! `preserve_order`), so that every rule can be checked against what the user wrote, in
//! the user's order, and so that type errors get upstream's wording rather than serde's.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

use super::patterns;
use super::shlex;

pub const LATEST_VERSION: u32 = 5;
pub const RUN_ALL: &str = "run_all";

/// Images with a runtime of their own (upstream's allow-list); any other image is a
/// reusable action.
pub const KNOWN_IMAGES: &[&str] = &[
    "cohortextractor",
    "databuilder",
    "ehrql",
    "stata-mp",
    "r",
    "jupyter",
    "python",
    "sqlrunner",
    // quarry's own runtime for native analysis recipes.
    "analysis",
];

/// A project.yaml that cannot be used, with the message the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("There is no project.yaml at {path}: run quarry in a project directory, or name one with --project-dir")]
    Missing { path: String },
    #[error("Could not read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("Invalid project: {path}\n{message}")]
    Invalid { path: String, message: String },
}

/// Privacy levels of outputs.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyLevel {
    HighlySensitive,
    ModeratelySensitive,
    MinimallySensitive,
}

impl PrivacyLevel {
    pub const ALL: [PrivacyLevel; 3] = [PrivacyLevel::HighlySensitive, PrivacyLevel::ModeratelySensitive, PrivacyLevel::MinimallySensitive];

    pub fn as_str(self) -> &'static str {
        match self {
            PrivacyLevel::HighlySensitive => "highly_sensitive",
            PrivacyLevel::ModeratelySensitive => "moderately_sensitive",
            PrivacyLevel::MinimallySensitive => "minimally_sensitive",
        }
    }
}

impl std::fmt::Display for PrivacyLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared output: its label, its path pattern and its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    pub pattern: String,
    pub level: PrivacyLevel,
}

/// A parsed `run:` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub raw: String,
    pub image: String,
    pub tag: String,
    /// The words after `image:tag`.
    pub args: Vec<String>,
}

impl Command {
    /// Whether the action reads the database (upstream's `is_database_action`).
    pub fn is_database_action(&self) -> bool {
        let first = self.args.first().map(String::as_str);
        match self.image.as_str() {
            "ehrql" => matches!(first, Some("generate-dataset" | "generate-measures")),
            "sqlrunner" => true,
            "cohortextractor" => {
                matches!(first, Some("generate_cohort" | "generate_codelist_report"))
            }
            "databuilder" => matches!(first, Some("generate-dataset")),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: String,
    pub run: Command,
    pub needs: Vec<String>,
    pub outputs: Vec<OutputSpec>,
    pub config: Option<Value>,
}

impl Action {
    pub fn is_database_action(&self) -> bool {
        self.run.is_database_action()
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub version: f64,
    /// Actions in the order of the file (a pre-v5 user-defined `run_all` included).
    pub actions: Vec<Action>,
    pub population_size: Option<i64>,
    /// `expectations: population_size` as the file states it (versions 1–3), which
    /// sizes generated dummy data; `None` when the file has no such section.
    pub declared_population_size: Option<i64>,
    /// Non-fatal remarks (upstream's `ProjectWarning`s).
    pub warnings: Vec<String>,
}

impl Project {
    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.id == id)
    }

    /// Every action `run_all` stands for: all actions in file order except one named `run_all`.
    pub fn all_actions(&self) -> Vec<&str> {
        self.actions.iter().map(|a| a.id.as_str()).filter(|id| *id != RUN_ALL).collect()
    }

    /// Actions in dependency order: each after all of its needs, file order among equals.
    pub fn dependency_order(&self) -> Vec<&Action> {
        let index: HashMap<&str, usize> = self.actions.iter().enumerate().map(|(i, a)| (a.id.as_str(), i)).collect();
        let mut remaining: Vec<usize> = self.actions.iter().map(|a| a.needs.len()).collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); self.actions.len()];
        for (i, a) in self.actions.iter().enumerate() {
            for n in &a.needs {
                dependants[index[n.as_str()]].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..self.actions.len()).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(self.actions.len());
        while let Some(i) = ready.pop_first() {
            order.push(&self.actions[i]);
            for &d in &dependants[i] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }
}

/// Reads and validates `project.yaml` at `path`.
pub fn load(path: &Path) -> Result<Project, ProjectError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProjectError::Missing { path: display.clone() }
        } else {
            ProjectError::Read { path: display.clone(), source }
        }
    })?;
    parse(&text, &display)
}

/// Parses and validates project.yaml text; `path` names the file in messages.
pub fn parse(text: &str, path: &str) -> Result<Project, ProjectError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| ProjectError::Invalid {
        path: path.to_string(),
        message: e.to_string().replace("<input>", path).replace(", set DuplicateKeyPolicy in Options if acceptable", ""),
    })?;
    validate(doc).map_err(|e| {
        // Where the message belongs: the line and the key, as far as the text shows them.
        let shown = match (e.at.is_empty(), line_of(text, &e.at)) {
            (true, _) => path.to_string(),
            (false, Some(line)) => format!("{path}, line {line}, `{}`", e.at.join(".")),
            (false, None) => format!("{path}, `{}`", e.at.join(".")),
        };
        ProjectError::Invalid { path: shown, message: e.message }
    })
}

/// A validation message and the key path it belongs to (`actions`, `a`, `outputs`, …).
#[derive(Debug)]
struct Invalid {
    message: String,
    at: Vec<String>,
}

impl From<String> for Invalid {
    fn from(message: String) -> Invalid {
        Invalid { message, at: vec![] }
    }
}

impl Invalid {
    /// The same message, under `prefix` (its path is relative to it).
    fn within(mut self, prefix: &[&str]) -> Invalid {
        let mut at: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        at.append(&mut self.at);
        self.at = at;
        self
    }
}

/// `message` at `path`.
fn at(path: &[&str], message: impl Into<String>) -> Invalid {
    Invalid { message: message.into(), at: path.iter().map(|s| s.to_string()).collect() }
}

/// The line (1-based) of the key at `path` in block-style YAML, or of the deepest key on the
/// way to it that the text shows (a flow mapping `{a: b}` hides what is inside).
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = vec![];
    let mut best: Option<(usize, usize)> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let Some(key) = yaml_key(trimmed) else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let depth = stack.len();
        if depth <= path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, n + 1));
            if depth == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

/// The key of a `key: value` line (quotes removed), if it is one.
fn yaml_key(line: &str) -> Option<String> {
    for q in ['"', '\''] {
        if let Some(rest) = line.strip_prefix(q) {
            let end = rest.find(q)?;
            return rest[end + 1..].trim_start().starts_with(':').then(|| rest[..end].to_string());
        }
    }
    let colon = line.find(": ").or_else(|| line.strip_suffix(':').map(|l| l.len()))?;
    let key = line[..colon].trim_end();
    (!key.is_empty() && !key.starts_with(['-', '{', '[', '#'])).then(|| key.to_string())
}

fn validate_type(value: &Value, expected: Expected, location: &str) -> Result<(), String> {
    let ok = match expected {
        Expected::String => value.is_string(),
        Expected::Dict => value.is_object(),
        Expected::List => value.is_array(),
    };
    if ok {
        Ok(())
    } else {
        let what = match expected {
            Expected::String => "string",
            Expected::Dict => "dictionary of key/value pairs",
            Expected::List => "list",
        };
        Err(format!("{location} must be a {what}"))
    }
}

#[derive(Clone, Copy)]
enum Expected {
    String,
    Dict,
    List,
}

/// Upstream's message for keys it does not know, at the first of them, with the key that
/// was probably meant.
fn no_unexpected(map: &Map<String, Value>, allowed: &[&str], location: &str) -> Result<(), Invalid> {
    let extra: Vec<&str> = map.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    let Some(first) = extra.first() else { return Ok(()) };
    let suggestion = quarry_queries::suggest::did_you_mean(first, allowed.iter().copied());
    Err(at(&[first], format!("Unexpected parameters ({}) in {location}{suggestion}", extra.join(", "))))
}

/// Python's `float()` applied to a YAML scalar.
fn python_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().replace('_', "").parse::<f64>().ok(),
        _ => None,
    }
}

/// Python's `int()` applied to a YAML scalar.
fn python_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().replace('_', "").parse::<i64>().ok(),
        _ => None,
    }
}

/// Python's `repr` of a float, for the few messages that show the version.
pub fn python_float_repr(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 { format!("{v:.1}") } else { format!("{v}") }
}

struct Features {
    unique_output_path: bool,
    expectations_population: bool,
    remove_cohortextractor: bool,
    remove_run_all_action: bool,
    remove_latest_tag: bool,
}

impl Features {
    fn for_version(v: f64) -> Features {
        Features {
            unique_output_path: v >= 2.0,
            expectations_population: (3.0..=3.0).contains(&v),
            remove_cohortextractor: v >= 4.0,
            remove_run_all_action: v >= 5.0,
            remove_latest_tag: v >= 5.0,
        }
    }
}

fn is_valid_tag(tag: &str) -> bool {
    if tag == "dev" || tag == "latest" {
        return true;
    }
    let Some(rest) = tag.strip_prefix('v') else {
        return false;
    };
    let rest = rest.strip_suffix("-pre").unwrap_or(rest);
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn validate(doc: Value) -> Result<Project, Invalid> {
    let Value::Object(top) = doc else {
        return Err(Invalid::from("Project file must be a mapping with a `version` and an `actions` section".to_string()));
    };
    no_unexpected(&top, &["version", "actions", "expectations"], "project")?;
    let mut warnings = Vec::new();

    // version
    let version = match top.get("version") {
        None | Some(Value::Null) => {
            return Err(Invalid::from(format!(
                "Project file must have a `version` attribute specifying which version of the \
                 project configuration format it uses (current latest version is {LATEST_VERSION})"
            )));
        }
        Some(v) => python_float(v)
            .filter(|f| f.is_finite())
            .ok_or_else(|| at(&["version"], format!("`version` must be a number between 1 and {LATEST_VERSION}, not {v}")))?,
    };
    if version > f64::from(LATEST_VERSION) {
        return Err(at(&["version"], format!("The latest version is v{LATEST_VERSION}, but got v{}", python_float_repr(version))));
    }
    if version < 1.0 {
        return Err(at(
            &["version"],
            format!("`version` must be a number between 1 and {LATEST_VERSION}, not {}", python_float_repr(version)),
        ));
    }
    if version < f64::from(LATEST_VERSION) {
        warnings.push(format!(
            "Your project file is using an old version ({}); consider updating to version {LATEST_VERSION}",
            python_float_repr(version)
        ));
    }
    let feat = Features::for_version(version);

    // actions
    let actions_value = top.get("actions").cloned().unwrap_or(Value::Null);
    validate_type(&actions_value, Expected::Dict, "Project `actions` section").map_err(|m| at(&["actions"], m))?;
    let Value::Object(actions_map) = actions_value else { unreachable!("checked above") };
    let mut actions = Vec::with_capacity(actions_map.len());
    for (id, config) in &actions_map {
        if id == RUN_ALL {
            if feat.remove_run_all_action {
                return Err(at(&["actions", id], "`run_all` is a reserved action name and is not allowed for user-defined actions."));
            }
            warnings.push(
                "`run_all` is a reserved action name; user-defined actions with this name are \
                 ignored and will raise an error in later versions."
                    .to_string(),
            );
        }
        validate_type(config, Expected::Dict, &format!("Configuration for action {id}")).map_err(|m| at(&["actions", id], m))?;
        let Value::Object(config) = config else { unreachable!("checked above") };
        for key in ["run", "outputs"] {
            if !config.contains_key(key) {
                return Err(at(&["actions", id], format!("Action {id} must contain a configuration for '{key}'")));
            }
        }
        actions.push(build_action(id, config).map_err(|e| e.within(&["actions", id]))?);
    }

    if feat.remove_cohortextractor
        && let Some(a) = actions.iter().find(|a| a.run.image.starts_with("cohortextractor"))
    {
        return Err(at(
            &["actions", &a.id, "run"],
            format!("Action {} uses cohortextractor actions, which are not supported in this version.", a.id),
        ));
    }
    if feat.remove_latest_tag
        && let Some(a) = actions.iter().find(|a| a.run.tag == "latest")
    {
        return Err(at(
            &["actions", &a.id, "run"],
            format!("Action {} uses `{}:latest`, which is not supported. Provide a version e.g. `:v2` instead", a.id, a.run.image),
        ));
    }

    let mut seen_runs: Vec<(&str, Vec<&str>)> = Vec::new();
    for a in &actions {
        if let Some((_, names)) = seen_runs.iter_mut().find(|(raw, _)| *raw == a.run.raw) {
            return Err(at(
                &["actions", &a.id, "run"],
                format!("Action {} has the same 'run' command as other actions: {}", a.id, names.join("' ,'")),
            ));
        }
        seen_runs.push((a.run.raw.as_str(), vec![a.id.as_str()]));
    }

    if feat.unique_output_path {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for a in &actions {
            for o in &a.outputs {
                if let Some(first) = seen.insert(o.pattern.as_str(), a.id.as_str()) {
                    return Err(at(
                        &["actions", &a.id, "outputs", o.level.as_str(), &o.name],
                        format!("Output path {} is not unique (it is also an output of action {first})", o.pattern),
                    ));
                }
            }
        }
    }

    let ids: HashSet<&str> = actions.iter().map(|a| a.id.as_str()).collect();
    for a in &actions {
        for n in &a.needs {
            if !ids.contains(n.as_str()) {
                let suggestion = quarry_queries::suggest::did_you_mean(n, ids.iter().copied());
                return Err(at(
                    &["actions", &a.id, "needs"],
                    format!("Action `{}` references an unknown action in its `needs` list: {n}{suggestion}", a.id),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&actions) {
        return Err(at(
            &["actions", &cycle[0], "needs"],
            format!("Action `{}` depends on itself through its `needs`: {}", cycle[0], cycle.join(" -> ")),
        ));
    }

    // expectations
    let expectations = top.get("expectations").filter(|v| !v.is_null());
    let expectations: Option<Value> = if feat.remove_cohortextractor {
        if expectations.is_some() {
            return Err(at(
                &["expectations"],
                "Project includes `expectations` section, which is not supported in this \
                 version. This section is only applicable to deprecated cohortextractor \
                 actions; you can safely remove it.",
            ));
        }
        None
    } else if feat.expectations_population {
        match expectations {
            None => return Err(Invalid::from("Project must include `expectations` section".to_string())),
            Some(e) => Some(e.clone()),
        }
    } else {
        Some(serde_json::json!({"population_size": 1000}))
    };
    let population_size = match expectations {
        None => None,
        Some(e) => {
            validate_type(&e, Expected::Dict, "Project `expectations` section").map_err(|m| at(&["expectations"], m))?;
            let Value::Object(e) = e else { unreachable!("checked above") };
            if !e.contains_key("population_size") {
                return Err(at(&["expectations"], "Project `expectations` section must include `population_size` section"));
            }
            no_unexpected(&e, &["population_size"], "project `expectations` section").map_err(|e| e.within(&["expectations"]))?;
            let size = &e["population_size"];
            Some(python_int(size).ok_or_else(|| {
                at(&["expectations", "population_size"], format!("Project expectations population size must be a number, not {size}"))
            })?)
        }
    };

    let declared_population_size = if feat.remove_cohortextractor {
        None
    } else {
        top.get("expectations").and_then(|e| e.get("population_size")).and_then(python_int)
    };
    Ok(Project { version, actions, population_size, declared_population_size, warnings })
}

/// One action; error paths are relative to the action (`outputs`, `run`, …).
fn build_action(id: &str, config: &Map<String, Value>) -> Result<Action, Invalid> {
    no_unexpected(config, &["run", "outputs", "needs", "config", "dummy_data_file"], &format!("action {id}"))?;
    let outputs_value = &config["outputs"];
    let run_value = &config["run"];
    validate_type(outputs_value, Expected::Dict, &format!("`outputs` section for action {id}")).map_err(|m| at(&["outputs"], m))?;
    validate_type(run_value, Expected::String, &format!("`run` section for action {id}")).map_err(|m| at(&["run"], m))?;
    let optional = |key: &str| config.get(key).filter(|v| !v.is_null());
    for (key, expected) in [("needs", Expected::List), ("config", Expected::Dict), ("dummy_data_file", Expected::String)] {
        if let Some(v) = optional(key) {
            validate_type(v, expected, &format!("`{key}` section for action {id}")).map_err(|m| at(&[key], m))?;
        }
    }

    let outputs = build_outputs(id, outputs_value.as_object().expect("checked above")).map_err(|e| e.within(&["outputs"]))?;
    let run = parse_run(id, run_value.as_str().expect("checked above")).map_err(|m| at(&["run"], m))?;

    let mut needs = Vec::new();
    if let Some(Value::Array(items)) = optional("needs") {
        for item in items {
            let n = match item {
                Value::String(s) => s.clone(),
                other => {
                    return Err(at(
                        &["needs"],
                        format!("`needs` section for action {id} must be a list of action names, but it contains {other}"),
                    ));
                }
            };
            if n.contains(' ') {
                return Err(at(&["needs"], format!("`needs` actions should be separated with commas, but {id} needs `{n}`")));
            }
            needs.push(n);
        }
    }

    let action = Action { id: id.to_string(), run, needs, outputs, config: optional("config").cloned() };
    if action.run.image == "cohortextractor" && action.run.args.first().map(String::as_str) == Some("generate_cohort") {
        validate_cohortextractor_outputs(&action).map_err(|m| at(&["outputs"], m))?;
    }
    if matches!(action.run.image.as_str(), "ehrql" | "databuilder")
        && matches!(action.run.args.first().map(String::as_str), Some("generate-dataset" | "generate_dataset"))
    {
        validate_generate_dataset_outputs(&action).map_err(|m| at(&["outputs"], m))?;
    }
    Ok(action)
}

/// An action's outputs; error paths are relative to `outputs`.
fn build_outputs(id: &str, outputs: &Map<String, Value>) -> Result<Vec<OutputSpec>, Invalid> {
    let present = |level: PrivacyLevel| outputs.get(level.as_str()).filter(|v| !v.is_null());
    if PrivacyLevel::ALL.iter().all(|&l| present(l).is_none()) {
        return Err(Invalid::from(format!(
            "must specify at least one output of: highly_sensitive, moderately_sensitive, minimally_sensitive (action {id})"
        )));
    }
    let level_names: Vec<&str> = PrivacyLevel::ALL.iter().map(|l| l.as_str()).collect();
    no_unexpected(outputs, &level_names, &format!("`outputs` section for action {id}"))?;
    let mut specs = Vec::new();
    for level in PrivacyLevel::ALL {
        let Some(section) = present(level) else {
            continue;
        };
        let level_key = level.as_str();
        validate_type(section, Expected::Dict, &format!("`{level}` section for action {id}")).map_err(|m| at(&[level_key], m))?;
        for (name, pattern) in section.as_object().expect("checked above") {
            validate_type(pattern, Expected::String, &format!("`{name}` output for action {id}")).map_err(|m| at(&[level_key, name], m))?;
            let pattern = pattern.as_str().expect("checked above");
            patterns::validate_pattern(pattern, level == PrivacyLevel::ModeratelySensitive)
                .map_err(|reason| at(&[level_key, name], format!("Output path {pattern} is invalid: {reason}")))?;
            specs.push(OutputSpec { name: name.clone(), pattern: pattern.to_string(), level });
        }
    }
    Ok(specs)
}

fn parse_run(id: &str, raw: &str) -> Result<Command, String> {
    if raw.is_empty() {
        return Err(format!("run must have a value, {id} has an empty run key"));
    }
    let parts = shlex::split(raw).map_err(|e| format!("The `run` command of action {id} cannot be split into words: {e}"))?;
    let Some((first, rest)) = parts.split_first() else {
        return Err(format!("run must have a value, {id} has an empty run key"));
    };
    let (image, tag) = first.split_once(':').unwrap_or((first.as_str(), ""));
    if !is_valid_tag(tag) {
        return Err(format!("Action command {image} must have a version specified in the form :vN (e.g. {image}:v2), not `{first}`"));
    }
    Ok(Command { raw: raw.to_string(), image: image.to_string(), tag: tag.to_string(), args: rest.to_vec() })
}

fn validate_cohortextractor_outputs(action: &Action) -> Result<(), String> {
    let levels: HashSet<PrivacyLevel> = action.outputs.iter().map(|o| o.level).collect();
    if levels.len() != 1 {
        return Err(format!("A `generate_cohort` action must have exactly one output; {} had {}", action.id, levels.len()));
    }
    let mut dirs: Vec<String> = Vec::new();
    for o in &action.outputs {
        let dir = o.pattern.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let has_output_dir = action.run.args.iter().any(|a| a == "--output-dir" || a.starts_with("--output-dir="));
    if dirs.len() != 1 && !has_output_dir {
        let list: Vec<String> = dirs.iter().map(|d| format!(" - {d}/")).collect();
        return Err(format!(
            "generate_cohort command should produce output in only one directory, found {}:\n{}",
            dirs.len(),
            list.join("\n")
        ));
    }
    Ok(())
}

/// The value of `--output` in a command's arguments (`--output X` or `--output=X`).
pub fn output_argument(args: &[String]) -> Option<&str> {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == "--output" {
            return iter.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--output=") {
            return Some(v);
        }
    }
    None
}

fn validate_generate_dataset_outputs(action: &Action) -> Result<(), String> {
    let id = &action.id;
    if action.outputs.iter().any(|o| o.level != PrivacyLevel::HighlySensitive) {
        return Err(format!("`{id}` action uses `generate-dataset` and so all outputs must be labelled `highly_sensitive`"));
    }
    let Some(output) = output_argument(&action.run.args) else {
        return Err(format!(
            "`{id}` action does not provide an `--output` argument specifying where the results \
             of `generate-dataset` should be stored"
        ));
    };
    let patterns: Vec<&str> = action.outputs.iter().map(|o| o.pattern.as_str()).collect();
    // `--output DIR:FORMAT` writes one file per table into DIR.
    let (ok, expected) = match output.rsplit_once(':') {
        Some((dir, ext)) => {
            let expected = format!("{}/*.{ext}", dir.trim_end_matches('/'));
            (patterns.iter().all(|p| patterns::matches(&expected, p)), expected)
        }
        None => (patterns.contains(&output), output.to_string()),
    };
    if !ok {
        return Err(format!(
            "output specification must match the `--output` argument in the `run` command\n              got: {}\nbut was expecting: {expected}",
            patterns.join(", ")
        ));
    }
    Ok(())
}

/// The first dependency cycle found, as the list of action ids from an action back to itself.
fn find_cycle(actions: &[Action]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = actions.iter().enumerate().map(|(i, a)| (a.id.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the current path, 2 = done. Iterative DFS: no recursion depth limit.
    let mut state = vec![0u8; actions.len()];
    for start in 0..actions.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(need) = actions[node].needs.get(*next) {
                *next += 1;
                let n = index[need.as_str()];
                match state[n] {
                    0 => {
                        state[n] = 1;
                        stack.push((n, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|&(s, _)| s == n).expect("on path");
                        let mut cycle: Vec<String> = stack[pos..].iter().map(|&(s, _)| actions[s].id.clone()).collect();
                        cycle.push(actions[n].id.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    None
}
