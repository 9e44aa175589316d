//! Every name that ehrQL's modules bind imports from quarry's, as Python allows a
//! definition to import it (`from ehrql.tables.tpp import case, when` works in ehrQL). The
//! names are read from ehrQL's source (tests/ehrql_names.tsv).

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `source` as a definition in a fresh directory; returns what it printed.
fn run(source: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("definition.py");
    std::fs::write(&path, source).unwrap();
    let out = Captured::default();
    let result = quarry_python::load_definition(&path, &[], Box::new(out.clone()));
    let printed = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    result.map(|_| printed).map_err(|e| e.to_string())
}

#[test]
fn every_name_ehrqls_modules_bind_imports() {
    let names = include_str!("ehrql_names.tsv");
    let mut source = String::from("failed = []\n");
    let mut count = 0;
    for line in names.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (module, names) = line.split_once('\t').expect("module<TAB>names");
        for name in names.split_whitespace() {
            source.push_str(&format!(
                "try:\n    from {module} import {name}\nexcept Exception as e:\n    failed.append('{module}.{name}: ' + repr(e))\n"
            ));
            count += 1;
        }
    }
    source.push_str("print('\\n'.join(failed))\n");
    assert!(count > 350, "the names file lists {count} names");
    let printed = run(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(printed.trim(), "", "names ehrQL's modules bind that quarry's do not");
}

#[test]
fn ehrqls_internals_import_but_say_what_they_are() {
    let err = run("from ehrql.measures import get_measure_results\nget_measure_results(None, [])\n").unwrap_err();
    assert!(
        err.contains(
            "NotImplementedError: ehrql.measures.get_measure_results is part of ehrQL's internal machinery, which quarry does not provide"
        ),
        "{err}"
    );
}

#[test]
fn re_exported_tables_are_the_same_objects() {
    let printed = run(
        "from ehrql.tables import core, tpp, emis\nprint(tpp.patients is core.patients, emis.clinical_events is core.clinical_events, tpp.clinical_events is core.clinical_events)\n",
    )
    .unwrap();
    assert_eq!(printed, "True True False\n");
}

#[test]
fn every_table_has_its_helpers() {
    // The catalogue lists each table's helper methods and properties (from ehrQL's classes);
    // quarry's classes have exactly those.
    let modules = [
        "ehrql.tables.core",
        "ehrql.tables.tpp",
        "ehrql.tables.emis",
        "ehrql.tables.emisv2",
        "ehrql.tables.smoketest",
        "ehrql.tables.raw.core",
        "ehrql.tables.raw.tpp",
        "ehrql.tables.raw.emis",
        "ehrql.tables.beta.core",
        "ehrql.tables.beta.tpp",
        "ehrql.tables.beta.smoketest",
        "ehrql.tables.beta.raw.core",
        "ehrql.tables.beta.raw.tpp",
    ];
    let source = format!(
        "import importlib, _quarry\nmissing = []\ncount = 0\nfor m in {modules:?}:\n    module = importlib.import_module(m)\n    for entry in _quarry.catalogue(m):\n        cls = type(getattr(module, entry[0]))\n        mine = {{n for b in cls.__mro__ if b.__module__ == 'ehrql.tables._helpers' for n in vars(b) if not n.startswith('_')}}\n        count += len(entry[7])\n        if mine != set(entry[7]):\n            missing.append(f'{{m}}.{{entry[0]}}: {{sorted(mine)}} != {{sorted(entry[7])}}')\nprint(count, missing)\n"
    );
    let printed = run(&source).unwrap_or_else(|e| panic!("{e}"));
    let (count, missing) = printed.trim().split_once(' ').unwrap();
    assert!(count.parse::<usize>().unwrap() > 25, "{printed}");
    assert_eq!(missing, "[]");
}
