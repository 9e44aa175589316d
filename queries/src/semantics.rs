//! ehrQL's scalar semantics — what every `Function` does to one row's values, NULLs included —
//! in one place, shared by the reference evaluator, population validation and the dummy-data
//! solver. The columnar engine's kernels are tested against these.
//!
//! Source of truth: ehrQL's in-memory engine (`ehrql/query_engines/in_memory.py`,
//! `ehrql/utils/{date_utils,math_utils}.py`); see docs/reference ehrql.md §2.6 and §2.10.

use std::cmp::Ordering;

use jiff::civil::Date;

use crate::qm::{Float, Function, Value};

/// A value or NULL.
pub type Scalar = Option<Value>;

/// A failure evaluating a query on data (ehrQL raises these at run time).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct EvalError {
    pub kind: &'static str,
    pub message: String,
}

fn eval_err(kind: &'static str, message: impl Into<String>) -> EvalError {
    EvalError { kind, message: message.into() }
}

/// Orders two non-NULL values of one type (codes and strings bytewise, as ehrQL's in-memory
/// engine does).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.0.partial_cmp(&y.0).unwrap_or(Ordering::Equal),
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Code(_, x), Value::Code(_, y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(&y.0).unwrap_or(Ordering::Equal),
        (Value::Float(x), Value::Int(y)) => x.0.partial_cmp(&(*y as f64)).unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    }
}

/// Equality as Python's `==` on the primitive values.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.0 == y.0,
        (Value::Code(_, x), Value::Code(_, y)) => x == y,
        (Value::Str(x), Value::Code(_, y)) | (Value::Code(_, y), Value::Str(x)) => x == y,
        _ => a == b,
    }
}

/// NULLs first, then ascending: the order of `sort_by`.
pub fn compare_nulls_first(a: &Scalar, b: &Scalar) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare(x, y),
    }
}

fn as_str(v: &Value) -> &str {
    match v {
        Value::Str(s) | Value::Code(_, s) => s,
        _ => "",
    }
}

/// Python's date year range (its integers have no bounds: `i128` holds any year an `i64` count
/// of months or years can reach, so the message names the year Python would).
fn check_year(y: impl Into<i128>) -> Result<(), EvalError> {
    let y = y.into();
    if (1..=9999).contains(&y) { Ok(()) } else { Err(eval_err("ValueError", format!("year {y} is out of range"))) }
}

/// Adds months, rolling a day that does not exist forward to the 1st of the next month.
pub fn add_months(d: Date, n: i64) -> Result<Date, EvalError> {
    let total = d.year() as i128 * 12 + (d.month() as i128 - 1) + n as i128;
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    check_year(y)?;
    match Date::new(y as i16, m as i8, d.day()) {
        Ok(date) => Ok(date),
        Err(_) => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            check_year(ny)?;
            Date::new(ny as i16, nm as i8, 1).map_err(|e| eval_err("ValueError", e.to_string()))
        }
    }
}

/// Adds days as Python's `date + timedelta(days=n)`: a result outside years 1 to 9999 (the
/// `date` type's range; jiff's reaches year -9999) is an OverflowError.
pub fn add_days(d: Date, n: i64) -> Result<Date, EvalError> {
    if n.unsigned_abs() > 999_999_999 {
        return Err(eval_err("ValueError", format!("days={n}; must have magnitude <= 999999999")));
    }
    let out_of_range = || eval_err("OverflowError", "date value out of range");
    let span = jiff::Span::new().try_days(n).map_err(|_| out_of_range())?;
    d.checked_add(span).ok().filter(|r| r.year() >= 1).ok_or_else(out_of_range)
}

/// `end - start` in whole days.
pub fn days_between(start: Date, end: Date) -> i64 {
    start.until(end).map(|s| s.get_days() as i64).unwrap_or(0)
}

pub fn months_between(start: Date, end: Date) -> i64 {
    months_between_civil(civil(start), civil(end))
}

pub fn years_between(start: Date, end: Date) -> i64 {
    years_between_civil(civil(start), civil(end))
}

fn civil(d: Date) -> (i64, i64, i64) {
    (d.year() as i64, d.month() as i64, d.day() as i64)
}

/// [`months_between`] on (year, month, day): whole months, counting a month only once its
/// day is reached.
pub fn months_between_civil((sy, sm, sd): (i64, i64, i64), (ey, em, ed): (i64, i64, i64)) -> i64 {
    12 * (ey - sy) + (em - sm) - i64::from(ed < sd)
}

/// [`years_between`] on (year, month, day): whole years, counting a year only once its
/// month and day are reached.
pub fn years_between_civil((sy, sm, sd): (i64, i64, i64), (ey, em, ed): (i64, i64, i64)) -> i64 {
    ey - sy - i64::from((em, ed) < (sm, sd))
}

/// Python's `x // y` on integers (`y` not 0); `None` when the result is out of range (the
/// smallest integer divided by -1).
pub fn floor_divide(x: i64, y: i64) -> Option<i64> {
    let q = x.checked_div_euclid(y)?;
    // div_euclid rounds toward -inf only for positive divisors.
    Some(if y < 0 && x.rem_euclid(y) != 0 { q - 1 } else { q })
}

fn int_result(r: Option<i64>) -> Result<Scalar, EvalError> {
    r.map(|v| Some(Value::Int(v))).ok_or_else(|| eval_err("OverflowError", "integer result out of range"))
}

fn float(f: f64) -> Scalar {
    Some(Value::Float(Float(f)))
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => f.0,
        _ => f64::NAN,
    }
}

/// Python 3.12+'s `sum()` of floats: Neumaier-compensated, so `0.1 + 0.2 + 0.3` is `0.6`.
pub fn float_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for x in values {
        let t = s + x;
        if s.abs() >= x.abs() {
            c += (s - t) + x;
        } else {
            c += (x - t) + s;
        }
        s = t;
    }
    if c.is_finite() { s + c } else { s }
}

/// Python's `a // b` for floats (CPython's `float_floor_div`): `1 // 0.1` is `9.0`.
pub fn float_floor_div(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 { f + 1.0 } else { f }
    } else {
        (0.0f64).copysign(a / b)
    }
}

/// Applies a function to its arguments' values (in `function_inputs` order).
pub fn apply(function: &Function, args: &[Scalar]) -> Result<Scalar, EvalError> {
    use Function as F;
    // Functions with their own NULL rules.
    match function {
        // Kleene logic: the deciding value (False for AND, True for OR) wins over NULL.
        F::And(_) | F::Or(_) => {
            let decisive = matches!(function, F::Or(_));
            let mut null = false;
            for a in args {
                match a {
                    Some(Value::Bool(b)) if *b == decisive => return Ok(Some(Value::Bool(decisive))),
                    None => null = true,
                    _ => {}
                }
            }
            return Ok(if null { None } else { Some(Value::Bool(!decisive)) });
        }
        F::IsNull(_) => return Ok(Some(Value::Bool(args[0].is_none()))),
        F::In(..) => {
            return Ok(match (&args[0], &args[1]) {
                (_, Some(Value::Set(_, values))) if values.is_empty() => Some(Value::Bool(false)),
                (None, _) | (_, None) => None,
                (Some(x), Some(Value::Set(_, values))) => Some(Value::Bool(values.iter().any(|v| equal(v, x)))),
                (Some(_), Some(_)) => None,
            });
        }
        F::MinimumOf(_) | F::MaximumOf(_) => {
            let mut best: Option<&Value> = None;
            for v in args.iter().flatten() {
                best = match best {
                    None => Some(v),
                    Some(b) => {
                        let o = compare(v, b);
                        let take = if matches!(function, F::MinimumOf(_)) { o == Ordering::Less } else { o == Ordering::Greater };
                        Some(if take { v } else { b })
                    }
                };
            }
            return Ok(best.cloned());
        }
        _ => {}
    }
    if args.iter().any(Option::is_none) {
        return Ok(None);
    }
    let a = args[0].as_ref().expect("checked non-NULL");
    let b = args.get(1).and_then(|x| x.as_ref());
    let b = || b.expect("binary function");
    Ok(match function {
        F::Eq(..) => Some(Value::Bool(equal(a, b()))),
        F::Ne(..) => Some(Value::Bool(!equal(a, b()))),
        F::Lt(..) => Some(Value::Bool(compare(a, b()) == Ordering::Less)),
        F::Le(..) => Some(Value::Bool(compare(a, b()) != Ordering::Greater)),
        F::Gt(..) => Some(Value::Bool(compare(a, b()) == Ordering::Greater)),
        F::Ge(..) => Some(Value::Bool(compare(a, b()) != Ordering::Less)),
        F::Not(_) => match a {
            Value::Bool(x) => Some(Value::Bool(!x)),
            _ => None,
        },
        F::Negate(_) => match a {
            Value::Int(i) => int_result(i.checked_neg())?,
            Value::Float(f) => float(-f.0),
            _ => None,
        },
        F::Absolute(_) => match a {
            Value::Int(i) => int_result(i.checked_abs())?,
            Value::Float(f) => float(f.0.abs()),
            _ => None,
        },
        F::Add(..) | F::Subtract(..) | F::Multiply(..) => match (a, b()) {
            (Value::Int(x), Value::Int(y)) => int_result(match function {
                F::Add(..) => x.checked_add(*y),
                F::Subtract(..) => x.checked_sub(*y),
                _ => x.checked_mul(*y),
            })?,
            (x, y) => {
                let (x, y) = (num(x), num(y));
                float(match function {
                    F::Add(..) => x + y,
                    F::Subtract(..) => x - y,
                    _ => x * y,
                })
            }
        },
        F::TrueDivide(..) => {
            let (x, y) = (num(a), num(b()));
            if y == 0.0 { None } else { float(x / y) }
        }
        F::FloorDivide(..) => match (a, b()) {
            (Value::Int(x), Value::Int(y)) => {
                if *y == 0 {
                    None
                } else {
                    return int_result(floor_divide(*x, *y));
                }
            }
            (x, y) => {
                let (x, y) = (num(x), num(y));
                if y == 0.0 {
                    None
                } else {
                    let q = float_floor_div(x, y);
                    if !q.is_finite() {
                        return Err(eval_err("OverflowError", "cannot convert float infinity to integer"));
                    }
                    Some(Value::Int(q as i64))
                }
            }
        },
        F::Power(..) => {
            // ehrQL's in-memory engine uses Python's `**`: int ** non-negative int is an int.
            if let (Value::Int(x), Value::Int(y)) = (a, b())
                && *y >= 0
            {
                return int_result(u32::try_from(*y).ok().and_then(|e| x.checked_pow(e)));
            }
            let (x, y) = (num(a), num(b()));
            if (x == 0.0 && y < 0.0) || (x < 0.0 && y.fract() != 0.0) {
                None
            } else {
                let r = x.powf(y);
                if r.is_infinite() && x.is_finite() && y.is_finite() {
                    return Err(eval_err("OverflowError", "(34, 'Numerical result out of range')"));
                }
                float(r)
            }
        }
        F::CastToInt(_) => match a {
            Value::Int(i) => Some(Value::Int(*i)),
            Value::Bool(b) => Some(Value::Int(*b as i64)),
            Value::Float(f) => {
                if !f.0.is_finite() {
                    return Err(eval_err("OverflowError", "cannot convert float infinity or NaN to integer"));
                }
                Some(Value::Int(f.0.trunc() as i64))
            }
            _ => None,
        },
        F::CastToFloat(_) => float(num(a)),
        F::DateAddDays(..) | F::DateAddMonths(..) | F::DateAddYears(..) => {
            let (Value::Date(d), Value::Int(n)) = (a, b()) else { return Ok(None) };
            Some(Value::Date(match function {
                F::DateAddDays(..) => add_days(*d, *n)?,
                F::DateAddMonths(..) => add_months(*d, *n)?,
                _ => {
                    // The year first (any `n` whose year is in range has months in range).
                    check_year(d.year() as i128 + *n as i128)?;
                    add_months(*d, n * 12)?
                }
            }))
        }
        F::DateDifferenceInDays(..) | F::DateDifferenceInMonths(..) | F::DateDifferenceInYears(..) => {
            let (Value::Date(end), Value::Date(start)) = (a, b()) else { return Ok(None) };
            Some(Value::Int(match function {
                F::DateDifferenceInDays(..) => days_between(*start, *end),
                F::DateDifferenceInMonths(..) => months_between(*start, *end),
                _ => years_between(*start, *end),
            }))
        }
        F::YearFromDate(_) | F::MonthFromDate(_) | F::DayFromDate(_) | F::ToFirstOfYear(_) | F::ToFirstOfMonth(_) => {
            let Value::Date(d) = a else { return Ok(None) };
            match function {
                F::YearFromDate(_) => Some(Value::Int(d.year() as i64)),
                F::MonthFromDate(_) => Some(Value::Int(d.month() as i64)),
                F::DayFromDate(_) => Some(Value::Int(d.day() as i64)),
                F::ToFirstOfYear(_) => Some(Value::Date(Date::new(d.year(), 1, 1).expect("valid"))),
                _ => Some(Value::Date(Date::new(d.year(), d.month(), 1).expect("valid"))),
            }
        }
        F::StringContains(..) => Some(Value::Bool(as_str(a).contains(as_str(b())))),
        F::And(_) | F::Or(_) | F::IsNull(_) | F::In(..) | F::MinimumOf(_) | F::MaximumOf(_) => {
            unreachable!("handled above")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn month_arithmetic_rolls_forward() {
        assert_eq!(add_months(d("2020-01-31"), 1).unwrap(), d("2020-03-01"));
        assert_eq!(add_months(d("2020-02-29"), 12).unwrap(), d("2021-03-01"));
        assert_eq!(add_months(d("2020-12-31"), -1).unwrap(), d("2020-12-01"));
        assert!(add_months(d("2020-01-01"), 12 * 8500).is_err());
        assert_eq!(months_between(d("2020-01-31"), d("2020-02-29")), 0);
        assert_eq!(years_between(d("2000-03-01"), d("2020-02-29")), 19);
        assert_eq!(years_between(d("2020-03-01"), d("2000-02-29")), -21);
    }

    #[test]
    fn day_arithmetic_stays_within_python_dates() {
        assert!(add_days(d("0001-01-01"), -1).is_err());
        assert!(add_days(d("2020-01-01"), 8_000_000).is_err());
        assert!(add_days(d("2020-01-01"), i64::MIN).is_err());
        assert_eq!(add_days(d("9999-12-30"), 1).unwrap(), d("9999-12-31"));
        assert!(add_days(d("9999-12-31"), 1).is_err());
    }

    #[test]
    fn kleene_logic_and_in() {
        let t = Some(Value::Bool(true));
        let f = Some(Value::Bool(false));
        assert_eq!(apply(&Function::And(vec![]), &[t.clone(), None]).unwrap(), None);
        assert_eq!(apply(&Function::And(vec![]), &[f.clone(), None]).unwrap(), f);
        assert_eq!(apply(&Function::Or(vec![]), &[t.clone(), None]).unwrap(), t);
        let empty = Some(Value::Set(crate::qm::Type::Int, vec![]));
        let dummy = crate::qm::NodeId::default();
        assert_eq!(apply(&Function::In(dummy, dummy), &[None, empty]).unwrap(), Some(Value::Bool(false)));
    }

    #[test]
    fn division() {
        let dummy = crate::qm::NodeId::default();
        let fd = Function::FloorDivide(dummy, dummy);
        assert_eq!(apply(&fd, &[Some(Value::Int(-1)), Some(Value::Int(2))]).unwrap(), Some(Value::Int(-1)));
        assert_eq!(apply(&fd, &[Some(Value::Int(7)), Some(Value::Int(-2))]).unwrap(), Some(Value::Int(-4)));
        assert_eq!(apply(&fd, &[Some(Value::Int(7)), Some(Value::Int(0))]).unwrap(), None);
        // The one integer quotient out of range: an error, not a panic.
        assert_eq!(apply(&fd, &[Some(Value::Int(i64::MIN)), Some(Value::Int(-1))]).unwrap_err().kind, "OverflowError");
    }
}
