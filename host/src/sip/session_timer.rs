//! Session timers (RFC 4028), sans-IO: what to put in our requests and answers, what the
//! peer's headers mean, and when the session must be refreshed or ended. Time is the dialog's
//! `now` (time since the dialog started) so the tests drive it with a fake clock; the dialog's
//! pump (`dialog.rs`) owns the clock and the sending.
//!
//! Facts (RFC 4028, <https://www.rfc-editor.org/rfc/rfc4028>, read at
//! <https://muonics.com/rfc/rfc4028.php>; summary in `reference/protocols.md` §6.6):
//! - `Session-Expires: <secs>[;refresher=uac|uas]` (compact `x`), `Min-SE: <secs>`, option tag
//!   `timer`. 90 s is the smallest Min-SE allowed.
//! - A UAS answers an interval below its Min-SE with `422 Session Interval Too Small` and its
//!   `Min-SE`; the UAC retries with at least that value (and that Min-SE). A UAS may lower the
//!   interval, never below the request's Min-SE (90 s when absent).
//! - `refresher` names a role of the transaction that carries it, not of the dialog: in a
//!   refresh we send, `uac` is us. A UAS that receives no `refresher` picks one (`uac` only when
//!   the UAC supports `timer`), and a 2xx whose refresher is the UAC carries `Require: timer`.
//! - A 2xx without Session-Expires means no session timer.
//! - The refresher refreshes (re-INVITE, or UPDATE) at half the interval; without a refresh
//!   either side sends BYE at expiry − min(32 s, interval / 3).

use std::time::Duration;

/// The smallest session interval RFC 4028 allows, in seconds.
pub(crate) const RFC_MIN_SE: u32 = 90;

/// Who refreshes the session, as this side of the dialog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Us,
    Peer,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Us => "us",
            Refresher::Peer => "peer",
        }
    }
}

/// A role in one transaction (`refresher=uac|uas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxRole {
    Uac,
    Uas,
}

/// Our session-timer settings (`[sip] session-expires`, `min-se`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerConfig {
    /// The interval we ask for and accept at most, in seconds.
    pub session_expires: u32,
    /// The smallest interval we accept, in seconds.
    pub min_se: u32,
}

/// The session-timer headers of one request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimerHeaders {
    /// `timer` in Supported (or Require).
    pub supported: bool,
    pub expires: Option<u32>,
    pub refresher: Option<TxRole>,
    pub min_se: Option<u32>,
}

impl TimerHeaders {
    /// Reads them from a message's headers, `(name, value)` in order; compact names included.
    pub(crate) fn parse<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = TimerHeaders::default();
        for (name, value) in headers {
            match name.to_ascii_lowercase().as_str() {
                "supported" | "k" | "require"
                    if value
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("timer")) =>
                {
                    out.supported = true;
                }
                "session-expires" | "x" => {
                    let mut parts = value.split(';');
                    out.expires = parts.next().and_then(|s| s.trim().parse().ok());
                    out.refresher = parts.find_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        if !k.trim().eq_ignore_ascii_case("refresher") {
                            return None;
                        }
                        match v.trim().to_ascii_lowercase().as_str() {
                            "uac" => Some(TxRole::Uac),
                            "uas" => Some(TxRole::Uas),
                            _ => None,
                        }
                    });
                }
                "min-se" => {
                    out.min_se = value.split(';').next().and_then(|s| s.trim().parse().ok());
                }
                _ => {}
            }
        }
        out
    }
}

/// The session interval and who refreshes, as agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub interval_secs: u32,
    pub refresher: Refresher,
}

/// How we answer a request (an INVITE, a re-INVITE or an UPDATE) as its UAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UasAnswer {
    /// 422 with this Min-SE.
    TooSmall {
        min_se: u32,
    },
    /// No session timer: the request asked for none and its sender knows none.
    NoTimer,
    Timer(Negotiated),
}

impl UasAnswer {
    /// Headers of our 2xx: `Supported: timer` always, then the interval and refresher.
    pub(crate) fn headers(self) -> Vec<(&'static str, String)> {
        let mut out = vec![("Supported", "timer".to_string())];
        if let UasAnswer::Timer(n) = self {
            // We are this transaction's UAS: the peer is its UAC.
            let role = match n.refresher {
                Refresher::Peer => "uac",
                Refresher::Us => "uas",
            };
            out.push((
                "Session-Expires",
                format!("{};refresher={role}", n.interval_secs),
            ));
            if n.refresher == Refresher::Peer {
                out.push(("Require", "timer".to_string()));
            }
        }
        out
    }
}

/// Answers `req` as its UAS. `current` is who refreshes now, for a refresh that names no one.
pub(crate) fn answer(
    cfg: &TimerConfig,
    req: &TimerHeaders,
    current: Option<Refresher>,
) -> UasAnswer {
    let floor = req.min_se.unwrap_or(RFC_MIN_SE).max(cfg.min_se);
    let interval = match req.expires {
        Some(asked) if asked < cfg.min_se => return UasAnswer::TooSmall { min_se: cfg.min_se },
        // Lowered to ours, never below either side's Min-SE (nor raised above what was asked).
        Some(asked) => asked.min(cfg.session_expires.max(floor)),
        None if req.supported => cfg.session_expires.max(floor),
        None => return UasAnswer::NoTimer,
    };
    let refresher = match (req.refresher, req.supported) {
        (Some(TxRole::Uac), _) => Refresher::Peer,
        (Some(TxRole::Uas), _) => Refresher::Us,
        // A sender that knows no timers cannot refresh.
        (None, false) => Refresher::Us,
        (None, true) => current.unwrap_or(Refresher::Peer),
    };
    UasAnswer::Timer(Negotiated {
        interval_secs: interval,
        refresher,
    })
}

/// Headers of a request we send as its UAC: an initial INVITE (`refresh` None) asks for
/// `interval` and lets the UAS pick the refresher; a refresh names us, who send it.
pub(crate) fn request_headers(
    interval_secs: u32,
    min_se: u32,
    refresh: bool,
) -> Vec<(&'static str, String)> {
    let expires = match refresh {
        true => format!("{interval_secs};refresher=uac"),
        false => interval_secs.to_string(),
    };
    vec![
        ("Supported", "timer".to_string()),
        ("Session-Expires", expires),
        ("Min-SE", min_se.to_string()),
    ]
}

/// What a 2xx to our INVITE or refresh agreed; `None`: no session timer.
pub(crate) fn from_2xx(resp: &TimerHeaders) -> Option<Negotiated> {
    let interval_secs = resp.expires?;
    // We were the UAC; a 2xx without refresher breaks the RFC, and refreshing ourselves keeps
    // the session alive whatever the peer believes.
    let refresher = match resp.refresher {
        Some(TxRole::Uas) => Refresher::Peer,
        Some(TxRole::Uac) | None => Refresher::Us,
    };
    Some(Negotiated {
        interval_secs,
        refresher,
    })
}

/// The interval to ask for after a 422 whose Min-SE is `min_se` (at least what we asked).
pub(crate) fn after_422(asked: u32, min_se: Option<u32>) -> u32 {
    asked.max(min_se.unwrap_or(RFC_MIN_SE))
}

/// What the timer wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a refresh (re-INVITE or UPDATE) with these values.
    Refresh { interval_secs: u32, min_se: u32 },
    /// No refresh in time of a session of this interval: send BYE.
    Expire { interval_secs: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Active {
    agreed: Negotiated,
    /// When the session was last refreshed (or started).
    since: Duration,
    /// Our refresh is on its way.
    refreshing: bool,
}

/// One dialog's session timer.
#[derive(Debug)]
pub(crate) struct SessionTimer {
    cfg: TimerConfig,
    /// The largest Min-SE a 422 taught us, at least ours.
    min_se: u32,
    active: Option<Active>,
    expired: bool,
}

impl SessionTimer {
    pub(crate) fn new(cfg: TimerConfig) -> SessionTimer {
        SessionTimer {
            cfg,
            min_se: cfg.min_se,
            active: None,
            expired: false,
        }
    }

    /// The session started or was refreshed at `now` on these terms (`None`: no timer).
    pub(crate) fn refreshed(&mut self, now: Duration, agreed: Option<Negotiated>) {
        if self.expired {
            return;
        }
        self.active = agreed.map(|agreed| Active {
            agreed,
            since: now,
            refreshing: false,
        });
    }

    /// Answers a refresh (or any re-INVITE or UPDATE) the peer sent; the session counts as
    /// refreshed once our 2xx is sent ([`SessionTimer::refreshed`]).
    pub(crate) fn answer(&self, req: &TimerHeaders) -> UasAnswer {
        let current = self.active.map(|a| a.agreed.refresher);
        // A peer that sends no timer headers mid-call keeps the terms it had.
        if self.active.is_some() && req.expires.is_none() && !req.supported {
            return self
                .active
                .map_or(UasAnswer::NoTimer, |a| UasAnswer::Timer(a.agreed));
        }
        answer(&self.cfg, req, current)
    }

    /// When [`SessionTimer::poll`] has something to do.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        let a = self.active?;
        let interval = Duration::from_secs(a.agreed.interval_secs.into());
        if a.agreed.refresher == Refresher::Us && !a.refreshing {
            return Some(a.since + interval / 2);
        }
        let margin = Duration::from_secs(32).min(interval / 3);
        Some(a.since + interval - margin)
    }

    /// What is due at `now`, if anything.
    pub(crate) fn poll(&mut self, now: Duration) -> Option<Due> {
        if now < self.deadline()? {
            return None;
        }
        let a = self.active.as_mut()?;
        if a.agreed.refresher == Refresher::Us && !a.refreshing {
            a.refreshing = true;
            return Some(Due::Refresh {
                interval_secs: a.agreed.interval_secs,
                min_se: self.min_se,
            });
        }
        let interval_secs = a.agreed.interval_secs;
        self.active = None;
        self.expired = true;
        Some(Due::Expire { interval_secs })
    }

    /// Our refresh got a final response other than 2xx: a 422 is retried at once with the
    /// larger interval; 408 and 481 end the dialog (RFC 3261 §12.2.1.2); anything else leaves
    /// the session to expire unless the peer refreshes it.
    pub(crate) fn refresh_refused(&mut self, code: u16, resp: &TimerHeaders) -> Option<Due> {
        let a = self.active.as_mut()?;
        match code {
            422 => {
                let min_se = resp.min_se.unwrap_or(RFC_MIN_SE).max(self.min_se);
                self.min_se = min_se;
                a.agreed.interval_secs = after_422(a.agreed.interval_secs, Some(min_se));
                Some(Due::Refresh {
                    interval_secs: a.agreed.interval_secs,
                    min_se,
                })
            }
            408 | 481 => {
                let interval_secs = a.agreed.interval_secs;
                self.active = None;
                self.expired = true;
                Some(Due::Expire { interval_secs })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: TimerConfig = TimerConfig {
        session_expires: 1800,
        min_se: 90,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn headers(list: &[(&str, &str)]) -> TimerHeaders {
        TimerHeaders::parse(list.iter().copied())
    }

    fn timer(interval_secs: u32, refresher: Refresher) -> Negotiated {
        Negotiated {
            interval_secs,
            refresher,
        }
    }

    #[test]
    fn parses_full_compact_and_missing_headers() {
        let h = headers(&[
            ("Supported", "replaces, timer"),
            ("Session-Expires", "1800;refresher=uac"),
            ("Min-SE", "90"),
        ]);
        assert_eq!(
            h,
            TimerHeaders {
                supported: true,
                expires: Some(1800),
                refresher: Some(TxRole::Uac),
                min_se: Some(90),
            }
        );
        let compact = headers(&[("k", "timer"), ("x", "600 ; Refresher=UAS")]);
        assert_eq!(compact.expires, Some(600));
        assert_eq!(compact.refresher, Some(TxRole::Uas));
        assert!(compact.supported);
        assert_eq!(headers(&[("Supported", "100rel")]), TimerHeaders::default());
    }

    #[test]
    fn uas_refuses_an_interval_below_its_min_se_with_422() {
        let cfg = TimerConfig {
            session_expires: 1800,
            min_se: 120,
        };
        let req = headers(&[("Supported", "timer"), ("Session-Expires", "90")]);
        assert_eq!(
            answer(&cfg, &req, None),
            UasAnswer::TooSmall { min_se: 120 }
        );
        // The retry with our Min-SE is taken.
        let retry = headers(&[
            ("Supported", "timer"),
            ("Session-Expires", "120"),
            ("Min-SE", "120"),
        ]);
        assert_eq!(
            answer(&cfg, &retry, None),
            UasAnswer::Timer(timer(120, Refresher::Peer))
        );
    }

    #[test]
    fn uas_lowers_the_interval_to_its_own_but_not_below_the_request_min_se() {
        let asked = |se: &str, min: &str| {
            answer(
                &CFG,
                &headers(&[
                    ("Supported", "timer"),
                    ("Session-Expires", se),
                    ("Min-SE", min),
                ]),
                None,
            )
        };
        assert_eq!(
            asked("3600", "90"),
            UasAnswer::Timer(timer(1800, Refresher::Peer))
        );
        assert_eq!(
            asked("600", "90"),
            UasAnswer::Timer(timer(600, Refresher::Peer))
        );
        // Their Min-SE (2000) is above our interval: we may not go below it.
        assert_eq!(
            asked("3600", "2000"),
            UasAnswer::Timer(timer(2000, Refresher::Peer))
        );
    }

    #[test]
    fn uas_refresher_election() {
        let elect = |list: &[(&str, &str)], current| match answer(&CFG, &headers(list), current) {
            UasAnswer::Timer(n) => Some(n.refresher),
            _ => None,
        };
        // Named in the request: kept (in the request, uac is the peer).
        assert_eq!(
            elect(
                &[
                    ("Supported", "timer"),
                    ("Session-Expires", "900;refresher=uac")
                ],
                None
            ),
            Some(Refresher::Peer)
        );
        assert_eq!(
            elect(
                &[
                    ("Supported", "timer"),
                    ("Session-Expires", "900;refresher=uas")
                ],
                None
            ),
            Some(Refresher::Us)
        );
        // Not named: the peer, which supports timers, refreshes; on a refresh the refresher stays.
        assert_eq!(
            elect(&[("Supported", "timer"), ("Session-Expires", "900")], None),
            Some(Refresher::Peer)
        );
        assert_eq!(
            elect(&[("Supported", "timer")], Some(Refresher::Us)),
            Some(Refresher::Us)
        );
        // A Session-Expires from a sender without timer support (a proxy put it in): we refresh.
        assert_eq!(
            elect(&[("Session-Expires", "900")], None),
            Some(Refresher::Us)
        );
        // No timer asked for and none known: none.
        assert_eq!(answer(&CFG, &headers(&[]), None), UasAnswer::NoTimer);
        // Supported without an interval: ours, and the peer refreshes.
        assert_eq!(
            answer(&CFG, &headers(&[("Supported", "timer")]), None),
            UasAnswer::Timer(timer(1800, Refresher::Peer))
        );
    }

    #[test]
    fn uas_answer_headers_name_the_transaction_roles() {
        assert_eq!(
            UasAnswer::Timer(timer(90, Refresher::Peer)).headers(),
            vec![
                ("Supported", "timer".to_string()),
                ("Session-Expires", "90;refresher=uac".to_string()),
                ("Require", "timer".to_string()),
            ]
        );
        assert_eq!(
            UasAnswer::Timer(timer(1800, Refresher::Us)).headers(),
            vec![
                ("Supported", "timer".to_string()),
                ("Session-Expires", "1800;refresher=uas".to_string()),
            ]
        );
        assert_eq!(
            UasAnswer::NoTimer.headers(),
            vec![("Supported", "timer".to_string())]
        );
    }

    #[test]
    fn uac_requests_422_retry_and_2xx() {
        assert_eq!(
            request_headers(1800, 90, false),
            vec![
                ("Supported", "timer".to_string()),
                ("Session-Expires", "1800".to_string()),
                ("Min-SE", "90".to_string()),
            ]
        );
        assert_eq!(
            request_headers(600, 90, true)[1],
            ("Session-Expires", "600;refresher=uac".to_string())
        );
        // 422 with Min-SE 300 to our 120: retry with 300; a smaller Min-SE never lowers ours.
        assert_eq!(after_422(120, Some(300)), 300);
        assert_eq!(after_422(1800, Some(300)), 1800);
        assert_eq!(after_422(60, None), 90);
        // The 2xx decides: refresher=uac is us (we sent the INVITE).
        let ok = |list: &[(&str, &str)]| from_2xx(&headers(list));
        assert_eq!(
            ok(&[
                ("Session-Expires", "300;refresher=uac"),
                ("Require", "timer")
            ]),
            Some(timer(300, Refresher::Us))
        );
        assert_eq!(
            ok(&[("Session-Expires", "300;refresher=uas")]),
            Some(timer(300, Refresher::Peer))
        );
        assert_eq!(
            ok(&[("Session-Expires", "300")]),
            Some(timer(300, Refresher::Us))
        );
        assert_eq!(ok(&[("Supported", "timer")]), None);
    }

    #[test]
    fn we_refresh_at_half_the_interval_and_again_after_each_refresh() {
        let mut t = SessionTimer::new(CFG);
        assert_eq!(t.deadline(), None);
        t.refreshed(secs(10), Some(timer(90, Refresher::Us)));
        assert_eq!(t.deadline(), Some(secs(10 + 45)));
        assert_eq!(t.poll(secs(54)), None);
        assert_eq!(
            t.poll(secs(55)),
            Some(Due::Refresh {
                interval_secs: 90,
                min_se: 90
            })
        );
        // While the refresh is on its way, the session still expires at 90 − min(32, 30) = 60 s.
        assert_eq!(t.deadline(), Some(secs(10 + 60)));
        assert_eq!(t.poll(secs(60)), None);
        // The 2xx came: the next refresh is half an interval later.
        t.refreshed(secs(56), Some(timer(90, Refresher::Us)));
        assert_eq!(t.deadline(), Some(secs(56 + 45)));
    }

    #[test]
    fn bye_at_expiry_minus_min_32s_or_a_third_when_no_refresh_comes() {
        let mut t = SessionTimer::new(CFG);
        t.refreshed(secs(0), Some(timer(1800, Refresher::Peer)));
        // 1800 − 32 s.
        assert_eq!(t.deadline(), Some(secs(1768)));
        assert_eq!(t.poll(secs(1767)), None);
        // The peer refreshed in time.
        t.refreshed(secs(900), Some(timer(1800, Refresher::Peer)));
        assert_eq!(t.poll(secs(1768)), None);
        assert_eq!(t.deadline(), Some(secs(900 + 1768)));
        assert_eq!(
            t.poll(secs(900 + 1768)),
            Some(Due::Expire {
                interval_secs: 1800
            })
        );
        assert_eq!(t.deadline(), None);
        assert_eq!(t.poll(secs(5000)), None);
        // Nothing revives an expired session.
        t.refreshed(secs(3000), Some(timer(1800, Refresher::Peer)));
        assert_eq!(t.deadline(), None);
        // 90 s: the third (30 s) is smaller than 32 s.
        let mut short = SessionTimer::new(CFG);
        short.refreshed(secs(0), Some(timer(90, Refresher::Peer)));
        assert_eq!(short.deadline(), Some(secs(60)));
        assert_eq!(
            short.poll(secs(60)),
            Some(Due::Expire { interval_secs: 90 })
        );
    }

    #[test]
    fn our_refresh_refused() {
        let mut t = SessionTimer::new(CFG);
        t.refreshed(secs(0), Some(timer(90, Refresher::Us)));
        assert!(matches!(t.poll(secs(45)), Some(Due::Refresh { .. })));
        // 422 Min-SE 200: retried at once with 200, and later refreshes keep that Min-SE.
        let too_small = headers(&[("Min-SE", "200")]);
        assert_eq!(
            t.refresh_refused(422, &too_small),
            Some(Due::Refresh {
                interval_secs: 200,
                min_se: 200
            })
        );
        t.refreshed(secs(47), Some(timer(200, Refresher::Us)));
        assert_eq!(
            t.poll(secs(147)),
            Some(Due::Refresh {
                interval_secs: 200,
                min_se: 200
            })
        );
        // A 500 leaves the session to expire (200 − 32 s after the last refresh).
        assert_eq!(t.refresh_refused(500, &TimerHeaders::default()), None);
        assert_eq!(t.deadline(), Some(secs(47 + 168)));
        // 481: the dialog is gone.
        assert_eq!(
            t.refresh_refused(481, &TimerHeaders::default()),
            Some(Due::Expire { interval_secs: 200 })
        );
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn a_peer_refresh_is_answered_on_the_current_terms() {
        let mut t = SessionTimer::new(CFG);
        t.refreshed(secs(0), Some(timer(600, Refresher::Peer)));
        // A hold re-INVITE with no timer headers keeps what was agreed.
        assert_eq!(
            t.answer(&TimerHeaders::default()),
            UasAnswer::Timer(timer(600, Refresher::Peer))
        );
        // A refresh that names no refresher keeps the peer refreshing.
        assert_eq!(
            t.answer(&headers(&[
                ("Supported", "timer"),
                ("Session-Expires", "600")
            ])),
            UasAnswer::Timer(timer(600, Refresher::Peer))
        );
        // A refresh below our Min-SE gets 422.
        assert_eq!(
            t.answer(&headers(&[
                ("Supported", "timer"),
                ("Session-Expires", "30")
            ])),
            UasAnswer::TooSmall { min_se: 90 }
        );
        // Without a timer, a re-INVITE without one starts none.
        assert_eq!(
            SessionTimer::new(CFG).answer(&TimerHeaders::default()),
            UasAnswer::NoTimer
        );
    }
}
