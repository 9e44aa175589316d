//! Plausible values for one column, inside the constraints the solver recorded and the
//! schema's own (categories, ranges, first-of-month, regex, code formats).

use quarry_queries::qm::{CodeSystem, Column, Constraint, Float, Type, Value};

use super::days;
use super::rng::Rng;
use super::solve::{ColCons, Lit};
use std::sync::Arc;

/// How one column is generated.
#[derive(Debug, Clone)]
pub struct ColPlan {
    pub name: String,
    pub type_: Type,
    pub used: bool,
    pub not_null: bool,
    pub categories: Option<Vec<Option<Value>>>,
    pub first_of_month: bool,
    pub regex: Option<Vec<Atom>>,
    /// Inclusive integer range and step.
    pub int_range: Option<(i64, i64, i64)>,
    pub lower: Option<(Lit, bool)>,
    pub upper: Option<(Lit, bool)>,
    /// `lower` and `upper` as constraints, made once (values are checked against them).
    bounds: ColCons,
    /// Columns this date column must not precede.
    pub date_after: Vec<usize>,
    /// Literals the definition compares this column with, one entry per comparison (a
    /// codelist is one entry): values are drawn entry first, so a one-code comparison is as
    /// likely as a long codelist.
    pub hints: Vec<Lit>,
}

impl ColPlan {
    pub fn new(column: &Column, dummy: &[Constraint], used: bool) -> ColPlan {
        let mut plan = ColPlan {
            name: column.name.clone(),
            type_: column.type_.clone(),
            used,
            not_null: false,
            categories: None,
            first_of_month: false,
            regex: None,
            int_range: None,
            lower: None,
            upper: None,
            bounds: ColCons::default(),
            date_after: vec![],
            hints: vec![],
        };
        for c in column.constraints.iter().chain(dummy) {
            match c {
                Constraint::NotNull => plan.not_null = true,
                Constraint::Categorical(values) => {
                    // A dummy-data `Categorical([None])` means "always NULL".
                    let mut cats: Vec<Option<Value>> = values.iter().cloned().map(Some).collect();
                    if values.is_empty() {
                        cats.push(None);
                    }
                    plan.categories = Some(cats);
                }
                Constraint::FirstOfMonth => plan.first_of_month = true,
                Constraint::Regex(r) => plan.regex = parse_regex(r),
                Constraint::ClosedRange { minimum, maximum, step } => plan.int_range = Some((*minimum, *maximum, (*step).max(1))),
                Constraint::GeneralRange { minimum, maximum, includes_minimum, includes_maximum } => {
                    plan.lower = minimum.clone().map(|v| (Arc::new(v), *includes_minimum));
                    plan.upper = maximum.clone().map(|v| (Arc::new(v), *includes_maximum));
                }
                Constraint::Unique | Constraint::DateAfter(_) => {}
            }
        }
        plan.bounds = ColCons { lo: plan.lower.clone(), hi: plan.upper.clone(), ..Default::default() };
        plan
    }
}

/// Where dates may fall for one row.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Hard bounds (birth to death, or the whole calendar for required rows).
    pub lo: i64,
    pub hi: i64,
    /// Where the definition looks: dates land here more often than elsewhere.
    pub focus: (i64, i64),
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";

fn chars(rng: &mut Rng, alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| *rng.pick(alphabet) as char).collect()
}

/// A random code that is valid for its system (ehrql.md §2.8).
pub fn random_code(rng: &mut Rng, system: CodeSystem) -> String {
    match system {
        CodeSystem::SNOMEDCT | CodeSystem::DMD => {
            let len = rng.range(6, 12) as usize;
            format!("{}{}", rng.range(1, 9), chars(rng, DIGITS, len - 1))
        }
        CodeSystem::CTV3 => format!("X{}", chars(rng, ALNUM, 4)),
        CodeSystem::ICD10 => {
            let first = *rng.pick(UPPER) as char;
            let n = rng.range(2, 3) as usize;
            format!("{first}{}", chars(rng, DIGITS, n))
        }
        CodeSystem::OPCS4 => {
            let first = *rng.pick(b"ABCDEFGHJKLMNOPQRSTUVWXYZ") as char;
            let n = rng.range(2, 3) as usize;
            format!("{first}{}", chars(rng, DIGITS, n))
        }
        CodeSystem::BNF => {
            let mut s = format!("0{}{}", chars(rng, DIGITS, 6), chars(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 2));
            for _ in 0..3 {
                s.push(*rng.pick(UPPER) as char);
                s.push(*rng.pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") as char);
            }
            s
        }
    }
}

// ---- A tiny regex generator for the schema's patterns (`E540000[0-9]{2}`, `[a-zA-Z]{2}…`).

#[derive(Debug, Clone)]
pub struct Atom {
    choices: Vec<u8>,
    min: usize,
    max: usize,
}

/// Parses literals, `[...]` classes with ranges, `\d`, `.`, and `{n}`, `{n,m}`, `?`, `*`, `+`.
/// Anything else gives `None` (random text is used instead).
pub fn parse_regex(pattern: &str) -> Option<Vec<Atom>> {
    let b = pattern.as_bytes();
    let mut atoms: Vec<Atom> = vec![];
    let mut i = 0;
    while i < b.len() {
        let choices = match b[i] {
            b'[' => {
                let end = i + 1 + b[i + 1..].iter().position(|&c| c == b']')?;
                let body = &b[i + 1..end];
                let mut set = vec![];
                let mut j = 0;
                while j < body.len() {
                    if j + 2 < body.len() && body[j + 1] == b'-' {
                        set.extend(body[j]..=body[j + 2]);
                        j += 3;
                    } else {
                        set.push(body[j]);
                        j += 1;
                    }
                }
                i = end + 1;
                set
            }
            b'\\' => {
                let c = *b.get(i + 1)?;
                i += 2;
                match c {
                    b'd' => DIGITS.to_vec(),
                    b'w' => ALNUM.to_vec(),
                    c if c.is_ascii_punctuation() => vec![c],
                    _ => return None,
                }
            }
            b'.' => {
                i += 1;
                ALNUM.to_vec()
            }
            b'(' | b')' | b'|' | b'^' | b'$' => return None,
            c => {
                i += 1;
                vec![c]
            }
        };
        let (min, max) = match b.get(i) {
            Some(b'{') => {
                let end = i + b[i..].iter().position(|&c| c == b'}')?;
                let body = std::str::from_utf8(&b[i + 1..end]).ok()?;
                i = end + 1;
                match body.split_once(',') {
                    Some((a, c)) => (a.trim().parse().ok()?, c.trim().parse().unwrap_or(a.trim().parse::<usize>().ok()? + 5)),
                    None => {
                        let n = body.trim().parse().ok()?;
                        (n, n)
                    }
                }
            }
            Some(b'?') => {
                i += 1;
                (0, 1)
            }
            Some(b'*') => {
                i += 1;
                (0, 5)
            }
            Some(b'+') => {
                i += 1;
                (1, 5)
            }
            _ => (1, 1),
        };
        atoms.push(Atom { choices, min, max });
    }
    Some(atoms)
}

pub fn regex_text(rng: &mut Rng, atoms: &[Atom]) -> String {
    let mut s = String::new();
    for a in atoms {
        let n = rng.range(a.min as i64, a.max as i64);
        for _ in 0..n {
            s.push(*rng.pick(&a.choices) as char);
        }
    }
    s
}

fn num(v: &Lit) -> Option<f64> {
    match &**v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(f.0),
        _ => None,
    }
}

/// Chooses a value for `col`. `None` means the constraints could not be met.
pub fn choose(rng: &mut Rng, col: &ColPlan, cons: Option<&ColCons>, window: Window, background: bool) -> Option<Option<Value>> {
    static EMPTY: std::sync::LazyLock<ColCons> = std::sync::LazyLock::new(ColCons::default);
    let c = cons.unwrap_or(&EMPTY);
    if c.conflict {
        return None;
    }
    if c.null == Some(true) {
        return Some(None);
    }
    if c.null.is_none() && !col.not_null && background && rng.chance(0.04) {
        return Some(None);
    }
    if let Some(members) = &c.one_of {
        let list = members.values();
        if list.is_empty() {
            return None;
        }
        // Codelists are long and rarely narrowed further: try a few random members first.
        for _ in 0..8 {
            let v = rng.pick(list);
            if c.admits_besides_members(v) {
                return Some(Some(retype(col, v.clone())));
            }
        }
        let ok: Vec<&Value> = list.iter().filter(|v| c.admits_besides_members(v)).collect();
        if ok.is_empty() {
            return None;
        }
        return Some(Some(retype(col, (*rng.pick(&ok)).clone())));
    }
    if let Some(cats) = &col.categories {
        let admitted = |v: &&Option<Value>| match v {
            None => c.null != Some(false),
            Some(v) => c.admits(v),
        };
        // One of the admitted categories, drawn as `rng.pick` draws from a list of them.
        let n = cats.iter().filter(admitted).count();
        if n == 0 {
            return None;
        }
        return cats.iter().filter(admitted).nth(rng.below(n as u64) as usize).cloned();
    }
    for _ in 0..12 {
        let v = match &col.type_ {
            Type::Bool => Value::Bool(rng.chance(0.5)),
            Type::Date => Value::Date(days::to_date(choose_day(rng, col, c, window)?)),
            Type::Int => {
                let (mut lo, mut hi, step) = col.int_range.unwrap_or_else(|| {
                    // Mostly small counts and sizes, sometimes larger values.
                    let span = if rng.chance(0.8) { 20 } else { 100 };
                    let l = col.lower.as_ref().and_then(|(v, _)| num(v)).map(|f| f.ceil() as i64).unwrap_or(0);
                    let h = col.upper.as_ref().and_then(|(v, _)| num(v)).map(|f| f.floor() as i64).unwrap_or(l.max(0) + span);
                    (l, h, 1)
                });
                if let Some((v, inc)) = &c.lo
                    && let Some(f) = num(v)
                {
                    let l = if *inc { f.ceil() as i64 } else { f.floor() as i64 + 1 };
                    if l > hi {
                        hi = l + 10;
                    }
                    lo = lo.max(l);
                }
                if let Some((v, inc)) = &c.hi
                    && let Some(f) = num(v)
                {
                    let h = if *inc { f.floor() as i64 } else { f.ceil() as i64 - 1 };
                    if h < lo {
                        lo = h - 10;
                    }
                    hi = hi.min(h);
                }
                if lo > hi {
                    return None;
                }
                let steps = (hi - lo) / step;
                Value::Int(lo + step * rng.range(0, steps))
            }
            Type::Float => {
                let mut lo = col.lower.as_ref().and_then(|(v, _)| num(v)).unwrap_or(0.0);
                let mut hi = col.upper.as_ref().and_then(|(v, _)| num(v)).unwrap_or(lo.max(0.0) + 100.0);
                if let Some(f) = c.lo.as_ref().and_then(|(v, _)| num(v)) {
                    if f > hi {
                        hi = f + 10.0;
                    }
                    lo = lo.max(f);
                }
                if let Some(f) = c.hi.as_ref().and_then(|(v, _)| num(v)) {
                    if f < lo {
                        lo = f - 10.0;
                    }
                    hi = hi.min(f);
                }
                let x = lo + rng.unit() * (hi - lo);
                // Two decimals, like a measurement; an exact bound when the range is a point.
                let r = (x * 100.0).round() / 100.0;
                Value::Float(Float(if r < lo || r > hi { x } else { r }))
            }
            Type::Str | Type::Code(_) | Type::MultiCodeString(_) => text_value(rng, col, c, background),
            Type::Set(_) => return None,
        };
        if c.admits(&v) && within_schema(col, &v) {
            return Some(Some(v));
        }
    }
    None
}

fn within_schema(col: &ColPlan, v: &Value) -> bool {
    col.bounds.admits(v)
}

/// Values from a codelist are the column's own type (a `Code` for code columns).
fn retype(col: &ColPlan, v: Value) -> Value {
    match (&col.type_, v) {
        (Type::Code(system), Value::Str(s)) => Value::Code(*system, s),
        (Type::Str | Type::MultiCodeString(_), Value::Code(_, s)) => Value::Str(s),
        (_, v) => v,
    }
}

fn choose_day(rng: &mut Rng, col: &ColPlan, c: &ColCons, w: Window) -> Option<i64> {
    let (clo, chi) = c.day_bounds();
    let (slo, shi) = col.bounds.day_bounds();
    let cons_lo = clo.into_iter().chain(slo).max();
    let cons_hi = chi.into_iter().chain(shi).min();
    let mut lo = w.lo.max(cons_lo.unwrap_or(i64::MIN));
    let mut hi = w.hi.min(cons_hi.unwrap_or(i64::MAX));
    if lo > hi {
        // The window (birth to death) and the definition disagree: the definition wins.
        lo = cons_lo.unwrap_or(w.lo);
        hi = cons_hi.unwrap_or_else(|| w.hi.max(lo) + 366);
        if hi < lo {
            return None;
        }
    }
    let (flo, fhi) = (lo.max(w.focus.0), hi.min(w.focus.1));
    if flo <= fhi && rng.chance(0.7) {
        lo = flo;
        hi = fhi;
    }
    let mut d = rng.range(lo, hi);
    if col.first_of_month {
        d = days::month_start(d);
        if d < lo {
            d = days::next_month_start(d);
        }
        if d > hi {
            return None;
        }
    }
    Some(d)
}

fn text_value(rng: &mut Rng, col: &ColPlan, c: &ColCons, background: bool) -> Value {
    let wrap = |s: String| match &col.type_ {
        Type::Code(system) => Value::Code(*system, s),
        _ => Value::Str(s),
    };
    if !c.contains.is_empty() {
        let mut parts: Vec<String> = c.contains.clone();
        return match &col.type_ {
            Type::MultiCodeString(system) => {
                // Each needle is a code prefix; pad it to a plausible code.
                if rng.chance(0.5) {
                    parts.push(random_code(rng, *system));
                }
                Value::Str(parts.join("||"))
            }
            _ => {
                let n = rng.range(0, 3) as usize;
                let pre = chars(rng, ALNUM, n);
                Value::Str(format!("{pre}{}", parts.join(" ")))
            }
        };
    }
    if !col.hints.is_empty() && rng.chance(if background { 0.5 } else { 0.3 }) {
        let entry = rng.pick(&col.hints).clone();
        let h = match &*entry {
            Value::Set(_, vs) if !vs.is_empty() => rng.pick(vs).clone(),
            v => v.clone(),
        };
        return match (&col.type_, h) {
            (Type::MultiCodeString(system), Value::Str(s)) => {
                if rng.chance(0.5) {
                    Value::Str(format!("{s}||{}", random_code(rng, *system)))
                } else {
                    Value::Str(s)
                }
            }
            (_, h) => retype(col, h),
        };
    }
    if let Some(atoms) = &col.regex {
        return wrap(regex_text(rng, atoms));
    }
    match &col.type_ {
        Type::Code(system) => wrap(random_code(rng, *system)),
        Type::MultiCodeString(system) => {
            let n = rng.range(1, 3);
            Value::Str((0..n).map(|_| random_code(rng, *system)).collect::<Vec<_>>().join("||"))
        }
        _ => {
            let n = rng.range(3, 10) as usize;
            wrap(chars(rng, ALNUM, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_queries::codes::is_valid;

    #[test]
    fn random_codes_are_valid_for_their_system() {
        let mut rng = Rng::new(1, 2, 3);
        for system in [CodeSystem::SNOMEDCT, CodeSystem::DMD, CodeSystem::CTV3, CodeSystem::ICD10, CodeSystem::OPCS4, CodeSystem::BNF] {
            for _ in 0..200 {
                let code = random_code(&mut rng, system);
                assert!(is_valid(system, &code), "{system:?} {code}");
            }
        }
    }

    #[test]
    fn regexes_from_the_schemas_generate_matching_text() {
        let mut rng = Rng::new(1, 2, 3);
        let atoms = parse_regex("E540000[0-9]{2}").unwrap();
        for _ in 0..50 {
            let s = regex_text(&mut rng, &atoms);
            assert!(s.len() == 9 && s.starts_with("E540000") && s[7..].bytes().all(|b| b.is_ascii_digit()), "{s}");
        }
        let atoms = parse_regex("[a-zA-Z]{2}[0-9]{2}[a-zA-Z]").unwrap();
        let s = regex_text(&mut rng, &atoms);
        assert!(s.len() == 5 && s[..2].bytes().all(|b| b.is_ascii_alphabetic()) && s[2..4].bytes().all(|b| b.is_ascii_digit()), "{s}");
        assert!(parse_regex("(a|b)").is_none());
    }
}
