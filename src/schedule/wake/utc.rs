//! Calendar dates from Unix time, in UTC: Howard Hinnant's
//! `civil_from_days` (<http://howardhinnant.github.io/date_algorithms.html>).

use std::time::{SystemTime, UNIX_EPOCH};

/// 2199-12-31 23:59:59 UTC, the last time a systemd calendar takes.
const SYSTEMD_LAST: i64 = 7_258_118_399;

/// A time in UTC, to the second.
pub(super) struct Utc {
    pub(super) secs: i64,
}

impl Utc {
    /// `t` rounded up to the second (a timer must not fire early).
    pub(super) fn ceil(t: SystemTime) -> Self {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => {
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                whole.saturating_add(i64::from(d.subsec_nanos() > 0))
            }
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Utc { secs }
    }

    /// Year, month, day, hour, minute, second.
    fn parts(&self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        // civil_from_days (Hinnant): days since 1970-01-01 to y-m-d.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // All in range by construction: fit u32.
        let small = |v: i64| u32::try_from(v).unwrap_or(0);
        (
            year,
            small(month),
            small(day),
            small(rem / 3600),
            small(rem % 3600 / 60),
            small(rem % 60),
        )
    }

    /// As a systemd calendar time. systemd takes years 1970 to 2199: a
    /// time past that is written as the last second it takes (the headless
    /// run it starts then finds nothing due and sets the timer again).
    pub(super) fn systemd(&self) -> String {
        let clamped = Utc {
            secs: self.secs.clamp(0, SYSTEMD_LAST),
        };
        let (y, mo, d, h, mi, s) = clamped.parts();
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }

    pub(super) fn iso(&self) -> String {
        let (y, mo, d, h, mi, s) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn systemd_times_stay_within_the_years_it_takes() {
        assert_eq!(Utc { secs: SYSTEMD_LAST }.systemd(), "2199-12-31 23:59:59");
        assert_eq!(
            Utc {
                secs: SYSTEMD_LAST + 86_400 * 365 * 500
            }
            .systemd(),
            "2199-12-31 23:59:59"
        );
        assert_eq!(Utc { secs: -5 }.systemd(), "1970-01-01 00:00:00");
    }

    #[test]
    fn calendar_dates_from_unix_time() {
        let at = |s: u64| Utc::ceil(UNIX_EPOCH + Duration::from_secs(s)).systemd();
        assert_eq!(at(0), "1970-01-01 00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(at(1_735_689_599), "2024-12-31 23:59:59");
        assert_eq!(at(4_102_444_800), "2100-01-01 00:00:00");
        let early = UNIX_EPOCH + Duration::from_millis(1_735_689_599_001);
        assert_eq!(Utc::ceil(early).iso(), "2025-01-01T00:00:00Z");
        assert_eq!(
            Utc::ceil(UNIX_EPOCH - Duration::from_secs(1)).iso(),
            "1969-12-31T23:59:59Z"
        );
    }
}
