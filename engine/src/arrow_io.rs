//! Typed files: Arrow IPC and Parquet, written as ehrQL writes Arrow (ehrql.md §4.4: the IPC
//! file format, zstd-compressed record batches of 64,000 rows, the narrowest integer type for a
//! known range, categorical strings as ordered dictionaries with signed indices, every field
//! nullable but `patient_id`), and read back for dummy tables and analysis inputs.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, DictionaryArray, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use quarry_queries::qm::{Float, Type, Value};
use quarry_queries::semantics::Scalar;

use crate::columns::{ColumnKind, ColumnSpec};
use crate::dummy::days;

/// Rows per record batch, as ehrQL writes them.
pub const ROWS_PER_BATCH: usize = 64_000;

/// The smallest integer type for a range (ehrQL's `smallest_int_type_for_range`).
fn int_type(min: Option<i64>, max: Option<i64>) -> DataType {
    let (Some(min), Some(max)) = (min, max) else { return DataType::Int64 };
    let abs_max = max.unsigned_abs().max(min.unsigned_abs());
    if min < 0 {
        match abs_max {
            m if m < 1 << 7 => DataType::Int8,
            m if m < 1 << 15 => DataType::Int16,
            m if m < 1 << 31 => DataType::Int32,
            _ => DataType::Int64,
        }
    } else {
        match abs_max {
            m if m < 1 << 8 => DataType::UInt8,
            m if m < 1 << 16 => DataType::UInt16,
            m if m < 1 << 32 => DataType::UInt32,
            _ => DataType::UInt64,
        }
    }
}

fn value_type(kind: &ColumnKind) -> DataType {
    match kind {
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::Int { min, max } => int_type(*min, *max),
        ColumnKind::Float => DataType::Float64,
        ColumnKind::Str => DataType::Utf8,
        ColumnKind::Date => DataType::Date32,
    }
}

fn field(spec: &ColumnSpec) -> Field {
    let values = value_type(&spec.kind);
    match &spec.categories {
        Some(categories) => {
            // Signed indices, as ehrQL chooses them (pandas cannot read unsigned ones).
            let index = int_type(Some(-1), Some(categories.len() as i64 - 1));
            Field::new(&spec.name, DataType::Dictionary(Box::new(index), Box::new(values)), spec.nullable).with_dict_is_ordered(true)
        }
        None => Field::new(&spec.name, values, spec.nullable),
    }
}

pub fn schema(specs: &[ColumnSpec]) -> Schema {
    Schema::new(specs.iter().map(field).collect::<Vec<_>>())
}

/// Builds one column's array of plain values (before any narrowing).
fn plain_array(kind: &ColumnKind, values: &mut dyn Iterator<Item = &Scalar>) -> Result<ArrayRef, String> {
    let mismatch = |v: &Value| format!("unexpected value {v:?} for a {kind:?} column");
    // One builder loop per kind: NULL, the kind's value, or a mismatch.
    macro_rules! build {
        ($builder:expr, $pattern:pat => $value:expr) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    None => b.append_null(),
                    Some($pattern) => b.append_value($value),
                    Some(other) => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match kind {
        ColumnKind::Bool => build!(BooleanBuilder::new(), Value::Bool(x) => *x),
        ColumnKind::Int { .. } => build!(Int64Builder::new(), Value::Int(x) => *x),
        // ehrQL's `int ** int` leaves Python ints in a float series (`column::Array::Values`),
        // which pyarrow writes to the float column as floats.
        ColumnKind::Float => {
            let mut b = Float64Builder::new();
            for v in values {
                match v {
                    None => b.append_null(),
                    Some(Value::Float(x)) => b.append_value(x.0),
                    // pyarrow refuses an int a double cannot hold exactly.
                    Some(Value::Int(x)) if x.unsigned_abs() <= 1 << 53 => b.append_value(*x as f64),
                    Some(Value::Int(x)) => {
                        return Err(format!(
                            "integer value {x} is outside of the range exactly representable by a IEEE 754 double precision value"
                        ));
                    }
                    Some(other) => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
        ColumnKind::Str => build!(StringBuilder::new(), Value::Str(x) | Value::Code(_, x) => x),
        ColumnKind::Date => build!(Date32Builder::new(), Value::Date(d) => days::to_days(*d) as i32),
    })
}

/// Casts an `Int64` array to a narrow type, failing on a value outside it.
fn narrow(array: ArrayRef, to: &DataType, column: &str) -> Result<ArrayRef, String> {
    fn cast<T: arrow_array::ArrowPrimitiveType>(a: &PrimitiveArray<Int64Type>, column: &str) -> Result<ArrayRef, String>
    where
        T::Native: TryFrom<i64>,
    {
        let mut out = Vec::with_capacity(a.len());
        for v in a.iter() {
            out.push(match v {
                None => None,
                Some(x) => Some(
                    T::Native::try_from(x)
                        .map_err(|_| format!("column '{column}': value {x} does not fit the column's type ({})", T::DATA_TYPE))?,
                ),
            });
        }
        Ok(Arc::new(PrimitiveArray::<T>::from_iter(out)))
    }
    let a = array.as_primitive::<Int64Type>();
    match to {
        DataType::Int64 => Ok(array),
        DataType::Int8 => cast::<Int8Type>(a, column),
        DataType::Int16 => cast::<Int16Type>(a, column),
        DataType::Int32 => cast::<Int32Type>(a, column),
        DataType::UInt8 => cast::<UInt8Type>(a, column),
        DataType::UInt16 => cast::<UInt16Type>(a, column),
        DataType::UInt32 => cast::<UInt32Type>(a, column),
        DataType::UInt64 => cast::<UInt64Type>(a, column),
        other => unreachable!("not an integer type: {other}"),
    }
}

/// One column's encoder: its spec, and for a categorical column the dictionary built once (so
/// every batch shares it, as the IPC file format requires).
struct ColumnEncoder {
    spec: ColumnSpec,
    dictionary: Option<ArrayRef>,
}

impl ColumnEncoder {
    fn new(spec: &ColumnSpec) -> Result<ColumnEncoder, String> {
        let dictionary = match &spec.categories {
            Some(categories) => {
                let plain = plain_array(&spec.kind, &mut categories.iter().map(|c| Some(c.clone())).collect::<Vec<_>>().iter())?;
                Some(narrow_if_int(plain, &spec.kind, &spec.name)?)
            }
            None => None,
        };
        Ok(ColumnEncoder { spec: spec.clone(), dictionary })
    }

    fn encode(&self, rows: &[Vec<Scalar>], at: usize) -> Result<ArrayRef, String> {
        let spec = &self.spec;
        let Some(dictionary) = &self.dictionary else {
            let plain = plain_array(&spec.kind, &mut rows.iter().map(|r| &r[at]))?;
            return narrow_if_int(plain, &spec.kind, &spec.name);
        };
        let categories = spec.categories.as_ref().expect("a dictionary column has categories");
        let mut keys: Vec<Option<i32>> = Vec::with_capacity(rows.len());
        for r in rows {
            keys.push(match &r[at] {
                None => None,
                Some(v) => {
                    let i = categories.iter().position(|c| same_category(c, v)).ok_or_else(|| not_a_category(spec, v))?;
                    Some(i as i32)
                }
            });
        }
        dictionary_of(&keys, categories.len(), dictionary)
    }
}

impl ColumnEncoder {
    /// A typed column as this column's Arrow array: the common types converted whole (a
    /// categorical text column's categories found once per dictionary value); anything else
    /// (values only a `Values` column holds, a type the spec does not expect) slot by slot
    /// through [`ColumnEncoder::encode`], with its errors.
    fn encode_column(&self, a: &crate::column::Array) -> Result<ArrayRef, String> {
        use crate::column::Array as A;
        let spec = &self.spec;
        let slots = || self.encode(&(0..a.len()).map(|i| vec![a.get(i)]).collect::<Vec<_>>(), 0);
        if let Some(dictionary) = &self.dictionary {
            let A::Text(keys, dict, nulls) = a else { return slots() };
            let categories = spec.categories.as_ref().expect("a dictionary column has categories");
            let of_key: Vec<Option<i32>> =
                dict.values.iter().map(|v| categories.iter().position(|c| same_category(c, v)).map(|i| i as i32)).collect();
            let mut out: Vec<Option<i32>> = Vec::with_capacity(keys.len());
            for (i, &k) in keys.iter().enumerate() {
                if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    out.push(None);
                    continue;
                }
                out.push(Some(of_key[k as usize].ok_or_else(|| not_a_category(spec, &dict.values[k as usize]))?));
            }
            return dictionary_of(&out, categories.len(), dictionary);
        }
        // A NULL slot's value is whatever a kernel left there; written as the zero (or False)
        // a builder writes, so the file's bytes do not depend on the path the rows took.
        fn zeroed<T: arrow_buffer::ArrowNativeType>(v: &[T], n: &Option<arrow_buffer::NullBuffer>) -> arrow_buffer::ScalarBuffer<T> {
            match n {
                None => v.to_vec().into(),
                Some(n) => v.iter().enumerate().map(|(i, x)| if n.is_valid(i) { *x } else { T::default() }).collect::<Vec<T>>().into(),
            }
        }
        let plain: ArrayRef = match (&spec.kind, a) {
            (ColumnKind::Bool, A::Bool(_, n)) => Arc::new(arrow_array::BooleanArray::new(a.true_bits(), n.clone())),
            (ColumnKind::Int { .. }, A::Int(v, n)) => Arc::new(arrow_array::Int64Array::new(zeroed(v, n), n.clone())),
            (ColumnKind::Float, A::Float(v, n)) => Arc::new(arrow_array::Float64Array::new(zeroed(v, n), n.clone())),
            (ColumnKind::Date, A::Date(v, n)) => Arc::new(arrow_array::Date32Array::new(zeroed(v, n), n.clone())),
            (ColumnKind::Str, A::Text(keys, dict, n)) => {
                let mut b = StringBuilder::with_capacity(keys.len(), keys.len() * 8);
                for (i, &k) in keys.iter().enumerate() {
                    match n.as_ref().is_some_and(|n| n.is_null(i)) {
                        true => b.append_null(),
                        false => b.append_value(dict.text(k)),
                    }
                }
                Arc::new(b.finish())
            }
            _ => return slots(),
        };
        narrow_if_int(plain, &spec.kind, &spec.name)
    }
}

fn not_a_category(spec: &ColumnSpec, v: &Value) -> String {
    format!("column '{}': value {} is not one of its categories", spec.name, crate::output::render_value(&Some(v.clone())))
}

/// A categorical column's keys (indexes into its `categories` categories, `dictionary`) as
/// the dictionary array ehrQL writes: the narrowest signed key type.
fn dictionary_of(keys: &[Option<i32>], categories: usize, dictionary: &ArrayRef) -> Result<ArrayRef, String> {
    fn dict<K: arrow_array::types::ArrowDictionaryKeyType>(keys: &[Option<i32>], values: &ArrayRef) -> Result<ArrayRef, String>
    where
        K::Native: TryFrom<i32>,
    {
        let keys = PrimitiveArray::<K>::from_iter(keys.iter().map(|k| k.and_then(|k| K::Native::try_from(k).ok())));
        Ok(Arc::new(DictionaryArray::<K>::try_new(keys, values.clone()).map_err(|e| e.to_string())?))
    }
    match int_type(Some(-1), Some(categories as i64 - 1)) {
        DataType::Int8 => dict::<Int8Type>(keys, dictionary),
        DataType::Int16 => dict::<Int16Type>(keys, dictionary),
        _ => dict::<Int32Type>(keys, dictionary),
    }
}

/// Codes and strings are the same category when their text is.
pub(crate) fn same_category(category: &Value, v: &Value) -> bool {
    match (category, v) {
        (Value::Str(a) | Value::Code(_, a), Value::Str(b) | Value::Code(_, b)) => a == b,
        _ => category == v,
    }
}

fn narrow_if_int(array: ArrayRef, kind: &ColumnKind, column: &str) -> Result<ArrayRef, String> {
    match kind {
        ColumnKind::Int { min, max } => narrow(array, &int_type(*min, *max), column),
        _ => Ok(array),
    }
}

enum Sink {
    Ipc(Box<arrow_ipc::writer::FileWriter<BufWriter<File>>>),
    Parquet(Box<parquet::arrow::ArrowWriter<BufWriter<File>>>),
}

/// A typed file being written: rows are buffered and written a record batch at a time.
pub struct TypedWriter {
    schema: SchemaRef,
    encoders: Vec<ColumnEncoder>,
    /// Rows pushed as values and not yet encoded (newer than `parts`).
    pending: Vec<Vec<Scalar>>,
    /// Encoded rows not yet written, part after part (each part's arrays one per column),
    /// and how many rows they hold: record batches are cut from them `ROWS_PER_BATCH` at a time.
    parts: Vec<Vec<ArrayRef>>,
    parts_rows: usize,
    sink: Sink,
}

impl TypedWriter {
    /// Starts an Arrow IPC (`parquet == false`) or Parquet file.
    pub fn create(file: File, specs: &[ColumnSpec], parquet: bool) -> Result<TypedWriter, String> {
        let schema = Arc::new(schema(specs));
        let out = BufWriter::with_capacity(1 << 20, file);
        let sink = if parquet {
            let mut props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::default()));
            // Tests write small row groups (`QUARRY_PARQUET_ROW_GROUP_ROWS`) to cross their
            // boundaries; the default is Parquet's (about a million rows).
            if let Some(rows) = std::env::var("QUARRY_PARQUET_ROW_GROUP_ROWS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0) {
                props = props.set_max_row_group_row_count(Some(rows));
            }
            let props = props.build();
            Sink::Parquet(Box::new(parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| e.to_string())?))
        } else {
            let options = arrow_ipc::writer::IpcWriteOptions::default()
                .try_with_compression(Some(arrow_ipc::CompressionType::ZSTD))
                .map_err(|e| e.to_string())?;
            Sink::Ipc(Box::new(arrow_ipc::writer::FileWriter::try_new_with_options(out, &schema, options).map_err(|e| e.to_string())?))
        };
        let encoders = specs.iter().map(ColumnEncoder::new).collect::<Result<_, _>>()?;
        Ok(TypedWriter { schema, encoders, pending: Vec::with_capacity(ROWS_PER_BATCH), parts: vec![], parts_rows: 0, sink })
    }

    pub fn push(&mut self, rows: impl IntoIterator<Item = Vec<Scalar>>) -> Result<(), String> {
        for row in rows {
            self.pending.push(row);
            if self.pending.len() + self.parts_rows == ROWS_PER_BATCH {
                self.write_full(false)?;
            }
        }
        Ok(())
    }

    /// Rows given as the engine's typed columns (one per output column, all the same length):
    /// each converted whole, with no value made per cell (but for what only values hold).
    pub fn push_columns(&mut self, columns: &[crate::column::Array]) -> Result<(), String> {
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return Ok(());
        }
        self.encode_pending()?;
        let arrays = self.encoders.iter().zip(columns).map(|(e, c)| e.encode_column(c)).collect::<Result<Vec<_>, _>>()?;
        self.parts.push(arrays);
        self.parts_rows += rows;
        if self.parts_rows >= ROWS_PER_BATCH {
            self.write_full(false)?;
        }
        Ok(())
    }

    /// Moves the pending rows into `parts`.
    fn encode_pending(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let arrays = self.encoders.iter().enumerate().map(|(i, e)| e.encode(&self.pending, i)).collect::<Result<Vec<_>, _>>()?;
        self.parts_rows += self.pending.len();
        self.parts.push(arrays);
        self.pending.clear();
        Ok(())
    }

    /// Writes every full record batch of what is buffered (and, when `all`, the rest).
    fn write_full(&mut self, all: bool) -> Result<(), String> {
        self.encode_pending()?;
        if self.parts_rows == 0 {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.parts);
        let columns: Vec<ArrayRef> = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            (0..self.schema.fields().len())
                .map(|c| arrow_select::concat::concat(&parts.iter().map(|p| p[c].as_ref()).collect::<Vec<_>>()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        };
        let total = self.parts_rows;
        let mut start = 0;
        while start < total {
            let len = ROWS_PER_BATCH.min(total - start);
            if len < ROWS_PER_BATCH && !all {
                break;
            }
            let batch = RecordBatch::try_new(self.schema.clone(), columns.iter().map(|c| c.slice(start, len)).collect())
                .map_err(|e| e.to_string())?;
            match &mut self.sink {
                Sink::Ipc(w) => w.write(&batch).map_err(|e| e.to_string())?,
                Sink::Parquet(w) => w.write(&batch).map_err(|e| e.to_string())?,
            }
            start += len;
        }
        self.parts_rows = total - start;
        if self.parts_rows > 0 {
            self.parts.push(columns.iter().map(|c| c.slice(start, total - start)).collect());
        }
        Ok(())
    }

    /// Writes what is left and the footer, and returns the file.
    pub fn finish(mut self) -> Result<File, String> {
        self.write_full(true)?;
        let out = match self.sink {
            Sink::Ipc(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())?
            }
            Sink::Parquet(w) => w.into_inner().map_err(|e| e.to_string())?,
        };
        out.into_inner().map_err(|e| e.into_error().to_string())
    }
}

/// A typed file read whole: its column names and record batches.
pub struct TypedFile {
    pub names: Vec<String>,
    pub batches: Vec<RecordBatch>,
}

impl TypedFile {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Reads an Arrow IPC file (`.arrow`, `.feather`) or a Parquet file (`.parquet`).
pub fn read_file(path: &Path) -> Result<TypedFile, String> {
    crate::parquet_guard::contain(&path.display().to_string(), || read_file_unguarded(path))
}

fn read_file_unguarded(path: &Path) -> Result<TypedFile, String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    let (schema, batches): (SchemaRef, Vec<RecordBatch>) = if is_parquet {
        crate::parquet_guard::check(&mut file).map_err(|m| format!("{shown}: {m}"))?;
        let probe = file.try_clone().map_err(|e| format!("cannot read {shown}: {e}"))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(file, parquet_options())
            .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))?;
        crate::parquet_guard::check_pages(std::sync::Arc::new(probe), builder.metadata(), |_, _| true)
            .map_err(|m| format!("{shown}: {m}"))?;
        let schema = builder.schema().clone();
        let reader = builder.with_batch_size(ROWS_PER_BATCH).build().map_err(|e| format!("{shown}: {e}"))?;
        (schema, reader.collect::<Result<_, _>>().map_err(|e| format!("{shown}: {e}"))?)
    } else {
        let reader = arrow_ipc::reader::FileReader::try_new_buffered(file, None)
            .map_err(|e| format!("{shown}: not a readable Arrow IPC file: {e}"))?;
        let schema = reader.schema();
        (schema, reader.collect::<Result<_, _>>().map_err(|e| format!("{shown}: {e}"))?)
    };
    Ok(TypedFile { names: schema.fields().iter().map(|f| f.name().clone()).collect(), batches })
}

/// How quarry reads Parquet: the Arrow types come from the Parquet schema itself, not from the
/// Arrow schema a writer may have embedded in the footer's metadata (`ARROW:schema`): the
/// `arrow-ipc` crate panics on some malformed embedded schemas (an integer 168 bits wide, found
/// by fuzzing), and the Parquet schema says all quarry needs.
pub fn parquet_options() -> parquet::arrow::arrow_reader::ArrowReaderOptions {
    parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// Whether an Arrow type can hold a column of this ehrQL type (ehrQL checks the class of the
/// type only: any integer for `int`, any float for `float`; dictionaries by their values).
pub fn type_matches(data_type: &DataType, want: &Type) -> bool {
    let data_type = match data_type {
        DataType::Dictionary(_, values) => values.as_ref(),
        other => other,
    };
    match want {
        Type::Bool => matches!(data_type, DataType::Boolean),
        Type::Int => data_type.is_integer(),
        Type::Float => data_type.is_floating(),
        Type::Str | Type::Code(_) | Type::MultiCodeString(_) => {
            matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        }
        Type::Date => matches!(data_type, DataType::Date32 | DataType::Date64),
        Type::Set(_) => false,
    }
}

fn out_of_range(day: i64) -> String {
    format!("the date {day} days from 1970-01-01 is outside years 1–9999")
}

/// A day number's date, or why it is not one.
fn date(day: i64) -> Result<jiff::civil::Date, String> {
    days::checked_date(day).ok_or_else(|| out_of_range(day))
}

/// The value at `row`, as the plain value its Arrow type holds.
pub fn value_at(array: &dyn Array, row: usize) -> Result<Scalar, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    macro_rules! int {
        ($t:ty) => {
            Value::Int(i64::try_from(array.as_primitive::<$t>().value(row)).map_err(|_| "an integer too large for int64".to_string())?)
        };
    }
    Ok(Some(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => Value::Float(Float(array.as_primitive::<Float32Type>().value(row) as f64)),
        DataType::Float64 => Value::Float(Float(array.as_primitive::<Float64Type>().value(row))),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::Str(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::Str(array.as_string_view().value(row).to_string()),
        DataType::Date32 => Value::Date(date(array.as_primitive::<Date32Type>().value(row) as i64)?),
        DataType::Date64 => Value::Date(date(array.as_primitive::<arrow_array::types::Date64Type>().value(row).div_euclid(86_400_000))?),
        DataType::Dictionary(..) => {
            // The key of this row only (normalized_keys() would unpack the whole array).
            let dict = array.as_any_dictionary();
            let Some(Value::Int(key)) = value_at(dict.keys(), row)? else { return Ok(None) };
            return value_at(dict.values().as_ref(), key as usize);
        }
        other => return Err(format!("unsupported Arrow type {other}")),
    }))
}

/// A whole column's values, typed as the schema column wants: one pass per array with the
/// common types unpacked directly (what reading a backend spends its time on).
pub fn column_values(array: &dyn Array, want: &Type) -> Result<Vec<Scalar>, String> {
    let n = array.len();
    let valid = |i: usize| !array.is_null(i);
    Ok(match (array.data_type(), want) {
        (DataType::Int64, _) => {
            let a = array.as_primitive::<Int64Type>();
            (0..n).map(|i| valid(i).then(|| Value::Int(a.value(i)))).collect()
        }
        (DataType::Float64, _) => {
            let a = array.as_primitive::<Float64Type>();
            (0..n).map(|i| valid(i).then(|| Value::Float(Float(a.value(i))))).collect()
        }
        (DataType::Date32, _) => {
            // Dates repeat: each thread keeps its conversions by day number (65,536 slots,
            // so 179 consecutive years never collide).
            thread_local! {
                static MEMO: std::cell::RefCell<Vec<(i32, Option<jiff::civil::Date>)>> = std::cell::RefCell::new(vec![(i32::MIN, None); 1 << 16]);
            }
            let a = array.as_primitive::<Date32Type>();
            MEMO.with_borrow_mut(|memo| -> Result<Vec<Scalar>, String> {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    if !valid(i) {
                        out.push(None);
                        continue;
                    }
                    let day = a.value(i);
                    let slot = &mut memo[day as u32 as usize & 0xffff];
                    if slot.0 != day {
                        *slot = (day, days::checked_date(day as i64));
                    }
                    out.push(Some(Value::Date(slot.1.ok_or_else(|| out_of_range(day as i64))?)));
                }
                Ok(out)
            })?
        }
        (DataType::Boolean, _) => {
            let a = array.as_boolean();
            (0..n).map(|i| valid(i).then(|| Value::Bool(a.value(i)))).collect()
        }
        (DataType::Utf8, Type::Code(c)) => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| valid(i).then(|| Value::Code(*c, a.value(i).to_string()))).collect()
        }
        (DataType::Utf8, _) => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| valid(i).then(|| Value::Str(a.value(i).to_string()))).collect()
        }
        (DataType::Dictionary(..), _) => {
            let dict = array.as_any_dictionary();
            let keys = dict.normalized_keys();
            if dict.values().len() > n {
                // A dictionary larger than the batch (Parquet shares one per column chunk, and
                // a column of mostly distinct values has a large one): only the used values.
                (0..n)
                    .map(|i| if valid(i) { typed_value_at(dict.values().as_ref(), keys[i], want) } else { Ok(None) })
                    .collect::<Result<_, _>>()?
            } else {
                // Each dictionary value converted once, then looked up by key.
                let values = column_values(dict.values().as_ref(), want)?;
                (0..n).map(|i| if valid(i) { values.get(keys[i]).cloned().flatten() } else { None }).collect()
            }
        }
        _ => (0..n).map(|i| typed_value_at(array, i, want)).collect::<Result<_, _>>()?,
    })
}

/// The value at `row`, typed as the schema column wants (codes keep their system).
pub fn typed_value_at(array: &dyn Array, row: usize, want: &Type) -> Result<Scalar, String> {
    Ok(match (value_at(array, row)?, want) {
        (Some(Value::Str(s)), Type::Code(c)) => Some(Value::Code(*c, s)),
        (v, _) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::column::Array as Column;

    /// Arrow IPC files compressed with LZ4 (as pyarrow and pandas may write them; found in a
    /// public study's committed dummy data) and with zstd (as ehrQL writes them) are read.
    #[test]
    fn lz4_and_zstd_ipc_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("patient_id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3]))]).unwrap();
        for (name, compression) in [("lz4", arrow_ipc::CompressionType::LZ4_FRAME), ("zstd", arrow_ipc::CompressionType::ZSTD)] {
            let path = dir.path().join(format!("{name}.arrow"));
            let options = arrow_ipc::writer::IpcWriteOptions::default().try_with_compression(Some(compression)).unwrap();
            let mut writer = arrow_ipc::writer::FileWriter::try_new_with_options(File::create(&path).unwrap(), &schema, options).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            let read = read_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(read.rows(), 3, "{name}");
            assert_eq!(read.batches[0].column(0).as_ref(), batch.column(0).as_ref(), "{name}");
        }
    }

    /// Rows written as typed columns (in chunks of uneven sizes, across record batches) make
    /// the same file, byte for byte, as the same rows written as values: narrowed integers,
    /// categories, dates, text and NULLs; Arrow IPC and Parquet.
    #[test]
    fn typed_columns_write_the_bytes_rows_do() {
        let specs = vec![
            ColumnSpec { nullable: false, ..ColumnSpec::new("patient_id", ColumnKind::Int { min: None, max: None }) },
            ColumnSpec::new("age", ColumnKind::Int { min: Some(0), max: Some(200) }),
            ColumnSpec::new("flag", ColumnKind::Bool),
            ColumnSpec::new("value", ColumnKind::Float),
            ColumnSpec::new("date", ColumnKind::Date),
            ColumnSpec::new("code", ColumnKind::Str),
            ColumnSpec {
                categories: Some(vec![Value::Str("F".into()), Value::Str("M".into()), Value::Str("unknown".into())]),
                ..ColumnSpec::new("sex", ColumnKind::Str)
            },
        ];
        let types = [Type::Int, Type::Int, Type::Bool, Type::Float, Type::Date, Type::Str, Type::Str];
        let value = |c: usize, r: usize| -> Scalar {
            if c > 0 && (r * 7 + c).is_multiple_of(11) {
                return None;
            }
            Some(match c {
                0 => Value::Int(r as i64),
                1 => Value::Int((r % 201) as i64),
                2 => Value::Bool(r.is_multiple_of(3)),
                3 => Value::Float(Float(r as f64 / 8.0)),
                4 => Value::Date(crate::column::days_date(18_000 + (r % 900) as i32)),
                5 => Value::Str(format!("code{}", r % 37)),
                _ => Value::Str(["F", "M", "unknown"][r % 3].into()),
            })
        };
        let rows: Vec<Vec<Scalar>> = (0..ROWS_PER_BATCH * 2 + 517).map(|r| (0..specs.len()).map(|c| value(c, r)).collect()).collect();
        let dir = tempfile::tempdir().unwrap();
        for parquet in [false, true] {
            let write = |name: &str, typed: bool| {
                let path = dir.path().join(name);
                let mut w = TypedWriter::create(File::create(&path).unwrap(), &specs, parquet).unwrap();
                let mut start = 0;
                for size in [1, 1000, 70_000, 3, 33_333].into_iter().cycle() {
                    let part = &rows[start..(start + size).min(rows.len())];
                    match typed {
                        true => {
                            let columns: Vec<Column> =
                                types.iter().enumerate().map(|(c, t)| Column::from_scalars(t, part.iter().map(|r| &r[c]))).collect();
                            w.push_columns(&columns).unwrap();
                        }
                        false => w.push(part.to_vec()).unwrap(),
                    }
                    start += part.len();
                    if start == rows.len() {
                        break;
                    }
                }
                w.finish().unwrap();
                std::fs::read(&path).unwrap()
            };
            let ext = if parquet { "parquet" } else { "arrow" };
            let (by_rows, by_columns) = (write(&format!("rows.{ext}"), false), write(&format!("columns.{ext}"), true));
            assert!(by_rows == by_columns, "{ext}: the files differ");
            let file = read_file(&dir.path().join(format!("columns.{ext}"))).unwrap();
            assert_eq!(file.rows(), rows.len());
            if !parquet {
                let sizes: Vec<usize> = file.batches.iter().map(|b| b.num_rows()).collect();
                assert_eq!(sizes, [ROWS_PER_BATCH, ROWS_PER_BATCH, 517], "ehrQL's record batches");
            }
        }
    }

    /// What a kernel left under a NULL slot is not written: the file is the one a builder
    /// (zeros and False under NULLs) makes.
    #[test]
    fn values_under_nulls_are_not_written() {
        use arrow_buffer::{BooleanBuffer, NullBuffer};
        let specs = [
            ColumnSpec::new("b", ColumnKind::Bool),
            ColumnSpec::new("i", ColumnKind::Int { min: None, max: None }),
            ColumnSpec::new("d", ColumnKind::Date),
            ColumnSpec::new("s", ColumnKind::Str),
            ColumnSpec { categories: Some(vec![Value::Str("a".into())]), ..ColumnSpec::new("c", ColumnKind::Str) },
        ];
        let nulls = || Some(NullBuffer::new(BooleanBuffer::from(vec![true, false, true])));
        let dict = Arc::new(crate::column::Dict::new(vec![Value::Str("a".into())]));
        let garbage = [
            Column::Bool(BooleanBuffer::from(vec![true, true, false]), nulls()),
            Column::Int(Arc::new(vec![5, 99, 6]), nulls()),
            Column::Date(Arc::new(vec![1, 77, 2]), nulls()),
            Column::Text(Arc::new(vec![0, u32::MAX, 0]), dict.clone(), nulls()),
            Column::Text(Arc::new(vec![0, u32::MAX, 0]), dict, nulls()),
        ];
        let types = [Type::Bool, Type::Int, Type::Date, Type::Str, Type::Str];
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, columns: &[Column]| {
            let path = dir.path().join(name);
            let mut w = TypedWriter::create(File::create(&path).unwrap(), &specs, false).unwrap();
            w.push_columns(columns).unwrap();
            w.finish().unwrap();
            std::fs::read(&path).unwrap()
        };
        let clean: Vec<Column> =
            garbage.iter().zip(&types).map(|(c, t)| Column::from_scalars(t, (0..3).map(|i| c.get(i)).collect::<Vec<_>>().iter())).collect();
        assert!(write("garbage.arrow", &garbage) == write("clean.arrow", &clean));
    }

    /// ehrQL's `int ** int` leaves Python ints in a float series: they are written to the
    /// float column as floats (as pyarrow converts them), by rows and by typed columns alike.
    #[test]
    fn integers_in_a_float_series_are_written_as_floats() {
        let specs = [ColumnSpec::new("x", ColumnKind::Float)];
        let values = vec![Some(Value::Int(49)), None, Some(Value::Float(Float(2.5)))];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.arrow");
        let mut w = TypedWriter::create(File::create(&path).unwrap(), &specs, false).unwrap();
        w.push_columns(&[Column::Values(Arc::new(values.clone()))]).unwrap();
        w.push(values.iter().map(|v| vec![v.clone()])).unwrap();
        w.finish().unwrap();
        let file = read_file(&path).unwrap();
        let x = file.batches[0].column(0).as_primitive::<Float64Type>().iter().collect::<Vec<_>>();
        assert_eq!(x, [Some(49.0), None, Some(2.5), Some(49.0), None, Some(2.5)]);
        // One a double cannot hold exactly is refused, as pyarrow refuses it (41 ** 10).
        let mut w = TypedWriter::create(File::create(dir.path().join("y.arrow")).unwrap(), &specs, false).unwrap();
        let e = w.push_columns(&[Column::Values(Arc::new(vec![Some(Value::Int(13_422_659_310_152_401))]))]).unwrap_err();
        assert!(e.contains("integer value 13422659310152401 is outside of the range exactly representable"), "{e}");
    }
}
