//! Contact lists: from JSON or CSV into contacts the store keeps, each with the zones its
//! calling window is checked in. A bad row is reported by its line (or index) and left out;
//! the rest are imported.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::window::{CallingWindow, zone};
use super::zones::zones_of;
use crate::store::campaigns::NewContact;

/// Most contacts in one campaign.
pub const MAX_CONTACTS: usize = 100_000;

/// A contact as the API takes it in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub number: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    /// What the agent reads in the call's metadata, beside the campaign's own keys.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A contact as read, by its line (CSV, from 1) or index (JSON, from 0); or why it could not be
/// read.
pub type Row = (usize, Result<ContactInput, String>);

/// A contact left out, and why: `line` is the CSV line (from 1, the header is line 1) or the
/// JSON list index (from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: usize,
    pub why: String,
}

/// `+` and 8 to 15 digits (E.164), from a number written with spaces, dashes, dots or
/// parentheses; `None` for anything else.
pub fn e164(number: &str) -> Option<String> {
    let trimmed = number.trim();
    let rest = trimmed.strip_prefix('+')?;
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    ((8..=15).contains(&digits.len()) && !digits.starts_with('0')).then(|| format!("+{digits}"))
}

/// Turns contact inputs into contacts to store, checking each against the calling window from
/// `now`: a contact whose window never opens is rejected, as is one with no zone at all.
pub struct ContactChecker<'a> {
    pub window: &'a CallingWindow,
    pub default_zone: Option<&'a str>,
    pub now: Timestamp,
}

impl ContactChecker<'_> {
    pub fn check(&self, input: ContactInput) -> Result<NewContact, String> {
        let number = e164(&input.number).ok_or_else(|| {
            format!(
                "`{}` is not an E.164 number (+, country code, number)",
                input.number
            )
        })?;
        let zones: Vec<String> = match (&input.time_zone, self.default_zone) {
            (Some(z), _) if !z.trim().is_empty() => vec![z.trim().to_string()],
            (_, default) => {
                let from_number: Vec<String> =
                    zones_of(&number).into_iter().map(String::from).collect();
                match (from_number.is_empty(), default) {
                    (false, _) => from_number,
                    (true, Some(d)) => vec![d.to_string()],
                    (true, None) => {
                        return Err(format!(
                            "no time zone for {number}: give `time_zone` or the campaign's \
                             `default_time_zone`"
                        ));
                    }
                }
            }
        };
        let tz = zones
            .iter()
            .map(|z| zone(z).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = self.window.next_open(self.now, &tz) else {
            return Err(format!(
                "the calling window never holds in all of {number}'s zones ({})",
                zones.join(", ")
            ));
        };
        Ok(NewContact {
            number,
            name: input.name,
            time_zone: input.time_zone.filter(|z| !z.trim().is_empty()),
            zones,
            metadata: Value::Object(input.metadata),
            next_at_ms: first.as_millisecond(),
        })
    }
}

/// Contacts from CSV text with a header row: `number` (required), `name`, `time_zone`; every
/// other column goes into the contact's metadata under its header.
pub fn from_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the CSV has no readable header row: {e}"))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let Some(number_column) = headers.iter().position(|h| h == "number") else {
        return Err("the CSV header has no `number` column".into());
    };
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i + 2, |p| p.line() as usize);
        let row = record
            .map_err(|e| format!("unreadable row: {e}"))
            .and_then(|record| {
                if record.len() != headers.len() {
                    return Err(format!(
                        "{} fields where the header has {}",
                        record.len(),
                        headers.len()
                    ));
                }
                let mut input = ContactInput {
                    number: record[number_column].to_string(),
                    name: String::new(),
                    time_zone: None,
                    metadata: Map::new(),
                };
                for (header, value) in headers.iter().zip(record.iter()) {
                    match header.as_str() {
                        "number" => {}
                        "name" => input.name = value.to_string(),
                        "time_zone" => input.time_zone = Some(value.to_string()),
                        other => {
                            input.metadata.insert(other.to_string(), value.into());
                        }
                    }
                }
                Ok(input)
            });
        rows.push((line, row));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_e164_with_separators_dropped() {
        assert_eq!(e164("+1 (212) 555-0100").as_deref(), Some("+12125550100"));
        assert_eq!(e164("+49 30 1234567").as_deref(), Some("+49301234567"));
        assert_eq!(e164("2125550100"), None, "no country code");
        assert_eq!(e164("+1 212 CALL NOW"), None);
        assert_eq!(e164("+123"), None, "too short");
        assert_eq!(e164("+0123456789"), None);
    }

    #[test]
    fn csv_rows_become_contacts_and_bad_rows_are_reported_by_line() {
        let text = "number,name,time_zone,patient_id\n\
                    +12125550100,Ann,,p1\n\
                    +12125550101,Bob\n\
                    +44 20 7946 0000,Cy,Europe/London,p3\n";
        let rows = from_csv(text).unwrap();
        assert_eq!(rows.len(), 3);
        let ann = rows[0].1.as_ref().unwrap();
        assert_eq!((rows[0].0, ann.name.as_str()), (2, "Ann"));
        assert_eq!(ann.metadata["patient_id"], "p1");
        assert_eq!(rows[1].0, 3);
        assert!(rows[1].1.as_ref().unwrap_err().contains("2 fields"));
        assert_eq!(
            rows[2].1.as_ref().unwrap().time_zone.as_deref(),
            Some("Europe/London")
        );
        assert!(from_csv("name\nAnn\n").unwrap_err().contains("`number`"));
    }

    #[test]
    fn each_contact_gets_its_zones_and_first_call_time_or_a_reason() {
        let window = CallingWindow::new(
            &[
                "mon".into(),
                "tue".into(),
                "wed".into(),
                "thu".into(),
                "fri".into(),
            ],
            "09:00",
            "17:00",
            &[],
        )
        .unwrap();
        // Monday 2026-12-07 15:00 UTC: 10:00 in New York, 07:00 in Los Angeles.
        let now: Timestamp = "2026-12-07T15:00:00Z".parse().unwrap();
        let checker = ContactChecker {
            window: &window,
            default_zone: None,
            now,
        };
        let input = |number: &str, tz: Option<&str>| ContactInput {
            number: number.into(),
            name: String::new(),
            time_zone: tz.map(String::from),
            metadata: Map::new(),
        };
        let ny = checker.check(input("+12125550100", None)).unwrap();
        assert_eq!(ny.zones, ["America/New_York"]);
        assert_eq!(ny.next_at_ms, now.as_millisecond());
        // The row's zone wins over the number's: a New York number living in Los Angeles.
        let la = checker
            .check(input("+12125550100", Some("America/Los_Angeles")))
            .unwrap();
        let opens: Timestamp = "2026-12-07T17:00:00Z".parse().unwrap();
        assert_eq!(la.next_at_ms, opens.as_millisecond());
        assert!(
            checker
                .check(input("+80012345678", None))
                .unwrap_err()
                .contains("no time zone")
        );
        assert!(
            checker
                .check(input("555", None))
                .unwrap_err()
                .contains("E.164")
        );
        assert!(
            checker
                .check(input("+12125550100", Some("Mars/Base")))
                .is_err()
        );
    }
}
