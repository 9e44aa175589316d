//! The pipeline runner end to end: `quarry check` and `quarry run` on small projects whose
//! actions are `tests/support/act.py` (needs `python3`).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("project.yaml"), yaml).unwrap();
        let act = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/act.py");
        fs::copy(act, dir.path().join("act.py")).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn quarry(&self, args: &[&str]) -> Output {
        self.quarry_env(args, &[])
    }

    fn quarry_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(QUARRY);
        c.args(args).arg("--project-dir").arg(self.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Run::from(self.quarry(&all))
    }

    /// The latest job request as JSON.
    fn latest_request(&self) -> Value {
        let dir = self.path().join("metadata/job-requests");
        let mut requests: Vec<Value> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap())
            .collect();
        requests.sort_by_key(|r| r["created_at"].as_str().unwrap().to_string());
        requests.pop().unwrap()
    }

    fn job(&self, action: &str) -> Value {
        self.latest_request()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no job for {action} in the latest request"))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn python_available() -> bool {
    Command::new("python3").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

macro_rules! require_python {
    () => {
        assert!(python_available(), "these tests run python: actions and need python3 on PATH (.ci/run installs it)");
    };
}

// ---------------------------------------------------------------------------------------
// Validation

/// Every validation message, in one snapshot: versions 1–5, upstream's order, and the
/// cycle and version checks upstream lacks.
#[test]
fn validation_messages() {
    let act = "python:v2 act.py";
    let ok_outputs = "outputs: {highly_sensitive: {a: output/a.csv}}";
    let cases: Vec<(&str, String)> = vec![
        ("unknown top-level key", "version: 5\nactions: {}\nextra: 1\n".to_string()),
        ("missing version", "actions: {}\n".into()),
        ("non-numeric version", "version: five\nactions: {}\n".into()),
        ("version above the latest", "version: 6\nactions: {}\n".into()),
        ("version below 1", "version: 0.5\nactions: {}\n".into()),
        ("actions not a mapping", "version: 5\nactions: [a, b]\n".into()),
        ("run_all defined in v5", format!("version: 5\nactions:\n  run_all:\n    run: {act} x\n    {ok_outputs}\n")),
        ("action config not a mapping", "version: 5\nactions:\n  a: 3\n".into()),
        ("missing run", format!("version: 5\nactions:\n  a:\n    {ok_outputs}\n")),
        ("missing outputs", format!("version: 5\nactions:\n  a:\n    run: {act}\n")),
        ("unknown action key", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    neds: [b]\n")),
        ("outputs not a mapping", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: [x]\n")),
        ("run not a string", format!("version: 5\nactions:\n  a:\n    run: [x]\n    {ok_outputs}\n")),
        ("needs not a list", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    needs: b\n")),
        ("config not a mapping", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    config: 3\n")),
        ("no output level", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{}}\n")),
        ("unknown output level", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o/a.csv}}, secret: {{b: o/b.csv}}}}\n")),
        ("level not a mapping", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: o/a.csv}}\n")),
        ("output not a string", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: [o/a.csv]}}}}\n")),
        ("backslash", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: 'o\\a.csv'}}}}\n")),
        ("double star", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o/**/a.csv}}}}\n")),
        ("question mark", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o/a?.csv}}}}\n")),
        ("bracket", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: 'o/[ab].csv'}}}}\n")),
        ("no extension", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o/a}}}}\n")),
        ("star extension", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o/a.*}}}}\n")),
        ("level-4 file type", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{moderately_sensitive: {{a: o/a.csv.gz}}}}\n")),
        ("not normal form", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: o//a.csv}}}}\n")),
        ("metadata directory", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: metadata/a.csv}}}}\n")),
        ("absolute path", format!("version: 5\nactions:\n  a:\n    run: {act}\n    outputs: {{highly_sensitive: {{a: /o/a.csv}}}}\n")),
        ("empty run", format!("version: 5\nactions:\n  a:\n    run: ''\n    {ok_outputs}\n")),
        ("run that cannot be split", format!("version: 5\nactions:\n  a:\n    run: \"python:v2 'act.py\"\n    {ok_outputs}\n")),
        ("no image tag", format!("version: 5\nactions:\n  a:\n    run: python act.py\n    {ok_outputs}\n")),
        ("bad image tag", format!("version: 5\nactions:\n  a:\n    run: python:2 act.py\n    {ok_outputs}\n")),
        ("needs with spaces", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    needs: [b c]\n")),
        ("cohort-extractor outputs", "version: 3\nexpectations: {population_size: 10}\nactions:\n  a:\n    run: cohortextractor:latest generate_cohort\n    outputs: {highly_sensitive: {a: o/a.csv}, moderately_sensitive: {b: o/b.csv}}\n".into()),
        ("cohort-extractor directories", "version: 3\nexpectations: {population_size: 10}\nactions:\n  a:\n    run: cohortextractor:latest generate_cohort\n    outputs: {highly_sensitive: {a: o/a.csv, b: p/b.csv}}\n".into()),
        ("generate-dataset not highly sensitive", "version: 5\nactions:\n  a:\n    run: ehrql:v1 generate-dataset d.py --output o/d.csv\n    outputs: {moderately_sensitive: {a: o/d.csv}}\n".into()),
        ("generate-dataset without --output", "version: 5\nactions:\n  a:\n    run: ehrql:v1 generate-dataset d.py\n    outputs: {highly_sensitive: {a: o/d.csv}}\n".into()),
        ("generate-dataset output mismatch", "version: 5\nactions:\n  a:\n    run: ehrql:v1 generate-dataset d.py --output o/d.csv.gz\n    outputs: {highly_sensitive: {a: o/d.csv}}\n".into()),
        ("generate-dataset directory mismatch", "version: 5\nactions:\n  a:\n    run: ehrql:v1 generate-dataset d.py --output o/tables:csv\n    outputs: {highly_sensitive: {a: o/tables/*.arrow}}\n".into()),
        ("cohort-extractor in v4", "version: 4\nactions:\n  a:\n    run: cohortextractor:latest generate_cohort\n    outputs: {highly_sensitive: {a: o/a.csv}}\n".into()),
        ("latest tag in v5", format!("version: 5\nactions:\n  a:\n    run: python:latest act.py\n    {ok_outputs}\n")),
        ("duplicate run", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n  b:\n    run: {act}\n    outputs: {{highly_sensitive: {{b: o/b.csv}}}}\n")),
        ("duplicate output path in v2", format!("version: 2\nactions:\n  a:\n    run: {act} a\n    {ok_outputs}\n  b:\n    run: {act} b\n    {ok_outputs}\n")),
        ("unknown needs", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    needs: [nope]\n")),
        ("self needs", format!("version: 5\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n    needs: [a]\n")),
        ("needs cycle", format!("version: 5\nactions:\n  a:\n    run: {act} a\n    {ok_outputs}\n    needs: [c]\n  b:\n    run: {act} b\n    outputs: {{highly_sensitive: {{b: o/b.csv}}}}\n    needs: [a]\n  c:\n    run: {act} c\n    outputs: {{highly_sensitive: {{c: o/c.csv}}}}\n    needs: [b]\n")),
        ("v3 without expectations", format!("version: 3\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n")),
        ("expectations without population_size", format!("version: 3\nexpectations: {{}}\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n")),
        ("expectations with extra key", format!("version: 3\nexpectations: {{population_size: 10, x: 1}}\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n")),
        ("population size not a number", format!("version: 3\nexpectations: {{population_size: lots}}\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n")),
        ("expectations in v4", format!("version: 4\nexpectations: {{population_size: 10}}\nactions:\n  a:\n    run: {act}\n    {ok_outputs}\n")),
        ("malformed YAML", "version: 5\nactions:\n  a:\n    run: [unclosed\n".into()),
        ("duplicate action names", format!("version: 5\nactions:\n  a:\n    run: {act} 1\n    {ok_outputs}\n  a:\n    run: {act} 2\n    {ok_outputs}\n")),
    ];
    let mut report = String::new();
    for (name, yaml) in cases {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("project.yaml"), &yaml).unwrap();
        let out = Command::new(QUARRY).arg("check").arg("--project-dir").arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "<dir>");
        assert_eq!(out.status.code(), Some(1), "{name}: expected exit 1\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        report.push_str(&format!("## {name}\n{}\n", stderr.trim_end()));
    }
    insta::assert_snapshot!("validation_messages", report);
}

#[test]
fn pre_v5_run_all_action_is_a_warning_and_ignored() {
    let p = Project::new(
        "version: 4\nactions:\n  run_all:\n    run: python:v2 act.py write o/x.csv 1\n    outputs: {highly_sensitive: {x: o/x.csv}}\n  a:\n    run: python:v2 act.py write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    let out = Run::from(p.quarry(&["check"]));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("`run_all` is a reserved action name; user-defined actions with this name are ignored"), "{out:?}");
}

#[test]
fn check_prints_the_plan_in_dependency_order() {
    let p = Project::new(
        "version: '5.0'\nactions:\n  report:\n    run: python:v2 act.py r\n    needs: [extract]\n    outputs: {moderately_sensitive: {r: o/r.csv}}\n  extract:\n    run: ehrql:v1 generate-dataset d.py --output o/d.csv.gz\n    outputs: {highly_sensitive: {d: o/d.csv.gz}}\n",
    );
    let out = Run::from(p.quarry(&["check"]));
    assert_eq!(out.code, 0, "{out:?}");
    let text = out.stdout.replace(&p.path().display().to_string(), "<dir>");
    insta::assert_snapshot!("check_plan", text);
}

// ---------------------------------------------------------------------------------------
// Running

fn two_independent_sleepers() -> Project {
    Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py sleep 1 write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n  b:\n    run: python:v2 act.py sleep 1 write o/b.csv 1\n    outputs: {highly_sensitive: {b: o/b.csv}}\n",
    )
}

#[test]
fn independent_actions_run_in_parallel() {
    require_python!();
    let p = two_independent_sleepers();
    let out = p.run(&["run_all", "-c", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (a, b) = (p.job("a"), p.job("b"));
    let busy = |j: &Value| ts(&j["completed_at"]).duration_since(ts(&j["started_at"])).as_secs_f64();
    let span =
        ts(&a["completed_at"]).max(ts(&b["completed_at"])).duration_since(ts(&a["started_at"]).min(ts(&b["started_at"]))).as_secs_f64();
    // Both sleep 1 s: in parallel the whole span is clearly less than the sum of the jobs.
    assert!(span < 0.8 * (busy(&a) + busy(&b)), "span {span:.2}s, jobs {:.2}s + {:.2}s", busy(&a), busy(&b));

    // And with one worker they do not overlap.
    let p = two_independent_sleepers();
    let out = p.run(&["run_all", "-c", "1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (a, b) = (p.job("a"), p.job("b"));
    let overlap = ts(&a["completed_at"]) > ts(&b["started_at"]) && ts(&b["completed_at"]) > ts(&a["started_at"]);
    assert!(!overlap, "with -c 1 the jobs overlapped");
}

fn chain() -> Project {
    Project::new(
        "version: 5\nactions:\n  extract:\n    run: python:v2 act.py write o/data.csv 1\n    outputs: {highly_sensitive: {d: o/data.csv}}\n  analyse:\n    run: python:v2 act.py read o/data.csv write o/summary.csv 2\n    needs: [extract]\n    outputs: {moderately_sensitive: {s: o/summary.csv}}\n",
    )
}

fn job_ids(p: &Project) -> Vec<String> {
    p.latest_request()["jobs"].as_array().unwrap().iter().map(|j| j["action"].as_str().unwrap().to_string()).collect()
}

#[test]
fn rerun_rules() {
    require_python!();
    let p = chain();
    let out = p.run(&["run_all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(job_ids(&p), ["extract", "analyse"]);
    assert!(p.exists("o/data.csv") && p.exists("o/summary.csv"));

    // run_all again: nothing to do, recorded as such.
    let out = p.run(&["run_all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("=> All actions already completed successfully\n   Use -f option to force everything to re-run"),
        "{out:?}"
    );
    assert_eq!(p.latest_request()["status"], "nothing_to_do");

    // A requested action always runs; its succeeded dependency is reused.
    let out = p.run(&["analyse"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(job_ids(&p), ["analyse"]);

    // -f re-runs dependencies too.
    let out = p.run(&["analyse", "-f"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(job_ids(&p), ["extract", "analyse"]);

    // A missing output makes its action run again.
    fs::remove_file(p.path().join("o/data.csv")).unwrap();
    let out = p.run(&["run_all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(job_ids(&p), ["extract"]);

    // A failed dependency is run again.
    let failing = Project::new(
        "version: 5\nactions:\n  extract:\n    run: python:v2 act.py fail\n    outputs: {highly_sensitive: {d: o/data.csv}}\n  analyse:\n    run: python:v2 act.py read o/data.csv write o/summary.csv 2\n    needs: [extract]\n    outputs: {moderately_sensitive: {s: o/summary.csv}}\n",
    );
    assert_eq!(failing.run(&["extract"]).code, 1);
    let out = failing.run(&["analyse"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(job_ids(&failing), ["extract", "analyse"]);
    assert_eq!(failing.job("analyse")["status_code"], "dependency_failed");
    assert_eq!(failing.job("analyse")["status_message"], "Not starting as dependency failed");
}

#[test]
fn failure_stops_the_run_unless_continue_on_error() {
    require_python!();
    let yaml = "version: 5\nactions:\n  bad:\n    run: python:v2 act.py fail\n    outputs: {highly_sensitive: {b: o/b.csv}}\n  after_bad:\n    run: python:v2 act.py write o/c.csv 1\n    needs: [bad]\n    outputs: {highly_sensitive: {c: o/c.csv}}\n  good:\n    run: python:v2 act.py write o/g.csv 1\n    outputs: {highly_sensitive: {g: o/g.csv}}\n";
    let p = Project::new(yaml);
    let out = p.run(&["run_all", "-c", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(p.job("bad")["status_code"], "nonzero_exit");
    assert_eq!(p.job("after_bad")["status_code"], "dependency_failed");
    assert_eq!(p.job("good")["status_code"], "stopped");
    assert!(!p.exists("o/g.csv"));
    // A failure is an error: on stderr, with the job's last lines.
    assert!(out.stderr.contains("error: bad\n") && out.stderr.contains("logs (truncated):"), "{out:?}");
    assert!(out.stderr.contains("failing on purpose") && !out.stdout.contains("failing on purpose"), "{out:?}");
    assert_eq!(p.latest_request()["status"], "failed");

    let p = Project::new(yaml);
    let out = p.run(&["run_all", "-c", "1", "--continue-on-error"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(p.job("good")["status_code"], "succeeded");
    assert_eq!(p.job("after_bad")["status_code"], "dependency_failed");
    assert!(p.exists("o/g.csv"));
}

#[test]
fn unmatched_pattern_says_did_you_mean() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/tabel.csv 1\n    outputs: {moderately_sensitive: {t: o/table.csv}}\n",
    );
    let out = p.run(&["a"]);
    assert_eq!(out.code, 1, "{out:?}");
    let job = p.job("a");
    assert_eq!(job["status_code"], "unmatched_patterns");
    assert_eq!(job["status_message"], "No outputs found matching patterns:\n - o/table.csv");
    assert!(out.stderr.contains("Did you mean to match one of these files instead?\n    - o/tabel.csv"), "{out:?}");
    let log = fs::read_to_string(p.path().join("metadata/a.log")).unwrap();
    assert!(log.contains("hint: Did you mean to match one of these files instead?"), "{log}");
}

#[test]
fn undeclared_outputs_are_reported_and_not_saved() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1 write o/extra.txt 2\n    outputs: {moderately_sensitive: {t: o/a.csv}}\n",
    );
    let out = p.run(&["a"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("warning: a: o/extra.txt matches no output pattern in project.yaml and was not saved"), "{out:?}");
    assert!(p.exists("o/a.csv") && !p.exists("o/extra.txt"));
    assert_eq!(p.job("a")["undeclared_outputs"][0], "o/extra.txt");
}

#[test]
fn level4_checks_are_reported() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py csv o/ids.csv patient_id,n 3 csv o/long.csv group,n 5001 csv o/fine.csv group,n 5000 big o/huge.txt 16.5\n    outputs: {moderately_sensitive: {ids: o/ids.csv, long: o/long.csv, fine: o/fine.csv, huge: o/huge.txt}}\n",
    );
    let out = p.run(&["a"]);
    assert_eq!(out.code, 0, "level-4 problems are reported, not fatal\n{out:?}");
    let job = p.job("a");
    assert_eq!(
        job["status_message"],
        "Completed successfully, but 3 file(s) marked as moderately_sensitive were excluded. See job log for details."
    );
    let problems = &job["level4_problems"];
    assert_eq!(problems["o/ids.csv"], "File has patient_id column");
    assert_eq!(problems["o/long.csv"], "File row count (5001) exceeds maximum allowed rows (5000)");
    assert_eq!(problems["o/huge.txt"], "File size of 16.5Mb is larger that limit of 16.0Mb.");
    assert!(problems.get("o/fine.csv").is_none());
    let log = fs::read_to_string(p.path().join("metadata/a.log")).unwrap();
    assert!(log.contains("Invalid moderately_sensitive outputs:\n  o/huge.txt  - File size of 16.5Mb"), "{log}");
    assert!(out.stdout.contains("invalid moderately_sensitive outputs:"), "{out:?}");
}

#[test]
fn jobs_are_isolated() {
    require_python!();
    // b needs a, but reads a file a wrote without declaring it: it must not be there.
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1 write o/secret.csv 2\n    outputs: {highly_sensitive: {a: o/a.csv}}\n  b:\n    run: python:v2 act.py read o/secret.csv write o/b.csv 3\n    needs: [a]\n    outputs: {highly_sensitive: {b: o/b.csv}}\n  c:\n    run: python:v2 act.py read o/a.csv write o/c.csv 3\n    outputs: {highly_sensitive: {c: o/c.csv}}\n",
    );
    let out = p.run(&["run_all", "--continue-on-error"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(p.job("a")["status_code"], "succeeded");
    assert_eq!(p.job("b")["status_code"], "nonzero_exit");
    // c reads a declared output of a, but does not need a: it fails too.
    assert_eq!(p.job("c")["status_code"], "nonzero_exit");
    let log = fs::read_to_string(p.path().join("metadata/b.log")).unwrap();
    assert!(log.contains("No such file or directory"), "{log}");
}

#[test]
fn log_file_has_the_upstream_trailer() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py echo hello write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    assert_eq!(p.run(&["a"]).code, 0);
    let log = fs::read_to_string(p.path().join("metadata/a.log")).unwrap();
    let first = log.lines().next().unwrap();
    assert_eq!(first.len(), 30 + 1 + "hello".len(), "{log}");
    assert!(first.ends_with(" hello") && first.as_bytes()[29] == b'Z', "{log}");
    let trailer = log.split("\n=============JOB SUMMARY=============\n").nth(1).expect("summary marker");
    let filtered: String = trailer
        .lines()
        .map(|l| match l.split_once(": ") {
            Some((k @ ("job_definition_id" | "job_definition_request_id" | "created_at" | "completed_at"), _)) => format!("{k}: <{k}>"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("log_trailer", filtered);
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let p = Project::new("version: 5\nactions:\n  a:\n    run: python:v2 x\n   outputs: {}\n");
    let out = p.run(&["a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("line 5 column"), "{out:?}");
    assert!(out.stderr.contains("project.yaml"), "{out:?}");
}

#[test]
fn a_missing_project_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["check", "run"] {
        let out = Run::from(Command::new(QUARRY).args([command, "--project-dir"]).arg(dir.path()).output().unwrap());
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("There is no project.yaml at") && out.stderr.contains("--project-dir"), "{out:?}");
    }
}

#[test]
fn unknown_action_lists_valid_names() {
    let p = chain();
    let out = p.run(&["analyze"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    insta::assert_snapshot!("unknown_action", out.stderr);
}

#[test]
fn missing_interpreters_are_reported_clearly() {
    let p = Project::new(
        "version: 5\nactions:\n  py:\n    run: python:v2 act.py write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n  r:\n    run: r:v2 analysis/x.R\n    outputs: {highly_sensitive: {b: o/b.csv}}\n",
    );
    let out = Run::from(p.quarry_env(
        &["run", "run_all", "--continue-on-error"],
        &[("QUARRY_PYTHON", "no-such-python3"), ("QUARRY_RSCRIPT", "no-such-Rscript")],
    ));
    assert_eq!(out.code, 1, "{out:?}");
    let py = p.job("py")["status_message"].as_str().unwrap().to_string();
    let r = p.job("r")["status_message"].as_str().unwrap().to_string();
    assert!(py.contains("Python 3 is not installed: `no-such-python3` was not found on PATH; install Python 3"), "{py}");
    assert!(r.contains("R is not installed: `no-such-Rscript` was not found on PATH; install R"), "{r}");
}

#[test]
fn paths_into_the_jobs_copy_of_the_project_are_shown_under_workspace() {
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: ehrql:v1 generate-dataset analysis/d.py --output o/d.csv\n    outputs: {highly_sensitive: {d: o/d.csv}}\n",
    );
    fs::create_dir(p.path().join("analysis")).unwrap();
    fs::write(p.path().join("analysis/d.py"), "from ehrql import create_dataset\nraise ValueError('stop here')\n").unwrap();
    let out = p.run(&["a"]);
    assert_eq!(out.code, 1, "{out:?}");
    let log = fs::read_to_string(p.path().join("metadata/a.log")).unwrap();
    assert!(log.contains("File \"/workspace/analysis/d.py\", line 2, in <module>"), "{log}");
    assert!(!log.contains("volumes"), "{log}");
}

#[test]
fn images_without_a_native_runtime_are_refused_up_front() {
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: safetab:v3.0.2 output/input.csv\n    outputs: {moderately_sensitive: {t: o/t.md}}\n  b:\n    run: stata-mp:v2 analysis/x.do\n    outputs: {moderately_sensitive: {t: o/s.csv}}\n",
    );
    let out = p.run(&["a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("error: ActionNotAvailable") && out.stderr.contains("`safetab` is a reusable action"), "{out:?}");
    assert!(out.stderr.contains("without network access"), "{out:?}");
    let out = p.run(&["b"]);
    assert!(out.stderr.contains("`stata-mp` actions need OpenSAFELY's `stata-mp` Docker image"), "{out:?}");
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: ehrql:v2 generate-dataset d.py --output o/d.csv\n    outputs: {highly_sensitive: {d: o/d.csv}}\n",
    );
    let out = p.run(&["a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("there is no ehrql:v2 image: OpenSAFELY's ehrQL images are ehrql:v1"), "{out:?}");
}

#[test]
fn timeout_stops_a_job() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  slow:\n    run: python:v2 act.py sleep 30 write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    let started = Instant::now();
    let out = p.run(&["slow", "--timeout", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(p.job("slow")["status_message"].as_str().unwrap().contains("--timeout of 1 s"));
}

fn wait_for_executing(p: &Project, action: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dir = p.path().join("metadata/job-requests");
        if dir.exists() && fs::read_dir(&dir).unwrap().count() > 0 && p.job(action)["status_code"] == "executing" {
            return;
        }
        assert!(Instant::now() < deadline, "{action} never started executing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_run(p: &Project, action: &str) -> std::process::Child {
    Command::new(QUARRY)
        .args(["run", action, "--project-dir"])
        .arg(p.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_run_is_recovered_by_the_next() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  slow:\n    run: python:v2 act.py sleep 2 write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    let mut child = spawn_run(&p, "slow");
    wait_for_executing(&p, "slow");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let killed_request = p.latest_request();
    assert_eq!(killed_request["jobs"][0]["state"], "running");
    let scratch = p.path().join("metadata/volumes").join(killed_request["jobs"][0]["id"].as_str().unwrap());
    assert!(scratch.is_dir(), "the killed job's scratch directory is left");

    let out = p.run(&["run_all"]);
    assert!(!scratch.exists(), "the next run removes what the killed one left");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("warning: Marked jobs left unfinished by an interrupted run as failed: slow"), "{out:?}");
    let old: Value = serde_json::from_str(
        &fs::read_to_string(p.path().join(format!("metadata/job-requests/{}.json", killed_request["id"].as_str().unwrap()))).unwrap(),
    )
    .unwrap();
    assert_eq!(old["jobs"][0]["state"], "failed");
    assert_eq!(old["jobs"][0]["cancelled"], true);
    assert_eq!(old["status"], "failed");
    assert_eq!(p.job("slow")["status_code"], "succeeded");
}

#[test]
fn ctrl_c_cancels_running_jobs() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  slow:\n    run: python:v2 act.py sleep 30 write o/a.csv 1\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    let child = spawn_run(&p, "slow");
    wait_for_executing(&p, "slow");
    let started = Instant::now();
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("error: Killed by user"), "{out:?}");
    assert_eq!(p.job("slow")["status_code"], "cancelled_by_user");
}

#[test]
fn status_prints_the_request() {
    require_python!();
    let p = chain();
    assert_eq!(p.run(&["run_all"]).code, 0);
    let out = Run::from(p.quarry(&["status"]));
    assert_eq!(out.code, 0, "{out:?}");
    let id = p.latest_request()["id"].as_str().unwrap().to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<time>");
    settings.add_filter(r"\d\d:\d\d:\d\d", "<runtime>");
    settings.add_filter(r"identifier [a-z2-7]{16}", "identifier <identifier>");
    settings.add_filter(&id, "<id>");
    settings.add_filter(r"Requested by: .*", "Requested by: <user>");
    settings.add_filter(r"Workspace: \S+", "Workspace: <workspace>");
    settings.bind(|| insta::assert_snapshot!("status", out.stdout));
    // By id prefix too.
    let by_id = Run::from(p.quarry(&["status", &id[..4]]));
    assert_eq!(by_id.stdout, out.stdout);
}

#[test]
fn config_is_passed_as_json() {
    require_python!();
    let p = Project::new(
        "version: 5\nactions:\n  a:\n    run: python:v2 act.py write o/a.csv 1 rest\n    config: {name: \"it's\", n: 2}\n    outputs: {highly_sensitive: {a: o/a.csv}}\n",
    );
    assert_eq!(p.run(&["a"]).code, 0);
    let log = fs::read_to_string(p.path().join("metadata/a.log")).unwrap();
    // Upstream's form: `--config '<json>'` with `'` escaped as \u0027.
    assert!(log.contains(r#" --config|{"name":"it\u0027s","n":2}"#), "{log}");
}
