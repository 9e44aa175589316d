//! Python's `repr` of the values quarry writes, exactly as ehrQL writes them.

/// Python's `repr(float)`: the shortest string that round-trips, in Python's layout.
///
/// Shortest means as Python's `repr` (David Gay's algorithm) decides it: the fewest
/// significant digits that read back as the same double, and among strings of that length
/// the one nearest the double's exact value, ties to an even last digit. Rust's `{:e}` finds
/// the length but rounds such ties up (`670597701678940.3` where Python writes `.2`), so the
/// digits are then taken from the exact, correctly rounded `{:.N$e}` when that reads back.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let (digits, exp) = shortest_digits(f.abs());
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        // Positional.
        let n = digits.len() as i32;
        let s = if exp >= 0 {
            if n <= exp + 1 {
                format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
            } else {
                format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() == 1 { digits.clone() } else { format!("{}.{}", &digits[..1], &digits[1..]) };
        let es = if exp < 0 { format!("-{:02}", -exp) } else { format!("+{:02}", exp) };
        format!("{sign}{m}e{es}")
    }
}

/// The significant digits and decimal exponent of a positive finite double's repr.
fn shortest_digits(f: f64) -> (String, i32) {
    let shortest = format!("{f:e}");
    let length = shortest.split_once('e').map_or(0, |(m, _)| m.bytes().filter(u8::is_ascii_digit).count());
    let nearest = format!("{:.*e}", length.saturating_sub(1), f);
    let chosen = if nearest.parse::<f64>() == Ok(f) { nearest } else { shortest };
    let (mantissa, exp) = chosen.split_once('e').expect("exponent form");
    (mantissa.chars().filter(char::is_ascii_digit).collect(), exp.parse().expect("exponent"))
}

#[cfg(test)]
mod tests {
    use super::float_repr;

    #[test]
    fn python_float_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-05, "1e-05"),
            (2.5e-07, "2.5e-07"),
            (1e16, "1e+16"),
            (1.2345678901234568e16, "1.2345678901234568e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (-3.5, "-3.5"),
            (1e15, "1000000000000000.0"),
            (f64::NAN, "nan"),
            // Ties between two shortest strings go to the even digit, as in Python.
            (f64::from_bits(0x43030f3d8e5dbae2), "670597701678940.2"),
            (f64::from_bits(0xc2ea97257f2320b4), "-233891771783429.62"),
        ] {
            assert_eq!(float_repr(f), s);
        }
    }
}
