//! The calling window: the days and hours a contact may be called, in the contact's local time,
//! holidays excluded. A contact whose number spans several zones is called only when the window
//! holds in every one of them.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

/// How far ahead [`CallingWindow::next_open`] looks: a window that does not open within this
/// never opens (every weekday pattern repeats within a week; holidays may block a few more).
const HORIZON_DAYS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("`{0}` is not a day (mon, tue, wed, thu, fri, sat, sun)")]
    Day(String),
    #[error("`{0}` is not a time of day (HH:MM)")]
    Time(String),
    #[error("`{0}` is not a date (YYYY-MM-DD)")]
    Date(String),
    #[error("the window starts at {start} and ends at {end}: it must start before it ends")]
    Empty { start: Time, end: Time },
    #[error("the window has no days")]
    NoDays,
    #[error("unknown time zone `{0}`")]
    Zone(String),
}

/// When contacts may be called, in their local time.
#[derive(Debug, Clone, PartialEq)]
pub struct CallingWindow {
    days: BTreeSet<u8>,
    start: Time,
    end: Time,
    holidays: BTreeSet<Date>,
}

/// A weekday as the API names it.
fn weekday(name: &str) -> Result<Weekday, WindowError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return Err(WindowError::Day(name.to_string())),
    })
}

/// The zone named `name` from the system's time zone database.
pub fn zone(name: &str) -> Result<TimeZone, WindowError> {
    TimeZone::get(name).map_err(|_| WindowError::Zone(name.to_string()))
}

impl CallingWindow {
    /// `days` by name, `start`/`end` as `HH:MM` (end not included), holidays as dates.
    pub fn new(
        days: &[String],
        start: &str,
        end: &str,
        holidays: &[String],
    ) -> Result<CallingWindow, WindowError> {
        let time = |s: &str| {
            s.parse::<Time>()
                .map_err(|_| WindowError::Time(s.to_string()))
        };
        let (start, end) = (time(start)?, time(end)?);
        if start >= end {
            return Err(WindowError::Empty { start, end });
        }
        let days = days
            .iter()
            .map(|d| weekday(d).map(|w| w.to_monday_one_offset() as u8))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if days.is_empty() {
            return Err(WindowError::NoDays);
        }
        let holidays = holidays
            .iter()
            .map(|d| d.parse::<Date>().map_err(|_| WindowError::Date(d.clone())))
            .collect::<Result<_, _>>()?;
        Ok(CallingWindow {
            days,
            start,
            end,
            holidays,
        })
    }

    /// Whether the window holds at `at` in `zone`.
    fn open_in(&self, at: Timestamp, zone: &TimeZone) -> bool {
        let local = at.to_zoned(zone.clone());
        let day = local.weekday().to_monday_one_offset() as u8;
        self.days.contains(&day)
            && !self.holidays.contains(&local.date())
            && (self.start..self.end).contains(&local.time())
    }

    /// Whether the window holds at `at` in every zone of `zones`.
    pub fn is_open(&self, at: Timestamp, zones: &[TimeZone]) -> bool {
        zones.iter().all(|z| self.open_in(at, z))
    }

    /// The first moment at or after `from` when the window holds in every zone, if it opens
    /// within the horizon. The shared window opens when the last of the zones opens, so the
    /// candidates are `from` and each zone's daily start.
    pub fn next_open(&self, from: Timestamp, zones: &[TimeZone]) -> Option<Timestamp> {
        if self.is_open(from, zones) {
            return Some(from);
        }
        let mut candidates: Vec<Timestamp> = zones
            .iter()
            .flat_map(|zone| {
                let today = from.to_zoned(zone.clone()).date();
                (0..=HORIZON_DAYS).filter_map(move |d| {
                    let day = today.checked_add(jiff::Span::new().days(d)).ok()?;
                    // A start in a spring-forward gap moves forward by the gap (02:30 → 03:30).
                    Some(
                        day.to_datetime(self.start)
                            .to_zoned(zone.clone())
                            .ok()?
                            .timestamp(),
                    )
                })
            })
            .filter(|t| *t > from)
            .collect();
        candidates.sort();
        candidates.into_iter().find(|t| self.is_open(*t, zones))
    }
}

/// The local date of `at` in `zone`, as `YYYY-MM-DD` (the per-day attempt cap counts by it).
pub fn local_day(at: Timestamp, zone: &TimeZone) -> String {
    at.to_zoned(zone.clone()).date().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], start: &str, end: &str, holidays: &[&str]) -> CallingWindow {
        let s = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        CallingWindow::new(&s(days), start, end, &s(holidays)).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri"];

    #[test]
    fn a_contact_is_called_in_its_own_hours_and_days_not_on_holidays() {
        let w = window(WEEKDAYS, "09:00", "18:00", &["2026-12-25"]);
        let ny = [zone("America/New_York").unwrap()];
        let la = [zone("America/Los_Angeles").unwrap()];
        // Monday 2026-12-07 14:00 UTC: 09:00 in New York, 06:00 in Los Angeles.
        let t = at("2026-12-07T14:00:00Z");
        assert!(w.is_open(t, &ny));
        assert!(!w.is_open(t, &la));
        assert_eq!(w.next_open(t, &la), Some(at("2026-12-07T17:00:00Z")));
        // The end is not included: 18:00 in New York is closed, next is Tuesday 09:00.
        let closing = at("2026-12-07T23:00:00Z");
        assert!(!w.is_open(closing, &ny));
        assert_eq!(w.next_open(closing, &ny), Some(at("2026-12-08T14:00:00Z")));
        // Friday evening → Monday; Christmas (a Friday) skipped → Monday the 28th.
        assert_eq!(
            w.next_open(at("2026-12-24T23:30:00Z"), &ny),
            Some(at("2026-12-28T14:00:00Z"))
        );
    }

    #[test]
    fn a_number_in_several_zones_is_called_only_when_all_are_open() {
        let w = window(WEEKDAYS, "09:00", "12:00", &[]);
        let both = [
            zone("America/New_York").unwrap(),
            zone("America/Chicago").unwrap(),
        ];
        // 09:00 New York is 08:00 Chicago: closed until Chicago opens (10:00 New York).
        let t = at("2026-12-07T14:00:00Z");
        assert!(!w.is_open(t, &both));
        assert_eq!(w.next_open(t, &both), Some(at("2026-12-07T15:00:00Z")));
        // A window shorter than the zones' offset never holds in both.
        let short = window(WEEKDAYS, "09:00", "09:30", &[]);
        let far = [
            zone("America/New_York").unwrap(),
            zone("America/Los_Angeles").unwrap(),
        ];
        assert_eq!(short.next_open(t, &far), None);
    }

    #[test]
    fn daylight_saving_moves_the_window_with_local_time() {
        let w = window(&["sun"], "02:30", "04:00", &[]);
        let ny = [zone("America/New_York").unwrap()];
        // 2027-03-14: clocks jump from 02:00 to 03:00; 02:30 does not exist, 03:30 EDT opens.
        let opened = w.next_open(at("2027-03-14T05:00:00Z"), &ny).unwrap();
        assert_eq!(opened, at("2027-03-14T07:30:00Z"));
        // In winter the same window opens at 02:30 EST.
        let winter = w.next_open(at("2026-12-06T05:00:00Z"), &ny).unwrap();
        assert_eq!(winter, at("2026-12-06T07:30:00Z"));
        assert_eq!(local_day(opened, &ny[0]), "2027-03-14");
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let s = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let err = |d: &[&str], a: &str, b: &str, h: &[&str]| {
            CallingWindow::new(&s(d), a, b, &s(h)).unwrap_err()
        };
        assert_eq!(
            err(&["mon"], "18:00", "09:00", &[]).to_string(),
            "the window starts at 18:00:00 and ends at 09:00:00: it must start before it ends"
        );
        assert_eq!(
            err(&["funday"], "09:00", "10:00", &[]),
            WindowError::Day("funday".into())
        );
        assert_eq!(err(&[], "09:00", "10:00", &[]), WindowError::NoDays);
        assert_eq!(
            err(&["mon"], "9am", "10:00", &[]),
            WindowError::Time("9am".into())
        );
        assert_eq!(
            err(&["mon"], "09:00", "10:00", &["12/25"]),
            WindowError::Date("12/25".into())
        );
        assert!(zone("Mars/Olympus_Mons").is_err());
    }
}
