//! Generated documentation must be current.

#[test]
fn tables_doc_is_current() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quarry")).arg("tables-doc").output().expect("run quarry");
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tables.md")).expect("docs/tables.md");
    assert!(generated == committed, "docs/tables.md is stale: run `cargo run -- tables-doc > docs/tables.md`");
}

#[test]
fn python_doc_is_current() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quarry")).arg("python-doc").output().expect("run quarry");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/python.md")).expect("docs/python.md");
    assert!(generated == committed, "docs/python.md is stale: run `cargo run -- python-doc > docs/python.md`");
}
