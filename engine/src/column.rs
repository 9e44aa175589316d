//! Typed columns: one node's values over a partition, Arrow-shaped — integers, floats and dates
//! (day numbers) unboxed in vectors, booleans and validity as bitmaps (`arrow_buffer`), strings
//! and codes as dictionary keys with the dictionary beside them. No cell is an enum and no
//! string is copied per cell: the columnar evaluator's kernels (`column_kernels`) read and
//! write these, and only the sink turns cells back into values.
//!
//! Values in NULL slots are unspecified (whatever a kernel computed there); every reader
//! checks validity first, as Arrow's do.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use arrow_buffer::{BooleanBuffer, BooleanBufferBuilder, NullBuffer};
use quarry_queries::qm::{Float, Type, Value};
use quarry_queries::semantics::{Scalar, compare};

use crate::dummy::days;

/// Validity: `None` when every slot is valid.
pub type Nulls = Option<NullBuffer>;

/// The distinct strings (or codes of one system) of a text column, each once, and (made on
/// first use, as most text is only tested for equality or membership) each one's rank in byte
/// order, so sorting and comparing read integers. Never empty: a column of NULLs only has a
/// placeholder for its keys (0) to point at, so kernels can read every slot.
#[derive(Debug)]
pub struct Dict {
    pub values: Vec<Value>,
    ranks: std::sync::OnceLock<Vec<u32>>,
}

impl Dict {
    pub fn new(mut values: Vec<Value>) -> Dict {
        if values.is_empty() {
            values.push(Value::Str(String::new()));
        }
        Dict { values, ranks: std::sync::OnceLock::new() }
    }

    /// Each value's rank in byte order.
    pub fn ranks(&self) -> &[u32] {
        self.ranks.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
            order.sort_by(|a, b| compare(&self.values[*a as usize], &self.values[*b as usize]));
            let mut ranks = vec![0; self.values.len()];
            for (rank, i) in order.into_iter().enumerate() {
                ranks[i as usize] = rank as u32;
            }
            ranks
        })
    }

    pub fn text(&self, key: u32) -> &str {
        match &self.values[key as usize] {
            Value::Str(s) | Value::Code(_, s) => s,
            _ => unreachable!("a text dictionary holds text"),
        }
    }
}

/// A typed column.
#[derive(Debug, Clone)]
pub enum Array {
    Bool(BooleanBuffer, Nulls),
    Int(Arc<Vec<i64>>, Nulls),
    Float(Arc<Vec<f64>>, Nulls),
    /// Days since 1970-01-01.
    Date(Arc<Vec<i32>>, Nulls),
    /// Keys into the dictionary.
    Text(Arc<Vec<u32>>, Arc<Dict>, Nulls),
    /// Values slot by slot, for what no typed array holds: sets (`combine_as_set()`), and a
    /// float-typed series some of whose values are integers — ehrQL's `int ** int` is typed
    /// float, yet its in-memory engine keeps Python's int results, and so writes `49`, not
    /// `49.0` (conformance case `numeric/013_power_int_quirk`). Kernels meeting one compute
    /// through the scalar semantics, as the reference evaluator does.
    Values(Arc<Vec<Scalar>>),
}

pub fn date_days(d: jiff::civil::Date) -> i32 {
    days::to_days(d) as i32
}

pub fn days_date(n: i32) -> jiff::civil::Date {
    days::to_date(n as i64)
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::Bool(v, _) => v.len(),
            Array::Int(v, _) => v.len(),
            Array::Float(v, _) => v.len(),
            Array::Date(v, _) => v.len(),
            Array::Text(v, _, _) => v.len(),
            Array::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Array::Bool(_, n) | Array::Int(_, n) | Array::Float(_, n) | Array::Date(_, n) | Array::Text(_, _, n) => n.as_ref(),
            Array::Values(_) => None,
        }
    }

    pub fn is_valid(&self, i: usize) -> bool {
        match self {
            Array::Values(v) => v[i].is_some(),
            _ => self.nulls().is_none_or(|n| n.is_valid(i)),
        }
    }

    /// Slot `i` as a value (the sink's and the fallback kernels' view).
    pub fn get(&self, i: usize) -> Scalar {
        if !self.is_valid(i) {
            return None;
        }
        Some(match self {
            Array::Bool(v, _) => Value::Bool(v.value(i)),
            Array::Int(v, _) => Value::Int(v[i]),
            Array::Float(v, _) => Value::Float(Float(v[i])),
            Array::Date(v, _) => Value::Date(days_date(v[i])),
            Array::Text(k, d, _) => d.values[k[i] as usize].clone(),
            Array::Values(v) => return v[i].clone(),
        })
    }

    /// `true` where the slot holds `True` (NULL and `False` are not kept by a filter or taken by
    /// a case).
    pub fn is_true(&self, i: usize) -> bool {
        match self {
            Array::Bool(v, n) => v.value(i) && n.as_ref().is_none_or(|n| n.is_valid(i)),
            _ => false,
        }
    }

    /// Where the column holds True, as one bitmap (False for NULLs and non-booleans).
    pub fn true_bits(&self) -> BooleanBuffer {
        match self {
            Array::Bool(v, Some(nulls)) => v & nulls.inner(),
            Array::Bool(v, None) => v.clone(),
            _ => BooleanBuffer::new_unset(self.len()),
        }
    }

    /// The slots at `index`, in that order.
    pub fn take(&self, index: &[u32]) -> Array {
        let nulls = self.nulls().map(|n| NullBuffer::new(BooleanBuffer::collect_bool(index.len(), |i| n.is_valid(index[i] as usize))));
        let nulls = nulls.filter(|n| n.null_count() > 0);
        match self {
            Array::Bool(v, _) => Array::Bool(BooleanBuffer::collect_bool(index.len(), |i| v.value(index[i] as usize)), nulls),
            Array::Int(v, _) => Array::Int(Arc::new(index.iter().map(|&i| v[i as usize]).collect()), nulls),
            Array::Float(v, _) => Array::Float(Arc::new(index.iter().map(|&i| v[i as usize]).collect()), nulls),
            Array::Date(v, _) => Array::Date(Arc::new(index.iter().map(|&i| v[i as usize]).collect()), nulls),
            Array::Text(k, d, _) => Array::Text(Arc::new(index.iter().map(|&i| k[i as usize]).collect()), d.clone(), nulls),
            Array::Values(v) => Array::Values(Arc::new(index.iter().map(|&i| v[i as usize].clone()).collect())),
        }
    }

    /// `len` copies of one value (a literal broadcast to rows or patients).
    pub fn splat(type_: &Type, value: &Scalar, len: usize) -> Array {
        let nulls = value.is_none().then(|| NullBuffer::new_null(len));
        match (type_, value) {
            // An integer in a float-typed series stays an integer (see `Array::Values`).
            (Type::Float, Some(Value::Int(_))) => Array::Values(Arc::new(vec![value.clone(); len])),
            (Type::Bool, v) => Array::Bool(
                if matches!(v, Some(Value::Bool(true))) { BooleanBuffer::new_set(len) } else { BooleanBuffer::new_unset(len) },
                nulls,
            ),
            (Type::Int, v) => Array::Int(Arc::new(vec![if let Some(Value::Int(x)) = v { *x } else { 0 }; len]), nulls),
            (Type::Float, v) => Array::Float(Arc::new(vec![if let Some(Value::Float(x)) = v { x.0 } else { 0.0 }; len]), nulls),
            (Type::Date, v) => Array::Date(Arc::new(vec![if let Some(Value::Date(d)) = v { date_days(*d) } else { 0 }; len]), nulls),
            (Type::Str | Type::Code(_) | Type::MultiCodeString(_), Some(v)) => {
                Array::Text(Arc::new(vec![0; len]), Arc::new(Dict::new(vec![v.clone()])), None)
            }
            (Type::Str | Type::Code(_) | Type::MultiCodeString(_), None) => {
                Array::Text(Arc::new(vec![0; len]), Arc::new(Dict::new(vec![])), nulls)
            }
            (Type::Set(_), v) => Array::Values(Arc::new(vec![v.clone(); len])),
        }
    }

    /// A column of values of one type.
    pub fn from_scalars<'a>(type_: &Type, values: impl IntoIterator<Item = &'a Scalar>) -> Array {
        let values = values.into_iter();
        let mut b = Builder::new(type_, values.size_hint().0);
        for v in values {
            b.push_scalar(v);
        }
        b.finish()
    }
}

/// Validity from a per-slot test (`None` when all are valid).
pub fn nulls_from(len: usize, valid: impl FnMut(usize) -> bool) -> Nulls {
    let n = NullBuffer::new(BooleanBuffer::collect_bool(len, valid));
    (n.null_count() > 0).then_some(n)
}

/// Builds a column slot by slot: from values, or from other columns' slots (text keeps one
/// dictionary for the result, interning each distinct value once).
pub enum Builder {
    Bool(BooleanBufferBuilder, BooleanBufferBuilder, bool),
    Int(Vec<i64>, BooleanBufferBuilder, bool),
    Float(Vec<f64>, BooleanBufferBuilder, bool),
    Date(Vec<i32>, BooleanBufferBuilder, bool),
    Text {
        keys: Vec<u32>,
        values: Vec<Value>,
        /// `values`' keys by their hash: each value is held once, in `values`.
        index: hashbrown::HashTable<u32>,
        /// Source slots already interned: (the source dictionary's address, its key) → key.
        remap: HashMap<(usize, u32), u32>,
        valid: BooleanBufferBuilder,
        nulls: bool,
    },
    Values(Vec<Scalar>),
}

impl Builder {
    pub fn new(type_: &Type, capacity: usize) -> Builder {
        let valid = BooleanBufferBuilder::new(capacity);
        match type_ {
            Type::Bool => Builder::Bool(BooleanBufferBuilder::new(capacity), valid, false),
            Type::Int => Builder::Int(Vec::with_capacity(capacity), valid, false),
            Type::Float => Builder::Float(Vec::with_capacity(capacity), valid, false),
            Type::Date => Builder::Date(Vec::with_capacity(capacity), valid, false),
            Type::Str | Type::Code(_) | Type::MultiCodeString(_) => Builder::Text {
                keys: Vec::with_capacity(capacity),
                values: vec![],
                index: hashbrown::HashTable::new(),
                remap: HashMap::default(),
                valid,
                nulls: false,
            },
            Type::Set(_) => Builder::Values(Vec::with_capacity(capacity)),
        }
    }

    pub fn push_scalar(&mut self, v: &Scalar) {
        match (self, v) {
            (Builder::Bool(b, valid, _), Some(Value::Bool(x))) => {
                b.append(*x);
                valid.append(true);
            }
            (Builder::Int(b, valid, _), Some(Value::Int(x))) => {
                b.push(*x);
                valid.append(true);
            }
            (Builder::Float(b, valid, _), Some(Value::Float(x))) => {
                b.push(x.0);
                valid.append(true);
            }
            // An integer in a float-typed series stays an integer (see `Array::Values`).
            (b @ Builder::Float(..), Some(Value::Int(_))) => {
                b.become_values();
                b.push_scalar(v);
            }
            (Builder::Date(b, valid, _), Some(Value::Date(d))) => {
                b.push(date_days(*d));
                valid.append(true);
            }
            (Builder::Text { keys, values, index, valid, .. }, Some(v @ (Value::Str(_) | Value::Code(..)))) => {
                keys.push(intern(values, index, v));
                valid.append(true);
            }
            (Builder::Values(b), v) => b.push(v.clone()),
            (b, _) => b.push_null(),
        }
    }

    /// A float builder becomes one of values, keeping what it has.
    fn become_values(&mut self) {
        if let Builder::Float(b, valid, _) = self {
            let values = b.iter().enumerate().map(|(i, x)| valid.get_bit(i).then_some(Value::Float(Float(*x)))).collect();
            *self = Builder::Values(values);
        }
    }

    pub fn push_null(&mut self) {
        match self {
            Builder::Bool(b, valid, nulls) => {
                b.append(false);
                valid.append(false);
                *nulls = true;
            }
            Builder::Int(b, valid, nulls) => {
                b.push(0);
                valid.append(false);
                *nulls = true;
            }
            Builder::Float(b, valid, nulls) => {
                b.push(0.0);
                valid.append(false);
                *nulls = true;
            }
            Builder::Date(b, valid, nulls) => {
                b.push(0);
                valid.append(false);
                *nulls = true;
            }
            Builder::Text { keys, valid, nulls, .. } => {
                keys.push(0);
                valid.append(false);
                *nulls = true;
            }
            Builder::Values(b) => b.push(None),
        }
    }

    /// Appends slot `i` of `a` (of this builder's type, or an integer into a float builder).
    pub fn push_from(&mut self, a: &Array, i: usize) {
        if !a.is_valid(i) {
            return self.push_null();
        }
        match (&mut *self, a) {
            (Builder::Bool(b, valid, _), Array::Bool(v, _)) => {
                b.append(v.value(i));
                valid.append(true);
            }
            (Builder::Int(b, valid, _), Array::Int(v, _)) => {
                b.push(v[i]);
                valid.append(true);
            }
            (Builder::Float(b, valid, _), Array::Float(v, _)) => {
                b.push(v[i]);
                valid.append(true);
            }
            (Builder::Date(b, valid, _), Array::Date(v, _)) => {
                b.push(v[i]);
                valid.append(true);
            }
            (Builder::Text { keys, values, index, remap, valid, .. }, Array::Text(k, d, _)) => {
                let source = (Arc::as_ptr(d) as usize, k[i]);
                let key = match remap.get(&source) {
                    Some(key) => *key,
                    None => {
                        let key = intern(values, index, &d.values[k[i] as usize]);
                        remap.insert(source, key);
                        key
                    }
                };
                keys.push(key);
                valid.append(true);
            }
            _ => self.push_scalar(&a.get(i)),
        }
    }

    pub fn finish(self) -> Array {
        let nulls = |mut valid: BooleanBufferBuilder, any: bool| any.then(|| NullBuffer::new(valid.finish()));
        match self {
            Builder::Bool(mut b, valid, any) => Array::Bool(b.finish(), nulls(valid, any)),
            Builder::Int(b, valid, any) => Array::Int(Arc::new(b), nulls(valid, any)),
            Builder::Float(b, valid, any) => Array::Float(Arc::new(b), nulls(valid, any)),
            Builder::Date(b, valid, any) => Array::Date(Arc::new(b), nulls(valid, any)),
            Builder::Text { keys, values, valid, nulls: any, .. } => {
                Array::Text(Arc::new(keys), Arc::new(Dict::new(values)), nulls(valid, any))
            }
            Builder::Values(b) => Array::Values(Arc::new(b)),
        }
    }
}

/// `v`'s key among `values`, adding it if it is new (one copy of each distinct value).
fn intern(values: &mut Vec<Value>, index: &mut hashbrown::HashTable<u32>, v: &Value) -> u32 {
    let hash = |v: &Value| std::hash::BuildHasher::hash_one(&rustc_hash::FxBuildHasher, v);
    let h = hash(v);
    if let Some(&k) = index.find(h, |&k| values[k as usize] == *v) {
        return k;
    }
    let k = values.len() as u32;
    values.push(v.clone());
    index.insert_unique(h, k, |&k| hash(&values[k as usize]));
    k
}

/// A text dictionary made from an Arrow dictionary's values, kept while batches share them
/// (Parquet hands every batch of a column chunk the same dictionary buffers).
#[derive(Default)]
pub struct DictMemo {
    /// The Arrow values (held, so a freed look-alike is never mistaken for them) and the rows
    /// read under them so far.
    held: Option<(arrow_array::ArrayRef, usize)>,
    /// Once made: the dictionary and each Arrow key's key in it (`u32::MAX` for a NULL value).
    made: Option<(Arc<Dict>, Vec<u32>)>,
}

/// An Arrow array as a typed column of the schema's type `want`: the common types copied
/// whole (dictionary-encoded text re-keyed, each distinct value converted once per
/// dictionary), the rest through `arrow_io::column_values`.
pub fn from_arrow(array: &dyn arrow_array::Array, want: &Type, memo: &mut DictMemo) -> Result<Array, String> {
    use arrow_array::Array as _;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Float64Type, Int64Type};
    use arrow_schema::DataType;
    let n = array.len();
    let nulls = array.logical_nulls().filter(|x| x.null_count() > 0);
    let text = matches!(want, Type::Str | Type::Code(_) | Type::MultiCodeString(_));
    let as_value = |s: &str| match want {
        Type::Code(c) => Value::Code(*c, s.to_string()),
        _ => Value::Str(s.to_string()),
    };
    Ok(match array.data_type() {
        DataType::Int64 if *want == Type::Int => Array::Int(Arc::new(array.as_primitive::<Int64Type>().values().to_vec()), nulls),
        DataType::Float64 if *want == Type::Float => Array::Float(Arc::new(array.as_primitive::<Float64Type>().values().to_vec()), nulls),
        DataType::Boolean if *want == Type::Bool => Array::Bool(array.as_boolean().values().clone(), nulls),
        DataType::Date32 if *want == Type::Date => {
            let values = array.as_primitive::<Date32Type>().values();
            if let Some(bad) =
                (0..n).find(|&i| nulls.as_ref().is_none_or(|x| x.is_valid(i)) && !days::SUPPORTED.contains(&(values[i] as i64)))
            {
                return Err(format!("the date {} days from 1970-01-01 is outside years 1–9999", values[bad]));
            }
            Array::Date(Arc::new(values.to_vec()), nulls)
        }
        DataType::Dictionary(_, v) if text && **v == DataType::Utf8 => {
            let dict = array.as_any_dictionary();
            let values = dict.values();
            if values.is_empty() {
                // Keys into no values (every slot NULL; Arrow's key normalising would panic).
                return Ok(Array::splat(want, &None, n));
            }
            // The Parquet reader hands each batch a new values array over the same buffers.
            if !memo.held.as_ref().is_some_and(|(held, _)| Arc::ptr_eq(held, values) || held.to_data().ptr_eq(&values.to_data())) {
                *memo = DictMemo { held: Some((values.clone(), 0)), made: None };
            }
            let rows = memo.held.as_mut().map_or(0, |(_, rows)| {
                *rows += n;
                *rows
            });
            if memo.made.is_none() && rows < values.len() {
                // Fewer rows so far than the dictionary has values (a filtered scan's few rows
                // of a column chunk with many codes): only the values these rows use. Past
                // that, the whole dictionary is converted once, so a full scan converts each
                // value at most twice.
                let strings = values.as_string::<i32>();
                let keys = dict.normalized_keys();
                let mut texts = Interner::default();
                let valid = |i: usize| nulls.as_ref().is_none_or(|x| x.is_valid(i)) && !strings.is_null(keys[i]);
                let text_keys = (0..n).map(|i| if valid(i) { texts.key(strings.value(keys[i]), &as_value) } else { 0 }).collect();
                return Ok(Array::Text(Arc::new(text_keys), Arc::new(texts.dict()), nulls_from(n, valid)));
            }
            if memo.made.is_none() {
                let strings = values.as_string::<i32>();
                let mut texts = Interner::default();
                let remap = (0..strings.len())
                    .map(|i| if strings.is_null(i) { u32::MAX } else { texts.key(strings.value(i), &as_value) })
                    .collect();
                memo.made = Some((Arc::new(texts.dict()), remap));
            }
            let (d, remap) = memo.made.as_ref().expect("just made");
            let keys: Vec<u32> = dict.normalized_keys().iter().map(|k| remap[*k]).collect();
            // A key to a NULL dictionary value is a NULL.
            let nulls = if keys.contains(&u32::MAX) {
                nulls_from(n, |i| keys[i] != u32::MAX && nulls.as_ref().is_none_or(|x| x.is_valid(i)))
            } else {
                nulls
            };
            Array::Text(Arc::new(keys.iter().map(|k| if *k == u32::MAX { 0 } else { *k }).collect()), d.clone(), nulls)
        }
        DataType::Utf8 if text => {
            let strings = array.as_string::<i32>();
            let mut texts = Interner::default();
            let keys = (0..n).map(|i| if strings.is_null(i) { 0 } else { texts.key(strings.value(i), &as_value) }).collect();
            Array::Text(Arc::new(keys), Arc::new(texts.dict()), nulls)
        }
        _ => Array::from_scalars(want, &crate::arrow_io::column_values(array, want)?),
    })
}

/// Text read from Arrow, each distinct string made a value once, keyed in first-seen order.
#[derive(Default)]
struct Interner<'a> {
    keys: HashMap<&'a str, u32>,
    values: Vec<Value>,
}

impl<'a> Interner<'a> {
    fn key(&mut self, s: &'a str, make: &impl Fn(&str) -> Value) -> u32 {
        *self.keys.entry(s).or_insert_with(|| {
            self.values.push(make(s));
            self.values.len() as u32 - 1
        })
    }

    fn dict(self) -> Dict {
        Dict::new(self.values)
    }
}
