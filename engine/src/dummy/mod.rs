//! Dummy data at `population_size`, query-aware by construction (issue 6).
//!
//! For each patient id the solver (`solve`) walks the population predicate, picks one
//! satisfying branch of every `|`, and records what the tables must contain: rows of the
//! frames that must exist (with the codes, dates and values their filters compare against),
//! patient-level values (sex, date-of-birth ranges from `age_on`), and tables that must stay
//! empty. The builder here turns that into rows, adds plausible background rows, and keeps
//! dates between birth and death. Every patient is then evaluated with the reference
//! evaluator — the same semantics as on real data — and kept only if the population holds;
//! atoms the solver cannot invert fall back to fresh attempts (rejection), which the report
//! counts. Patients are independent (one random stream per id and attempt), so the output
//! depends only on the definition, the size and the seed.

pub mod days;
pub mod rng;
pub mod solve;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_queries::qm::{AggregateByPatient as A, Function as F, Graph, Kind, Node, NodeId, TableId, Type, Value};
use quarry_queries::semantics::{EvalError, Scalar};
use rayon::prelude::*;

use crate::PatientView;
use crate::reference::Evaluator;
use crate::store::Rows;
use rng::Rng;
use solve::{Needs, Solver, comparison, constant};
use values::{ColPlan, Window};

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 0x5155_4152_5259;
/// Attempts per patient id before the id is skipped.
const ATTEMPTS: u64 = 30;
/// Generated dates never pass this day unless the definition compares with a later one, so
/// output does not depend on the day quarry runs.
const DEFAULT_HORIZON: (i64, i64, i64) = (2025, 12, 31);

/// One used table and how its columns are generated.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub id: TableId,
    pub name: String,
    pub patient_level: bool,
    pub columns: Vec<ColPlan>,
}

/// Everything fixed for a definition: goals, tables, hints, the calendar.
pub struct Plan<'g> {
    pub graph: &'g Graph,
    /// The population: any group whose nodes are all true.
    pub goals: Vec<Vec<NodeId>>,
    pub params: HashMap<String, Value>,
    /// The value of every node that does not depend on a patient.
    consts: rustc_hash::FxHashMap<NodeId, solve::Lit>,
    pub tables: Vec<TablePlan>,
    horizon: i64,
    focus: (i64, i64),
    /// `patients` table index, its date_of_birth and date_of_death columns.
    patients: Option<(usize, Option<usize>, Option<usize>)>,
    /// Evaluates a chunk's generated patients together (`chunk`).
    columnar: crate::columnar::Evaluator<'g>,
}

/// How many patients, from which seed, for how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub population_size: usize,
    pub seed: u64,
    pub timeout: Option<Duration>,
    /// Progress lines on stderr for long runs.
    pub progress: bool,
}

/// What generation did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub generated: usize,
    /// Patient attempts in all (≥ generated; more when the check rejected some).
    pub attempts: u64,
    /// Ids given up after every attempt failed.
    pub skipped: u64,
    pub timed_out: bool,
    /// Stopped because almost no generated patient satisfied the population.
    pub gave_up: bool,
    pub elapsed: Duration,
}

impl Report {
    pub fn summary(&self, wanted: usize) -> String {
        let secs = self.elapsed.as_secs_f64();
        let mut s = format!("Generated {} dummy patients in {secs:.2}s", self.generated);
        if self.attempts > self.generated as u64 {
            s.push_str(&format!(
                " ({} attempts: the population check rejected {}, retried from fresh choices)",
                self.attempts,
                self.attempts - self.generated as u64
            ));
        }
        if self.generated < wanted {
            s.push_str(&format!("; {wanted} were asked for"));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error(
        "cannot generate dummy data: no generated patient satisfied the population condition \
         (after {attempts} attempts). This part was never true: {part}\n\
         Check that the population is not a contradiction, or use --dummy-tables DIR with \
         hand-made tables."
    )]
    Unsatisfiable { attempts: u64, part: String },
    #[error("{0}")]
    Eval(#[from] EvalError),
    #[error("{0}")]
    Sink(String),
}

fn day(v: &Value) -> Option<i64> {
    match v {
        Value::Date(d) => Some(days::to_days(*d)),
        _ => None,
    }
}

impl<'g> Plan<'g> {
    /// `goals`: the population as OR-of-ANDs; `outputs`: the nodes callers read back.
    pub fn new(graph: &'g Graph, goals: Vec<Vec<NodeId>>, outputs: &[NodeId], params: HashMap<String, Value>) -> Plan<'g> {
        let mut all: Vec<NodeId> = goals.iter().flatten().copied().collect();
        all.extend(outputs.iter().copied());
        // What every evaluator of the run needs (the columnar one here, the reference ones per
        // batch), worked out once.
        let query = crate::plan::QueryPlan::new(graph, &all);
        let reachable: &[NodeId] = &query.needed;
        let catalog = quarry_queries::tables::catalog();
        // Used columns.
        let mut used: HashMap<TableId, Vec<String>> = HashMap::new();
        for &n in reachable {
            if let Node::SelectColumn { source, name } = graph.node(n)
                && let Kind::EventFrame { table, .. } | Kind::PatientFrame { table } = graph.kind(*source)
                && !matches!(graph.node(*source), Node::InlinePatientTable { .. })
            {
                used.entry(*table).or_default().push(name.clone());
            }
        }
        let mut tables = vec![];
        for &t in &query.tables {
            let schema = graph.table(t);
            let dummy = catalog
                .modules
                .iter()
                .flat_map(|(_, ts)| ts.iter())
                .find(|(_, d)| d.schema == *schema)
                .map(|(_, d)| d.dummy_constraints.clone())
                .unwrap_or_default();
            let names = used.get(&t).cloned().unwrap_or_default();
            let mut columns: Vec<ColPlan> = schema
                .columns
                .iter()
                .map(|c| ColPlan::new(c, dummy.get(&c.name).map(Vec::as_slice).unwrap_or(&[]), names.contains(&c.name)))
                .collect();
            for (i, c) in schema.columns.iter().enumerate() {
                for k in c.constraints.iter().chain(dummy.get(&c.name).into_iter().flatten()) {
                    if let quarry_queries::qm::Constraint::DateAfter(after) = k {
                        columns[i].date_after = after.iter().filter_map(|a| schema.columns.iter().position(|c| c.name == *a)).collect();
                    }
                }
            }
            tables.push(TablePlan { id: t, name: schema.name.clone(), patient_level: schema.patient_level, columns });
        }
        let mut consts: rustc_hash::FxHashMap<NodeId, solve::Lit> = rustc_hash::FxHashMap::default();
        for &n in reachable {
            if let Some(v) = constant(graph, &params, n) {
                consts.insert(n, Arc::new(v));
            }
        }
        // Hints: literals compared with columns; dates anywhere.
        let mut dates: Vec<i64> = params.values().filter_map(day).collect();
        for &n in reachable {
            match graph.node(n) {
                Node::Value(v) => dates.extend(day(v)),
                Node::Function(f) => {
                    let Some((l, r, op)) = comparison(f) else { continue };
                    let (col, value) = match (consts.get(&l), consts.get(&r)) {
                        (None, Some(v)) => (l, v.clone()),
                        (Some(v), None) => (r, v.clone()),
                        _ => continue,
                    };
                    let Node::SelectColumn { source, name } = graph.node(col) else { continue };
                    let (Kind::EventFrame { table, .. } | Kind::PatientFrame { table }) = graph.kind(*source) else { continue };
                    let Some(tp) = tables.iter_mut().find(|tp| tp.id == *table) else { continue };
                    let Some(cp) = tp.columns.iter_mut().find(|c| c.name == *name) else { continue };
                    // An empty set (`is_in([])`) suggests no value, and an empty string
                    // (`contains("")`) none that CSV dummy tables could hold (empty is NULL).
                    let empty_set =
                        matches!(&*value, Value::Set(_, vs) if vs.is_empty()) || matches!(&*value, Value::Str(s) if s.is_empty());
                    if matches!(op, solve::Op::In | solve::Op::Eq | solve::Op::Ne | solve::Op::Contains)
                        && !empty_set
                        && !cp.hints.contains(&value)
                    {
                        cp.hints.push(value);
                    }
                }
                _ => {}
            }
        }
        let default_horizon = days::from_civil(DEFAULT_HORIZON.0, DEFAULT_HORIZON.1, DEFAULT_HORIZON.2);
        let horizon = dates.iter().copied().max().unwrap_or(default_horizon).max(default_horizon);
        let floor = days::from_civil(1900, 1, 1);
        let focus = match (dates.iter().min(), dates.iter().max()) {
            (Some(&lo), Some(&hi)) => (days::add_years(lo, -1).max(floor), days::add_years(hi, 1).min(horizon)),
            _ => (days::add_years(horizon, -10), horizon),
        };
        let patients = tables.iter().position(|t| t.name == "patients" && t.patient_level).map(|i| {
            let col = |n: &str| tables[i].columns.iter().position(|c| c.name == n && c.type_ == Type::Date);
            (i, col("date_of_birth"), col("date_of_death"))
        });
        let mut columnar = crate::columnar::Evaluator::with_plan(graph, query.clone());
        for (k, v) in &params {
            columnar.set_param(k, Some(v.clone()));
        }
        Plan { graph, goals, params, consts, tables, horizon, focus, patients, columnar }
    }

    fn table_plan(&self, id: TableId) -> Option<&TablePlan> {
        self.tables.iter().find(|t| t.id == id)
    }

    fn make_row(
        &self,
        rng: &mut Rng,
        tp: &TablePlan,
        cons: Option<&solve::RowCons>,
        window: Window,
        background: bool,
    ) -> Option<Vec<Scalar>> {
        let mut row: Vec<Scalar> = vec![None; tp.columns.len()];
        for (i, col) in tp.columns.iter().enumerate() {
            let c = cons.and_then(|m| m.get(&i));
            if !col.used && c.is_none() {
                continue;
            }
            row[i] = values::choose(rng, col, c, window, background)?;
        }
        // Keep declared date orderings (discharge after admission, …) in background rows.
        if background {
            for (i, col) in tp.columns.iter().enumerate() {
                if col.date_after.is_empty() {
                    continue;
                }
                let Some(Value::Date(v)) = &row[i] else { continue };
                let was = days::to_days(*v);
                let mut v = was;
                for &j in &col.date_after {
                    if let Some(Value::Date(a)) = &row[j] {
                        let a = days::to_days(*a);
                        if v < a {
                            v = (a + rng.range(0, 30)).min(window.hi.max(a));
                        }
                    }
                }
                if v != was {
                    row[i] = Some(Value::Date(days::to_date(v)));
                }
            }
        }
        Some(row)
    }

    /// Builds one patient's tables from the solver's needs; `None` if they cannot be met.
    fn build(&self, rng: &mut Rng, needs: &Needs) -> Option<BTreeMap<TableId, Rows>> {
        if needs.conflict {
            return None;
        }
        let floor = days::from_civil(1900, 1, 1);
        let calendar = Window { lo: floor, hi: self.horizon, focus: self.focus };
        let mut required: Vec<(TableId, Vec<Scalar>)> = vec![];
        let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
        for need in &needs.rows {
            let tp = self.table_plan(need.table)?;
            let row = self.make_row(rng, tp, Some(&need.cons), calendar, false)?;
            for v in row.iter().flatten() {
                if let Some(d) = day(v) {
                    earliest = earliest.min(d);
                    latest = latest.max(d);
                }
            }
            required.push((need.table, row));
        }
        // Birth and death.
        let patient_cons = self.patients.and_then(|(i, _, _)| needs.patient.get(&self.tables[i].id));
        let cons_of = |col: Option<usize>| col.and_then(|c| patient_cons.and_then(|m| m.get(&c)));
        let dob_plan = self.patients.and_then(|(i, d, _)| d.map(|d| &self.tables[i].columns[d]));
        let dob_hi = self.horizon.min(earliest);
        let dob_lo = days::add_years(dob_hi.min(self.horizon), -100).max(floor);
        let dob_window = Window { lo: dob_lo, hi: dob_hi, focus: (dob_lo, dob_hi) };
        let dob = match dob_plan {
            Some(p) => match values::choose(rng, p, cons_of(self.patients.and_then(|p| p.1)), dob_window, false)? {
                Some(v) => day(&v),
                None => None,
            },
            None => Some(days::month_start(rng.range(dob_lo, dob_hi))),
        };
        let born = dob.unwrap_or(dob_lo);
        let dod_cons = cons_of(self.patients.and_then(|p| p.2));
        let dod_plan = self.patients.and_then(|(i, _, d)| d.map(|d| &self.tables[i].columns[d]));
        let must_die = dod_cons.is_some_and(|c| c.null == Some(false));
        let alive = dod_cons.is_some_and(|c| c.null == Some(true));
        let dies = !alive && (must_die || rng.chance(0.08));
        let dod = match (dies, dod_plan) {
            (true, Some(p)) => {
                let lo = born.max(if latest == i64::MIN { born } else { latest });
                let w = Window { lo, hi: self.horizon, focus: (lo, self.horizon) };
                let mut c = dod_cons.cloned().unwrap_or_default();
                c.null = Some(false);
                values::choose(rng, p, Some(&c), w, false)?.as_ref().and_then(day)
            }
            _ => None,
        };
        let life = Window { lo: born, hi: dod.unwrap_or(self.horizon), focus: self.focus };
        let mut out: BTreeMap<TableId, Rows> = BTreeMap::new();
        for (ti, tp) in self.tables.iter().enumerate() {
            let cons = needs.patient.get(&tp.id);
            if tp.patient_level {
                if needs.no_row.contains(&tp.id) {
                    if cons.is_some() {
                        return None;
                    }
                    continue;
                }
                let row = if self.patients.is_some_and(|p| p.0 == ti) {
                    let (_, dob_col, dod_col) = self.patients.expect("checked");
                    let mut rest = cons.cloned().unwrap_or_default();
                    for c in [dob_col, dod_col].into_iter().flatten() {
                        rest.remove(&c);
                    }
                    let mut row = self.make_row(rng, tp, Some(&rest), life, cons.is_none())?;
                    if let Some(c) = dob_col {
                        row[c] = dob.map(|d| Value::Date(days::to_date(d)));
                    }
                    if let Some(c) = dod_col {
                        row[c] = dod.map(|d| Value::Date(days::to_date(d)));
                    }
                    row
                } else if tp.name == "ons_deaths" && cons.is_none() {
                    // Death registrations follow the patient's death.
                    let Some(d) = dod else { continue };
                    let mut row = self.make_row(rng, tp, None, life, true)?;
                    if let Some(c) = tp.columns.iter().position(|c| c.name == "date") {
                        row[c] = Some(Value::Date(days::to_date(d)));
                    }
                    row
                } else if cons.is_some() || rng.chance(0.5) {
                    self.make_row(rng, tp, cons, life, cons.is_none())?
                } else {
                    continue;
                };
                out.insert(tp.id, vec![row]);
                continue;
            }
            let mut rows: Rows = required.iter().filter(|(t, _)| *t == tp.id).map(|(_, r)| r.clone()).collect();
            let extra = if needs.quiet.contains(&tp.id) {
                0
            } else if tp.name == "practice_registrations" {
                if rows.is_empty() { 1 } else { rng.below(2) }
            } else if tp.name == "ons_deaths" {
                u64::from(dod.is_some() && rows.is_empty())
            } else {
                rng.geometric(2.5, 40)
            };
            for _ in 0..extra {
                if let Some(mut row) = self.make_row(rng, tp, None, life, true) {
                    if tp.name == "ons_deaths"
                        && let (Some(d), Some(c)) = (dod, tp.columns.iter().position(|c| c.name == "date"))
                    {
                        row[c] = Some(Value::Date(days::to_date(d)));
                    }
                    rows.push(row);
                }
            }
            // Required rows need not come first.
            for i in (1..rows.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                rows.swap(i, j);
            }
            if !rows.is_empty() {
                out.insert(tp.id, rows);
            }
        }
        Some(out)
    }

    fn satisfied(&self, values: &dyn PatientView) -> bool {
        self.goals.iter().any(|g| g.iter().all(|n| values.scalar(*n) == Some(Value::Bool(true))))
    }

    /// The first part of the first goal that was not true, for error messages.
    fn failing_part(&self, values: &dyn PatientView) -> Option<NodeId> {
        let goal = self.goals.first()?;
        let mut parts = vec![];
        for &n in goal {
            flatten_and(self.graph, n, &mut parts);
        }
        parts.into_iter().find(|n| values.scalar(*n) != Some(Value::Bool(true)))
    }

    /// Generates patients until `population_size` satisfy the population, calling `each`
    /// (in parallel) for every kept patient and `sink` (in patient-id order) with its result.
    pub fn generate<T: Send>(
        &self,
        options: &Options,
        each: impl Fn(i64, &BTreeMap<TableId, Rows>, &dyn PatientView) -> T + Sync,
        sink: impl FnMut(T) -> Result<(), String>,
    ) -> Result<Report, GenError> {
        self.generate_with(options, &each, None, sink)
    }

    /// As [`Plan::generate`], and where the columnar engine evaluated a round of patients
    /// together, its kept patients are handed to `each_round` at once: the partition and
    /// their indexes in it, for one result each, in that order (`each` still makes those of
    /// a round the reference evaluator had to redo).
    pub fn generate_with<T: Send>(
        &self,
        options: &Options,
        each: Each<'_, T>,
        each_round: Option<EachRound<'_, T>>,
        mut sink: impl FnMut(T) -> Result<(), String>,
    ) -> Result<Report, GenError> {
        let started = Instant::now();
        let wanted = options.population_size;
        let mut report = Report::default();
        if wanted == 0 {
            return Ok(report);
        }
        let threads = rayon::current_num_threads().max(1);
        let chunk = (wanted / (threads * 4)).clamp(8, 1024) as i64;
        let per_round = threads * 4;
        // Patients named in `table_from_file` tables come first (ehrQL does the same), then
        // ids count up from past the largest of them.
        let inline = self.inline_ids();
        let first_free = inline.iter().copied().max().unwrap_or(0) + 1;
        let id_at = |k: i64| if (k as usize) < inline.len() { inline[k as usize] } else { first_free + k - inline.len() as i64 };
        let mut next: i64 = 0;
        let mut last_progress = Instant::now();
        // On a terminal, a bar redrawn in place; in a log, a line a second.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let progress_every = Duration::from_millis(if terminal { 200 } else { 1000 });
        let mut bar = BarGuard::default();
        let mut failing: HashMap<NodeId, u64> = HashMap::new();
        let mut first_error: Option<EvalError> = None;
        // Give up when even this many ids per wanted patient cannot find them.
        let hopeless = 50 * wanted as i64 + 5_000;
        while report.generated < wanted {
            let starts: Vec<i64> = (0..per_round as i64).map(|k| next + k * chunk).collect();
            next += per_round as i64 * chunk;
            let results: Vec<Chunk<T>> =
                starts.par_iter().map(|&start| self.chunk(options.seed, (start..start + chunk).map(id_at), each, each_round)).collect();
            for c in results {
                if first_error.is_none() {
                    first_error = c.error;
                }
                for (n, k) in c.failing {
                    *failing.entry(n).or_default() += k;
                }
                for (attempts, item) in c.ids {
                    if report.generated >= wanted {
                        break;
                    }
                    report.attempts += attempts;
                    match item {
                        Some(item) => {
                            sink(item).map_err(GenError::Sink)?;
                            report.generated += 1;
                        }
                        None => report.skipped += 1,
                    }
                }
            }
            if report.generated == 0 && report.attempts >= 2000 {
                if let Some(e) = first_error {
                    return Err(GenError::Eval(e));
                }
                let part = failing
                    .iter()
                    .max_by_key(|(n, k)| (**k, std::cmp::Reverse(**n)))
                    .map(|(n, _)| describe(self.graph, *n))
                    .unwrap_or_else(|| "the population".into());
                return Err(GenError::Unsatisfiable { attempts: report.attempts, part });
            }
            if options.progress && last_progress.elapsed() >= progress_every && report.generated < wanted {
                progress_line(report.generated, wanted, started.elapsed(), terminal);
                last_progress = Instant::now();
                bar.drawn |= terminal;
            }
            if let Some(t) = options.timeout
                && started.elapsed() > t
                && report.generated < wanted
            {
                report.timed_out = true;
                break;
            }
            // Past the inline ids, a long run of ids with no patient at all means the
            // population needs rows only the inline tables have.
            let past_inline = next - inline.len() as i64;
            let stuck = !inline.is_empty() && past_inline >= 5_000 && report.generated <= inline.len();
            if (next > hopeless || stuck) && report.generated < wanted {
                report.gave_up = true;
                break;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Patient ids that appear in the definition's inline (`table_from_file`) tables.
    fn inline_ids(&self) -> Vec<i64> {
        let evaluator = Evaluator::with_plan(self.graph, self.columnar.plan().clone());
        let mut ids: Vec<i64> = evaluator.inline_patients().collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Makes the patients `ids`, in rounds: each round, every patient not yet kept is built
    /// from its next attempt, and the round's patients are evaluated together on the columnar
    /// engine (one partition); those the population keeps are done, the others try again. The
    /// attempts are those of one patient at a time (each seeded by id and attempt number), so
    /// the patients are the same whatever the rounds. A round whose evaluation fails (an error
    /// caused by some patient's random values) is evaluated again patient by patient on the
    /// reference evaluator, so that only the attempts that fail are rejected.
    fn chunk<T>(&self, seed: u64, ids: impl Iterator<Item = i64>, each: Each<'_, T>, each_round: Option<EachRound<'_, T>>) -> Chunk<T> {
        // The columnar evaluator's plan: the same outputs.
        let mut reference = Evaluator::with_plan(self.graph, self.columnar.plan().clone());
        for (k, v) in &self.params {
            reference.set_param(k, Some(v.clone()));
        }
        let mut out = Chunk { ids: vec![], failing: HashMap::new(), error: None };
        // Per patient not yet kept (in id order): its place in `out.ids` (which counts its
        // attempts), its id and its next attempt.
        let mut pending: Vec<(usize, i64, u64)> = vec![];
        for (k, pid) in ids.enumerate() {
            out.ids.push((0, None));
            pending.push((k, pid, 0));
        }
        while !pending.is_empty() {
            // Each pending patient's next patient that the solver could build.
            let mut built: Vec<(usize, i64, u64, BTreeMap<TableId, Rows>)> = vec![];
            for (k, pid, mut attempt) in pending.drain(..) {
                while attempt < ATTEMPTS {
                    out.ids[k].0 += 1;
                    match self.attempt(seed, pid, attempt) {
                        (_, Some(tables)) => {
                            built.push((k, pid, attempt, tables));
                            break;
                        }
                        (mut rng, None) if attempt + 1 == ATTEMPTS => {
                            // The solver found the goal contradictory every time: evaluate a
                            // patient made without it, to name the part that fails.
                            if let Some(tables) = self.build(&mut rng, &Needs::default())
                                && let Ok(values) = reference.patient(pid, Some(&tables))
                                && let Some(n) = self.failing_part(&values)
                            {
                                *out.failing.entry(n).or_default() += 1;
                            }
                        }
                        (_, None) => {}
                    }
                    attempt += 1;
                }
            }
            if built.is_empty() {
                break;
            }
            let ids: Vec<(usize, i64, u64)> = built.iter().map(|(k, pid, attempt, _)| (*k, *pid, *attempt)).collect();
            let store = crate::store::Store { patients: built.into_iter().map(|(_, pid, _, t)| (pid, t)).collect() };
            let batch = crate::batch::Batch::from_store(self.graph, &store, self.columnar.tables());
            let partition = self.columnar.partition(&batch.ids, &batch);
            // Kept patients left to `each_round`: their places in `out.ids` and partition indexes.
            let (mut kept_at, mut kept) = (vec![], vec![]);
            for (k, pid, attempt) in ids {
                let tables = &store.patients[&pid];
                let i = batch.ids.binary_search(&pid).expect("a patient of the batch");
                let values: Box<dyn PatientView + '_> = match &partition {
                    Ok(p) => Box::new(crate::columnar::PartitionPatient(p, i)),
                    // An error caused by random values rejects this attempt; it is reported
                    // only if no patient can be made at all.
                    Err(_) => match reference.patient(pid, Some(tables)) {
                        Ok(v) => Box::new(v),
                        Err(e) => {
                            out.error.get_or_insert(e);
                            if attempt + 1 < ATTEMPTS {
                                pending.push((k, pid, attempt + 1));
                            }
                            continue;
                        }
                    },
                };
                if self.satisfied(values.as_ref()) {
                    match (&partition, each_round) {
                        (Ok(_), Some(_)) => {
                            kept_at.push(k);
                            kept.push(i as u32);
                        }
                        _ => out.ids[k].1 = Some(each(pid, tables, values.as_ref())),
                    }
                    continue;
                }
                if let Some(n) = self.failing_part(values.as_ref()) {
                    *out.failing.entry(n).or_default() += 1;
                }
                if attempt + 1 < ATTEMPTS {
                    pending.push((k, pid, attempt + 1));
                }
            }
            if let (Ok(p), Some(each_round)) = (&partition, each_round)
                && !kept.is_empty()
            {
                for (k, item) in kept_at.into_iter().zip(each_round(p, &kept)) {
                    out.ids[k].1 = Some(item);
                }
            }
        }
        out
    }

    /// Attempt `attempt` at patient `pid`: the solver's needs for one of the population's
    /// goals, and tables built to meet them (`None` when it found them contradictory), with
    /// the attempt's random numbers where they stopped.
    fn attempt(&self, seed: u64, pid: i64, attempt: u64) -> (Rng, Option<BTreeMap<TableId, Rows>>) {
        let mut rng = Rng::new(seed, pid as u64, attempt);
        let mut solver = Solver { graph: self.graph, consts: &self.consts, rng: &mut rng, needs: Needs::default() };
        let goal = if self.goals.len() == 1 { 0 } else { solver.rng.below(self.goals.len() as u64) as usize };
        for &n in &self.goals[goal] {
            solver.want(n, true);
        }
        let needs = std::mem::take(&mut solver.needs);
        let tables = self.build(&mut rng, &needs);
        (rng, tables)
    }
}

/// Makes a kept patient's result from its id, tables and values (`Plan::generate_with`).
pub type Each<'a, T> = &'a (dyn Fn(i64, &BTreeMap<TableId, Rows>, &dyn PatientView) -> T + Sync);

/// Makes the results of a round's kept patients together (`Plan::generate_with`).
pub type EachRound<'a, T> = &'a (dyn Fn(&crate::columnar::Partition, &[u32]) -> Vec<T> + Sync);

struct Chunk<T> {
    /// Per patient id, in order: the attempts made and the kept patient's result.
    ids: Vec<(u64, Option<T>)>,
    failing: HashMap<NodeId, u64>,
    error: Option<EvalError>,
}

fn flatten_and(graph: &Graph, n: NodeId, out: &mut Vec<NodeId>) {
    match graph.node(n) {
        Node::Function(F::And(xs)) => xs.iter().for_each(|x| flatten_and(graph, *x, out)),
        _ => out.push(n),
    }
}

/// A short ehrQL-like rendering of a node, for messages.
pub fn describe(graph: &Graph, n: NodeId) -> String {
    let mut s = render(graph, n, 0);
    if s.chars().count() > 400 {
        s = s.chars().take(400).collect::<String>() + "…";
    }
    s
}

fn render(g: &Graph, n: NodeId, depth: usize) -> String {
    if depth > 12 {
        return "…".into();
    }
    let r = |x: &NodeId| render(g, *x, depth + 1);
    match g.node(n) {
        Node::SelectTable(t) | Node::SelectPatientTable(t) => g.table(*t).name.clone(),
        Node::InlinePatientTable { .. } => "<table_from_file>".into(),
        Node::Filter { source, condition } => format!("{}.where({})", r(source), r(condition)),
        Node::Sort { source, sort_by } => format!("{}.sort_by({})", r(source), r(sort_by)),
        Node::PickOneRowPerPatient { source, position } => {
            format!("{}.{}_for_patient()", r(source), if *position == quarry_queries::qm::Position::First { "first" } else { "last" })
        }
        Node::Value(v) => match v {
            Value::Set(_, vs) if vs.len() > 6 => format!("[{} values]", vs.len()),
            Value::Set(_, vs) => format!("[{}]", vs.iter().map(value_repr).collect::<Vec<_>>().join(", ")),
            v => value_repr(v),
        },
        Node::Parameter { name, .. } => name.clone(),
        Node::SelectColumn { source, name } => {
            let src = r(source);
            // Columns of a filtered frame read as the table's column.
            let short = frame_name(g, *source).unwrap_or(src);
            format!("{short}.{name}")
        }
        Node::AggregateByPatient(a) => {
            let (x, m) = match a {
                A::Exists(s) => (s, "exists_for_patient"),
                A::Count(s) => (s, "count_for_patient"),
                A::CountDistinct(s) => (s, "count_distinct_for_patient"),
                A::CountEpisodes { source, .. } => (source, "count_episodes_for_patient"),
                A::Min(s) => (s, "minimum_for_patient"),
                A::Max(s) => (s, "maximum_for_patient"),
                A::Sum(s) => (s, "sum_for_patient"),
                A::Mean(s) => (s, "mean_for_patient"),
                A::CombineAsSet(s) => (s, "combine_as_set"),
            };
            format!("{}.{m}()", r(x))
        }
        Node::Function(f) => {
            let bin = |l: &NodeId, op: &str, rr: &NodeId| format!("({} {op} {})", r(l), r(rr));
            match f {
                F::Eq(l, x) => bin(l, "==", x),
                F::Ne(l, x) => bin(l, "!=", x),
                F::Lt(l, x) => bin(l, "<", x),
                F::Le(l, x) => bin(l, "<=", x),
                F::Gt(l, x) => bin(l, ">", x),
                F::Ge(l, x) => bin(l, ">=", x),
                F::And(xs) => format!("({})", xs.iter().map(r).collect::<Vec<_>>().join(" & ")),
                F::Or(xs) => format!("({})", xs.iter().map(r).collect::<Vec<_>>().join(" | ")),
                F::Not(x) => format!("~{}", r(x)),
                F::IsNull(x) => format!("{}.is_null()", r(x)),
                F::In(l, x) => format!("{}.is_in({})", r(l), r(x)),
                F::StringContains(l, x) => format!("{}.contains({})", r(l), r(x)),
                F::Add(l, x) => bin(l, "+", x),
                F::Subtract(l, x) => bin(l, "-", x),
                F::DateDifferenceInYears(end, start) => format!("years_between({}, {})", r(start), r(end)),
                other => {
                    let name = format!("{other:?}");
                    let name = name.split('(').next().unwrap_or("function").to_string();
                    let args = quarry_queries::qm::function_inputs(other).iter().map(r).collect::<Vec<_>>().join(", ");
                    format!("{name}({args})")
                }
            }
        }
        Node::Case { .. } => "case(...)".into(),
    }
}

fn frame_name(g: &Graph, frame: NodeId) -> Option<String> {
    match g.node(frame) {
        Node::Filter { .. } | Node::Sort { .. } | Node::PickOneRowPerPatient { .. } => None,
        Node::SelectTable(t) | Node::SelectPatientTable(t) => Some(g.table(*t).name.clone()),
        _ => None,
    }
}

fn value_repr(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Code(_, s) => format!("{s:?}"),
        Value::Date(d) => format!("date({}, {}, {})", d.year(), d.month(), d.day()),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => quarry_queries::pyrepr::float_repr(f.0),
        Value::Set(..) => "{…}".into(),
    }
}

/// Clears a progress bar from the terminal when generation ends, however it ends.
#[derive(Default)]
struct BarGuard {
    drawn: bool,
}

impl Drop for BarGuard {
    fn drop(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
        }
    }
}

/// One progress report: a bar redrawn in place on a terminal, else a log line.
fn progress_line(done: usize, wanted: usize, elapsed: Duration, terminal: bool) {
    let share = done as f64 / wanted as f64;
    if !terminal {
        eprintln!("[info] Generated {done} of {wanted} dummy patients ({:.0}%)", 100.0 * share);
        return;
    }
    const WIDTH: usize = 30;
    let filled = ((share * WIDTH as f64) as usize).min(WIDTH);
    let left = if share > 0.0 { format!(", about {:.0} s left", elapsed.as_secs_f64() * (1.0 - share) / share) } else { String::new() };
    eprint!(
        "\r\x1b[K[info] [{}{}] {:>3.0}% {done} of {wanted} dummy patients, {:.1} s{left}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        100.0 * share,
        elapsed.as_secs_f64()
    );
}
