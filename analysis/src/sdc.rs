//! Statistical disclosure control: the named rules of pipeline.md §4, as pure functions.
//! Every step applies one of these to each count it writes, and records what it did.

/// Counts at or below this are redacted (`≤ 7`).
pub const REDACTION_THRESHOLD: i64 = 7;
/// Counts are rounded to a multiple of this.
pub const ROUNDING_BASE: i64 = 5;
/// Midpoint rounding's interval width (`roundmid_any(x, to = 6)`).
pub const MIDPOINT_BASE: i64 = 6;
/// What a redacted count is written as, unless a recipe chooses another token.
pub const REDACTED: &str = "[REDACTED]";

/// How a step protects its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// No disclosure control (only for outputs that are not released).
    None,
    /// `roundmid_any(x, 6)`: 0→0, 1–6→3, 7–12→9, …
    Midpoint6,
    /// Round to the nearest 5 (halves up).
    Nearest5,
    /// Redact 1–7, keep the rest.
    Redact,
    /// Redact 1–7, round the rest to the nearest 5.
    RedactAndRound,
}

/// A protected count: a number, or redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    Count(i64),
    Redacted,
}

/// R's `roundmid_any(x, to) = ceiling(x / to) * to - floor(to / 2) * (x != 0)`.
pub fn roundmid_any(x: i64, to: i64) -> i64 {
    if x == 0 {
        return 0;
    }
    let up = (x + to - 1).div_euclid(to) * to;
    up - (to / 2)
}

/// Rounds to the nearest multiple of `base`, halves up (12.5 → 15).
pub fn round_to(x: i64, base: i64) -> i64 {
    (x + base / 2).div_euclid(base) * base
}

/// Whether a count must be redacted: 1 to the threshold (0 is not disclosive).
pub fn is_small(x: i64) -> bool {
    x > 0 && x <= REDACTION_THRESHOLD
}

pub fn protect(rounding: Rounding, x: i64) -> Protected {
    match rounding {
        Rounding::None => Protected::Count(x),
        Rounding::Midpoint6 => Protected::Count(roundmid_any(x, MIDPOINT_BASE)),
        Rounding::Nearest5 => Protected::Count(round_to(x, ROUNDING_BASE)),
        Rounding::Redact if is_small(x) => Protected::Redacted,
        Rounding::Redact => Protected::Count(x),
        Rounding::RedactAndRound if is_small(x) => Protected::Redacted,
        Rounding::RedactAndRound => Protected::Count(round_to(x, ROUNDING_BASE)),
    }
}

impl std::str::FromStr for Rounding {
    type Err = String;

    fn from_str(s: &str) -> Result<Rounding, String> {
        Ok(match s.replace('-', "_").as_str() {
            "none" => Rounding::None,
            "midpoint6" => Rounding::Midpoint6,
            "nearest5" => Rounding::Nearest5,
            "redact" => Rounding::Redact,
            "redact_and_round" => Rounding::RedactAndRound,
            _ => {
                let names = ["none", "midpoint6", "nearest5", "redact", "redact_and_round"];
                let suggestion = quarry_queries::suggest::did_you_mean(s, names);
                return Err(format!("unknown rounding `{s}`{suggestion}; use none, midpoint6, nearest5, redact or redact_and_round"));
            }
        })
    }
}

impl Rounding {
    /// How the sidecar log describes it.
    pub fn describe(self) -> &'static str {
        match self {
            Rounding::None => "no disclosure control",
            Rounding::Midpoint6 => "midpoint-6 rounding (roundmid_any(x, 6): 0→0, 1–6→3, 7–12→9, …)",
            Rounding::Nearest5 => "rounded to the nearest 5",
            Rounding::Redact => "counts of 1–7 redacted",
            Rounding::RedactAndRound => "counts of 1–7 redacted, others rounded to the nearest 5",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoint_rounding_at_its_edges() {
        let cases = [(0, 0), (1, 3), (6, 3), (7, 9), (12, 9), (13, 15), (18, 15), (19, 21)];
        for (x, want) in cases {
            assert_eq!(roundmid_any(x, 6), want, "roundmid_any({x}, 6)");
        }
    }

    #[test]
    fn rounding_to_five_and_redaction_at_their_edges() {
        let cases = [(0, 0), (1, 0), (2, 0), (3, 5), (7, 5), (8, 10), (12, 10), (13, 15)];
        for (x, want) in cases {
            assert_eq!(round_to(x, 5), want, "round_to({x}, 5)");
        }
        assert!(!is_small(0));
        assert!(is_small(1));
        assert!(is_small(7));
        assert!(!is_small(8));
        assert_eq!(protect(Rounding::Redact, 7), Protected::Redacted);
        assert_eq!(protect(Rounding::Redact, 8), Protected::Count(8));
        assert_eq!(protect(Rounding::Redact, 0), Protected::Count(0));
        assert_eq!(protect(Rounding::RedactAndRound, 13), Protected::Count(15));
        assert_eq!(protect(Rounding::RedactAndRound, 5), Protected::Redacted);
        assert_eq!(protect(Rounding::None, 5), Protected::Count(5));
    }
}
