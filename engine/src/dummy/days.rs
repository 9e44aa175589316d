//! Dates as day numbers (days since 1970-01-01), for fast arithmetic on generated dates.
//! Howard Hinnant's civil-calendar algorithms: exact for the proleptic Gregorian calendar.

use jiff::civil::Date;

pub fn to_days(d: Date) -> i64 {
    from_civil(d.year() as i64, d.month() as i64, d.day() as i64)
}

pub fn from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number.
pub fn civil(n: i64) -> (i64, i64, i64) {
    let z = n + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// The day numbers of the dates ehrQL supports (Python's: years 1 to 9999).
pub const SUPPORTED: std::ops::RangeInclusive<i64> = -719_162..=2_932_896;

/// The date of a day number, if it is one ehrQL supports (years 1 to 9999).
pub fn checked_date(n: i64) -> Option<Date> {
    let (y, m, d) = civil(n);
    if !(1..=9999).contains(&y) {
        return None;
    }
    Date::new(y as i16, m as i8, d as i8).ok()
}

pub fn to_date(n: i64) -> Date {
    let (y, m, d) = civil(n);
    Date::new(y as i16, m as i8, d as i8).expect("a day number inside the supported range")
}

/// The first day of the month containing day `n`.
pub fn month_start(n: i64) -> i64 {
    let (y, m, _) = civil(n);
    from_civil(y, m, 1)
}

/// The first day of the month after the one containing day `n`.
pub fn next_month_start(n: i64) -> i64 {
    let (y, m, _) = civil(n);
    if m == 12 { from_civil(y + 1, 1, 1) } else { from_civil(y, m + 1, 1) }
}

/// Day `n` moved by whole years (29 February becomes 1 March when the year is not a leap
/// year, as ehrQL's date arithmetic does).
pub fn add_years(n: i64, years: i64) -> i64 {
    let (y, m, d) = civil(n);
    add_months_civil(y, m, d, years * 12)
}

pub fn add_months(n: i64, months: i64) -> i64 {
    let (y, m, d) = civil(n);
    add_months_civil(y, m, d, months)
}

fn add_months_civil(y: i64, m: i64, d: i64, months: i64) -> i64 {
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let first = from_civil(ny, nm, 1);
    let len = next_month_start(first) - first;
    if d <= len { first + d - 1 } else { first + len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_days() {
        assert_eq!(from_civil(1970, 1, 1), 0);
        assert_eq!(from_civil(2000, 3, 1), 11_017);
        for n in [-25_567, -1, 0, 11_016, 11_017, 19_000, 2_932_896] {
            let d = to_date(n);
            assert_eq!(to_days(d), n, "{d}");
        }
        assert_eq!(to_date(from_civil(1900, 1, 1)).to_string(), "1900-01-01");
        assert_eq!(to_date(add_years(from_civil(2020, 2, 29), 1)).to_string(), "2021-03-01");
        assert_eq!(to_date(add_months(from_civil(2020, 1, 31), 1)).to_string(), "2020-03-01");
        assert_eq!(to_date(month_start(from_civil(2020, 5, 17))).to_string(), "2020-05-01");
        assert_eq!(to_date(next_month_start(from_civil(2020, 12, 17))).to_string(), "2021-01-01");
    }
}
