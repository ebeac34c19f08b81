//! The time zones a phone number is in, from the tables in `host/data/` (see its README): NANP
//! numbers by area code, others by country calling code (longest code first). A key with several
//! zones gives them all (the calling window must hold in each); a non-geographic NANP code gives
//! every NANP zone; a global service number (+800, +870, ...) gives none.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

const NANP: &str = include_str!("../../data/nanp-area-codes.tsv");
const COUNTRIES: &str = include_str!("../../data/country-zones.tsv");

/// Zones per key: `None` for "the number gives no zone of its own" (`-`).
type Table = HashMap<&'static str, Option<Vec<&'static str>>>;

struct Tables {
    nanp: Table,
    countries: Table,
    /// Every zone of the NANP table, for its non-geographic codes.
    all_nanp: Vec<&'static str>,
}

fn parse(text: &'static str) -> Table {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let key = fields.next()?;
            let zones = fields.next()?;
            let zones = (zones != "-").then(|| zones.split(',').collect());
            Some((key, zones))
        })
        .collect()
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let nanp = parse(NANP);
        let all_nanp: BTreeSet<&str> = nanp.values().flatten().flatten().copied().collect();
        Tables {
            nanp,
            countries: parse(COUNTRIES),
            all_nanp: all_nanp.into_iter().collect(),
        }
    })
}

/// The zones of an E.164 number (`+` and digits); empty when the number gives none (a global
/// service number, or a code the tables do not know).
pub fn zones_of(e164: &str) -> Vec<&'static str> {
    let digits = e164.trim_start_matches('+');
    let t = tables();
    if let Some(national) = digits.strip_prefix('1') {
        return match national.get(..3).and_then(|npa| t.nanp.get(npa)) {
            Some(Some(zones)) => zones.clone(),
            Some(None) => t.all_nanp.clone(),
            None => Vec::new(),
        };
    }
    (1..=3)
        .rev()
        .filter_map(|len| digits.get(..len))
        .find_map(|code| t.countries.get(code))
        .and_then(Clone::clone)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_the_zones_of_their_area_or_country_code() {
        assert_eq!(zones_of("+12125550100"), ["America/New_York"]);
        assert_eq!(zones_of("+18765550100"), ["America/Jamaica"]);
        let panhandle = zones_of("+18505550100");
        assert!(
            panhandle.contains(&"America/Chicago") && panhandle.contains(&"America/New_York"),
            "{panhandle:?}"
        );
        assert_eq!(zones_of("+4930123456"), ["Europe/Berlin"]);
        // Longest code first: 353 is Ireland, not 35x or 3x.
        assert_eq!(zones_of("+353151234567"), ["Europe/Dublin"]);
        assert!(zones_of("+74951234567").len() > 5, "Russia spans zones");
        // Toll-free: every NANP zone, from Hawaii to Newfoundland.
        let toll_free = zones_of("+18005550100");
        assert!(toll_free.contains(&"Pacific/Honolulu") && toll_free.contains(&"America/St_Johns"));
        // A global service number gives none.
        assert!(zones_of("+80012345678").is_empty());
    }

    #[test]
    fn every_zone_in_the_tables_is_known_to_the_time_zone_database() {
        let t = tables();
        for table in [&t.nanp, &t.countries] {
            for zone in table.values().flatten().flatten() {
                assert!(jiff::tz::TimeZone::get(zone).is_ok(), "{zone}");
            }
        }
    }
}
