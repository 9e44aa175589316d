//! The interpreter's Python constructs (checked through what definitions print) and its error
//! messages (one snapshot).

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use quarry_queries::python::load_definition;

#[derive(Clone, Default)]
struct Captured(Rc<RefCell<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a definition; returns what it printed, or the error text.
fn run(source: &str, args: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("definition.py");
    // Data files resolve against the working directory, as in ehrQL: name this one in full.
    let codes = dir.path().join("codes.csv").display().to_string();
    std::fs::write(&path, source.replace("\"codes.csv\"", &format!("{codes:?}"))).unwrap();
    std::fs::write(dir.path().join("helpers.py"), "GREETING = 'hi'\ndef double(x):\n    return 2 * x\n").unwrap();
    std::fs::write(dir.path().join("codes.csv"), "code,term,group\n 44054006 ,Diabetes,a\n73211009,Diabetes 2,b\n,,\n44054006,dup,c\n")
        .unwrap();
    let out = Captured::default();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let result = load_definition(&path, &args, Box::new(out.clone()));
    let printed = String::from_utf8(out.0.borrow().clone()).unwrap();
    match result {
        Ok(_) => Ok(printed),
        Err(e) => Err(e.to_string().replace(&path.display().to_string(), "definition.py")),
    }
}

#[test]
fn python_constructs() {
    let src = r#"
import datetime, functools, operator, sys
from helpers import GREETING, double
from ehrql import codelist_from_csv, months, years
def f(a, b=2, *rest, c=3, **kw):
    return a + b + c + sum(rest) + len(kw)
print(f(1), f(1, 1, 1, 1, c=0, z=1))
squares = [i * i for i in range(5) if i % 2 == 0]
print(squares, {k: v for k, v in zip("ab", [1, 2])}, sorted({3, 1, 2}, reverse=True))
a, *b = (1, 2, 3)
print(a, b, f"{a:03d}|{2.5:.2f}|{'x'!r}|{1234567:,}", "%s-%02d" % ("y", 7), "{0}:{name}".format(1, name="n"))
total = 0
for i, x in enumerate(["p", "q"], start=1):
    if i == 2:
        continue
    total += i
while total < 10:
    total *= 3
print(total, functools.reduce(operator.add, [1, 2, 3]), double(21), GREETING, sys.argv[1:])
d = datetime.date(2020, 1, 31)
print(d + datetime.timedelta(days=1), (d - datetime.date(2019, 1, 31)).days, d.isoformat(), d.year)
print(months(2).starting_on("2020-01-31"))
print(years(1).ending_on("2020-12-31"))
print(codelist_from_csv("codes.csv", column="code"), codelist_from_csv("codes.csv", column="code", category_column="group"))
try:
    {}["missing"]
except KeyError as e:
    print("caught", type(e) if False else "KeyError")
print(1 // -2, -7 % 3, 7 / 2, 2 ** 10, 0.1 + 0.2, 1e16, round(2.5), max([3, 9, 2]), any([]), all([]))
g = lambda x, y=1: x * y
print(g(3), g(3, y=4), isinstance(3, int), "a,b".split(","), "-".join(["x", "y"]), "Ab".lower())
"#;
    let printed = run(src, &["--flag", "v"]).unwrap();
    insta::assert_snapshot!(printed);
}

#[test]
fn error_messages() {
    let header = "from ehrql import create_dataset, case, when, days, months\nfrom ehrql.tables.core import patients, clinical_events\nfrom ehrql.tables.tpp import apcs\ndataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n";
    let cases = [
        "dataset.x = clinical_events.count_for_patient() + 1.5",
        "dataset.x = patients.date_of_birth < \"2020/01/01\"",
        "dataset.x = (patients.sex == \"f\") and patients.date_of_death.is_null()",
        "dataset.add_column(\"1st\", patients.sex)",
        "dataset.x = clinical_events.date",
        "dataset.x = clinical_events.where(clinical_events.date == patients.date_of_birth).sort_by(clinical_events.date)",
        "dataset.x = clinical_events.where(clinical_events.snomedct_code == \"ABC\").exists_for_patient()",
        "dataset.x = apcs.where(apcs.all_diagnoses == \"N17\").exists_for_patient()",
        "dataset.x = case(when(patients.sex == \"f\"), otherwise=1)",
        "dataset.x = clinical_events.date.count_episodes_for_patient(months(1))",
        "dataset.x = undefined_name",
        "class Foo:\n    pass",
        "with open('x') as f:\n    pass",
        "dataset.x = clinical_events.first_for_patient().date",
        "import numpy",
        "dataset.x = patients.sex\ndataset.x = patients.sex",
        "dataset.x = patients.date_of_birth.is_in(patients.date_of_death)",
        "dataset.define_population(patients.exists_for_patient())",
        "dataset.x = (",
    ];
    let mut out = String::new();
    for body in cases {
        let err = run(&format!("{header}{body}\n"), &[]).expect_err(body);
        out.push_str(&format!("--- {}\n{err}\n", body.lines().next().unwrap()));
    }
    insta::assert_snapshot!(out);
}

/// serialize-definition keeps only the nodes a dataset uses (docs/serialization.md).
#[test]
fn serialization_holds_only_the_nodes_the_dataset_uses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.py");
    std::fs::write(
        &path,
        "from ehrql import create_dataset\nfrom ehrql.tables.core import patients, clinical_events, medications\n\
         dataset = create_dataset()\ndataset.define_population(patients.exists_for_patient())\n\
         dataset.value = clinical_events.where(clinical_events.numeric_value > 5).count_for_patient()\n",
    )
    .unwrap();
    let def = load_definition(&path, &[], Box::new(std::io::sink())).unwrap_or_else(|e| panic!("{}", e.message));
    let json = quarry_queries::serialize::serialize(&def.graph, def.dataset.as_ref(), def.measures.as_ref());
    let kinds: Vec<String> =
        json["nodes"].as_object().unwrap().values().map(|n| n.as_object().unwrap().keys().next().unwrap().clone()).collect();
    assert_eq!(
        kinds,
        [
            "SelectPatientTable",
            "SelectTable",
            "AggregateByPatient.Exists",
            "SelectColumn",
            "Value",
            "Function.GT",
            "Filter",
            "AggregateByPatient.Count"
        ]
    );
    assert_eq!(json["dataset"]["variables"][0][0], "value");
    assert!(!json.to_string().contains("medications"), "an imported but unused table is left out");
}
