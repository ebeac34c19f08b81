//! REGISTER client: one task per account with digest auth, refresh before expiry,
//! exponential backoff with jitter, CRLF keep-alives for NAT, and unregister when the account
//! is removed or replaced and on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::StatusCodeKind;
use rsipstack::transport::stream::StreamConnection as _;
use rsipstack::transport::{SipAddr, SipConnection};
use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{AccountConfig, Transport, TrunkConfig};
use super::endpoint::{Shared, SipEvent};
use super::error::SipError;

/// How long the final unregister may take at shutdown.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stopped account's loop may take to notice.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Registration state of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationState {
    Registering,
    Registered,
    Failing,
    Unregistered,
}

/// What the API shows for one account.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatus {
    pub account: String,
    pub aor: String,
    pub state: RegistrationState,
    /// Last failure (status line or transport error), kept until the next success.
    pub last_error: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
    /// Binding lifetime the registrar granted.
    pub expires_secs: Option<u32>,
    /// Seconds until the next refresh or retry.
    pub next_attempt_secs: Option<u64>,
    /// Successful REGISTERs so far (initial plus refreshes).
    pub successes: u64,
    #[serde(skip)]
    next_at: Option<Instant>,
}

impl RegistrationStatus {
    /// A copy with `next_attempt_secs` computed for now.
    pub(crate) fn refreshed(&self) -> Self {
        let mut s = self.clone();
        s.next_attempt_secs = self
            .next_at
            .map(|t| t.saturating_duration_since(Instant::now()).as_secs());
        s
    }
}

/// Refresh at 75% of the granted lifetime, so a lost REGISTER still has time to retry.
pub(crate) fn refresh_after(granted: u32) -> Duration {
    Duration::from_millis((u64::from(granted) * 750).max(1000))
}

/// Delay before retry number `failures` (1-based): base·2^(n-1) capped at max, then
/// jittered down by up to 25% so many accounts do not retry in lockstep.
pub(crate) fn backoff(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(max).mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// The final REGISTER (Expires: 0) of one account.
pub(crate) struct Unregister {
    account: String,
    server: rsipstack::sip::Uri,
    reg: Arc<AsyncMutex<Registration>>,
}

impl Unregister {
    pub(crate) async fn run(self, shared: &Shared) {
        let mut reg = self.reg.lock().await;
        let result = tokio::time::timeout(
            UNREGISTER_TIMEOUT,
            reg.register(self.server.clone(), Some(0)),
        )
        .await;
        match result {
            Ok(Ok(resp)) if resp.status_code.kind() == StatusCodeKind::Successful => {
                info!(account = %self.account, "unregistered")
            }
            Ok(Ok(resp)) => {
                warn!(account = %self.account, status = %resp.status_code, "unregister refused")
            }
            Ok(Err(e)) => warn!(account = %self.account, error = %e, "unregister failed"),
            Err(_) => warn!(account = %self.account, "unregister timed out"),
        }
        update(shared, &self.account, |s| {
            s.state = RegistrationState::Unregistered;
            s.next_at = None;
        });
    }
}

fn update(shared: &Shared, account: &str, f: impl FnOnce(&mut RegistrationStatus)) {
    let snapshot = {
        let mut map = shared
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(s) = map.get_mut(account) else {
            return;
        };
        f(s);
        s.refreshed()
    };
    shared.emit(SipEvent::Registration(snapshot));
}

/// One account's registration loop, its final REGISTER and what it was started with.
pub(crate) struct Running {
    pub(crate) cfg: AccountConfig,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    unregister: Unregister,
}

impl Running {
    /// Ends the loop, then sends the final REGISTER (Expires: 0).
    pub(crate) async fn stop(self, shared: &Shared) {
        self.cancel.cancel();
        tokio::time::timeout(STOP_TIMEOUT, self.task).await.ok();
        self.unregister.run(shared).await;
    }
}

/// The AOR's user part and the registrar's request URI, checked as at start: a bad AOR is the
/// account's `aor` error.
fn targets(acc: &AccountConfig) -> Result<(String, rsipstack::sip::Uri), SipError> {
    let invalid = |reason: String| SipError::Account {
        account: acc.name.clone(),
        field: "aor",
        reason,
    };
    let aor = rsipstack::sip::Uri::try_from(acc.aor.as_str())
        .map_err(|_| invalid(format!("`{}` is not a SIP URI", acc.aor)))?;
    let user = aor
        .user()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid(format!("`{}` needs a user part", acc.aor)))?
        .to_string();
    let domain = aor.host_with_port.to_string();
    let server_str = format!("sip:{domain}{}", acc.transport.uri_param());
    let server = rsipstack::sip::Uri::try_from(server_str.as_str())
        .map_err(|_| invalid(format!("`{server_str}` is not a SIP URI")))?;
    Ok((user, server))
}

/// Whether `accounts` would start next to `trunks`: names unique among both, and each AOR a
/// SIP URI with a user part (what [`spawn`] needs before sending anything).
pub fn check_accounts(accounts: &[AccountConfig], trunks: &[TrunkConfig]) -> Result<(), SipError> {
    let mut names = std::collections::HashSet::new();
    for acc in accounts {
        if !names.insert(acc.name.as_str()) || trunks.iter().any(|t| t.name == acc.name) {
            return Err(SipError::Account {
                account: acc.name.clone(),
                field: "name",
                reason: "another trunk or account has this name".into(),
            });
        }
        targets(acc)?;
    }
    Ok(())
}

pub(crate) fn spawn(shared: &Arc<Shared>, acc: AccountConfig) -> Result<Running, SipError> {
    let (user, server) = targets(&acc)?;
    let credential = Credential {
        username: user.clone(),
        password: acc.password.clone().unwrap_or_default(),
        realm: None,
        auth_username: acc.auth_user.clone(),
    };
    let mut reg = Registration::new(shared.endpoint.clone(), Some(credential));
    reg.outbound_proxy = Some(acc.registrar);
    if let Some(contact) = shared.contact(acc.transport, Some(&user)) {
        let uri = rsipstack::sip::Uri::try_from(contact.as_str())
            .map_err(|_| SipError::InvalidUri(contact.clone()))?;
        reg.contact = Some(rsipstack::sip::typed::Contact {
            display_name: None,
            uri,
            params: vec![],
        });
    }
    let reg = Arc::new(AsyncMutex::new(reg));
    shared
        .registrations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            acc.name.clone(),
            RegistrationStatus {
                account: acc.name.clone(),
                aor: acc.aor.clone(),
                state: RegistrationState::Registering,
                last_error: None,
                failures: 0,
                expires_secs: None,
                next_attempt_secs: None,
                successes: 0,
                next_at: None,
            },
        );
    let unregister = Unregister {
        account: acc.name.clone(),
        server: server.clone(),
        reg: reg.clone(),
    };
    let cancel = shared.reg_cancel.child_token();
    let task = tokio::spawn(run(
        shared.clone(),
        acc.clone(),
        server,
        reg,
        cancel.clone(),
    ));
    Ok(Running {
        cfg: acc,
        cancel,
        task,
        unregister,
    })
}

async fn run(
    shared: Arc<Shared>,
    acc: AccountConfig,
    server: rsipstack::sip::Uri,
    reg: Arc<AsyncMutex<Registration>>,
    cancel: CancellationToken,
) {
    let base = Duration::from_secs(acc.backoff_base_secs.max(1));
    let max = Duration::from_secs(acc.backoff_max_secs.max(acc.backoff_base_secs.max(1)));
    let timeout = Duration::from_secs(acc.timeout_secs.max(1));
    let mut failures = 0u32;
    // Over TLS, the registrar's certificate is checked before each REGISTER so a bad one is
    // the registration's error rather than a timeout.
    let tls_first_hop = (acc.transport == Transport::Tls).then(|| SipAddr {
        r#type: Some(Transport::Tls.to_stack()),
        addr: acc.registrar.into(),
    });
    loop {
        let tls = match &tls_first_hop {
            Some(hop) => {
                shared
                    .tls
                    .connect(&shared.endpoint, hop, None, &shared.cancel)
                    .await
            }
            None => Ok(()),
        };
        let result = if let Err(e) = tls {
            Ok(Err(e.to_string()))
        } else {
            let mut reg = reg.lock().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(timeout, reg.register(server.clone(), Some(acc.expires))) => {
                    match r {
                        Ok(Ok(resp)) => Ok(Ok((resp, reg.granted_expires))),
                        Ok(Err(e)) => Ok(Err(e.to_string())),
                        Err(elapsed) => Err(elapsed),
                    }
                }
            }
        };
        let outcome = match result {
            Ok(Ok((resp, granted))) if resp.status_code.kind() == StatusCodeKind::Successful => {
                Ok(granted.filter(|g| *g > 0).unwrap_or(acc.expires))
            }
            Ok(Ok((resp, _))) => Err(format!(
                "{} {}",
                u16::from(resp.status_code.clone()),
                resp.reason_phrase().unwrap_or_default()
            )),
            Ok(Err(e)) => Err(format!("transport/transaction error: {e}")),
            Err(_) => Err(format!("no final response within {}s", timeout.as_secs())),
        };
        let wait = match outcome {
            Ok(granted) => {
                failures = 0;
                let wait = refresh_after(granted);
                info!(account = %acc.name, granted, refresh_in = ?wait, "registered");
                update(&shared, &acc.name, |s| {
                    s.state = RegistrationState::Registered;
                    s.failures = 0;
                    s.last_error = None;
                    s.expires_secs = Some(granted);
                    s.successes += 1;
                    s.next_at = Some(Instant::now() + wait);
                });
                wait
            }
            Err(error) => {
                failures += 1;
                let wait = backoff(base, max, failures, fastrand::f64());
                warn!(account = %acc.name, %error, failures, retry_in = ?wait, "registration failed");
                update(&shared, &acc.name, |s| {
                    s.state = RegistrationState::Failing;
                    s.failures = failures;
                    s.last_error = Some(error);
                    s.next_at = Some(Instant::now() + wait);
                });
                wait
            }
        };
        if !wait_with_keepalives(&shared, &acc, wait, &cancel).await {
            return;
        }
    }
}

/// Sleeps `wait`, sending CRLF keep-alives to the registrar meanwhile (they keep NAT
/// bindings and the connection open between refreshes). False when the account is stopped.
async fn wait_with_keepalives(
    shared: &Shared,
    acc: &AccountConfig,
    wait: Duration,
    cancel: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let period = (acc.keepalive_secs > 0).then(|| Duration::from_secs(acc.keepalive_secs));
    loop {
        let next = match period {
            Some(p) => (tokio::time::Instant::now() + p).min(deadline),
            None => deadline,
        };
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(next) => {}
        }
        if next >= deadline {
            return true;
        }
        send_keepalive(shared, acc).await;
    }
}

/// One keep-alive: a CRLF pair in a datagram over UDP; over TCP and TLS the double-CRLF ping
/// of RFC 5626 §3.5.1 on the registration's connection (the registrar answers with one CRLF,
/// which the stack reads).
async fn send_keepalive(shared: &Shared, acc: &AccountConfig) {
    const PING: &[u8] = b"\r\n\r\n";
    if acc.transport == Transport::Udp {
        if let Some(sock) = &shared.udp_socket {
            sock.send_to(PING, acc.registrar).await.ok();
        }
        return;
    }
    let hop = SipAddr {
        r#type: Some(acc.transport.to_stack()),
        addr: acc.registrar.into(),
    };
    let sent = match shared.endpoint.transport_layer.lookup(&hop, None).await {
        Ok((SipConnection::Tls(flow), _)) => flow.send_raw(PING).await,
        Ok((SipConnection::Tcp(flow), _)) => flow.send_raw(PING).await,
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        warn!(account = %acc.name, error = %e, "keep-alive to the registrar failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (b, m) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(b, m, 2, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(b, m, 5, 0.0), Duration::from_secs(32));
        assert_eq!(backoff(b, m, 6, 0.0), Duration::from_secs(60));
        assert_eq!(backoff(b, m, 40, 0.0), Duration::from_secs(60));
        assert_eq!(backoff(b, m, 1, 1.0), Duration::from_millis(1500));
    }

    #[test]
    fn refresh_before_expiry() {
        assert_eq!(refresh_after(60), Duration::from_secs(45));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
        assert!(refresh_after(3600) < Duration::from_secs(3600));
    }
}
