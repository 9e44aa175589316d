//! Number formatting and rounding where the interpreter's own differs from CPython's.

/// CPython's `round(x, ndigits)` for a float: the decimal number nearest to the exact binary
/// value of `x`, rounded half to even at `ndigits` places (negative: tens, hundreds, …), as
/// the nearest float. Rust prints a float's exact decimal expansion, so the rounding is done
/// on those digits.
pub fn round_float(x: f64, ndigits: i64) -> f64 {
    if !x.is_finite() || x == 0.0 || ndigits > 323 {
        return x;
    }
    let negative = x.is_sign_negative();
    let signed = |v: f64| if negative { -v } else { v };
    if ndigits < -308 {
        return signed(0.0);
    }
    // Every finite double has at most 1074 digits after the point.
    let exact = format!("{:.1100}", x.abs());
    let (int_part, frac_part) = exact.split_once('.').expect("a point in a fixed-point float");
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let point = int_part.len() as i64;
    let keep = point + ndigits;
    if keep < 0 {
        return signed(0.0);
    }
    let keep = keep as usize;
    let first_dropped = digits.get(keep).copied().unwrap_or(b'0');
    let rest_nonzero = digits.iter().skip(keep + 1).any(|&d| d != b'0');
    let last_kept_odd = keep > 0 && (digits[keep - 1] - b'0') % 2 == 1;
    let round_up = first_dropped > b'5' || (first_dropped == b'5' && (rest_nonzero || last_kept_odd));
    digits.truncate(keep);
    let mut point = point;
    if round_up {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                point += 1;
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    // Digits are kept up to `point + ndigits`; below the point they are zeros.
    while (digits.len() as i64) < point {
        digits.push(b'0');
    }
    let text = String::from_utf8(digits).expect("ascii digits");
    let (int_text, frac_text) = text.split_at(point.max(0) as usize);
    let literal = format!("{}.{}", if int_text.is_empty() { "0" } else { int_text }, if frac_text.is_empty() { "0" } else { frac_text });
    signed(literal.parse::<f64>().expect("a decimal literal"))
}

#[cfg(test)]
mod tests {
    use super::round_float;

    #[test]
    fn rounds_as_cpython() {
        // Values from CPython 3.13.
        for (x, n, expected) in [
            (2.675, 2, 2.67),
            (2.665, 2, 2.67),
            (0.125, 2, 0.12),
            (0.375, 2, 0.38),
            (1.5, 0, 2.0),
            (2.5, 0, 2.0),
            (-2.5, 0, -2.0),
            (1234.5678, -2, 1200.0),
            (1250.0, -2, 1200.0),
            (1350.0, -2, 1400.0),
            (999.99, 1, 1000.0),
            (5e-324, 400, 5e-324),
            (1e300, -310, 0.0),
            (0.1, 20, 0.1),
            (-0.0001, 2, -0.0),
            (123456789.98765, 3, 123456789.988),
            (9.995, 2, 9.99),
        ] {
            let got = round_float(x, n);
            assert!(
                got == expected && got.is_sign_negative() == expected.is_sign_negative(),
                "round({x}, {n}) = {got}, CPython {expected}"
            );
        }
    }
}
