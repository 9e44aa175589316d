//! analysis:v1 recipes (issue 7): the seed study's steps on a hand-checked dataset give the
//! outputs R and pandas compute; charts are real images; the seed study runs end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::copy_dir;

const QUARRY: &str = env!("CARGO_BIN_EXE_quarry");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A PNG that opens, has the chart's size, and is not blank.
fn assert_chart(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert_eq!(img.dimensions(), (900, 600), "{}", path.display());
    let inked = img.pixels().filter(|p| p.0.iter().any(|&c| c < 200)).count();
    let share = inked as f64 / (900.0 * 600.0);
    assert!(share > 0.01 && share < 0.9, "{}: {:.1}% of pixels drawn", path.display(), share * 100.0);
}

#[test]
fn seed_steps_match_hand_checked_r_and_pandas_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("analysis"), tmp.path());
    let out = Command::new(QUARRY).current_dir(tmp.path()).args(["exec", "analysis:v1", "recipe.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["frequency.csv", "crosstab_secondary.csv", "crosstab_primary_secondary.csv", "code.csv"] {
        let got = std::fs::read_to_string(tmp.path().join("out").join(name)).unwrap();
        let want = std::fs::read_to_string(tmp.path().join("expected").join(name)).unwrap();
        assert_eq!(got, want, "{name}");
        let log = std::fs::read_to_string(tmp.path().join("out").join(format!("{name}.sdc.txt"))).unwrap();
        assert!(log.contains("rounding") || log.contains("redacted"), "{name}.sdc.txt: {log}");
    }
    assert_chart(&tmp.path().join("out/frequency.png"));
    let log = std::fs::read_to_string(tmp.path().join("out/frequency.csv.sdc.txt")).unwrap();
    assert_eq!(
        log,
        "out/frequency.csv: column `n`: midpoint-6 rounding (roundmid_any(x, 6): 0→0, 1–6→3, 7–12→9, …); 3 counts, 2 changed by rounding, 0 redacted\n\
         out/frequency.png: drawn from the protected counts of out/frequency.csv\n"
    );
}

#[test]
fn a_bad_recipe_names_the_file_and_the_problem_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("analysis"), tmp.path());
    let recipe = std::fs::read_to_string(tmp.path().join("recipe.yaml"))
        .unwrap()
        .replace("by: [vte_count_primary_diagnoses]", "by: [no_such_column]");
    std::fs::write(tmp.path().join("bad.yaml"), recipe).unwrap();
    let out = Command::new(QUARRY).current_dir(tmp.path()).args(["exec", "analysis:v1", "bad.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the dataset has no column `no_such_column`"), "{stderr}");
    assert!(!tmp.path().join("out").exists(), "no output when a step fails");

    std::fs::write(tmp.path().join("typo.yaml"), "input: dataset.csv\nsteps:\n  - frequncy:\n      by: [code]\n").unwrap();
    let out = Command::new(QUARRY).current_dir(tmp.path()).args(["exec", "analysis:v1", "typo.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("typo.yaml: not a valid recipe") && stderr.contains("frequncy"), "{stderr}");
}

#[test]
fn the_seed_study_runs_end_to_end_and_writes_every_declared_output() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("projects/vte"), tmp.path());
    let out = Command::new(QUARRY).args(["run", "run_all", "--project-dir"]).arg(tmp.path()).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    let o = tmp.path().join("output");
    for f in [
        "dataset.csv.gz",
        "dataset_pivoted.csv.gz",
        "vte_primary_diagnosis_frequency_distribution.csv",
        "vte_secondary_admission_frequency_distribution.csv",
        "vte_secondary_mb_admission_frequency_distribution.csv",
        "crosstab_secondary_codelists_midpoint_rounded.csv",
        "crosstab_primary_secondary_midpoint_rounded.csv",
    ] {
        assert!(o.join(f).is_file(), "missing output/{f}\n{all}");
    }
    for f in ["df_primary_midpoint_rounded.png", "df_secondary_midpoint_rounded.png", "df_secondary_mb_midpoint_rounded.png"] {
        assert_chart(&o.join(f));
    }
    for i in 1..=5 {
        let text = std::fs::read_to_string(o.join(format!("vte_primary_events_{i}_code.csv"))).unwrap();
        // Every count is redacted or above 7.
        for line in text.lines() {
            let count = line.rsplit(',').next().unwrap();
            assert!(count == "redacted" || count.parse::<i64>().unwrap() > 7, "{line}");
        }
    }
    // The dataset has the project's population size (1000 in project.yaml).
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(o.join("dataset.csv.gz")).unwrap()),
        &mut text,
    )
    .unwrap();
    assert_eq!(text.lines().count(), 1001);
    // Midpoint-6 counts only: 0, 3, 9, 15, …
    let freq = std::fs::read_to_string(o.join("vte_primary_diagnosis_frequency_distribution.csv")).unwrap();
    for line in freq.lines().skip(1) {
        let n: i64 = line.rsplit(',').next().unwrap().parse().unwrap();
        assert!(n == 0 || n % 6 == 3, "{line}");
    }
}

/// people.csv: 9 women with an age (20–90), 3 men; bmi missing for 3. Expected outputs were
/// checked against Python's `statistics` (mean, stdev, quantiles(method="inclusive")).
#[test]
fn summary_statistics_protect_counts_small_groups_and_extremes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("analysis"), tmp.path());
    for (rounding, expected) in [("redact_and_round", "summary_protected.csv"), ("none", "summary_unprotected.csv")] {
        let out = Command::new(QUARRY)
            .current_dir(tmp.path())
            .args([
                "analysis",
                "summary",
                "--input",
                "people.csv",
                "--columns",
                "age,bmi",
                "--by",
                "sex",
                "--rounding",
                rounding,
                "--output",
                "out/s.csv",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got = std::fs::read_to_string(tmp.path().join("out/s.csv")).unwrap();
        let want = std::fs::read_to_string(tmp.path().join("expected").join(expected)).unwrap();
        assert_eq!(got, want, "{rounding}");
    }
    let log = std::fs::read_to_string(tmp.path().join("out/s.csv.sdc.txt")).unwrap();
    assert_eq!(log, "out/s.csv: column `n` and `missing`: no disclosure control; 8 counts, 0 changed by rounding, 0 redacted\n");

    let out = Command::new(QUARRY)
        .current_dir(tmp.path())
        .args(["analysis", "summary", "--input", "people.csv", "--columns", "sex", "--output", "out/bad.csv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("column `sex`, row 1: `female` is not a number"), "{stderr}");
    assert!(!tmp.path().join("out/bad.csv").exists());
}

/// A step run alone (`quarry analysis STEP`) writes what the same step in a recipe writes, and
/// Arrow and Parquet datasets give the same outputs as CSV.
#[test]
fn single_steps_and_typed_inputs_match_the_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("analysis"), tmp.path());
    let run = |args: &[&str]| {
        let out = Command::new(QUARRY).current_dir(tmp.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "analysis",
        "crosstab",
        "--input",
        "dataset.csv",
        "--by",
        "vte_count_primary_diagnoses,code",
        "--rounding",
        "midpoint6",
        "--output",
        "csv/crosstab.csv",
    ]);
    run(&[
        "analysis",
        "value-counts",
        "--input",
        "dataset.csv",
        "--starts-with",
        "co",
        "--rounding",
        "redact",
        "--redacted",
        "redacted",
        "--output",
        "csv/{column}.csv",
    ]);
    // Margins by hand: cells 7, 1, 1, 11 → midpoint-6 9, 3, 3, 9; totals of those: 12, 12, 24.
    run(&[
        "analysis",
        "crosstab",
        "--input",
        "dataset.csv",
        "--by",
        "vte_count_secondary_admissions,vte_count_secondary_admissions_mb",
        "--rounding",
        "midpoint6",
        "--margins",
        "--output",
        "csv/margins.csv",
    ]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("csv/margins.csv")).unwrap(),
        std::fs::read_to_string(tmp.path().join("expected/crosstab_margins.csv")).unwrap()
    );
    let code = std::fs::read_to_string(tmp.path().join("csv/code.csv")).unwrap();
    assert_eq!(code, std::fs::read_to_string(tmp.path().join("expected/code.csv")).unwrap());

    // The same dataset as Arrow and Parquet, written by quarry's own generate-dataset from a
    // definition that copies the CSV through `table_from_file`.
    std::fs::write(
        tmp.path().join("copy.py"),
        "from ehrql import create_dataset\nfrom ehrql.tables import table_from_file\n\
         d = table_from_file(\"dataset.csv\", columns={\"vte_count_primary_diagnoses\": int, \"code\": str})\n\
         dataset = create_dataset()\ndataset.define_population(d.exists_for_patient())\n\
         dataset.vte_count_primary_diagnoses = d.vte_count_primary_diagnoses\ndataset.code = d.code\n",
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("no_tables")).unwrap();
    for ext in ["arrow", "parquet"] {
        run(&["generate-dataset", "copy.py", "--dummy-tables", "no_tables", "--output", &format!("dataset.{ext}")]);
        run(&[
            "analysis",
            "crosstab",
            "--input",
            &format!("dataset.{ext}"),
            "--by",
            "vte_count_primary_diagnoses,code",
            "--rounding",
            "midpoint6",
            "--output",
            &format!("{ext}/crosstab.csv"),
        ]);
        let want = std::fs::read_to_string(tmp.path().join("csv/crosstab.csv")).unwrap();
        let got = std::fs::read_to_string(tmp.path().join(format!("{ext}/crosstab.csv"))).unwrap();
        assert_eq!(got, want, "{ext}");
    }
}

#[test]
fn check_outputs_reports_small_unrounded_counts_and_passes_protected_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("good.csv"), "group,n,p\nA,10,0.4\nB,[REDACTED],NA\nC,15,0.6\n").unwrap();
    std::fs::write(dir.join("bad.csv"), "group,n\nA,4\nB,12\n").unwrap();
    std::fs::write(dir.join("ids.csv"), "patient_id,age\n1,40\n").unwrap();
    let run = |paths: &[&str]| Command::new(QUARRY).current_dir(dir).arg("check-outputs").args(paths).output().unwrap();
    let out = run(&["good.csv"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("  n: integer, 2 numeric, 0 missing, 1 redacted, min 10, min non-zero 10, max 15, sum 25, divisible by 5: yes, divisible by 6: no, midpoint 6 rounded: no (checked as counts)"), "{stdout}");
    assert!(stdout.ends_with("checked 1 file(s): no problems found\n"), "{stdout}");
    let out = run(&["good.csv", "bad.csv", "ids.csv"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for want in [
        "  PROBLEM: column `n`: 1 count(s) between 1 and 7; redact them (or use midpoint-6 rounding)",
        "  PROBLEM: column `n`: 2 count(s) neither rounded to a multiple of 5 nor midpoint-6 rounded",
        "  PROBLEM: File has patient_id column",
        "checked 3 file(s): 2 with problems",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
}

/// After a job, moderately_sensitive CSVs are checked and what an output checker would question
/// is reported on the console and in the job's log (the job still succeeds).
#[test]
fn the_runner_reports_disclosure_problems_of_moderately_sensitive_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(fixtures().join("analysis/dataset.csv"), dir.join("dataset.csv")).unwrap();
    std::fs::write(dir.join("raw.yaml"), "input: dataset.csv\nsteps:\n  - frequency:\n      by: [vte_count_primary_diagnoses]\n      rounding: none\n      output: output/raw.csv\n").unwrap();
    std::fs::write(
        dir.join("project.yaml"),
        "version: '4.0'\nactions:\n  raw:\n    run: analysis:v1 raw.yaml\n    outputs:\n      moderately_sensitive:\n        table: output/raw.csv\n        log: output/raw.csv.sdc.txt\n",
    )
    .unwrap();
    let out = Command::new(QUARRY).args(["run", "raw", "--project-dir"]).arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("warning: moderately_sensitive outputs an output checker would question"), "{stdout}");
    let log = std::fs::read_to_string(dir.join("metadata/raw.log")).unwrap();
    assert!(
        log.contains("Disclosure checks of moderately_sensitive outputs (quarry check-outputs):\n  output/raw.csv  - column `n`:"),
        "{log}"
    );
}

/// people.csv's ages in 25-year bins over [0, 100): 1, 4, 5 and 2 by hand (20 | 30 35 40 45 |
/// 50 55 60 65 70 | 80 90), none below or above; the chart is a real image.
#[test]
fn histograms_count_bins_protect_them_and_chart_the_protected_counts() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("analysis"), tmp.path());
    let run = |rounding: &str, output: &str| {
        let out = Command::new(QUARRY)
            .current_dir(tmp.path())
            .args(["analysis", "histogram", "--input", "people.csv", "--column", "age", "--bin-width", "25", "--range", "0,100"])
            .args(["--rounding", rounding, "--output", output, "--chart", &output.replace(".csv", ".png")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(tmp.path().join(output)).unwrap()
    };
    assert_eq!(run("none", "out/h.csv"), std::fs::read_to_string(tmp.path().join("expected/histogram_unprotected.csv")).unwrap());
    assert_chart(&tmp.path().join("out/h.png"));
    let protected = run("redact_and_round", "out/p.csv");
    assert_eq!(protected.lines().filter(|l| l.ends_with("[REDACTED]")).count(), 4, "{protected}");
}
