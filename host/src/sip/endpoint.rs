//! The SIP endpoint: transports, the request dispatcher, and the public entry points.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::CallIdFormat;
use rsipstack::transaction::endpoint::{EndpointInner, EndpointOption};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{
    SipConnection, TransportLayer, tcp_listener::TcpListenerConnection, udp::UdpConnection,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{AccountConfig, SipConfig, SrtpPolicy, Transport, TrunkConfig, check_trunks};
use super::error::SipError;
use super::guard::{GuardedUdpSocket, SanityInspector, ScannerRules};
use super::inbound;
use super::outbound::{self, CallTarget, OutboundCall, OutgoingCall};
use super::policy::{IpNet, NonceStore, Scope};
use super::register::{self, RegistrationStatus};
use super::session_timer::TimerConfig;

/// Methods we implement, advertised in Allow.
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE";

/// Capacity of the endpoint event channel; beyond it new calls are refused (503).
const EVENT_CAPACITY: usize = 256;

/// Something the consumer (the call layer) must handle.
#[derive(Debug)]
pub enum SipEvent {
    /// A new inbound call passed policy; answer, ring or reject it.
    IncomingCall(inbound::IncomingCall),
    /// The caller cancelled an unanswered call (487 already sent).
    CallCancelled { call_id: String },
    /// A registration account changed state.
    Registration(RegistrationStatus),
}

/// Addresses the endpoint actually bound (useful when the config asked for port 0).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

pub(crate) struct Shared {
    pub cfg: SipConfig,
    /// `cfg`'s session-timer settings, checked.
    pub timer: TimerConfig,
    pub endpoint: Arc<EndpointInner>,
    pub layer: Arc<DialogLayer>,
    pub events: mpsc::Sender<SipEvent>,
    /// The trunks in effect (`cfg.trunks` is emptied at start); see [`Trunks`].
    trunks: std::sync::RwLock<Arc<Trunks>>,
    /// Where changed trunks come from, once [`SipEndpoint::follow_trunks`] is called.
    trunk_source: Mutex<Option<watch::Receiver<Vec<TrunkConfig>>>>,
    pub unknown_scope: Arc<Scope>,
    pub nonces: Mutex<NonceStore>,
    pub local: LocalAddrs,
    pub refer_allow: Arc<Vec<String>>,
    pub registrations: Mutex<BTreeMap<String, RegistrationStatus>>,
    pub udp_socket: Option<Arc<tokio::net::UdpSocket>>,
    pub cancel: CancellationToken,
    /// Set by [`SipEndpoint::drain`]: new calls, in and out, are refused.
    pub draining: std::sync::atomic::AtomicBool,
    /// Opens our TLS connections (trunks, registrars).
    pub tls: super::tls::Dialler,
    /// Parent of every account's stop token; cancelled at shutdown.
    pub reg_cancel: CancellationToken,
    /// The running accounts by name; the lock serialises account changes.
    pub accounts: tokio::sync::Mutex<BTreeMap<String, register::Running>>,
}

/// The trunks in effect with their inbound policy scopes, replaced whole by
/// [`SipEndpoint::follow_trunks`]: a call keeps the trunk and scope it started with.
pub(crate) struct Trunks {
    pub configs: Vec<TrunkConfig>,
    pub scopes: Vec<Arc<Scope>>,
}

impl Trunks {
    pub fn get(&self, name: &str) -> Option<&TrunkConfig> {
        self.configs.iter().find(|t| t.name == name)
    }

    /// `configs` with their scopes: an unchanged trunk keeps its scope (call counts and rate
    /// buckets), a changed one keeps its counts of running calls.
    fn new(configs: Vec<TrunkConfig>, old: &Trunks) -> Result<Trunks, SipError> {
        let scopes = configs
            .iter()
            .map(|t| {
                let old_scope = old.scopes.iter().find(|s| s.name == t.name);
                if let Some(scope) = old_scope.filter(|_| old.get(&t.name) == Some(t)) {
                    return Ok(scope.clone());
                }
                let sources = t
                    .inbound_sources
                    .iter()
                    .map(|s| s.parse::<IpNet>())
                    .collect::<Result<Vec<_>, _>>()?;
                let mut scope = Scope::new(t.name.clone(), sources, t.inbound.clone(), t.channels);
                if let Some(old_scope) = old_scope {
                    scope.calls = old_scope.calls.clone();
                    scope.channels = old_scope.channels.clone();
                }
                Ok(Arc::new(scope))
            })
            .collect::<Result<_, SipError>>()?;
        Ok(Trunks { configs, scopes })
    }

    fn none() -> Trunks {
        Trunks {
            configs: Vec::new(),
            scopes: Vec::new(),
        }
    }
}

impl Shared {
    /// The trunks in effect now, a change from the followed source taken first, so a request
    /// made after a change always sees it.
    pub fn trunks(&self) -> Arc<Trunks> {
        let mut source = self.trunk_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = source.as_mut()
            && rx.has_changed().unwrap_or(false)
        {
            let list = rx.borrow_and_update().clone();
            if let Err(e) = self.set_trunks(list) {
                // Checked when the change was made; only a client certificate that no longer
                // reads gets here.
                warn!(error = %e, "trunks not applied; the previous ones stay");
            }
        }
        drop(source);
        self.trunks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `trunks` the ones calls go out through and come in from, checked first (a refused
    /// list changes nothing): new calls see them at once; running calls keep the trunk they
    /// started with, also a removed one, until they end.
    fn set_trunks(&self, trunks: Vec<TrunkConfig>) -> Result<(), SipError> {
        check_trunks(&trunks)?;
        let mut current = self.trunks.write().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<&str> = current
            .configs
            .iter()
            .filter(|old| !trunks.contains(old))
            .map(|old| old.name.as_str())
            .collect();
        self.tls.set_trunks(&trunks, &stale)?;
        let next = Trunks::new(trunks, &current)?;
        info!(trunks = next.configs.len(), "trunks applied");
        *current = Arc::new(next);
        Ok(())
    }

    /// Our Contact URI for a transport (external address when configured, for NAT).
    pub fn contact(&self, transport: Transport, user: Option<&str>) -> Option<String> {
        let local = match transport {
            Transport::Udp => self.local.udp,
            Transport::Tcp => self.local.tcp,
            Transport::Tls => self.local.tls,
        }?;
        let host = self.cfg.external_address.unwrap_or(local.ip());
        let user = user.unwrap_or(&self.cfg.contact_user);
        let addr = SocketAddr::new(host, local.port());
        Some(format!("sip:{user}@{addr}{}", transport.uri_param()))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn emit(&self, ev: SipEvent) {
        if self.events.try_send(ev).is_err() {
            warn!("SIP event channel full or closed; event dropped");
        }
    }
}

/// The SIP user agent. Cheap to clone; all clones drive the same endpoint.
#[derive(Clone)]
pub struct SipEndpoint {
    shared: Arc<Shared>,
    // Dropping the last clone of the stack's endpoint would cancel the listeners.
    _endpoint: Arc<rsipstack::transaction::Endpoint>,
}

impl std::fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl SipEndpoint {
    /// Binds the transports, starts the dispatcher and the registration loops.
    pub async fn start(
        mut cfg: SipConfig,
    ) -> Result<(SipEndpoint, mpsc::Receiver<SipEvent>), SipError> {
        if cfg.udp_listen.is_none() && cfg.tcp_listen.is_none() && cfg.tls_listen.is_none() {
            return Err(SipError::Config(
                "no listen address (udp-listen, tcp-listen or tls-listen)".into(),
            ));
        }
        if cfg.srtp != SrtpPolicy::Off && cfg.tls_listen.is_none() {
            return Err(SipError::Config(format!(
                "srtp = {:?} needs tls-listen (SDES keys travel in the SDP)",
                cfg.srtp
            )));
        }
        check_trunks(&cfg.trunks)?;
        let timer = cfg.timer_config()?;
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = cfg
            .trunks
            .iter()
            .map(|t| &t.name)
            .chain(cfg.accounts.iter().map(|a| &a.name))
            .find(|n| !names.insert(*n))
        {
            return Err(SipError::Config(format!(
                "duplicate trunk/account name `{dup}`"
            )));
        }
        let cancel = CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.child_token());
        let scanners = ScannerRules {
            patterns: cfg.scanner_user_agents.clone(),
            action: cfg.scanner_action,
        };
        let external = |addr: SocketAddr| {
            cfg.external_address
                .map(|ip| SocketAddr::new(ip, addr.port()))
        };

        let mut local = LocalAddrs {
            udp: None,
            tcp: None,
            tls: None,
        };
        let mut udp_socket = None;
        if let Some(addr) = cfg.udp_listen {
            let bind_err = |e: String| SipError::Bind {
                transport: "udp",
                addr,
                reason: e,
            };
            let sock = Arc::new(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|e| bind_err(e.to_string()))?,
            );
            let bound = sock.local_addr().map_err(|e| bind_err(e.to_string()))?;
            let guarded: Arc<dyn rsipstack::platform::net::UdpSocket> =
                Arc::new(GuardedUdpSocket::new(sock.clone(), scanners.clone()));
            let conn =
                UdpConnection::from_socket(guarded, external(bound), Some(cancel.child_token()))
                    .await
                    .map_err(|e| bind_err(e.to_string()))?;
            transport_layer.add_transport(conn.into());
            local.udp = Some(bound);
            udp_socket = Some(sock);
        }
        if let Some(addr) = cfg.tcp_listen {
            let bind_err = |e: String| SipError::Bind {
                transport: "tcp",
                addr,
                reason: e,
            };
            // With port 0, prefer UDP's port so one host:port serves both transports. The
            // stack binds lazily inside `serve`, so the port is probed here (a small race we
            // accept) and the bound address is ours, not `get_addr()`, which is the external one.
            let probe = |a: SocketAddr| std::net::TcpListener::bind(a).and_then(|l| l.local_addr());
            let bound = match local
                .udp
                .filter(|u| addr.port() == 0 && u.ip() == addr.ip())
            {
                Some(u) if probe(u).is_ok() => u,
                _ if addr.port() == 0 => probe(addr).map_err(|e| bind_err(e.to_string()))?,
                _ => addr,
            };
            let conn = TcpListenerConnection::new(bound, external(bound))
                .await
                .map_err(|e| bind_err(e.to_string()))?;
            transport_layer.add_transport(conn.into());
            local.tcp = Some(bound);
        }

        let mut tls_via = None;
        let tls_listener = match cfg.tls_listen {
            Some(addr) => {
                let l = super::tls::Listener::bind(
                    addr,
                    external(addr),
                    cfg.tls_cert.as_deref(),
                    cfg.tls_key.as_deref(),
                )
                .await?;
                local.tls = Some(l.local_addr());
                tls_via = Some(l.advertised());
                Some(l)
            }
            None => None,
        };
        let tls = super::tls::Dialler::new(&cfg)?;
        let trunk_configs = std::mem::take(&mut cfg.trunks);
        tls.set_trunks(&trunk_configs, &[])?;
        let trunks = Trunks::new(trunk_configs, &Trunks::none())?;
        transport_layer.set_tls_config(tls.stack_config());

        let endpoint = EndpointBuilder::new()
            .with_user_agent(&cfg.user_agent)
            // The stack's default Call-ID is `<uuid>@restsend.com` (its authors' domain): a
            // plain random UUID names no domain and tells the far end nothing about us.
            .with_option(EndpointOption {
                callid_format: CallIdFormat::Uuid,
                ..EndpointOption::default()
            })
            .with_transport_layer(transport_layer)
            .with_cancel_token(cancel.child_token())
            .with_allows(vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Info,
                Method::Refer,
                Method::Notify,
                Method::Update,
            ])
            .with_inspector(Box::new(super::compat::StackCompat { tls_via }))
            .with_transport_inspector(Box::new(SanityInspector {
                user_agent: cfg.user_agent.clone(),
                scanners,
            }))
            .build();
        let mut incoming = endpoint.incoming_transactions().map_err(|e| {
            SipError::Config(format!("endpoint has no incoming transaction channel: {e}"))
        })?;
        let endpoint = Arc::new(endpoint);
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (events, rx) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            timer,
            refer_allow: Arc::new(cfg.refer_allow.clone()),
            unknown_scope: Arc::new(Scope::new(
                "unknown".into(),
                Vec::new(),
                cfg.inbound.clone(),
                None,
            )),
            cfg,
            endpoint: endpoint.inner.clone(),
            layer,
            events,
            trunks: std::sync::RwLock::new(Arc::new(trunks)),
            trunk_source: Mutex::new(None),
            nonces: Mutex::new(NonceStore::default()),
            local,
            registrations: Mutex::new(BTreeMap::new()),
            udp_socket,
            reg_cancel: cancel.child_token(),
            cancel,
            draining: std::sync::atomic::AtomicBool::new(false),
            tls,
            accounts: tokio::sync::Mutex::new(BTreeMap::new()),
        });

        let serving = endpoint.clone();
        tokio::spawn(async move { serving.serve().await });
        if let Some(l) = tls_listener {
            l.serve(endpoint.inner.clone(), shared.cancel.child_token());
        }
        let dispatch = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = dispatch.cancel.cancelled() => break,
                    tx = incoming.recv() => match tx {
                        Some(tx) => {
                            let s = dispatch.clone();
                            tokio::spawn(async move { dispatch_transaction(s, tx).await });
                        }
                        None => break,
                    }
                }
            }
            debug!("SIP dispatcher stopped");
        });
        if let Some(tcp) = local.tcp {
            wait_tcp_listening(tcp).await;
        }
        info!(udp = ?local.udp, tcp = ?local.tcp, tls = ?local.tls, "SIP endpoint listening");

        let sip = SipEndpoint {
            shared,
            _endpoint: endpoint,
        };
        sip.set_accounts(sip.shared.cfg.accounts.clone()).await?;
        Ok((sip, rx))
    }

    /// Makes `accounts` the registered ones: an added account registers, a changed one is
    /// unregistered (Expires: 0) and registers again with its new values, a removed one is
    /// unregistered and leaves [`registrations`](Self::registrations). All are checked first
    /// (AOR, names unique among accounts and trunks); a refused list changes nothing.
    pub async fn set_accounts(&self, accounts: Vec<AccountConfig>) -> Result<(), SipError> {
        register::check_accounts(&accounts, &self.shared.trunks().configs)?;
        let mut running = self.shared.accounts.lock().await;
        if self.shared.reg_cancel.is_cancelled() {
            return Err(SipError::Shutdown);
        }
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| !accounts.iter().any(|a| &a.name == *name && *a == r.cfg))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(old) = running.remove(&name) {
                info!(account = %name, "account removed or changed; unregistering");
                old.stop(&self.shared).await;
                self.shared
                    .registrations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
            }
        }
        for acc in accounts {
            if !running.contains_key(&acc.name) {
                let name = acc.name.clone();
                running.insert(name, register::spawn(&self.shared, acc)?);
            }
        }
        Ok(())
    }

    /// Takes the trunks from `source` from now on: its current list at once, and each change
    /// before the next call that needs a trunk (a refused list is logged and changes nothing).
    pub fn follow_trunks(&self, mut source: watch::Receiver<Vec<TrunkConfig>>) {
        let list = source.borrow_and_update().clone();
        if let Err(e) = self.shared.set_trunks(list) {
            warn!(error = %e, "trunks not applied; the previous ones stay");
        }
        *self
            .shared
            .trunk_source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Addresses actually bound.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.shared.local
    }

    /// Places an outbound call; progress and the outcome arrive on the returned handle.
    pub async fn place_call(&self, call: OutboundCall) -> Result<OutgoingCall, SipError> {
        if self.shared.cancel.is_cancelled() {
            return Err(SipError::Shutdown);
        }
        if self.is_draining() {
            return Err(SipError::Draining);
        }
        outbound::place(&self.shared, call).await
    }

    /// Checks an outbound call request (trunk, number or URI) without sending anything: the
    /// same resolution [`place_call`](Self::place_call) does first.
    pub fn check_call(&self, call: &OutboundCall) -> Result<CallTarget, SipError> {
        outbound::check(&self.shared, call)
    }

    /// Whether trunk `name` has a channel free now (inbound and outbound calls count alike); an
    /// unknown trunk has none.
    pub fn has_free_channel(&self, name: &str) -> bool {
        let trunks = self.shared.trunks();
        let scope = trunks.scopes.iter().find(|s| s.name == name);
        scope.is_some_and(|s| s.channel_cap.is_none_or(|cap| s.channels.live() < cap))
    }

    /// Current state of every registration account.
    pub fn registrations(&self) -> Vec<RegistrationStatus> {
        let map = self
            .shared
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.values().map(RegistrationStatus::refreshed).collect()
    }

    /// Live inbound calls per policy scope (trunk name, or `unknown`).
    pub fn live_inbound_calls(&self) -> Vec<(String, usize)> {
        self.shared
            .trunks()
            .scopes
            .iter()
            .chain(std::iter::once(&self.shared.unknown_scope))
            .map(|s| (s.name.clone(), s.calls.live()))
            .collect()
    }

    /// From now on OPTIONS and new INVITEs are answered 503 (a load balancer probing with
    /// OPTIONS sends new calls elsewhere) and no call is placed; dialogs already up go on.
    pub fn drain(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!("SIP draining: OPTIONS and new INVITEs get 503");
    }

    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Unregisters every account (Expires: 0), then stops the transports.
    pub async fn shutdown(&self) {
        self.shared.reg_cancel.cancel();
        let running = std::mem::take(&mut *self.shared.accounts.lock().await);
        for r in running.into_values() {
            r.stop(&self.shared).await;
        }
        self.shared.cancel.cancel();
        info!("SIP endpoint shut down");
    }
}

/// The stack binds its TCP listener inside `serve`; wait (bounded) until it has, so
/// callers can connect as soon as `start` returns.
async fn wait_tcp_listening(addr: SocketAddr) {
    for _ in 0..100 {
        // A connect (closed at once) rather than a probe bind, which could steal the port.
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    warn!(%addr, "TCP listener not bound after 1 s");
}

async fn dispatch_transaction(shared: Arc<Shared>, mut tx: Transaction) {
    let method = tx.original.method;
    let in_dialog = tx
        .original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some();
    if in_dialog {
        match shared.layer.match_dialog(&tx) {
            Some(mut dialog) => {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(%method, error = %e, "in-dialog request failed");
                }
            }
            None if method == Method::Ack => {}
            None => {
                debug!(%method, "request for unknown dialog; 481");
                tx.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
            }
        }
        return;
    }
    let result = match method {
        Method::Invite => {
            inbound::handle_invite(shared, tx).await;
            return;
        }
        Method::Options if shared.is_draining() => tx.reply(StatusCode::ServiceUnavailable).await,
        Method::Options => {
            let headers = vec![
                Header::Allow(ALLOW.into()),
                Header::Accept("application/sdp".into()),
                Header::Supported("replaces, norefersub, timer".into()),
            ];
            tx.reply_with(StatusCode::OK, headers, None).await
        }
        Method::Ack => Ok(()),
        Method::Bye
        | Method::Cancel
        | Method::Info
        | Method::Refer
        | Method::Notify
        | Method::Update
        | Method::PRack => tx.reply(StatusCode::CallTransactionDoesNotExist).await,
        Method::Register | Method::Subscribe | Method::Publish | Method::Message => {
            tx.reply_with(
                StatusCode::MethodNotAllowed,
                vec![Header::Allow(ALLOW.into())],
                None,
            )
            .await
        }
    };
    if let Err(e) = result {
        debug!(%method, error = %e, "reply failed");
    }
}

/// Where a transaction came from, and over what.
pub(crate) fn transaction_source(tx: &Transaction) -> (Option<SocketAddr>, Transport) {
    let conn: Option<&SipConnection> = tx.connection.as_ref();
    let source = conn
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok());
    let transport = match conn.map(|c| c.transport()) {
        Some(rsipstack::sip::transport::Transport::Udp) | None => Transport::Udp,
        Some(rsipstack::sip::transport::Transport::Tls) => Transport::Tls,
        Some(_) => Transport::Tcp,
    };
    (source, transport)
}
