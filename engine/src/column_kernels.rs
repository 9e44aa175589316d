//! Kernels over typed columns ([`crate::column`]): what each `Function` and aggregation does to
//! whole columns, with ehrQL's NULL, overflow and comparison rules — the same answers as
//! `quarry_queries::semantics`, which the reference evaluator applies cell by cell (the
//! engine's property test compares the two on every function).
//!
//! Arguments come materialised to one length (literals and patient-level values broadcast by
//! the evaluator). Comparisons, Kleene logic, NULL tests, integer and float arithmetic, casts,
//! day, month and year arithmetic, month and year differences, integer floor division, date
//! parts, text search and the n-ary minimum and maximum are typed kernels here. Floor
//! division of floats and powers are computed per slot through the scalar semantics (on
//! unboxed numbers), as is membership in a set that is not a literal; so is a date plus months
//! whose result leaves years 1–9999, for the semantics' exact error.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_buffer::{BooleanBuffer, NullBuffer};
use quarry_queries::qm::{Function as F, Type, Value};
use quarry_queries::semantics::{self, EvalError, Scalar};

use crate::column::{Array, Builder, Dict, Nulls, nulls_from};
use crate::dummy::days;

fn overflow(message: &str) -> EvalError {
    EvalError { kind: "OverflowError", message: message.into() }
}

/// Slot `i` of `a` against slot `j` of `b`, both valid, as `semantics::compare` orders values.
pub fn cmp_at(a: &Array, i: usize, b: &Array, j: usize) -> Ordering {
    match (a, b) {
        (Array::Int(x, _), Array::Int(y, _)) => x[i].cmp(&y[j]),
        (Array::Date(x, _), Array::Date(y, _)) => x[i].cmp(&y[j]),
        (Array::Float(x, _), Array::Float(y, _)) => x[i].partial_cmp(&y[j]).unwrap_or(Ordering::Equal),
        (Array::Int(x, _), Array::Float(y, _)) => (x[i] as f64).partial_cmp(&y[j]).unwrap_or(Ordering::Equal),
        (Array::Float(x, _), Array::Int(y, _)) => x[i].partial_cmp(&(y[j] as f64)).unwrap_or(Ordering::Equal),
        (Array::Bool(x, _), Array::Bool(y, _)) => x.value(i).cmp(&y.value(j)),
        (Array::Text(x, dx, _), Array::Text(y, dy, _)) => {
            if Arc::ptr_eq(dx, dy) {
                let r = dx.ranks();
                r[x[i] as usize].cmp(&r[y[j] as usize])
            } else {
                dx.text(x[i]).as_bytes().cmp(dy.text(y[j]).as_bytes())
            }
        }
        _ => match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => semantics::compare(&x, &y),
            _ => Ordering::Equal,
        },
    }
}

/// Slot `i` of `a` equals slot `j` of `b`, both valid, as `semantics::equal` (type-strict: an
/// integer never equals a float).
pub fn eq_at(a: &Array, i: usize, b: &Array, j: usize) -> bool {
    match (a, b) {
        (Array::Int(x, _), Array::Int(y, _)) => x[i] == y[j],
        (Array::Date(x, _), Array::Date(y, _)) => x[i] == y[j],
        (Array::Float(x, _), Array::Float(y, _)) => x[i] == y[j],
        (Array::Bool(x, _), Array::Bool(y, _)) => x.value(i) == y.value(j),
        (Array::Text(x, dx, _), Array::Text(y, dy, _)) => {
            if Arc::ptr_eq(dx, dy) {
                x[i] == y[j]
            } else {
                dx.text(x[i]) == dy.text(y[j])
            }
        }
        _ => match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => semantics::equal(&x, &y),
            _ => false,
        },
    }
}

/// NULLs first, then ascending: `sort_by`'s order of two slots of one column.
pub fn cmp_nulls_first(a: &Array, i: usize, j: usize) -> Ordering {
    match (a.is_valid(i), a.is_valid(j)) {
        (false, false) => Ordering::Equal,
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (true, true) => cmp_at(a, i, a, j),
    }
}

fn union(a: &Array, b: &Array) -> Nulls {
    NullBuffer::union(a.nulls(), b.nulls())
}

/// A comparison's truth per slot; typed loops for the common pairs.
fn compare(a: &Array, b: &Array, len: usize, test: impl Fn(Ordering) -> bool) -> BooleanBuffer {
    match (a, b) {
        (Array::Int(x, _), Array::Int(y, _)) => BooleanBuffer::collect_bool(len, |i| test(x[i].cmp(&y[i]))),
        (Array::Date(x, _), Array::Date(y, _)) => BooleanBuffer::collect_bool(len, |i| test(x[i].cmp(&y[i]))),
        (Array::Float(x, _), Array::Float(y, _)) => {
            BooleanBuffer::collect_bool(len, |i| test(x[i].partial_cmp(&y[i]).unwrap_or(Ordering::Equal)))
        }
        (Array::Text(x, dx, _), Array::Text(y, dy, _)) if Arc::ptr_eq(dx, dy) => {
            let r = dx.ranks();
            BooleanBuffer::collect_bool(len, |i| test(r[x[i] as usize].cmp(&r[y[i] as usize])))
        }
        (Array::Text(..), Array::Text(..)) if one_text(a, b).is_some() => {
            // Each dictionary value against the one text, the column on its own side.
            let (x, dx, text, left) = one_text(a, b).expect("just matched");
            let hits: Vec<bool> = (0..dx.values.len() as u32)
                .map(|k| {
                    let o = dx.text(k).as_bytes().cmp(text.as_bytes());
                    test(if left { o } else { o.reverse() })
                })
                .collect();
            BooleanBuffer::collect_bool(len, |i| hits[x[i] as usize])
        }
        _ => BooleanBuffer::collect_bool(len, |i| a.is_valid(i) && b.is_valid(i) && test(cmp_at(a, i, b, i))),
    }
}

fn equal(a: &Array, b: &Array, len: usize) -> BooleanBuffer {
    match (a, b) {
        (Array::Int(x, _), Array::Int(y, _)) => BooleanBuffer::collect_bool(len, |i| x[i] == y[i]),
        (Array::Date(x, _), Array::Date(y, _)) => BooleanBuffer::collect_bool(len, |i| x[i] == y[i]),
        (Array::Text(x, dx, _), Array::Text(y, dy, _)) if Arc::ptr_eq(dx, dy) => BooleanBuffer::collect_bool(len, |i| x[i] == y[i]),
        (Array::Text(..), Array::Text(..)) if one_text(a, b).is_some() => {
            let (x, dx, text, _) = one_text(a, b).expect("just matched");
            let hits: Vec<bool> = (0..dx.values.len() as u32).map(|k| dx.text(k) == text).collect();
            BooleanBuffer::collect_bool(len, |i| hits[x[i] as usize])
        }
        _ => BooleanBuffer::collect_bool(len, |i| a.is_valid(i) && b.is_valid(i) && eq_at(a, i, b, i)),
    }
}

/// Two text columns one of which holds a single text (a literal broadcast to a column): the
/// other's keys and dictionary, that text, and whether the other column is the left-hand
/// side. Comparisons then test each dictionary value once, not each row's text.
fn one_text<'a>(a: &'a Array, b: &'a Array) -> Option<(&'a [u32], &'a Dict, &'a str, bool)> {
    match (a, b) {
        (Array::Text(x, dx, _), Array::Text(_, dy, _)) if dy.values.len() == 1 => Some((x, dx, dy.text(0), true)),
        (Array::Text(_, dx, _), Array::Text(y, dy, _)) if dx.values.len() == 1 => Some((y, dy, dx.text(0), false)),
        _ => None,
    }
}

/// Valid-and-true and valid-and-false bitmaps of a boolean column.
fn truth(a: &Array) -> (BooleanBuffer, BooleanBuffer) {
    let Array::Bool(v, n) = a else { unreachable!("a boolean column") };
    match n {
        None => (v.clone(), !v),
        Some(n) => (a.true_bits(), &!v & n.inner()),
    }
}

fn floats(a: &Array) -> std::borrow::Cow<'_, [f64]> {
    match a {
        Array::Float(v, _) => std::borrow::Cow::Borrowed(v.as_slice()),
        Array::Int(v, _) => std::borrow::Cow::Owned(v.iter().map(|x| *x as f64).collect()),
        Array::Bool(v, _) => std::borrow::Cow::Owned(v.iter().map(|x| x as i64 as f64).collect()),
        _ => std::borrow::Cow::Owned(
            (0..a.len())
                .map(|i| match a.get(i) {
                    Some(Value::Int(x)) => x as f64,
                    Some(Value::Float(x)) => x.0,
                    _ => 0.0,
                })
                .collect(),
        ),
    }
}

fn valid(nulls: &Nulls, i: usize) -> bool {
    nulls.as_ref().is_none_or(|n| n.is_valid(i))
}

/// Integers from a checked operation on valid slots; an overflow in a valid slot is ehrQL's
/// error.
fn checked_ints(len: usize, nulls: Nulls, op: impl Fn(usize) -> Option<i64>) -> Result<Array, EvalError> {
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        out.push(if valid(&nulls, i) { op(i).ok_or_else(|| overflow("integer result out of range"))? } else { 0 });
    }
    Ok(Array::Int(Arc::new(out), nulls))
}

/// Applies a function to materialised arguments (in `function_inputs` order), giving a column
/// of `out` type and `len` slots.
pub fn apply(f: &F, args: &[Array], out: &Type, len: usize) -> Result<Array, EvalError> {
    if args.iter().any(|a| matches!(a, Array::Values(_))) {
        return per_slot(f, args, out, len);
    }
    let a = &args[0];
    Ok(match f {
        F::Eq(..) | F::Ne(..) => {
            let eq = equal(a, &args[1], len);
            Array::Bool(if matches!(f, F::Eq(..)) { eq } else { !&eq }, union(a, &args[1]))
        }
        F::Lt(..) => Array::Bool(compare(a, &args[1], len, Ordering::is_lt), union(a, &args[1])),
        F::Le(..) => Array::Bool(compare(a, &args[1], len, Ordering::is_le), union(a, &args[1])),
        F::Gt(..) => Array::Bool(compare(a, &args[1], len, Ordering::is_gt), union(a, &args[1])),
        F::Ge(..) => Array::Bool(compare(a, &args[1], len, Ordering::is_ge), union(a, &args[1])),
        // Kleene logic: the deciding value (False for AND, True for OR) wins over NULL.
        F::And(_) | F::Or(_) => {
            let or = matches!(f, F::Or(_));
            let (mut decided, mut all) = (BooleanBuffer::new_unset(len), BooleanBuffer::new_set(len));
            for arg in args {
                let (t, fl) = truth(arg);
                let (deciding, other) = if or { (t, fl) } else { (fl, t) };
                decided = &decided | &deciding;
                all = &all & &other;
            }
            let valid = &decided | &all;
            let value = if or { decided } else { all };
            Array::Bool(value, Some(NullBuffer::new(valid)).filter(|n| n.null_count() > 0))
        }
        F::Not(_) => {
            let Array::Bool(v, n) = a else { unreachable!("Not of a boolean") };
            Array::Bool(!v, n.clone())
        }
        F::IsNull(_) => Array::Bool(BooleanBuffer::collect_bool(len, |i| !a.is_valid(i)), None),
        F::Negate(_) | F::Absolute(_) => match a {
            Array::Int(v, n) => {
                let neg = matches!(f, F::Negate(_));
                checked_ints(len, n.clone(), |i| if neg { v[i].checked_neg() } else { v[i].checked_abs() })?
            }
            Array::Float(v, n) => {
                Array::Float(Arc::new(v.iter().map(|x| if matches!(f, F::Negate(_)) { -x } else { x.abs() }).collect()), n.clone())
            }
            _ => unreachable!("numeric"),
        },
        F::Add(..) | F::Subtract(..) | F::Multiply(..) => {
            let b = &args[1];
            let nulls = union(a, b);
            match (a, b) {
                (Array::Int(x, _), Array::Int(y, _)) => checked_ints(len, nulls, |i| match f {
                    F::Add(..) => x[i].checked_add(y[i]),
                    F::Subtract(..) => x[i].checked_sub(y[i]),
                    _ => x[i].checked_mul(y[i]),
                })?,
                _ => {
                    let (x, y) = (floats(a), floats(b));
                    let op = |i: usize| match f {
                        F::Add(..) => x[i] + y[i],
                        F::Subtract(..) => x[i] - y[i],
                        _ => x[i] * y[i],
                    };
                    Array::Float(Arc::new((0..len).map(op).collect()), nulls)
                }
            }
        }
        F::TrueDivide(..) => {
            let b = &args[1];
            let (x, y) = (floats(a), floats(b));
            let nulls = union(a, b);
            let out: Vec<f64> = (0..len).map(|i| if y[i] == 0.0 { 0.0 } else { x[i] / y[i] }).collect();
            let nulls = nulls_from(len, |i| valid(&nulls, i) && y[i] != 0.0);
            Array::Float(Arc::new(out), nulls)
        }
        F::CastToFloat(_) => Array::Float(Arc::new(floats(a).into_owned()), a.nulls().cloned()),
        F::CastToInt(_) => match a {
            Array::Int(..) => a.clone(),
            Array::Bool(v, n) => Array::Int(Arc::new(v.iter().map(|x| x as i64).collect()), n.clone()),
            Array::Float(v, n) => {
                let mut out = Vec::with_capacity(len);
                for (i, x) in v.iter().enumerate() {
                    if valid(n, i) && !x.is_finite() {
                        return Err(overflow("cannot convert float infinity or NaN to integer"));
                    }
                    out.push(if x.is_finite() { x.trunc() as i64 } else { 0 });
                }
                Array::Int(Arc::new(out), n.clone())
            }
            _ => unreachable!("a castable column"),
        },
        F::DateAddDays(..) => {
            let (Array::Date(d, _), Array::Int(n, _)) = (a, &args[1]) else { unreachable!("date + days") };
            let nulls = union(a, &args[1]);
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                if !valid(&nulls, i) {
                    out.push(0);
                    continue;
                }
                if n[i].unsigned_abs() > 999_999_999 {
                    return Err(EvalError { kind: "ValueError", message: format!("days={}; must have magnitude <= 999999999", n[i]) });
                }
                let r = d[i] as i64 + n[i];
                if !days::SUPPORTED.contains(&r) {
                    return Err(overflow("date value out of range"));
                }
                out.push(r as i32);
            }
            Array::Date(Arc::new(out), nulls)
        }
        F::DateDifferenceInDays(..) => {
            let (Array::Date(end, _), Array::Date(start, _)) = (a, &args[1]) else { unreachable!("date - date") };
            Array::Int(Arc::new((0..len).map(|i| end[i] as i64 - start[i] as i64).collect()), union(a, &args[1]))
        }
        F::DateAddMonths(..) | F::DateAddYears(..) => {
            // `semantics::add_months` on day numbers (a day the month lacks rolls forward to
            // the 1st of the next). A slot whose result would leave years 1–9999 takes the
            // scalar semantics, for their exact error.
            let (Array::Date(d, _), Array::Int(k, _)) = (a, &args[1]) else { unreachable!("date + months") };
            let nulls = union(a, &args[1]);
            let per_month = if matches!(f, F::DateAddYears(..)) { 12 } else { 1 };
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                if !valid(&nulls, i) {
                    out.push(0);
                    continue;
                }
                let months = k[i].saturating_mul(per_month);
                let day = (months.unsigned_abs() <= 120_000).then(|| days::add_months(d[i] as i64, months));
                match day.filter(|r| days::SUPPORTED.contains(r)) {
                    Some(r) => out.push(r as i32),
                    None => match semantics::apply(f, &[a.get(i), args[1].get(i)])? {
                        Some(Value::Date(x)) => out.push(days::to_days(x) as i32),
                        _ => unreachable!("a date plus months is a date or an error"),
                    },
                }
            }
            Array::Date(Arc::new(out), nulls)
        }
        F::FloorDivide(..) if matches!((a, &args[1]), (Array::Int(..), Array::Int(..))) => {
            // Python's `//` on integers; by zero it is NULL (ehrQL), as `semantics` has it.
            let (Array::Int(x, _), Array::Int(y, _)) = (a, &args[1]) else { unreachable!("matched integers") };
            let both = union(a, &args[1]);
            let nulls = nulls_from(len, |i| valid(&both, i) && y[i] != 0);
            checked_ints(len, nulls, |i| semantics::floor_divide(x[i], y[i]))?
        }
        F::DateDifferenceInMonths(..) | F::DateDifferenceInYears(..) => {
            // `semantics::months_between` and `years_between` on day numbers.
            let (Array::Date(end, _), Array::Date(start, _)) = (a, &args[1]) else { unreachable!("date - date") };
            let years = matches!(f, F::DateDifferenceInYears(..));
            let diff = |i: usize| {
                let (end, start) = (days::civil(end[i] as i64), days::civil(start[i] as i64));
                if years { semantics::years_between_civil(start, end) } else { semantics::months_between_civil(start, end) }
            };
            Array::Int(Arc::new((0..len).map(diff).collect()), union(a, &args[1]))
        }
        F::YearFromDate(_) | F::MonthFromDate(_) | F::DayFromDate(_) => {
            let Array::Date(d, n) = a else { unreachable!("a date column") };
            let part = |x: i32| {
                let (y, m, day) = days::civil(x as i64);
                match f {
                    F::YearFromDate(_) => y,
                    F::MonthFromDate(_) => m,
                    _ => day,
                }
            };
            Array::Int(Arc::new(d.iter().map(|x| part(*x)).collect()), n.clone())
        }
        F::ToFirstOfYear(_) | F::ToFirstOfMonth(_) => {
            let Array::Date(d, n) = a else { unreachable!("a date column") };
            let first = |x: i32| {
                let (y, m, _) = days::civil(x as i64);
                (if matches!(f, F::ToFirstOfYear(_)) { days::from_civil(y, 1, 1) } else { days::from_civil(y, m, 1) }) as i32
            };
            Array::Date(Arc::new(d.iter().map(|x| first(*x)).collect()), n.clone())
        }
        F::StringContains(..) => {
            let (Array::Text(x, dx, _), Array::Text(y, dy, _)) = (a, &args[1]) else { unreachable!("text columns") };
            let nulls = union(a, &args[1]);
            Array::Bool(BooleanBuffer::collect_bool(len, |i| valid(&nulls, i) && dx.text(x[i]).contains(dy.text(y[i]))), nulls)
        }
        F::MinimumOf(_) | F::MaximumOf(_) => {
            let want = if matches!(f, F::MinimumOf(_)) { Ordering::Less } else { Ordering::Greater };
            let mut b = Builder::new(out, len);
            for i in 0..len {
                let mut best: Option<&Array> = None;
                for arg in args.iter().filter(|x| x.is_valid(i)) {
                    best = Some(match best {
                        Some(cur) if cmp_at(arg, i, cur, i) != want => cur,
                        _ => arg,
                    });
                }
                match best {
                    Some(x) => b.push_from(x, i),
                    None => b.push_null(),
                }
            }
            b.finish()
        }
        F::FloorDivide(..) | F::Power(..) | F::In(..) => per_slot(f, args, out, len)?,
    })
}

/// A function through the scalar semantics, slot by slot.
pub fn per_slot(f: &F, args: &[Array], out: &Type, len: usize) -> Result<Array, EvalError> {
    let mut b = Builder::new(out, len);
    let mut row: Vec<Scalar> = Vec::with_capacity(args.len());
    for i in 0..len {
        row.clear();
        row.extend(args.iter().map(|a| a.get(i)));
        b.push_scalar(&semantics::apply(f, &row)?);
    }
    Ok(b.finish())
}
