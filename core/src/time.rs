//! Timestamps: microseconds since the Unix epoch, written as RFC 3339 UTC with six fractional digits.
//!
//! The server reads its clock in `net/` and passes the number in; this module only formats and parses.

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// Length of a formatted timestamp: `2026-02-07T14:30:00.123456Z`.
pub const RFC3339_LEN: usize = 27;

/// Writes `micros` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` into a fixed buffer (no allocation).
pub fn format_rfc3339(micros: Micros) -> [u8; RFC3339_LEN] {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let y = y.clamp(0, 9999) as u32;
    put(&mut out[0..4], y);
    put(&mut out[5..7], m);
    put(&mut out[8..10], d);
    put(&mut out[11..13], sod / 3600);
    put(&mut out[14..16], (sod / 60) % 60);
    put(&mut out[17..19], sod % 60);
    put(&mut out[20..26], frac);
    out
}

/// Appends the RFC 3339 form of `micros` to `out`.
pub fn write_rfc3339(micros: Micros, out: &mut Vec<u8>) {
    out.extend_from_slice(&format_rfc3339(micros));
}

/// The RFC 3339 form of `micros` as a `String`.
pub fn rfc3339(micros: Micros) -> String {
    // The buffer holds ASCII digits and separators only.
    String::from_utf8_lossy(&format_rfc3339(micros)).into_owned()
}

/// Parses an RFC 3339 UTC timestamp (`Z` or `+00:00`, 0 to 9 fractional digits) into microseconds.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                frac = frac * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..6 {
            frac *= 10;
        }
    }
    let offset = match &b[i..] {
        b"Z" | b"z" | b"+00:00" => 0,
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset) * 1_000_000 + frac)
}

fn put(dst: &mut [u8], mut v: u32) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

const DAY: Micros = 86_400_000_000;

/// The start (00:00 UTC on the 1st) of the calendar month holding `micros`.
pub fn month_start(micros: Micros) -> Micros {
    let (y, m, _) = civil_from_days(micros.div_euclid(DAY));
    days_from_civil(y, m, 1) * DAY
}

/// The start of the calendar month after the one holding `micros`.
pub fn next_month_start(micros: Micros) -> Micros {
    let (y, m, _) = civil_from_days(micros.div_euclid(DAY));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * DAY
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instant() {
        // 2026-02-07T14:30:00.123456Z
        let micros = 1_770_474_600_123_456;
        assert_eq!(rfc3339(micros), "2026-02-07T14:30:00.123456Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_variants() {
        assert_eq!(parse_rfc3339("2026-02-07T14:30:00.123456Z"), Some(1_770_474_600_123_456));
        assert_eq!(parse_rfc3339("2026-02-07T14:30:00Z"), Some(1_770_474_600_000_000));
        assert_eq!(parse_rfc3339("2026-02-07T14:30:00.5+00:00"), Some(1_770_474_600_500_000));
        assert_eq!(parse_rfc3339("2026-02-07T14:30:00.123456789Z"), Some(1_770_474_600_123_456));
        assert_eq!(parse_rfc3339("2026-02-07 14:30"), None);
        assert_eq!(parse_rfc3339("garbage-that-is-long-enough"), None);
        assert_eq!(parse_rfc3339("2026-13-07T14:30:00Z"), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(m in 0i64..253_402_300_799_999_999) {
            prop_assert_eq!(parse_rfc3339(&rfc3339(m)), Some(m));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
