//! `quarry codelists check|update|add`: the opensafely CLI's codelist commands, offline.
//!
//! `check` does what `opensafely codelists check` does before it asks OpenCodelists:
//! `codelists/codelists.txt` parsed with its rules (`[project]/[codelist]/[version]` or
//! `user/[username]/[codelist]/[version]`, no duplicates, no two versions of one codelist),
//! `codelists/codelists.json` present and valid, the same codelists in both, the same CSV files
//! on disk as in the manifest, and each file's SHA-1 (over its lines joined by `\n`, as the CLI
//! normalises line endings) equal to the manifest's. The CLI's messages are kept; where the CLI
//! stops at the first problem, quarry lists every one (naming the file and line), and where
//! the CLI crashes (a manifest without `files`) it says what is wrong. The upstream check needs
//! the network, which quarry does not use: one line says so. `update` and `add` would download:
//! they name what they would fetch and stop.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const OPENCODELISTS: &str = "https://www.opencodelists.org";
const DIR: &str = "codelists";
const LIST: &str = "codelists.txt";
const MANIFEST: &str = "codelists.json";
const PROMPT: &str = "To fix these errors run the command below and commit the changes:\n\n  opensafely codelists update\n";

/// One line of codelists.txt.
#[derive(Debug, Clone, PartialEq)]
pub struct Codelist {
    /// The line without surrounding spaces and trailing slashes.
    pub id: String,
    /// `id` without its version.
    pub codelist: String,
    pub version: String,
    /// The CSV file the CLI downloads it to.
    pub filename: String,
}

impl Codelist {
    pub fn url(&self) -> String {
        format!("{OPENCODELISTS}/codelist/{}/", self.id)
    }

    pub fn download_url(&self) -> String {
        format!("{}download.csv", self.url())
    }
}

/// A line as the CLI reads it: `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<Codelist>, String> {
    let line = line.trim().trim_end_matches('/');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let tokens: Vec<&str> = line.split('/').collect();
    if !(3..=4).contains(&tokens.len()) {
        return Err(format!("{line} does not match [project]/[codelist]/[version] or user/[username]/[codelist]/[version]"));
    }
    Ok(Some(Codelist {
        id: line.to_string(),
        codelist: tokens[..tokens.len() - 1].join("/"),
        version: tokens[tokens.len() - 1].to_string(),
        filename: format!("{}.csv", tokens[..tokens.len() - 1].join("-")),
    }))
}

/// codelists.txt's codelists, or every line's problem (`codelists/codelists.txt:N: ...`).
pub fn parse_list(text: &str) -> (Vec<Codelist>, Vec<String>) {
    let mut codelists: Vec<Codelist> = vec![];
    let mut problems = vec![];
    for (n, line) in python_lines(text).into_iter().enumerate() {
        let at = format!("{DIR}/{LIST}:{}: ", n + 1);
        match parse_line(line) {
            Ok(None) => {}
            Err(message) => problems.push(format!("{at}{message}")),
            Ok(Some(c)) => match codelists.iter().find(|e| e.codelist == c.codelist) {
                Some(e) if e.version == c.version => problems.push(format!("{at}{line} is a duplicate of a previous line")),
                Some(e) => problems.push(format!("{at}{line} conflicts with a different version of the same codelist: {}", e.version)),
                None => codelists.push(c),
            },
        }
    }
    (codelists, problems)
}

/// Python's `str.splitlines()` for the line breaks a text file has.
fn python_lines(text: &str) -> Vec<&str> {
    let mut lines = vec![];
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}']) {
            None => {
                lines.push(rest);
                break;
            }
            Some(i) => {
                lines.push(&rest[..i]);
                let c = rest[i..].chars().next().expect("a break");
                let mut next = i + c.len_utf8();
                if c == '\r' && rest[next..].starts_with('\n') {
                    next += 1;
                }
                rest = &rest[next..];
            }
        }
    }
    lines
}

/// The CLI's hash of a codelist file: SHA-1 of its lines (bytes.splitlines) joined by `\n`.
pub fn hash_bytes(content: &[u8]) -> String {
    let mut joined = Vec::with_capacity(content.len());
    let mut first = true;
    let mut i = 0;
    while i < content.len() {
        let end = content[i..].iter().position(|b| *b == b'\n' || *b == b'\r').map(|p| i + p);
        if !first {
            joined.push(b'\n');
        }
        first = false;
        match end {
            None => {
                joined.extend_from_slice(&content[i..]);
                break;
            }
            Some(e) => {
                joined.extend_from_slice(&content[i..e]);
                i = if content[e] == b'\r' && content.get(e + 1) == Some(&b'\n') { e + 2 } else { e + 1 };
            }
        }
    }
    sha1_smol::Sha1::from(&joined).digest().to_string()
}

/// What `check` found: the report (stdout) and whether it passed.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

/// Python's `pathlib.Path.glob("*.csv")`: names (hidden ones and directories too) ending
/// `.csv`, case-sensitively.
fn csv_names(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".csv") {
            names.insert(name);
        }
    }
    Ok(names)
}

fn diff(ours: &BTreeSet<String>, manifest: &BTreeSet<String>) -> String {
    let mut lines = vec![];
    lines.extend(ours.difference(manifest).map(|e| format!("    added: {e}")));
    lines.extend(manifest.difference(ours).map(|e| format!("  removed: {e}")));
    lines.join("\n")
}

/// `opensafely codelists check`, offline, in the project directory.
pub fn check(project: &Path) -> Report {
    let dir = project.join(DIR);
    let failed = |text: String| Report { text, ok: false };
    if !dir.exists() {
        return Report { text: format!("No '{DIR}' directory present so nothing to check\n"), ok: true };
    }
    if !dir.is_dir() {
        return failed(format!("No '{DIR}' folder found\n"));
    }
    let list = dir.join(LIST);
    let text = match std::fs::read(&list) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return failed(format!("'{DIR}/{LIST}' is not UTF-8 text (byte {})\n", e.utf8_error().valid_up_to())),
        },
        Err(_) => return failed(format!("No file found at '{DIR}/{LIST}'\n")),
    };
    let (codelists, mut problems) = parse_list(&text);

    let manifest_path = dir.join(MANIFEST);
    let manifest = match std::fs::read_to_string(&manifest_path) {
        Err(_) => Err(format!("No file found at '{DIR}/{MANIFEST}'.")),
        Ok(t) => match serde_json::from_str::<serde_json::Value>(&t) {
            Err(_) => Err(format!(
                "'{DIR}/{MANIFEST}' is invalid.\nNote that this file is automatically generated and should not be manually edited."
            )),
            Ok(v) => match v.get("files").and_then(|f| f.as_object()) {
                None => Err(format!("'{DIR}/{MANIFEST}' is invalid: it has no \"files\" object.")),
                Some(files) => Ok(files.clone()),
            },
        },
    };
    match manifest {
        Err(m) => problems.push(m),
        Ok(files) => {
            let ids: BTreeSet<String> = codelists.iter().map(|c| c.id.clone()).collect();
            let mut manifest_ids = BTreeSet::new();
            for (name, details) in &files {
                match details.get("id").and_then(|i| i.as_str()) {
                    Some(id) => {
                        manifest_ids.insert(id.to_string());
                    }
                    None => problems.push(format!("'{DIR}/{MANIFEST}' is invalid: the entry for {name} has no \"id\".")),
                }
            }
            if ids != manifest_ids {
                problems
                    .push(format!("It looks like '{LIST}' has been edited but 'update' hasn't been run.\n{}", diff(&ids, &manifest_ids)));
            }
            let on_disk = match csv_names(&dir) {
                Ok(n) => n,
                Err(e) => return failed(format!("cannot list '{DIR}': {e}\n")),
            };
            let in_manifest: BTreeSet<String> = files.keys().cloned().collect();
            if on_disk != in_manifest {
                problems.push(format!(
                    "It looks like CSV files have been added or deleted in the '{DIR}' folder.\n{}",
                    diff(&on_disk, &in_manifest)
                ));
            }
            let mut modified = vec![];
            for (name, details) in &files {
                let path = dir.join(name);
                let Ok(bytes) = std::fs::read(&path) else { continue };
                if details.get("sha").and_then(|s| s.as_str()) != Some(hash_bytes(&bytes).as_str()) {
                    modified.push(format!("  {DIR}/{name}"));
                }
            }
            if !modified.is_empty() {
                problems.push(format!("A CSV file seems to have been modified since it was downloaded:\n{}", modified.join("\n")));
            }
        }
    }
    if problems.is_empty() {
        return Report {
            text: format!(
                "Local codelists OK; the upstream check ({OPENCODELISTS}/api/v1/check/) needs the network, which quarry does not use: skipped\n"
            ),
            ok: true,
        };
    }
    let mut text = String::new();
    for p in &problems {
        let _ = writeln!(text, "{p}\n");
    }
    text.push_str(PROMPT);
    failed(text)
}

/// `update`: the message naming every download it would make (or what stops it).
pub fn update(project: &Path) -> String {
    let list = project.join(DIR).join(LIST);
    let Ok(text) = std::fs::read_to_string(&list) else { return format!("No file found at '{DIR}/{LIST}'") };
    let (codelists, problems) = parse_list(&text);
    if !problems.is_empty() {
        return problems.join("\n");
    }
    let urls: Vec<String> = codelists.iter().map(|c| format!("  {} -> {DIR}/{}", c.download_url(), c.filename)).collect();
    format!(
        "quarry cannot download codelists (it does not use the network). `opensafely codelists update` would fetch:\n{}\nand rewrite {DIR}/{MANIFEST}; run it where the network is available and commit the changes.",
        urls.join("\n")
    )
}

/// `add URL`: checks the URL as the CLI does; the message naming the download it would make.
pub fn add(url: &str) -> String {
    if !url.contains(OPENCODELISTS) {
        return format!("Unable to parse URL, {OPENCODELISTS} not found");
    }
    let mut handle = url.replace(&format!("{OPENCODELISTS}/codelist/"), "");
    if let Some(i) = handle.find('#') {
        handle.truncate(i);
    }
    if handle.ends_with(".csv")
        && let Some(i) = handle.rfind('/')
    {
        handle.truncate(i);
    }
    let codelist = match parse_line(&handle) {
        Ok(Some(c)) => c,
        Ok(None) => return format!("Unable to parse URL {url}: no codelist in it"),
        Err(message) => return message,
    };
    format!(
        "quarry cannot download codelists (it does not use the network). `opensafely codelists add` would fetch:\n  {} -> {DIR}/{}\nadd `{}` to {DIR}/{LIST} and update {DIR}/{MANIFEST}; run it where the network is available and commit the changes.",
        codelist.download_url(),
        codelist.filename,
        codelist.id
    )
}

/// The project's codelists directory, for messages.
pub fn dir(project: &Path) -> PathBuf {
    project.join(DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_the_cli_parses_them() {
        let c = parse_line("  user/jon/list/abc123//  ").unwrap().unwrap();
        assert_eq!(
            (c.id.as_str(), c.codelist.as_str(), c.version.as_str(), c.filename.as_str()),
            ("user/jon/list/abc123", "user/jon/list", "abc123", "user-jon-list.csv")
        );
        assert_eq!(parse_line("# comment").unwrap(), None);
        assert_eq!(parse_line("   ").unwrap(), None);
        assert!(
            parse_line("a/b")
                .unwrap_err()
                .ends_with("a/b does not match [project]/[codelist]/[version] or user/[username]/[codelist]/[version]")
        );
        assert!(parse_line("a/b/c/d/e").is_err());
    }

    #[test]
    fn duplicates_and_conflicts_name_their_line() {
        let (lists, problems) = parse_list("a/b/1\n\na/b/1/\na/b/2\nc/d\n");
        assert_eq!(lists.len(), 1);
        assert_eq!(
            problems,
            [
                "codelists/codelists.txt:3: a/b/1/ is a duplicate of a previous line",
                "codelists/codelists.txt:4: a/b/2 conflicts with a different version of the same codelist: 1",
                "codelists/codelists.txt:5: c/d does not match [project]/[codelist]/[version] or user/[username]/[codelist]/[version]",
            ]
        );
    }

    #[test]
    fn hashes_normalise_line_endings_as_the_cli() {
        // sha1(b"code\nx") for each spelling of the line breaks; a final newline is dropped,
        // an extra blank line is not.
        let h = hash_bytes(b"code\nx");
        assert_eq!(h, hash_bytes(b"code\r\nx\r\n"));
        assert_eq!(h, hash_bytes(b"code\rx\n"));
        assert_ne!(h, hash_bytes(b"code\nx\n\n"));
        assert_eq!(hash_bytes(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
