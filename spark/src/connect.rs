//! The Spark Connect side (the `connect` feature): sessions, table registration, queries.

use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch, cast::AsArray};
use quarry_engine::output::{self, Target};
use quarry_engine::sql::{self, RowOrder, Translator, View};
use quarry_engine::store::{Store, used_tables};
use quarry_queries::qm::{Graph, Node, NodeId, TableId, Type, Value};
use quarry_queries::semantics::Scalar;
use quarry_queries::spec::{DatasetSpec, MeasuresSpec};
use spark_connect::SparkSession;
use spark_connect::row::{Row, Value as SparkValue};

/// Why a Spark run failed; each names what to do.
#[derive(Debug, thiserror::Error)]
pub enum SparkFailure {
    /// The remote is malformed or does not answer.
    #[error("{0}")]
    Connect(String),
    /// A table or column the definition reads is missing.
    #[error("{0}")]
    Input(String),
    /// Spark rejected or failed a query.
    #[error("{0}")]
    Query(String),
    /// The definition uses something the translation cannot express.
    #[error("{0}")]
    Translate(String),
    #[error("{0}")]
    Output(String),
}

/// Where the tables come from.
pub enum Tables<'a> {
    /// Small tables read by quarry (`--dummy-tables`), sent to Spark as local relations.
    Dummy(&'a Store),
    /// A directory (or URI) of `<table>.parquet` files that every executor can read
    /// (`--backend`): registered as temporary views.
    Parquet(String),
    /// Existing catalog tables, named `<prefix><table>` (`--spark-tables`).
    Catalog(String),
}

/// How a table's relation is named in the SQL.
type Relation = Box<dyn Fn(&str) -> String>;

/// A connected session (temporary views live as long as it does).
pub struct Spark {
    session: SparkSession,
    remote: String,
}

/// `host:port` of an `sc://host:port/;params` remote.
fn remote_address(remote: &str) -> Result<(String, u16), SparkFailure> {
    let bad = |why: &str| {
        SparkFailure::Connect(format!("bad Spark remote `{remote}`: {why} (expected sc://HOST:PORT, e.g. sc://localhost:15002)"))
    };
    let rest = remote.strip_prefix("sc://").ok_or_else(|| bad("it does not start with sc://"))?;
    let authority = rest.split(['/', ';']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().map_err(|_| bad("the port is not a number"))?)
        }
        _ => (authority.to_string(), 15002),
    };
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

impl Spark {
    /// Connects, first checking that the server answers at all (the client itself retries an
    /// unreachable server for about ten minutes before failing).
    pub fn connect(remote: &str) -> Result<Spark, SparkFailure> {
        let (host, port) = remote_address(remote)?;
        let unreachable = |why: String| {
            SparkFailure::Connect(format!(
                "cannot reach the Spark Connect server at {host}:{port} ({why}). Start one (scripts/spark-cluster.sh start for a local one) or point --spark-remote / SPARK_REMOTE at a running server"
            ))
        };
        let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs().map_err(|e| unreachable(e.to_string()))?.collect();
        let mut last = String::from("no address");
        let mut reached = false;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(_) => {
                    reached = true;
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !reached {
            return Err(unreachable(last));
        }
        let session = SparkSession::builder()
            .remote(remote)
            .get_or_create()
            .map_err(|e| SparkFailure::Connect(format!("cannot open a Spark session at {remote}: {e}")))?;
        let spark = Spark { session, remote: remote.to_string() };
        // Python's `%`, `//` and dates rely on UTC and Spark's defaults otherwise.
        spark.command("SET spark.sql.session.timeZone=UTC")?;
        Ok(spark)
    }

    // The large error is spark-connect's own (`SparkError`), passed straight on.
    #[allow(clippy::result_large_err)]
    fn command(&self, sql: &str) -> Result<(), SparkFailure> {
        self.session.sql(sql).and_then(|df| df.collect_record_batches()).map(|_| ()).map_err(|e| {
            SparkFailure::Query(format!("Spark ({}) rejected `{}`: {}", self.remote, short(sql), spark_message(&e.to_string())))
        })
    }

    /// Runs a query, showing its stages' progress on stderr once a second.
    #[allow(clippy::result_large_err)]
    fn query(&self, sql: &str, what: &str) -> Result<Vec<RecordBatch>, String> {
        let started = Instant::now();
        let last = Arc::new(Mutex::new(Instant::now()));
        let what_owned = what.to_string();
        let handler = self.session.register_progress_handler(move |p: &spark_connect_proto::execute_plan_response::ExecutionProgress| {
            let mut last = last.lock().expect("progress lock");
            if last.elapsed() < Duration::from_secs(1) || p.stages.is_empty() {
                return;
            }
            *last = Instant::now();
            let (tasks, done): (i64, i64) = p.stages.iter().fold((0, 0), |(t, d), s| (t + s.num_tasks, d + s.num_completed_tasks));
            let read: i64 = p.stages.iter().map(|s| s.input_bytes_read).sum();
            let running = p.stages.iter().filter(|s| !s.done).count();
            let _ = writeln!(
                std::io::stderr(),
                "[spark] {what_owned}: {done}/{tasks} tasks done, {running} stage{} running, {:.1} MB read ({:.1} s)",
                if running == 1 { "" } else { "s" },
                read as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
        });
        let result = self.session.sql(sql).and_then(|df| df.collect_record_batches()).map_err(|e| spark_message(&e.to_string()));
        self.session.remove_progress_handler(handler);
        result
    }

    /// Column names of a relation.
    fn columns_of(&self, relation: &str) -> Result<Vec<String>, String> {
        let df = self.session.sql(&format!("SELECT * FROM {relation}")).map_err(|e| e.to_string())?;
        match df.schema().map_err(|e| spark_message(&e.to_string()))? {
            spark_connect::DataType::Struct { fields } => Ok(fields.into_iter().map(|f| f.name).collect()),
            other => Err(format!("unexpected schema {other:?}")),
        }
    }
}

/// Spark's error text without the client's wrapping and the JVM's stack.
fn spark_message(e: &str) -> String {
    let mut lines: Vec<&str> = e.lines().filter(|l| !l.trim_start().starts_with("at ") && !l.trim().is_empty()).collect();
    lines.truncate(12);
    lines.join("\n")
}

fn short(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 { format!("{}…", one.chars().take(120).collect::<String>()) } else { one }
}

/// ehrQL's run-time errors raised by the translation (`raise_error`) come back inside
/// Spark's message; show them as ehrQL names them.
fn evaluation_error(message: &str) -> Option<String> {
    ["OverflowError: ", "ValueError: "].iter().find_map(|k| {
        message.find(k).map(|i| {
            let rest = &message[i..];
            let end = [rest.find('\n'), rest.find(" SQLSTATE"), rest.find('"')].into_iter().flatten().min().unwrap_or(rest.len());
            rest[..end].trim_end_matches(['.', ' ']).to_string()
        })
    })
}

fn view_name(table: &str) -> String {
    format!("quarry_t_{table}")
}

fn spark_value(v: &Scalar) -> SparkValue {
    match v {
        None => SparkValue::Null,
        Some(Value::Bool(b)) => SparkValue::Bool(*b),
        Some(Value::Int(i)) => SparkValue::Long(*i),
        Some(Value::Float(f)) => SparkValue::Double(f.0),
        Some(Value::Str(s)) | Some(Value::Code(_, s)) => SparkValue::String(s.clone()),
        Some(Value::Date(d)) => SparkValue::Date(quarry_engine::dummy::days::to_days(*d) as i32),
        Some(Value::Set(..)) => SparkValue::Null,
    }
}

impl Spark {
    /// Sends rows as a local relation and names it.
    #[allow(clippy::result_large_err)]
    fn upload(&self, name: &str, columns: &[(String, Type)], rows: Vec<Vec<Scalar>>) -> Result<(), SparkFailure> {
        let mut fields = vec![];
        for (n, t) in columns {
            let ddl = sql::sql_type(t).to_lowercase();
            let data_type = spark_connect::DataType::from_ddl(&ddl).map_err(|e| SparkFailure::Query(format!("Spark type `{ddl}`: {e}")))?;
            fields.push(spark_connect::StructField { name: n.clone(), data_type, nullable: true, metadata: Default::default() });
        }
        let schema = spark_connect::DataType::Struct { fields };
        let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        let rows: Vec<Row> = rows.into_iter().map(|r| Row::new(names.clone(), r.iter().map(spark_value).collect())).collect();
        self.session
            .create_dataframe(rows, schema)
            .and_then(|df| df.create_or_replace_temp_view(name))
            .map_err(|e| SparkFailure::Query(format!("cannot send table `{name}` to Spark: {}", spark_message(&e.to_string()))))
    }

    /// Registers the tables the `roots` read; returns how to name a table's relation and
    /// how event rows are ordered.
    fn register_tables(&self, graph: &Graph, roots: &[NodeId], tables: &Tables) -> Result<(Relation, RowOrder), SparkFailure> {
        let used = used_tables(graph, roots);
        let (relation, order): (Relation, RowOrder) = match tables {
            Tables::Dummy(store) => {
                for t in &used {
                    let schema = graph.table(*t);
                    let columns = uploaded_columns(schema);
                    let mut rows = vec![];
                    for (pid, patient) in &store.patients {
                        for row in patient.get(t).map(Vec::as_slice).unwrap_or(&[]) {
                            let mut r = Vec::with_capacity(row.len() + 2);
                            r.push(Some(Value::Int(*pid)));
                            r.extend(row.iter().cloned());
                            r.push(Some(Value::Int(rows.len() as i64)));
                            rows.push(r);
                        }
                    }
                    self.upload(&view_name(&schema.name), &columns, rows)?;
                }
                (Box::new(|t: &str| view_name(t)), RowOrder::RowColumn)
            }
            Tables::Parquet(dir) => {
                let dir = parquet_location(dir);
                for t in &used {
                    let name = &graph.table(*t).name;
                    let path = format!("{}/{name}.parquet", dir.trim_end_matches('/'));
                    let local = path.strip_prefix("file://").map(Path::new);
                    if let Some(p) = local
                        && !p.exists()
                    {
                        return Err(SparkFailure::Input(format!("Missing table: {name} (expected {}; see docs/backend.md)", p.display())));
                    }
                    self.command(&format!(
                        "CREATE OR REPLACE TEMP VIEW {} AS SELECT *, _metadata.row_index AS __row FROM parquet.{}",
                        view_name(name),
                        sql::quote(&path)
                    ))
                    .map_err(|e| SparkFailure::Input(format!("cannot read table {name} from {path}: {e}")))?;
                }
                (Box::new(|t: &str| view_name(t)), RowOrder::RowColumn)
            }
            Tables::Catalog(prefix) => {
                let prefix = prefix.clone();
                (Box::new(move |t: &str| format!("{prefix}{t}")), RowOrder::OutputColumns)
            }
        };
        // Every used column must be there (missing ones would otherwise surface as a SQL
        // error naming a generated alias).
        let mut needed: std::collections::BTreeMap<TableId, Vec<String>> = used.iter().map(|t| (*t, vec![])).collect();
        for n in graph.reachable_from(roots) {
            if let Node::SelectColumn { source, name } = graph.node(n)
                && let Some(cols) = needed.get_mut(&quarry_engine::kernels::frame_table(graph, *source))
                && !cols.contains(name)
            {
                cols.push(name.clone());
            }
        }
        for (t, cols) in needed {
            let name = &graph.table(t).name;
            let rel = relation(name);
            let have =
                self.columns_of(&rel).map_err(|e| SparkFailure::Input(format!("Missing table: {name} (Spark relation {rel}): {e}")))?;
            for c in std::iter::once("patient_id").chain(cols.iter().map(String::as_str)) {
                if !have.iter().any(|h| h == c) {
                    return Err(SparkFailure::Input(format!(
                        "Table {name} (Spark relation {rel}) has no column '{c}'; it has: {}",
                        have.join(", ")
                    )));
                }
            }
        }
        Ok((relation, order))
    }

    /// Registers the views the translator asked for that are not registered yet.
    fn register_views(&self, graph: &Graph, views: &[View], done: &mut usize) -> Result<(), SparkFailure> {
        for view in &views[*done..] {
            match view {
                View::Set { name, element, members } => {
                    self.upload(name, &[("v".into(), element.clone())], members.iter().map(|m| vec![Some(m.clone())]).collect())?;
                }
                View::Inline { name, table, rows } => {
                    let schema = graph.table(*table);
                    let columns = uploaded_columns(schema);
                    let rows = graph
                        .inline_rows(*rows)
                        .iter()
                        .enumerate()
                        .map(|(i, r)| r.iter().cloned().chain(std::iter::once(Some(Value::Int(i as i64)))).collect())
                        .collect();
                    self.upload(name, &columns, rows)?;
                }
            }
        }
        *done = views.len();
        Ok(())
    }
}

/// The columns of a table sent to Spark: `patient_id`, the schema's, and `__row`, the input
/// order (event tables are written in it).
fn uploaded_columns(schema: &quarry_queries::qm::TableSchema) -> Vec<(String, Type)> {
    let mut columns = vec![("patient_id".to_string(), Type::Int)];
    columns.extend(schema.columns.iter().map(|c| (c.name.clone(), c.type_.clone())));
    columns.push(("__row".into(), Type::Int));
    columns
}

/// A `--backend` location as Spark reads it: local paths made absolute `file://` URIs.
fn parquet_location(dir: &str) -> String {
    if dir.contains("://") {
        return dir.to_string();
    }
    let p = Path::new(dir);
    let abs =
        if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_path_buf()) };
    format!("file://{}", abs.display())
}

/// A result column's values, typed as the output wants. `int ** int` outputs come back as a
/// struct of the integer and float forms (sql.rs): the integer where there is one.
fn column(array: &dyn Array, want: &Type) -> Result<Vec<Scalar>, String> {
    if let arrow_schema::DataType::Struct(_) = array.data_type() {
        let s = array.as_struct();
        let (int, float) = (
            quarry_engine::arrow_io::column_values(s.column(0).as_ref(), &Type::Int)?,
            quarry_engine::arrow_io::column_values(s.column(1).as_ref(), &Type::Float)?,
        );
        return Ok(int.into_iter().zip(float).enumerate().map(|(i, (a, b))| if s.is_null(i) { None } else { a.or(b) }).collect());
    }
    quarry_engine::arrow_io::column_values(array, want)
}

/// A batch as rows: `patient_id`, then the columns typed as `types` says.
fn batch_rows(batch: &RecordBatch, types: &[Type]) -> Result<Vec<Vec<Scalar>>, String> {
    let mut columns = vec![column(batch.column(0).as_ref(), &Type::Int)?];
    for (i, t) in types.iter().enumerate() {
        columns.push(column(batch.column(i + 1).as_ref(), t)?);
    }
    let mut iters: Vec<_> = columns.into_iter().map(Vec::into_iter).collect();
    Ok((0..batch.num_rows()).map(|_| iters.iter_mut().map(|c| c.next().flatten()).collect()).collect())
}

/// A translator; `QUARRY_SPARK_INLINE_SET_MAX` sets how large a literal set may be before it
/// is sent as a view (tests set 0 to send them all).
fn translator<'g>(graph: &'g Graph, relation: Box<dyn Fn(&str) -> String>, order: RowOrder, roots: &[NodeId]) -> Translator<'g> {
    let t = Translator::new(graph, relation, order, roots);
    match std::env::var("QUARRY_SPARK_INLINE_SET_MAX").ok().and_then(|v| v.parse().ok()) {
        Some(n) => t.inline_set_max(n),
        None => t,
    }
}

/// Finds the variable a failing query's error comes from, by running each alone.
fn culprit(spark: &Spark, translator: &mut Translator, population: NodeId, variables: &[(String, NodeId)]) -> Option<String> {
    for (name, node) in variables {
        let Ok(sql) = translator.dataset_query(population, &[*node]) else { continue };
        if spark.query(&sql, name).is_err() {
            return Some(name.clone());
        }
    }
    None
}

/// Evaluates a dataset on Spark and writes it; returns the number of dataset rows.
pub fn generate_dataset(
    spark: &Spark,
    graph: &Graph,
    dataset: &DatasetSpec,
    tables: &Tables,
    target: &Target,
) -> Result<usize, SparkFailure> {
    let roots = dataset.roots();
    let (relation, order) = spark.register_tables(graph, &roots, tables)?;
    let mut translator = translator(graph, relation, order, &roots);
    let shape = quarry_engine::DatasetShape::new(graph, dataset);
    let variables: Vec<NodeId> = dataset.variables.iter().map(|(_, n)| *n).collect();
    let mut queries = vec![(
        "dataset".to_string(),
        translator.dataset_query(dataset.population, &variables).map_err(|e| SparkFailure::Translate(e.to_string()))?,
    )];
    for (t, (name, _)) in dataset.events.iter().enumerate() {
        let (cols, order) = shape.event_table(t);
        let nodes: Vec<NodeId> = cols.iter().map(|(_, n)| *n).collect();
        queries.push((
            name.clone(),
            translator.event_query(dataset.population, &nodes, order).map_err(|e| SparkFailure::Translate(e.to_string()))?,
        ));
    }
    let mut done = 0;
    spark.register_views(graph, translator.views(), &mut done)?;
    if std::env::var_os("QUARRY_SPARK_SHOW_SQL").is_some() {
        for (name, q) in &queries {
            eprintln!("[spark] SQL for {name}:\n{q}");
        }
    }
    let mut stream = output::TableStream::open(target, shape.layouts()).map_err(SparkFailure::Output)?;
    let encoder = stream.encoder();
    let mut dataset_rows = 0;
    for (i, ((name, sql), (_, layout))) in queries.iter().zip(shape.layouts()).enumerate() {
        let types: Vec<Type> = if i == 0 {
            dataset.variables.iter().map(|(_, n)| graph.type_of(*n).cloned().unwrap_or(Type::Bool)).collect()
        } else {
            shape.event_table(i - 1).0.iter().map(|(_, n)| graph.type_of(*n).cloned().unwrap_or(Type::Bool)).collect()
        };
        debug_assert_eq!(types.len() + 1, layout.len());
        let batches = match spark.query(sql, name) {
            Ok(b) => b,
            Err(message) => {
                let variable = if i == 0 { culprit(spark, &mut translator, dataset.population, &dataset.variables) } else { None };
                let from = variable.map(|v| format!(" (from variable `{v}`)")).unwrap_or_default();
                return Err(match evaluation_error(&message) {
                    Some(e) => SparkFailure::Query(format!("error evaluating the dataset on Spark{from}: {e}")),
                    None => SparkFailure::Query(format!("Spark rejected the query for table `{name}`{from}:\n{message}")),
                });
            }
        };
        for batch in &batches {
            let rows =
                batch_rows(batch, &types).map_err(|e| SparkFailure::Query(format!("unexpected result from Spark for `{name}`: {e}")))?;
            if i == 0 {
                dataset_rows += rows.len();
            }
            stream.write(i, encoder.chunk(rows)).map_err(SparkFailure::Output)?;
        }
    }
    stream.finish().map_err(SparkFailure::Output)?;
    Ok(dataset_rows)
}

/// Evaluates measures on Spark: each interval's per-patient values come from Spark, and
/// quarry sums them as the local engines do (disclosure control is the caller's, as for them).
pub fn generate_measures(spark: &Spark, graph: &Graph, spec: &MeasuresSpec, tables: &Tables) -> Result<output::Table, SparkFailure> {
    let outputs = quarry_engine::measures::measures_outputs(spec);
    let (relation, order) = spark.register_tables(graph, &outputs, tables)?;
    let mut translator = translator(graph, relation, order, &outputs);
    let types: Vec<Type> = outputs.iter().map(|n| graph.type_of(*n).cloned().unwrap_or(Type::Bool)).collect();
    let mut done = 0;
    quarry_engine::measures::aggregate_measures(graph, spec, |(start, end), add| {
        translator.set_param("interval_start_date", Value::Date(start));
        translator.set_param("interval_end_date", Value::Date(end));
        let sql = translator.patients_query(&outputs).map_err(|e| SparkFailure::Translate(e.to_string()))?;
        spark.register_views(graph, translator.views(), &mut done)?;
        let what = format!("interval {start} to {end}");
        let batches = spark.query(&sql, &what).map_err(|m| match evaluation_error(&m) {
            Some(e) => SparkFailure::Query(format!("error evaluating the measures on Spark ({what}): {e}")),
            None => SparkFailure::Query(format!("Spark rejected the measures query ({what}):\n{m}")),
        })?;
        for batch in &batches {
            for row in batch_rows(batch, &types).map_err(|e| SparkFailure::Query(format!("unexpected result from Spark: {e}")))? {
                add(&row[1..]);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes() {
        assert_eq!(remote_address("sc://localhost:15002").unwrap(), ("localhost".to_string(), 15002));
        assert_eq!(remote_address("sc://spark.example/;use_ssl=true").unwrap(), ("spark.example".to_string(), 15002));
        assert_eq!(remote_address("sc://[::1]:9000").unwrap(), ("::1".to_string(), 9000));
        assert!(remote_address("localhost:15002").is_err());
        assert!(remote_address("sc://host:port").is_err());
    }

    #[test]
    fn ehrql_errors_are_found_in_spark_messages() {
        let m = "[USER_RAISED_EXCEPTION] OverflowError: (34, 'Numerical result out of range') SQLSTATE: P0001";
        assert_eq!(evaluation_error(m).unwrap(), "OverflowError: (34, 'Numerical result out of range')");
    }
}
