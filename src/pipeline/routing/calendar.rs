//! Named business-hours calendars: open weekdays between two times in a time zone, minus
//! holidays, plus make-up working days.

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

use crate::config::CalendarConfig;

/// One compiled calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// Name.
    pub name: String,
    zone: TimeZone,
    zone_name: String,
    days: Vec<Weekday>,
    open: Time,
    close: Time,
    holidays: Vec<Date>,
    workdays: Vec<Date>,
}

/// Whether a calendar is open at an instant, and what the local time was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Openness {
    /// Open or not.
    pub open: bool,
    /// `Mon 2026-11-23 10:32 Asia/Shanghai`, plus `holiday` / `make-up workday` when so.
    pub local: String,
}

/// Parses a weekday as configured (`mon` ... `sun`).
pub fn weekday(day: &str) -> Option<Weekday> {
    Some(match day {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// Parses `HH:MM`.
pub fn time_of_day(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// Parses `YYYY-MM-DD`.
pub fn date(text: &str) -> Option<Date> {
    text.parse().ok()
}

/// Looks a time zone up in the bundled database.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

impl Calendar {
    /// Compiles `config`; `None` when something does not parse (validation says what).
    pub fn new(config: &CalendarConfig) -> Option<Self> {
        Some(Self {
            name: config.name.clone(),
            zone: zone(&config.time_zone)?,
            zone_name: config.time_zone.clone(),
            days: config
                .days
                .iter()
                .map(|d| weekday(d))
                .collect::<Option<_>>()?,
            open: time_of_day(&config.open)?,
            close: time_of_day(&config.close)?,
            holidays: config
                .holidays
                .iter()
                .map(|d| date(d))
                .collect::<Option<_>>()?,
            workdays: config
                .workdays
                .iter()
                .map(|d| date(d))
                .collect::<Option<_>>()?,
        })
    }

    /// Whether the calendar is open at `at`.
    pub fn at(&self, at: Timestamp) -> Openness {
        let local = at.to_zoned(self.zone.clone());
        let day = local.date();
        let time = local.time();
        let holiday = self.holidays.contains(&day);
        let workday = self.workdays.contains(&day);
        let day_open = !holiday && (workday || self.days.contains(&local.weekday()));
        let open = day_open && self.open <= time && time < self.close;
        let mut text = format!("{} {}", local.strftime("%a %Y-%m-%d %H:%M"), self.zone_name);
        if holiday {
            text.push_str(" holiday");
        } else if workday {
            text.push_str(" make-up workday");
        }
        Openness { open, local: text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> Calendar {
        Calendar::new(&CalendarConfig {
            name: "office".into(),
            time_zone: "Asia/Shanghai".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            open: "09:00".into(),
            close: "18:00".into(),
            holidays: vec!["2026-10-01".into()],
            workdays: vec!["2026-10-10".into()],
        })
        .unwrap()
    }

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().unwrap()
    }

    #[test]
    fn opens_on_weekdays_in_its_own_time_zone() {
        let c = office();
        // 02:00 UTC is 10:00 in Shanghai, a Monday.
        let monday = c.at(at("2026-11-23T02:00:00Z"));
        assert!(monday.open, "{monday:?}");
        assert_eq!(monday.local, "Mon 2026-11-23 10:00 Asia/Shanghai");
        assert!(
            !c.at(at("2026-11-23T10:00:00Z")).open,
            "18:00 local is closed"
        );
        assert!(!c.at(at("2026-11-22T02:00:00Z")).open, "Sunday");
    }

    #[test]
    fn holidays_close_and_make_up_days_open() {
        let c = office();
        let holiday = c.at(at("2026-10-01T02:00:00Z"));
        assert!(!holiday.open && holiday.local.ends_with("holiday"));
        assert!(c.at(at("2026-10-10T02:00:00Z")).open, "a Saturday worked");
    }

    #[test]
    fn parses_what_configs_use() {
        assert!(time_of_day("9:00").is_none() && time_of_day("24:00").is_none());
        assert!(date("2026-02-30").is_none());
        assert!(weekday("monday").is_none());
        assert!(zone("Mars/Olympus").is_none() && zone("America/New_York").is_some());
    }
}
