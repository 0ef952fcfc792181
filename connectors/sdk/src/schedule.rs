//! Local-time windows at a fixed UTC offset (quiet hours, business hours), their config
//! values, and the clock a connector reads them with. A fixed offset (not a zone name) keeps the daemon free of a time-zone database; regions
//! with daylight saving time configure the offset they want.

use std::sync::Arc;
use std::time::Duration;

use time::{OffsetDateTime, Time, UtcOffset, Weekday};

/// Where "now" comes from; tests and simulations hand in a fixed instant.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// A clock stopped at `at`.
pub fn fixed_clock(at: OffsetDateTime) -> Clock {
    Arc::new(move || at)
}

/// Why a schedule value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not `+HH:MM` / `-HH:MM`.
    #[error("{0:?} is not a utc offset like +08:00")]
    Offset(String),
    /// Not `HH:MM` on a 24-hour clock.
    #[error("{0:?} is not a time like 09:30")]
    Time(String),
    /// Not a day name.
    #[error("{0:?} is not a day (mon, tue, wed, thu, fri, sat, sun)")]
    Weekday(String),
}

/// Parses `+08:00`, `-05:30` or `Z`.
pub fn parse_utc_offset(raw: &str) -> Result<UtcOffset, ScheduleError> {
    let bad = || ScheduleError::Offset(raw.to_owned());
    let s = raw.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i8, &s[1..]),
        Some(b'-') => (-1i8, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let hours: i8 = h.parse().map_err(|_| bad())?;
    let minutes: i8 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&hours) || !(0..60).contains(&minutes) {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())
}

/// Parses `HH:MM` (24-hour clock).
pub fn parse_local_time(raw: &str) -> Result<Time, ScheduleError> {
    let bad = || ScheduleError::Time(raw.to_owned());
    let (h, m) = raw.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let hours: u8 = h.parse().map_err(|_| bad())?;
    let minutes: u8 = m.parse().map_err(|_| bad())?;
    Time::from_hms(hours, minutes, 0).map_err(|_| bad())
}

/// Parses a day name: `mon`, `Monday`, ... (case-insensitive).
pub fn parse_weekday(raw: &str) -> Result<Weekday, ScheduleError> {
    let lower = raw.trim().to_ascii_lowercase();
    let day = match lower.get(..3).unwrap_or("") {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(ScheduleError::Weekday(raw.to_owned())),
    };
    let full = day.to_string().to_ascii_lowercase();
    if lower.len() == 3 || lower == full {
        Ok(day)
    } else {
        Err(ScheduleError::Weekday(raw.to_owned()))
    }
}

fn seconds_of(t: Time) -> i64 {
    i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())
}

/// Quiet hours: from `start` to `end` local time every day, wrapping midnight when `end` is
/// earlier than `start` (21:00-08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// The local time's offset from UTC.
    pub offset: UtcOffset,
    /// When quiet hours begin (inclusive).
    pub start: Time,
    /// When they end (exclusive).
    pub end: Time,
}

impl QuietHours {
    /// How long until quiet hours end, when `now` is inside them; `None` outside.
    pub fn remaining(&self, now: OffsetDateTime) -> Option<Duration> {
        let local = seconds_of(now.to_offset(self.offset).time());
        let (start, end) = (seconds_of(self.start), seconds_of(self.end));
        let inside = if start < end {
            (start..end).contains(&local)
        } else {
            local >= start || local < end
        };
        if !inside {
            return None;
        }
        let secs = (end - local).rem_euclid(86_400);
        Some(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Opening hours: `open` to `close` local time on the listed days (no overnight shifts:
/// `open` is before `close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// The local time's offset from UTC.
    pub offset: UtcOffset,
    /// Days on which the business opens.
    pub days: Vec<Weekday>,
    /// Opening time (inclusive).
    pub open: Time,
    /// Closing time (exclusive).
    pub close: Time,
}

impl BusinessHours {
    /// Whether the business is open at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        self.days.contains(&local.weekday()) && (self.open..self.close).contains(&local.time())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{datetime, offset, time};

    use super::*;

    #[test]
    fn parses_offsets_times_and_days() {
        assert_eq!(parse_utc_offset("+08:00"), Ok(offset!(+8)));
        assert_eq!(parse_utc_offset("-05:30"), Ok(offset!(-5:30)));
        assert_eq!(parse_utc_offset("Z"), Ok(UtcOffset::UTC));
        for bad in ["08:00", "+8", "+15:00", "+08:60", "", "+ab:cd"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_local_time("9:05"), Ok(time!(9:05)));
        assert_eq!(parse_local_time("23:59"), Ok(time!(23:59)));
        for bad in ["24:00", "12:60", "noon", "12", "12:5"] {
            assert!(parse_local_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_weekday("Mon"), Ok(Weekday::Monday));
        assert_eq!(parse_weekday("sunday"), Ok(Weekday::Sunday));
        for bad in ["mo", "monkey", "x"] {
            assert!(parse_weekday(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quiet_hours_wrap_midnight_and_say_how_long_is_left() {
        let quiet = QuietHours {
            offset: offset!(+8),
            start: time!(21:00),
            end: time!(8:00),
        };
        let cases = [
            // 13:00 UTC = 21:00 in +08:00, the first quiet second: 11 hours left.
            (datetime!(2024-05-01 13:00 UTC), Some(11 * 3600)),
            (datetime!(2024-05-01 12:59:59 UTC), None),
            // 23:30 UTC = 07:30 local: half an hour left.
            (datetime!(2024-05-01 23:30 UTC), Some(1800)),
            (datetime!(2024-05-02 00:00 UTC), None),
            (datetime!(2024-05-01 16:00 UTC), Some(8 * 3600)),
        ];
        for (now, want) in cases {
            assert_eq!(quiet.remaining(now), want.map(Duration::from_secs), "{now}");
        }
        let same_day = QuietHours {
            offset: UtcOffset::UTC,
            start: time!(12:00),
            end: time!(14:00),
        };
        assert_eq!(
            same_day.remaining(datetime!(2024-05-01 13:15 UTC)),
            Some(Duration::from_secs(45 * 60))
        );
        assert_eq!(same_day.remaining(datetime!(2024-05-01 14:00 UTC)), None);
    }

    #[test]
    fn business_hours_check_day_and_time_locally() {
        let hours = BusinessHours {
            offset: offset!(+8),
            days: vec![Weekday::Monday, Weekday::Friday],
            open: time!(9:00),
            close: time!(18:00),
        };
        // 2024-05-06 is a Monday.
        let cases = [
            (datetime!(2024-05-06 01:00 UTC), true),  // Mon 09:00 local
            (datetime!(2024-05-06 00:59 UTC), false), // Mon 08:59
            (datetime!(2024-05-06 10:00 UTC), false), // Mon 18:00, closed
            (datetime!(2024-05-05 23:30 UTC), false), // Mon 07:30 local
            (datetime!(2024-05-07 03:00 UTC), false), // Tuesday
            (datetime!(2024-05-10 09:59 UTC), true),  // Fri 17:59
        ];
        for (now, open) in cases {
            assert_eq!(hours.is_open(now), open, "{now}");
        }
    }
}
