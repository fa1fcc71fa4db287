//! Calendar dates in UTC from Unix time: the one conversion behind the make.log header and the
//! dates of Debian changelogs (no date crate is needed for that much).

/// A moment split into its UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    /// 1 to 12.
    pub month: i64,
    /// 1 to 31.
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// Days since a Thursday (0 = Thursday, as 1970-01-01 was).
    pub weekday: usize,
}

impl Utc {
    /// The calendar fields of `secs` seconds since 1970-01-01 00:00 UTC (Howard Hinnant's
    /// civil-from-days algorithm).
    pub fn from_epoch(secs: i64) -> Utc {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day: doy - (153 * mp + 2) / 5 + 1,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday: days.rem_euclid(7) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leap_days_and_the_epoch() {
        let leap = Utc::from_epoch(951_782_400 + 3_723);
        assert_eq!(
            (
                leap.year,
                leap.month,
                leap.day,
                leap.hour,
                leap.minute,
                leap.second
            ),
            (2000, 2, 29, 1, 2, 3)
        );
        assert_eq!(leap.weekday, 5, "a Tuesday");
        let epoch = Utc::from_epoch(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, 0)
        );
        let before = Utc::from_epoch(-1);
        assert_eq!(
            (before.year, before.month, before.day, before.second),
            (1969, 12, 31, 59)
        );
    }
}
