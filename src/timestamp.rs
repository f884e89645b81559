//! A record's event time: RFC 3339 text or epoch milliseconds, as epoch
//! milliseconds.
//!
//! Every record's time is parsed, so the usual shape
//! (`"2026-11-22T03:14:15.926Z"`, any fraction, `Z` or `±HH:MM`) is read by
//! a fast path; anything else goes to chrono, which the fast path must agree
//! with (a test checks both on the same inputs).

use chrono::DateTime;

use crate::json_scan::decode_string;

/// The event time in `raw` (a JSON value as written in the record).
pub fn parse(raw: &[u8]) -> Option<i64> {
    if let Some(ms) = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .and_then(rfc3339_fast)
    {
        return Some(ms);
    }
    if let Some(text) = decode_string(raw) {
        return DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.timestamp_millis());
    }
    let text = std::str::from_utf8(raw).ok()?;
    let ms = match text.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => text
            .parse::<f64>()
            .ok()
            // A cast saturates; the range below refuses what it made.
            .filter(|ms| ms.is_finite())? as i64,
    };
    // Microseconds or nanoseconds read as milliseconds would name indices
    // of the year +58861, a new one every 86 s of data: no time at all (the
    // fallback index) is the better reading.
    MILLIS_OF_FOUR_DIGIT_YEARS.contains(&ms).then_some(ms)
}

/// 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z, what RFC 3339 can write.
const MILLIS_OF_FOUR_DIGIT_YEARS: std::ops::RangeInclusive<i64> =
    -62_167_219_200_000..=253_402_300_799_999;

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` with valid field ranges;
/// `None` sends the text to chrono (leap seconds, lowercase or space
/// separators, escapes, anything unusual).
fn rfc3339_fast(t: &[u8]) -> Option<i64> {
    let digits = |range| digits(t, range);
    if t.len() < 20 || [t[4], t[7], t[10], t[13], t[16]] != *b"--T::" {
        return None;
    }
    let days = days_of_date(t[..10].try_into().ok()?)?;
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if t[at] == b'.' {
        let fraction = t[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if fraction == 0 {
            return None;
        }
        // chrono truncates the fraction to whole milliseconds the same way.
        for i in 0..3 {
            millis = millis * 10
                + t.get(at + 1 + i)
                    .filter(|_| i < fraction)
                    .map_or(0, |b| i64::from(b - b'0'));
        }
        at += 1 + fraction;
    }
    let offset_minutes = match t.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let (h, m) = (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// The decimal number `t[range]` spells, if it is all digits.
fn digits(t: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
    t.get(range)?.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a valid `YYYY-MM-DD` (its separators checked
/// by the caller). The records of one object nearly always share their
/// date, so the last one is remembered (per thread: each object is decoded
/// on one).
fn days_of_date(date: [u8; 10]) -> Option<i64> {
    thread_local! {
        static LAST: std::cell::Cell<Option<([u8; 10], i64)>> = const { std::cell::Cell::new(None) };
    }
    if let Some((last, days)) = LAST.get() {
        if last == date {
            return Some(days);
        }
    }
    let digits = |range| digits(&date, range);
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    LAST.set(Some((date, days)));
    Some(days)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn chrono_ms(text: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    #[test]
    fn rfc3339_text_and_epoch_millis() {
        assert_eq!(parse(b"1795305599000"), Some(1_795_305_599_000));
        assert_eq!(parse(b"1795305599000.7"), Some(1_795_305_599_000));
        assert_eq!(parse(br#""2026-11-21T23:59:59Z""#), Some(1_795_305_599_000));
        assert_eq!(
            parse(br#""2026-11-22T01:00:00+01:00""#),
            Some(1_795_305_600_000)
        );
        assert_eq!(
            parse(br#""2026-11-22 00:00:00.5z""#),
            Some(1_795_305_600_500)
        );
        assert_eq!(
            parse(br#""2026-11-22T00:00:00\u002e5Z""#),
            Some(1_795_305_600_500)
        );
        assert_eq!(parse(br#""yesterday""#), None);
        assert_eq!(parse(br#""2026-02-29T00:00:00Z""#), None);
        assert_eq!(parse(b"null"), None);
        // Epoch microseconds and nanoseconds are no milliseconds of a year
        // RFC 3339 can write.
        assert_eq!(parse(b"253402300799999"), Some(253_402_300_799_999));
        assert_eq!(parse(b"253402300800000"), None);
        assert_eq!(parse(b"1795305599000000"), None);
        assert_eq!(parse(b"1795305599000000000"), None);
        assert_eq!(parse(b"-62167219200001"), None);
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut fast_hits = 0;
        let mut last_date = "2026-11-22".to_owned();
        let pick = |rng: &mut rand::rngs::StdRng, choices: &[&str]| {
            choices[rng.gen_range(0..choices.len())].to_owned()
        };
        for _ in 0..200_000 {
            let mut text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                rng.gen_range(0..=9999),
                rng.gen_range(0..=13),
                rng.gen_range(0..=32),
                rng.gen_range(0..=24),
                rng.gen_range(0..=60),
                rng.gen_range(0..=60),
            );
            text += &pick(
                &mut rng,
                &[
                    "",
                    "",
                    ".",
                    ".1",
                    ".12",
                    ".123",
                    ".1234",
                    ".999999999",
                    ".1234567890123",
                ],
            );
            text += &pick(
                &mut rng,
                &[
                    "Z", "Z", "+00:00", "-05:30", "+14:00", "+24:00", "+01:60", "z", "", "+0100",
                ],
            );
            // The date of the previous text half the time: the remembered
            // date must give the same answer as a fresh one.
            if rng.gen_bool(0.5) {
                text.replace_range(..10, &last_date);
            }
            last_date = text[..10].to_owned();
            if rng.gen_bool(0.02) {
                text.insert(rng.gen_range(0..text.len()), 'x');
            }
            let fast = rfc3339_fast(text.as_bytes());
            if fast.is_some() {
                fast_hits += 1;
                assert_eq!(fast, chrono_ms(&text), "{text}");
            }
            assert_eq!(
                parse(format!("\"{text}\"").as_bytes()),
                chrono_ms(&text),
                "{text}"
            );
        }
        assert!(
            fast_hits > 50_000,
            "only {fast_hits} inputs took the fast path"
        );
    }
}
