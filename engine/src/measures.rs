//! ehrQL's measures (ehrql.md §6.4): for each interval and measure, the sums of numerator and
//! denominator per group over the patients in the denominator, in ehrQL's row order, then
//! disclosure control; and `--dummy-data-file` measures tables (docs/measures.md).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use std::hash::{Hash, Hasher};

use hashbrown::HashTable;
use rustc_hash::FxHashMap;

use quarry_queries::qm::{Float, Graph, NodeId, Value};
use quarry_queries::semantics::{EvalError, Scalar};
use quarry_queries::spec::{MeasureDef, MeasuresSpec};

use crate::column::Array;
use crate::columnar::{Partition, Series};
use crate::columns::{ColumnKind, ColumnSpec};
use crate::output::Table;
use crate::reference::Evaluator;
use crate::store::{InputError, Store};

/// A series' counts (`as_count`) slot by slot.
fn series_counts(series: Option<Series>, len: usize) -> Vec<i64> {
    match series {
        None => vec![0; len],
        Some(Series::Same(v)) => vec![as_count(v); len],
        Some(Series::Each(a @ Array::Bool(v, _))) => (0..len).map(|i| i64::from(a.is_valid(i) && v.value(i))).collect(),
        Some(Series::Each(a @ Array::Int(v, _))) => (0..len).map(|i| if a.is_valid(i) { v[i] } else { 0 }).collect(),
        Some(Series::Each(a)) => (0..len).map(|i| as_count(&a.get(i))).collect(),
    }
}

fn as_count(v: &Scalar) -> i64 {
    match v {
        Some(Value::Bool(b)) => *b as i64,
        Some(Value::Int(i)) => *i,
        _ => 0,
    }
}

/// ehrQL's default disclosure control: counts ≤ 7 become 0, others round to the nearest 5
/// (an integer over 5 is never halfway, so Python's rounding to even never differs).
pub fn round_count(n: i64) -> i64 {
    if n <= 7 { 0 } else { ((n as f64 / 5.0).round() as i64) * 5 }
}

/// ehrQL's `apply_sdc_to_measure_results`, when the definition has not disabled disclosure
/// control: numerator and denominator rounded (`round_count`), the ratio recomputed from
/// them (empty when the denominator rounds to 0). Applied to evaluated measures and to the
/// rows of a `--dummy-data-file` alike. ehrQL asserts that every count is a non-negative
/// integer (a NULL or negative count stops it), and so does this: the error names the row.
fn apply_disclosure_control(spec: &MeasuresSpec, table: &mut Table) -> Result<(), String> {
    if !spec.disclosure_control {
        return Ok(());
    }
    table.rows.iter_mut().enumerate().try_for_each(|(i, row)| control_row(i, row))
}

/// Disclosure control on row `i` (from 0) of the measures table (`apply_disclosure_control`).
fn control_row(i: usize, row: &mut [Scalar]) -> Result<(), String> {
    let mut rounded = [0; 2];
    for (k, column) in [(0, "numerator"), (1, "denominator")] {
        rounded[k] = match &row[4 + k] {
            Some(Value::Int(n)) if *n >= 0 => round_count(*n),
            other => {
                return Err(format!(
                    "disclosure control needs counts of 0 or more, but row {} of measure {} has {column} {} \
                     (ehrQL stops here too, with an AssertionError or TypeError)",
                    i + 1,
                    crate::output::render_value(&row[0]),
                    match other {
                        None => "NULL".to_string(),
                        v => crate::output::render_value(v),
                    }
                ));
            }
        };
    }
    let [num, den] = rounded;
    row[3] = (den != 0).then(|| Value::Float(Float(num as f64 / den as f64)));
    row[4] = Some(Value::Int(num));
    row[5] = Some(Value::Int(den));
    Ok(())
}

/// The nodes a measures run evaluates per patient: numerators, denominators and group-by
/// series, each once.
pub fn measures_outputs(spec: &MeasuresSpec) -> Vec<NodeId> {
    let mut outputs: Vec<NodeId> = vec![];
    for m in &spec.measures {
        for n in [m.numerator, m.denominator].into_iter().chain(m.group_by.iter().map(|(_, n)| *n)) {
            if !outputs.contains(&n) {
                outputs.push(n);
            }
        }
    }
    outputs
}

/// All measures in one table: `measure, interval_start, interval_end, ratio, numerator,
/// denominator`, then every group-by column — by the reference evaluator, patient by patient
/// (store and inline patients, in id order), interval by interval. (The columnar engine reads
/// any source: [`stream_measures`].)
pub fn evaluate_measures(graph: &Graph, spec: &MeasuresSpec, store: &Store) -> Result<Table, EvalError> {
    let outputs = measures_outputs(spec);
    let mut reference = Evaluator::new(graph, &outputs);
    let mut patients: BTreeSet<i64> = store.patients.keys().copied().collect();
    patients.extend(reference.inline_patients());
    aggregate_measures(graph, spec, |(start, end), add| {
        reference.set_param("interval_start_date", Some(Value::Date(start)));
        reference.set_param("interval_end_date", Some(Value::Date(end)));
        for &p in &patients {
            let values = reference.patient(p, store.patients.get(&p))?;
            add(&outputs.iter().map(|n| values.scalar(*n)).collect::<Vec<_>>());
        }
        Ok(())
    })
}

/// One of ehrQL's `MeasureCalculator`s: the measures that share a denominator and a set of
/// intervals, evaluated together as one `GroupedSum` per interval.
struct Calculator<'s> {
    denominator: NodeId,
    intervals: &'s [(jiff::civil::Date, jiff::civil::Date)],
    /// The measures, in definition order, each with its numerator's index in `numerators`
    /// and its grouping level (`get_grouping_level_as_int` over `names`).
    measures: Vec<(&'s MeasureDef, usize, u64)>,
    /// The distinct numerators (ehrQL's numerator columns).
    numerators: Vec<NodeId>,
    /// The group-by names of all the measures, in order of first appearance.
    names: Vec<String>,
    /// The distinct group-by series, in order of first appearance in `sets` (the engine's
    /// own list of group columns; it matches `names` unless two names share a series).
    columns: Vec<NodeId>,
    /// The grouping sets in order of first appearance: the series a measure groups by, in
    /// its `group_by` order, with the set's grouping id over `columns` and the numerators
    /// summed for it.
    sets: Vec<(Vec<NodeId>, u64, Vec<usize>)>,
}

/// ehrQL's `get_grouping_level_as_int`: one bit per group column, most significant first,
/// set when the column is not grouped on.
fn grouping_level<T: PartialEq>(all: &[T], subset: &[T]) -> u64 {
    all.iter().fold(0, |level, g| level << 1 | u64::from(!subset.contains(g)))
}

fn push_distinct<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

impl<'s> Calculator<'s> {
    /// ehrQL's grouping (`get_measure_results`): by (denominator, intervals), in order of
    /// first appearance.
    fn group(spec: &'s MeasuresSpec) -> Vec<Calculator<'s>> {
        let mut calculators: Vec<Calculator> = vec![];
        for m in &spec.measures {
            let i = match calculators.iter().position(|c| c.denominator == m.denominator && c.intervals == m.intervals.as_slice()) {
                Some(i) => i,
                None => {
                    calculators.push(Calculator {
                        denominator: m.denominator,
                        intervals: &m.intervals,
                        measures: vec![],
                        numerators: vec![],
                        names: vec![],
                        columns: vec![],
                        sets: vec![],
                    });
                    calculators.len() - 1
                }
            };
            let c = &mut calculators[i];
            for (name, _) in &m.group_by {
                push_distinct(&mut c.names, name.clone());
            }
            let numerator = push_distinct(&mut c.numerators, m.numerator);
            let set: Vec<NodeId> = m.group_by.iter().map(|(_, n)| *n).collect();
            match c.sets.iter_mut().find(|(s, ..)| *s == set) {
                Some((.., numerators)) => {
                    push_distinct(numerators, numerator);
                }
                None => c.sets.push((set, 0, vec![numerator])),
            }
            c.measures.push((m, numerator, 0));
        }
        for c in &mut calculators {
            for (set, ..) in &c.sets {
                for n in set {
                    push_distinct(&mut c.columns, *n);
                }
            }
            for (set, id, _) in &mut c.sets {
                *id = grouping_level(&c.columns, set);
            }
            for (m, _, level) in &mut c.measures {
                let names: Vec<String> = m.group_by.iter().map(|(g, _)| g.clone()).collect();
                *level = grouping_level(&c.names, &names);
            }
        }
        calculators
    }
}

/// Where the definition meets ehrQL's grouping quirks (see `aggregate_measures`), in words,
/// for warnings: quarry reproduces ehrQL's output, but the user likely did not mean it.
pub fn grouping_quirks(spec: &MeasuresSpec) -> Vec<String> {
    let mut out = vec![];
    for c in Calculator::group(spec) {
        let measures_of = |set: &[NodeId]| -> Vec<&str> {
            c.measures
                .iter()
                .filter(|(m, ..)| m.group_by.iter().map(|(_, n)| *n).eq(set.iter().copied()))
                .map(|(m, ..)| m.name.as_str())
                .collect()
        };
        for (i, (a, id, _)) in c.sets.iter().enumerate() {
            // The same series in another order (a series under two names is the next warning).
            let distinct = |set: &[NodeId]| set.iter().enumerate().all(|(k, n)| !set[..k].contains(n));
            for (b, ..) in c.sets[i + 1..].iter().filter(|(b, other, _)| other == id && distinct(a) && distinct(b)) {
                out.push(format!(
                    "measures {} and {} group by the same columns in different orders: ehrQL then counts each of their groups once per order (so their denominators are multiplied), and quarry gives ehrQL's numbers; list the columns in one order",
                    measures_of(a).join(", "),
                    measures_of(b).join(", ")
                ));
            }
        }
        for n in &c.columns {
            let names: Vec<&str> = c
                .names
                .iter()
                .filter(|g| c.measures.iter().any(|(m, ..)| m.group_by.iter().any(|(k, v)| k == *g && v == n)))
                .map(String::as_str)
                .collect();
            if names.len() > 1 {
                out.push(format!(
                    "the group_by columns {} are one series: ehrQL then loses or mislabels rows of the measures that group by them, and quarry gives ehrQL's rows; group by it under one name",
                    names.join(", ")
                ));
            }
        }
    }
    out
}

/// One interval's `GroupedSum` of one calculator: per (group values over the calculator's
/// columns, grouping id), the denominator's and each numerator's sums. ehrQL goes grouping
/// set by grouping set, each over all patients, into one dict; patients come here one at a
/// time, so each set keeps the order its groups were first met in, and `in_order` replays
/// ehrQL's insertion order. Group values are [`Codes`]; rows' keys and sums sit in flat
/// arrays, found by hashing a few integers, so a new group costs no allocation of its own.
struct Sums {
    /// Key length (the calculator's columns) and sums per row (denominator, numerators).
    width: usize,
    sums: usize,
    keys: Vec<u32>,
    ids: Vec<u64>,
    counts: Vec<i64>,
    /// Rows by (group codes, grouping id): grouping sets with the same id share rows.
    index: HashTable<u32>,
    /// Per grouping set: rows by group codes, and its rows in first-met order.
    by_set: Vec<HashTable<u32>>,
    order: Vec<Vec<u32>>,
}

/// Row `r`'s key among keys of `width` codes each.
fn key_at(keys: &[u32], width: usize, r: u32) -> &[u32] {
    &keys[r as usize * width..(r as usize + 1) * width]
}

fn key_hash(key: &[u32], id: Option<u64>) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

impl Sums {
    fn new(sets: usize, width: usize, sums: usize) -> Sums {
        Sums {
            width,
            sums,
            keys: vec![],
            ids: vec![],
            counts: vec![],
            index: HashTable::new(),
            by_set: (0..sets).map(|_| HashTable::new()).collect(),
            order: vec![vec![]; sets],
        }
    }

    fn key(&self, row: usize) -> &[u32] {
        key_at(&self.keys, self.width, row as u32)
    }

    fn counts(&mut self, row: usize) -> &mut [i64] {
        &mut self.counts[row * self.sums..(row + 1) * self.sums]
    }

    /// The row of the group `key` of grouping set `set` (grouping id `id`), made on first use.
    fn row_index(&mut self, set: usize, key: &[u32], id: u64) -> usize {
        let Sums { width, keys, ids, counts, index, by_set, order, sums } = self;
        let w = *width;
        let key_of = |r: u32| key_at(keys, w, r);
        let h = key_hash(key, None);
        if let Some(&r) = by_set[set].find(h, |&r| key_of(r) == key) {
            return r as usize;
        }
        let with_id = key_hash(key, Some(id));
        let r = match index.find(with_id, |&r| ids[r as usize] == id && key_of(r) == key) {
            Some(&r) => r,
            None => {
                let r = ids.len() as u32;
                keys.extend_from_slice(key);
                ids.push(id);
                counts.resize(counts.len() + *sums, 0);
                index.insert_unique(with_id, r, |&r| key_hash(key_at(keys, w, r), Some(ids[r as usize])));
                r
            }
        };
        by_set[set].insert_unique(h, r, |&r| key_hash(key_at(keys, w, r), None));
        order[set].push(r);
        r as usize
    }

    /// Adds the sums of later patients: their groups not yet met join each set's order after
    /// this one's, as they would have had the patients been added one by one.
    fn merge(&mut self, later: Sums) {
        let mut global = vec![usize::MAX; later.ids.len()];
        for (set, order) in later.order.iter().enumerate() {
            for &r in order {
                global[r as usize] = self.row_index(set, later.key(r as usize), later.ids[r as usize]);
            }
        }
        for (r, counts) in later.counts.chunks(later.sums).enumerate() {
            for (total, n) in self.counts(global[r]).iter_mut().zip(counts) {
                *total += n;
            }
        }
    }

    /// The rows (group codes, grouping id, sums) in the order ehrQL's dict has them.
    fn in_order(&self) -> impl Iterator<Item = (&[u32], u64, &[i64])> {
        let mut seen = vec![false; self.ids.len()];
        self.order
            .iter()
            .flatten()
            .filter(move |&&r| !std::mem::replace(&mut seen[r as usize], true))
            .map(|&r| (self.key(r as usize), self.ids[r as usize], &self.counts[r as usize * self.sums..(r as usize + 1) * self.sums]))
    }
}

/// The code of a NULL group value.
const NULL_CODE: u32 = 0;

/// Group values as small integers: every distinct value of any group-by series gets one
/// code, shared by all partitions (so their sums merge by code), and is decoded once, when
/// the table is written.
struct Codes {
    index: FxHashMap<Scalar, u32>,
    values: Vec<Scalar>,
}

impl Codes {
    fn new() -> Codes {
        Codes { index: FxHashMap::from_iter([(None, NULL_CODE)]), values: vec![None] }
    }

    fn code(&mut self, v: &Scalar) -> u32 {
        if let Some(&c) = self.index.get(v) {
            return c;
        }
        self.values.push(v.clone());
        self.index.insert(v.clone(), self.values.len() as u32 - 1);
        self.values.len() as u32 - 1
    }
}

/// A calculator's nodes as positions in a patient's values (`measures_outputs`).
struct Slots {
    denominator: usize,
    numerators: Vec<usize>,
    /// Per grouping set, per calculator column: the column's position if the set groups by
    /// it (else the group value is NULL, as in ehrQL's rows).
    sets: Vec<Vec<Option<usize>>>,
}

/// The measures table from per-patient values: `patients` is called once per distinct
/// interval with a sink for each patient's values of `measures_outputs(spec)`, patients in id
/// order.
///
/// Rows come in ehrQL's order (`get_measure_results` over the in-memory engine's
/// `GroupedSum`): measures grouped by (denominator, intervals) in order of first appearance;
/// per group, interval by interval; per interval, grouping set by grouping set (in order of
/// first appearance), the groups in the order their first patient is met; per group, each
/// measure of that grouping set in definition order. ehrQL's quirks are kept: measures that
/// group by the same series in different orders share groups that count the denominator once
/// per order, and a series grouped under two names mismatches its levels (see
/// docs/measures.md).
pub fn aggregate_measures<E>(
    graph: &Graph,
    spec: &MeasuresSpec,
    mut patients: impl FnMut((jiff::civil::Date, jiff::civil::Date), &mut dyn FnMut(&[Scalar])) -> Result<(), E>,
) -> Result<Table, E> {
    let measures = Measures::new(spec);
    let mut sums = measures.sums();
    for (k, &interval) in measures.intervals().iter().enumerate() {
        patients(interval, &mut |values| measures.add(&mut sums, k, values))?;
    }
    Ok(measures.table(graph, sums))
}

/// The parameter values of an interval (`interval_start_date`, `interval_end_date`).
pub fn interval_parameters((start, end): (jiff::civil::Date, jiff::civil::Date)) -> HashMap<String, Scalar> {
    HashMap::from([
        ("interval_start_date".to_string(), Some(Value::Date(start))),
        ("interval_end_date".to_string(), Some(Value::Date(end))),
    ])
}

/// How a measures definition is summed, apart from the data: the calculators, every distinct
/// interval, and where each output node's value sits in a patient's values. Patients' values
/// are added into [`MeasureSums`] interval by interval, in any order of intervals, as long as
/// each interval sees its patients in id order; sums of consecutive runs of patients merge
/// (`merge`) in id order into the same result, so partitions can be summed in parallel.
pub struct Measures<'s> {
    spec: &'s MeasuresSpec,
    calculators: Vec<Calculator<'s>>,
    slots: Vec<Slots>,
    intervals: Vec<(jiff::civil::Date, jiff::civil::Date)>,
    /// Per interval, the calculators that have it.
    active: Vec<Vec<usize>>,
    /// Per position in a patient's values: whether it is summed (a numerator or
    /// denominator) and whether it is grouped by.
    counted: Vec<bool>,
    grouped: Vec<bool>,
    codes: Mutex<Codes>,
    /// `measures_outputs`: the nodes whose values a patient's positions hold.
    outputs: Vec<NodeId>,
}

/// Per interval, per calculator that has it, its `GroupedSum` so far.
pub struct MeasureSums(Vec<Vec<Sums>>);

impl MeasureSums {
    /// Whether any sum is negative: only then can disclosure control refuse a row (the sums
    /// are integers, never NULL).
    fn any_negative(&self) -> bool {
        self.0.iter().flatten().any(|s| s.counts.iter().any(|&c| c < 0))
    }
}

impl<'s> Measures<'s> {
    pub fn new(spec: &'s MeasuresSpec) -> Measures<'s> {
        let calculators = Calculator::group(spec);
        let mut intervals: Vec<(jiff::civil::Date, jiff::civil::Date)> =
            calculators.iter().flat_map(|c| c.intervals.iter().copied()).collect();
        intervals.sort();
        intervals.dedup();
        let active = intervals
            .iter()
            .map(|interval| (0..calculators.len()).filter(|&i| calculators[i].intervals.contains(interval)).collect())
            .collect();
        let outputs = measures_outputs(spec);
        let position: HashMap<NodeId, usize> = outputs.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let (mut counted, mut grouped) = (vec![false; outputs.len()], vec![false; outputs.len()]);
        let slots = calculators
            .iter()
            .map(|c| {
                let slots = Slots {
                    denominator: position[&c.denominator],
                    numerators: c.numerators.iter().map(|n| position[n]).collect(),
                    sets: c.sets.iter().map(|(set, ..)| c.columns.iter().map(|g| set.contains(g).then(|| position[g])).collect()).collect(),
                };
                for &p in slots.numerators.iter().chain([&slots.denominator]) {
                    counted[p] = true;
                }
                for &p in slots.sets.iter().flatten().flatten() {
                    grouped[p] = true;
                }
                slots
            })
            .collect();
        Measures { spec, calculators, slots, intervals, active, counted, grouped, codes: Mutex::new(Codes::new()), outputs }
    }

    /// Every distinct interval, in order: each is evaluated once, for every calculator that
    /// has it.
    pub fn intervals(&self) -> &[(jiff::civil::Date, jiff::civil::Date)] {
        &self.intervals
    }

    /// The parameter values of each interval (`interval_start_date`, `interval_end_date`).
    pub fn parameters(&self) -> Vec<HashMap<String, Scalar>> {
        self.intervals.iter().map(|&interval| interval_parameters(interval)).collect()
    }

    /// Empty sums.
    pub fn sums(&self) -> MeasureSums {
        let sums = |c: &Calculator| Sums::new(c.sets.len(), c.columns.len(), c.numerators.len() + 1);
        MeasureSums(self.active.iter().map(|a| a.iter().map(|&c| sums(&self.calculators[c])).collect()).collect())
    }

    /// Adds one patient's values of `measures_outputs(spec)` for interval `k`.
    pub fn add(&self, sums: &mut MeasureSums, k: usize, values: &[Scalar]) {
        let counts: Vec<i64> = values.iter().map(as_count).collect();
        let codes: Vec<u32> = {
            let mut codes = self.codes.lock().expect("group codes");
            values.iter().zip(&self.grouped).map(|(v, &g)| if g { codes.code(v) } else { NULL_CODE }).collect()
        };
        self.add_patient(sums, k, |p| counts[p], |p| codes[p], &mut vec![]);
    }

    /// Adds every patient of a columnar partition evaluated for interval `k`: the summed
    /// series as counts and the grouped ones as codes, column by column, then patient by
    /// patient in id order.
    pub fn add_partition(&self, sums: &mut MeasureSums, k: usize, p: &Partition) {
        let outputs = &self.outputs;
        let len = p.len();
        let series = |i: usize| p.series(outputs[i]);
        let counts: Vec<Vec<i64>> =
            (0..outputs.len()).map(|i| if self.counted[i] { series_counts(series(i), len) } else { vec![] }).collect();
        let codes: Vec<Vec<u32>> =
            (0..outputs.len()).map(|i| if self.grouped[i] { self.series_codes(series(i), len) } else { vec![] }).collect();
        let mut key = vec![];
        for i in 0..len {
            self.add_patient(sums, k, |p| counts[p][i], |p| codes[p][i], &mut key);
        }
    }

    /// One patient: `count` and `code` give its value at a position of `measures_outputs` as
    /// a count (`as_count`) and as a group code.
    fn add_patient(&self, sums: &mut MeasureSums, k: usize, count: impl Fn(usize) -> i64, code: impl Fn(usize) -> u32, key: &mut Vec<u32>) {
        for (&c, sums) in self.active[k].iter().zip(sums.0[k].iter_mut()) {
            let (slots, calculator) = (&self.slots[c], &self.calculators[c]);
            // ehrQL counts a patient in a denominator of True or of an integer over 0.
            let den = count(slots.denominator);
            if den <= 0 {
                continue;
            }
            for (s, (columns, (_, id, numerators))) in slots.sets.iter().zip(&calculator.sets).enumerate() {
                key.clear();
                key.extend(columns.iter().map(|p| p.map_or(NULL_CODE, &code)));
                let row = sums.row_index(s, key, *id);
                let counts = sums.counts(row);
                counts[0] += den;
                for &n in numerators {
                    counts[n + 1] += count(slots.numerators[n]);
                }
            }
        }
    }

    /// The group codes of a series, slot by slot: a text column's codes are found once per
    /// dictionary key it uses, other values once per distinct value in the partition.
    fn series_codes(&self, series: Option<Series>, len: usize) -> Vec<u32> {
        let codes = || self.codes.lock().expect("group codes");
        match series {
            None => vec![NULL_CODE; len],
            Some(Series::Same(v)) => vec![codes().code(v); len],
            Some(Series::Each(Array::Text(keys, dict, nulls))) => {
                let mut of_key = vec![u32::MAX; dict.values.len()];
                (0..len)
                    .map(|i| {
                        if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                            return NULL_CODE;
                        }
                        let key = keys[i] as usize;
                        if of_key[key] == u32::MAX {
                            of_key[key] = codes().code(&Some(dict.values[key].clone()));
                        }
                        of_key[key]
                    })
                    .collect()
            }
            Some(Series::Each(a)) => {
                // Booleans, integers, floats and dates are looked up by their bits (NULL apart),
                // so a value is made and hashed once per distinct value, not once per patient.
                // Bits are what values compare by (`Float` too), so the codes are the same.
                let bits = |i: usize| -> Option<Option<u64>> {
                    if !a.is_valid(i) {
                        return Some(None);
                    }
                    Some(Some(match a {
                        Array::Bool(v, _) => v.value(i) as u64,
                        Array::Int(v, _) => v[i] as u64,
                        Array::Float(v, _) => v[i].to_bits(),
                        Array::Date(v, _) => v[i] as u32 as u64,
                        Array::Text(..) | Array::Values(_) => return None,
                    }))
                };
                let mut typed: FxHashMap<Option<u64>, u32> = FxHashMap::default();
                let mut other: FxHashMap<Scalar, u32> = FxHashMap::default();
                (0..len)
                    .map(|i| match bits(i) {
                        Some(key) => *typed.entry(key).or_insert_with(|| codes().code(&a.get(i))),
                        None => {
                            let v = a.get(i);
                            match other.get(&v) {
                                Some(&c) => c,
                                None => {
                                    let c = codes().code(&v);
                                    other.insert(v, c);
                                    c
                                }
                            }
                        }
                    })
                    .collect()
            }
        }
    }

    /// Adds `later` (the sums of patients after all of `into`'s) into `into`: intervals in
    /// parallel, as they share nothing.
    pub fn merge(&self, into: &mut MeasureSums, later: MeasureSums) {
        use rayon::prelude::*;
        into.0.par_iter_mut().zip(later.0).for_each(|(into, later)| {
            for (into, later) in into.iter_mut().zip(later) {
                into.merge(later);
            }
        });
    }

    /// The measures table (before disclosure control).
    pub fn table(&self, graph: &Graph, sums: MeasureSums) -> Table {
        let mut rows = vec![];
        self.each_row(sums, |row| {
            rows.push(row);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|e| match e {});
        Table { name: "measures".into(), columns: measures_columns(graph, self.spec, &group_columns(self.spec)), rows }
    }

    /// The measures table's rows (before disclosure control), in order, each handed to `each`
    /// as it is made (the table of a long run is a million rows or more).
    pub fn each_row<E>(&self, sums: MeasureSums, mut each: impl FnMut(Vec<Scalar>) -> Result<(), E>) -> Result<(), E> {
        let spec = self.spec;
        let group_columns = group_columns(spec);
        let mut by_interval: HashMap<(usize, (jiff::civil::Date, jiff::civil::Date)), Sums> = HashMap::new();
        for ((interval, active), sums) in self.intervals.iter().zip(&self.active).zip(sums.0) {
            for (&c, s) in active.iter().zip(sums) {
                by_interval.insert((c, *interval), s);
            }
        }
        let codes = self.codes.lock().expect("group codes");
        for (i, c) in self.calculators.iter().enumerate() {
            for &(start, end) in c.intervals {
                for (key, id, counts) in by_interval[&(i, (start, end))].in_order() {
                    // ehrQL's row: the numerators' sums then the group values; a measure's
                    // group values are the row's last `names.len()` cells (Python's slice).
                    let row: Vec<Scalar> = counts[1..]
                        .iter()
                        .map(|n| Some(Value::Int(*n)))
                        .chain(key.iter().map(|&c| codes.values[c as usize].clone()))
                        .collect();
                    let from = row.len() as isize - c.names.len() as isize;
                    let groups = &row[if from >= 0 { from } else { (row.len() as isize + from).max(0) } as usize..];
                    for (m, numerator, level) in &c.measures {
                        if *level != id {
                            continue;
                        }
                        let num = counts[numerator + 1];
                        let den = counts[0];
                        // Sized once: a table of a million rows grown cell by cell spends
                        // its time reallocating (and the kernel zeroing fresh pages).
                        let mut out: Vec<Scalar> = Vec::with_capacity(6 + group_columns.len());
                        out.extend([
                            Some(Value::Str(m.name.clone())),
                            Some(Value::Date(start)),
                            Some(Value::Date(end)),
                            Some(Value::Float(Float(num as f64 / den as f64))),
                            Some(Value::Int(num)),
                            Some(Value::Int(den)),
                        ]);
                        for g in &group_columns {
                            out.push(c.names.iter().zip(groups).find(|(n, _)| *n == g).and_then(|(_, v)| v.clone()));
                        }
                        each(out)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Patients per partition for measures: every partition sums its patients into a table of
/// its own (per interval, measure and grouping set, every group it meets), merged into the
/// running totals in patient order, so the merges grow with the number of partitions times
/// the groups. At 1,000,000 patients × 24 months (benches/measures.sh) partitions of 32,768
/// took 33 s against 50 s with the datasets' 4,096, for 10 % more memory.
const MEASURES_PARTITION: usize = 32_768;

fn measures_evaluator<'g>(graph: &'g Graph, outputs: &[NodeId]) -> crate::columnar::Evaluator<'g> {
    let mut evaluator = crate::columnar::Evaluator::new(graph, outputs);
    evaluator.set_partition_size(crate::columnar::partition_size_or(MEASURES_PARTITION));
    evaluator
}

/// The measures over a round's (or a whole store's) patients `[lo, hi)` on the columnar
/// engine: each partition is read once and evaluated for every interval (only the nodes that
/// read the interval's dates again), and summed in parallel; the partitions' sums are merged
/// in patient order into `sums`.
pub fn add_columnar(
    measures: &Measures,
    evaluator: &crate::columnar::Evaluator,
    parameters: &[HashMap<String, Scalar>],
    batch: &crate::batch::Batch,
    range: (Option<i64>, Option<i64>),
    sums: &mut MeasureSums,
) -> Result<(), EvalError> {
    evaluator.run_range_per_params(
        batch,
        range.0,
        range.1,
        parameters,
        || measures.sums(),
        |local, k, p| measures.add_partition(local, k, p),
        |local| {
            measures.merge(sums, local);
            Ok::<(), EvalError>(())
        },
    )
}

/// The measures over a source's tables (a backend, or tables in memory), read once, round
/// by round (each round's patients evaluated for every interval, `add_columnar`), with
/// disclosure control, written to `target` as the rows are made (`write_measures`); returns
/// the number of rows. `progress` is told the patients read so far.
pub fn stream_measures(
    graph: &Graph,
    spec: &MeasuresSpec,
    source: &mut dyn crate::source::Source,
    target: &crate::output::Target,
    mut progress: impl FnMut(usize),
) -> Result<usize, crate::StreamError> {
    let measures = Measures::new(spec);
    let parameters = measures.parameters();
    let evaluator = measures_evaluator(graph, &measures_outputs(spec));
    let mut sums = measures.sums();
    let mut lo = None;
    source.each_round(crate::round_patients_of(evaluator.partition_size()), &mut |batch, hi, read| -> Result<(), crate::StreamError> {
        add_columnar(&measures, &evaluator, &parameters, &batch, (lo, hi), &mut sums)?;
        progress(read);
        lo = hi;
        Ok(())
    })?;
    write_measures(graph, &measures, sums, target).map_err(crate::StreamError::Output)
}

/// Rows of the measures table rendered and written at a time.
const WRITE_ROWS: usize = 65_536;

/// [`WRITE_ROWS`], or `QUARRY_WRITE_ROWS` (tests set it low to write in many chunks).
fn write_rows() -> usize {
    std::env::var("QUARRY_WRITE_ROWS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(WRITE_ROWS)
}

/// Writes the measures of `sums` to `target` (one table, or one per measure for a directory,
/// as `per_measure_tables` splits them) with disclosure control, a chunk of rows at a time:
/// a million rows never sit in memory as values at once. Nothing is written when a row fails
/// disclosure control. Returns the number of rows of the (combined) table.
pub fn write_measures(graph: &Graph, measures: &Measures, sums: MeasureSums, target: &crate::output::Target) -> Result<usize, String> {
    let spec = measures.spec;
    let split = matches!(target, crate::output::Target::Directory(..));
    if spec.disclosure_control && sums.any_negative() {
        // Disclosure control may refuse a row: the whole table is checked before any output
        // is opened, as ehrQL checks it before writing (an unwritable output is then not
        // what the run reports).
        return write_table(spec, measures.table(graph, sums), target);
    }
    let combined = measures_columns(graph, spec, &group_columns(spec));
    let (layouts, keep): (Vec<crate::output::Layout>, Vec<Vec<usize>>) =
        if split { measure_layouts(spec, &combined).into_iter().unzip() } else { (vec![("measures".to_string(), combined)], vec![]) };
    let mut stream = crate::output::TableStream::open(target, &layouts)?;
    let encoder = stream.encoder();
    let mut pending: Vec<Vec<Vec<Scalar>>> = vec![vec![]; layouts.len()];
    let mut written = vec![false; layouts.len()];
    let (mut n, chunk) = (0, write_rows());
    let table_of: HashMap<&str, usize> = spec.measures.iter().enumerate().map(|(t, m)| (m.name.as_str(), t)).collect();
    measures.each_row(sums, |mut row| -> Result<(), String> {
        if spec.disclosure_control {
            control_row(n, &mut row)?;
        }
        n += 1;
        let t = if split {
            let Some(&t) = (match &row[0] {
                Some(Value::Str(name)) => table_of.get(name.as_str()),
                _ => None,
            }) else {
                return Ok(());
            };
            pending[t].push(keep[t].iter().map(|&i| row[i].clone()).collect());
            t
        } else {
            pending[0].push(row);
            0
        };
        if pending[t].len() == chunk {
            stream.write(t, encoder.chunk(std::mem::take(&mut pending[t])))?;
            written[t] = true;
        }
        Ok(())
    })?;
    for (t, rows) in pending.into_iter().enumerate() {
        if !rows.is_empty() || !written[t] {
            stream.write(t, encoder.chunk(rows))?;
        }
    }
    stream.finish()?;
    Ok(n)
}

/// ehrQL's `get_all_group_by_columns`: every measure's group-by names, in order of first
/// appearance.
fn group_columns(spec: &MeasuresSpec) -> Vec<String> {
    let mut names: Vec<String> = vec![];
    for m in &spec.measures {
        for (g, _) in &m.group_by {
            push_distinct(&mut names, g.clone());
        }
    }
    names
}

/// ehrQL's `get_column_specs_for_measures`.
fn measures_columns(graph: &Graph, spec: &MeasuresSpec, group_columns: &[String]) -> Vec<ColumnSpec> {
    let names = spec.measures.iter().map(|m| Value::Str(m.name.clone())).collect();
    let int = || ColumnKind::Int { min: None, max: None };
    let mut out = vec![
        ColumnSpec { nullable: false, categories: Some(names), ..ColumnSpec::new("measure", ColumnKind::Str) },
        ColumnSpec { nullable: false, ..ColumnSpec::new("interval_start", ColumnKind::Date) },
        ColumnSpec { nullable: false, ..ColumnSpec::new("interval_end", ColumnKind::Date) },
        ColumnSpec::new("ratio", ColumnKind::Float),
        ColumnSpec::new("numerator", int()),
        ColumnSpec::new("denominator", int()),
    ];
    for g in group_columns {
        let node = spec
            .measures
            .iter()
            .find_map(|m| m.group_by.iter().find(|(n, _)| n == g).map(|(_, node)| *node))
            .expect("a group column of some measure");
        out.push(ColumnSpec::of_series(graph, g, node));
    }
    out
}

/// ehrQL's `get_table_specs_for_measures`: a measure's columns, as indices into the combined
/// table's: all but `measure`, with only its own group-by columns, in its `group_by` order.
fn measure_columns(combined: &[ColumnSpec], m: &MeasureDef) -> Vec<usize> {
    (1..6).chain(m.group_by.iter().map(|(g, _)| combined.iter().position(|c| c.name == *g).expect("a group column"))).collect()
}

/// Splits the combined table into one table per measure (for `--output DIR:csv`): ehrQL's
/// `split_measure_results_into_tables`.
fn per_measure_tables(spec: &MeasuresSpec, combined: &Table) -> Vec<Table> {
    measure_layouts(spec, &combined.columns)
        .into_iter()
        .map(|((name, columns), keep)| {
            let rows = combined
                .rows
                .iter()
                .filter(|r| matches!(&r[0], Some(Value::Str(m)) if *m == name))
                .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
                .collect();
            Table { name, columns, rows }
        })
        .collect()
}

/// Per measure, its own table's name and columns, and where each column is among the
/// `combined` table's.
fn measure_layouts(spec: &MeasuresSpec, combined: &[ColumnSpec]) -> Vec<(crate::output::Layout, Vec<usize>)> {
    spec.measures
        .iter()
        .map(|m| {
            let keep = measure_columns(combined, m);
            ((m.name.clone(), keep.iter().map(|&i| combined[i].clone()).collect()), keep)
        })
        .collect()
}

/// Writes a whole measures table to `target` (one table, or one per measure for a
/// directory) after disclosure control; returns its number of rows.
pub fn write_table(spec: &MeasuresSpec, mut table: Table, target: &crate::output::Target) -> Result<usize, String> {
    apply_disclosure_control(spec, &mut table)?;
    let rows = table.rows.len();
    let tables = match target {
        crate::output::Target::Directory(..) => per_measure_tables(spec, &table),
        _ => vec![table],
    };
    crate::output::write_tables(target, tables)?;
    Ok(rows)
}

/// The file formats ehrQL reads a dummy data file in (`FILE_FORMATS`), and Parquet.
const DUMMY_FORMATS: &[&str] = &[".arrow", ".csv", ".csv.gz", ".parquet"];

/// ehrQL's `get_file_extension`.
fn extension(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let suffixes: Vec<&str> = name.trim_start_matches('.').split('.').skip(1).collect();
    match suffixes.as_slice() {
        [.., a, "gz"] => format!(".{a}.gz"),
        [.., last] => format!(".{last}"),
        [] => String::new(),
    }
}

/// `generate-measures --dummy-data-file`: ehrQL's `read_measure_results`. A file holds the
/// combined table (every column required, each value checked against the measures' column
/// specs); a directory holds one file per measure, named after it, in one format, with that
/// measure's columns (as `--output DIR:csv` writes them), read back in definition order. The
/// rows are kept in the file's order and written as they are (after disclosure control).
pub fn read_dummy_measures(graph: &Graph, spec: &MeasuresSpec, path: &Path) -> Result<Table, InputError> {
    let group_columns = group_columns(spec);
    let columns = measures_columns(graph, spec, &group_columns);
    let read = |file: &Path, columns: &[ColumnSpec]| {
        let ext = extension(file);
        if !DUMMY_FORMATS.contains(&ext.as_str()) {
            return Err(InputError(format!("Unsupported file type: {ext}")));
        }
        if !file.is_file() {
            return Err(InputError(format!("Missing file: {}", file.display())));
        }
        crate::store::read_dummy_dataset(file, columns)
    };
    if !path.is_dir() {
        let rows = read(path, &columns)?;
        return Ok(Table { name: "measures".into(), columns, rows });
    }
    // ehrQL's `get_extension_from_directory`: one data format among the directory's files.
    let mut found: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| InputError(format!("Cannot read {}: {e}", path.display())))?
        .filter_map(|e| e.ok())
        .map(|e| extension(&e.path()))
        .filter(|e| DUMMY_FORMATS.contains(&e.as_str()))
        .collect();
    found.sort();
    found.dedup();
    let ext = match found.as_slice() {
        [] => return Err(InputError(format!("No supported file formats found in: {}", path.display()))),
        [one] => one.clone(),
        many => return Err(InputError(format!("Found multiple file formats ({}) in: {}", many.join(", "), path.display()))),
    };
    let mut rows = vec![];
    for m in &spec.measures {
        let keep = measure_columns(&columns, m);
        let specs: Vec<ColumnSpec> = keep.iter().map(|&i| columns[i].clone()).collect();
        for r in read(&path.join(format!("{}{ext}", m.name)), &specs)? {
            let mut row: Vec<Scalar> = vec![None; columns.len()];
            row[0] = Some(Value::Str(m.name.clone()));
            for (&i, v) in keep.iter().zip(r) {
                row[i] = v;
            }
            rows.push(row);
        }
    }
    Ok(Table { name: "measures".into(), columns, rows })
}
