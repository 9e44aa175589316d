//! The query model's construction rules: sharing, types, domains, sort/pick, flattening.

use quarry_queries::qm::*;

fn column(name: &str, type_: Type) -> Column {
    Column { name: name.into(), type_, constraints: vec![], description: String::new() }
}

fn schema(name: &str, columns: Vec<Column>, patient_level: bool) -> TableSchema {
    TableSchema { name: name.into(), columns, patient_level, required_permission: None }
}

struct Fixture {
    g: Graph,
    events: NodeId,
    meds: NodeId,
    patients: NodeId,
}

fn fixture() -> Fixture {
    let mut g = Graph::new();
    let events = g
        .declare_table(schema(
            "clinical_events",
            vec![
                column("date", Type::Date),
                column("code", Type::Code(CodeSystem::CTV3)),
                column("value", Type::Float),
                column("n", Type::Int),
                column("flag", Type::Bool),
            ],
            false,
        ))
        .unwrap();
    let meds = g.declare_table(schema("medications", vec![column("date", Type::Date)], false)).unwrap();
    let patients = g.declare_table(schema("patients", vec![column("date_of_birth", Type::Date), column("sex", Type::Str)], true)).unwrap();
    let events = g.select_table(events).unwrap();
    let meds = g.select_table(meds).unwrap();
    let patients = g.select_patient_table(patients).unwrap();
    Fixture { g, events, meds, patients }
}

fn date(s: &str) -> Value {
    Value::Date(s.parse().unwrap())
}

#[test]
fn identical_expressions_are_one_node() {
    let Fixture { mut g, events, .. } = fixture();
    let build = |g: &mut Graph| {
        let d = g.select_column(events, "date").unwrap();
        let start = g.value(date("2020-01-01"));
        let cond = g.function(Function::Ge(d, start)).unwrap();
        let f = g.filter(events, cond).unwrap();
        g.aggregate(AggregateByPatient::Count(f)).unwrap()
    };
    let a = build(&mut g);
    let len = g.len();
    let b = build(&mut g);
    assert_eq!(a, b);
    assert_eq!(g.len(), len, "building it again added nodes");
}

#[test]
fn children_come_before_parents() {
    let Fixture { mut g, events, .. } = fixture();
    let d = g.select_column(events, "date").unwrap();
    let c = g.aggregate(AggregateByPatient::Max(d)).unwrap();
    assert!(d < c && events < d);
}

#[test]
fn type_rules() {
    let Fixture { mut g, events, .. } = fixture();
    let value = g.select_column(events, "value").unwrap();
    let n = g.select_column(events, "n").unwrap();
    let flag = g.select_column(events, "flag").unwrap();
    let one = g.value(Value::Int(1));
    let one_and_a_half = g.value(Value::Float(Float(1.5)));
    // int and float are never mixed in one node
    assert!(matches!(g.function(Function::Add(n, one_and_a_half)), Err(QueryModelError::Type { .. })));
    assert!(g.function(Function::Add(n, one)).is_ok());
    // bool is not an int
    assert!(g.function(Function::Add(flag, one)).is_err());
    assert!(g.function(Function::Lt(flag, flag)).is_err());
    let as_int = g.function(Function::CastToInt(flag)).unwrap();
    assert_eq!(g.type_of(as_int), Some(&Type::Int));
    // result types
    let div = g.function(Function::TrueDivide(n, one)).unwrap();
    assert_eq!(g.type_of(div), Some(&Type::Float));
    let floor = g.function(Function::FloorDivide(value, one_and_a_half)).unwrap();
    assert_eq!(g.type_of(floor), Some(&Type::Int));
    let mean = g.aggregate(AggregateByPatient::Mean(n)).unwrap();
    assert_eq!(g.type_of(mean), Some(&Type::Float));
    let sum = g.aggregate(AggregateByPatient::Sum(n)).unwrap();
    assert_eq!(g.type_of(sum), Some(&Type::Int));
    // In needs a set of the same type
    let code = g.select_column(events, "code").unwrap();
    let ctv3 = Value::set(Type::Code(CodeSystem::CTV3), vec![Value::Code(CodeSystem::CTV3, "XaA4A".into())]).unwrap();
    let ctv3 = g.value(ctv3);
    assert!(g.function(Function::In(code, ctv3)).is_ok());
    let strings = g.value(Value::set(Type::Str, vec![Value::Str("XaA4A".into())]).unwrap());
    assert!(g.function(Function::In(code, strings)).is_err());
    // A set must hold one type
    assert!(Value::set(Type::Str, vec![Value::Int(1)]).is_err());
    // codes are comparable by equality, and are strings for StringContains
    let prefix = g.value(Value::Str("Xa".into()));
    assert!(g.function(Function::StringContains(code, prefix)).is_ok());
}

#[test]
fn sets_are_canonical() {
    let a = Value::set(Type::Int, vec![Value::Int(3), Value::Int(1), Value::Int(3)]).unwrap();
    let b = Value::set(Type::Int, vec![Value::Int(1), Value::Int(3)]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn same_domain_rule() {
    let Fixture { mut g, events, meds, patients } = fixture();
    let e_date = g.select_column(events, "date").unwrap();
    let m_date = g.select_column(meds, "date").unwrap();
    let dob = g.select_column(patients, "date_of_birth").unwrap();
    // two event tables: rejected
    assert_eq!(g.function(Function::Eq(e_date, m_date)), Err(QueryModelError::DomainMismatch));
    // patient-level with event-level: fine, and event-level
    let after_birth = g.function(Function::Gt(e_date, dob)).unwrap();
    assert!(!g.is_patient_level(after_birth));
    // filter by a series of an ancestor domain: fine
    let flag = g.select_column(events, "flag").unwrap();
    let flagged = g.filter(events, flag).unwrap();
    let later = g.filter(flagged, after_birth).unwrap();
    // filter by a series of a sibling domain: rejected
    let n = g.select_column(events, "n").unwrap();
    let one = g.value(Value::Int(1));
    let big = g.function(Function::Gt(n, one)).unwrap();
    let big_rows = g.filter(events, big).unwrap();
    let big_flag = g.select_column(big_rows, "flag").unwrap();
    assert_eq!(g.filter(flagged, big_flag), Err(QueryModelError::DomainMismatch));
    // a filtered frame's column with the unfiltered one: different domains
    let later_n = g.select_column(later, "n").unwrap();
    assert_eq!(g.function(Function::Add(later_n, n)), Err(QueryModelError::DomainMismatch));
}

#[test]
fn sort_and_pick_rules() {
    let Fixture { mut g, events, patients, .. } = fixture();
    assert_eq!(g.pick_one_row_per_patient(events, Position::First), Err(QueryModelError::UnsortedPick));
    let dob = g.select_column(patients, "date_of_birth").unwrap();
    assert_eq!(g.sort(events, dob), Err(QueryModelError::SortByConstant));
    let flag = g.select_column(events, "flag").unwrap();
    assert!(g.sort(events, flag).is_err(), "bools are not sortable");
    let d = g.select_column(events, "date").unwrap();
    let sorted = g.sort(events, d).unwrap();
    // a filter of a sorted frame is still sorted
    let filtered = g.filter(sorted, flag).unwrap();
    let last = g.pick_one_row_per_patient(filtered, Position::Last).unwrap();
    let last_date = g.select_column(last, "date").unwrap();
    assert!(g.is_patient_level(last_date));
    assert!(matches!(g.select_column(last, "nope"), Err(QueryModelError::UnknownColumn { .. })));
}

#[test]
fn aggregation_rules() {
    let Fixture { mut g, patients, .. } = fixture();
    let dob = g.select_column(patients, "date_of_birth").unwrap();
    assert_eq!(g.aggregate(AggregateByPatient::Max(dob)), Err(QueryModelError::PatientDomain));
    // Exists and Count take patient frames too
    assert!(g.aggregate(AggregateByPatient::Exists(patients)).is_ok());
    assert!(g.aggregate(AggregateByPatient::Count(patients)).is_ok());
}

#[test]
fn case_rules() {
    let Fixture { mut g, events, patients, .. } = fixture();
    let exists = g.aggregate(AggregateByPatient::Exists(events)).unwrap();
    let one = g.value(Value::Int(1));
    let text = g.value(Value::Str("x".into()));
    assert!(g.case(vec![(exists, Some(one))], Some(text)).is_err());
    assert!(g.case(vec![(exists, None)], None).is_err());
    let c = g.case(vec![(exists, Some(one)), (exists, None)], None).unwrap();
    assert_eq!(g.type_of(c), Some(&Type::Int));
    let sex = g.select_column(patients, "sex").unwrap();
    assert!(g.case(vec![(sex, Some(one))], None).is_err(), "conditions must be bool");
}

#[test]
fn or_over_five_thousand_codes_is_one_flat_node() {
    let Fixture { mut g, events, .. } = fixture();
    let code = g.select_column(events, "code").unwrap();
    let started = std::time::Instant::now();
    let contains: Vec<NodeId> = (0..5000)
        .map(|i| {
            let c = g.value(Value::Str(format!("X{i:04}")));
            g.function(Function::StringContains(code, c)).unwrap()
        })
        .collect();
    let any = g.function(Function::Or(contains)).unwrap();
    let filtered = g.filter(events, any).unwrap();
    g.aggregate(AggregateByPatient::Exists(filtered)).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[test]
fn a_left_deep_or_chain_is_flattened() {
    // What `functools.reduce(operator.or_, ...)` in a definition builds. Each step copies
    // the previous arguments (quadratic), so the interpreter's own `contains_any_of` builds
    // one n-ary Or instead; a user's reduce over a large list still works.
    let Fixture { mut g, events, .. } = fixture();
    let code = g.select_column(events, "code").unwrap();
    let mut acc: Option<NodeId> = None;
    for i in 0..1000 {
        let c = g.value(Value::Str(format!("X{i:04}")));
        let contains = g.function(Function::StringContains(code, c)).unwrap();
        acc = Some(match acc {
            None => contains,
            Some(prev) => g.function(Function::Or(vec![prev, contains])).unwrap(),
        });
    }
    let Node::Function(Function::Or(args)) = g.node(acc.unwrap()) else { panic!("not an Or") };
    assert_eq!(args.len(), 1000);
    // And inside Or (and the reverse) is not flattened: it means something else.
    let flag = g.select_column(events, "flag").unwrap();
    let t = g.value(Value::Bool(true));
    let both = g.function(Function::And(vec![flag, t])).unwrap();
    let either = g.function(Function::Or(vec![both, flag])).unwrap();
    let Node::Function(Function::Or(args)) = g.node(either) else { panic!("not an Or") };
    assert_eq!(args, &vec![both, flag]);
}

#[test]
fn dataset_validation() {
    let Fixture { mut g, events, patients, .. } = fixture();
    let exists = g.aggregate(AggregateByPatient::Exists(events)).unwrap();
    let d = g.select_column(events, "date").unwrap();
    let sex = g.select_column(patients, "sex").unwrap();
    let mut ds = Dataset::default();
    assert!(ds.validate(&g).is_err(), "no population");
    ds.population = Some(sex);
    assert!(ds.validate(&g).is_err(), "population not bool");
    ds.population = Some(exists);
    for i in 0..500 {
        ds.variables.push((format!("v{i}"), sex));
    }
    assert!(ds.validate(&g).is_ok());
    ds.variables.push(("event_date".into(), d));
    assert!(ds.validate(&g).is_err(), "event-level variable");
}

#[test]
fn tables_are_declared_once() {
    let mut g = Graph::new();
    let table = schema("t", vec![column("a", Type::Int)], false);
    let a = g.declare_table(table.clone()).unwrap();
    assert_eq!(g.declare_table(table).unwrap(), a);
    // Two modules' versions of one table (core and tpp `clinical_events`) read the same
    // data but are different tables, as in ehrQL.
    let other = schema("t", vec![column("b", Type::Int)], false);
    let b = g.declare_table(other).unwrap();
    assert_ne!(a, b);
    assert_eq!(g.table(b).name, "t");
    let patient_table = schema("p", vec![], true);
    let p = g.declare_table(patient_table).unwrap();
    assert!(g.select_table(p).is_err());
}

#[test]
fn inline_patient_tables() {
    let mut g = Graph::new();
    let t = g.declare_table(schema("inline", vec![column("score", Type::Int)], true)).unwrap();
    let frame = g.inline_patient_table(t, vec![(2, vec![Some(Value::Int(5))]), (1, vec![None])]).unwrap();
    let Node::InlinePatientTable { rows, .. } = g.node(frame).clone() else { panic!() };
    assert_eq!(g.inline_rows(rows)[0][0], Some(Value::Int(1)), "rows sorted by patient");
    assert!(g.inline_patient_table(t, vec![(1, vec![None]), (1, vec![None])]).is_err());
    assert!(g.inline_patient_table(t, vec![(1, vec![Some(Value::Str("x".into()))])]).is_err());
}
