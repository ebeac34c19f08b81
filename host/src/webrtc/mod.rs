//! Browser calls: a web page sends a WebRTC offer over HTTP (WHIP-style: the SDP offer in, the
//! SDP answer out, no trickle) and talks to the agent of a number like a phone caller does.
//! The host is an ICE-lite peer with one UDP host candidate per call (`[webrtc] public-ip` and
//! a port of its range), and a passive TCP one on a shared port when `tcp-port` is set; audio
//! is Opus (coded at 24 kHz on its 48 kHz clock; PCMU if that is all the page offers) over
//! DTLS-SRTP, and a data channel carries the call's events to the page and keys from it.
//!
//! Like the bridges, this sits on top of `call/`: a web call goes through the same three
//! inbound steps as every other leg, and the [`WebLeg`] is one more leg on the seam.
//!
//! Who cannot connect: a browser that reaches neither the public address nor a TURN server
//! of its own over UDP, e.g. behind a firewall that blocks outgoing UDP — unless `tcp-port`
//! is set: then such a browser connects over TCP ([`ice_tcp`]). There is no TURN here: a
//! browser allowed neither UDP nor a TCP connection to the port (only a web proxy) cannot call.

pub mod http;
pub mod ice_tcp;
mod leg;
pub mod peer;
#[cfg(test)]
mod test_browser;
pub mod tickets;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use str0m::crypto::dtls::DtlsCert;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::call::CallDeps;
use crate::call::inbound::{self, Offer, Refused};
use crate::call::leg::{Leg, LegFacts};
use crate::media::PortPool;
use crate::model::Secret;
use ice_tcp::IceTcp;
use leg::{Timeouts, WebLeg};
use peer::{OfferError, Peer};
use tickets::{Admitted, TicketError, Tickets};

/// The `[webrtc]` section: without it, web calls are off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebRtcConfig {
    /// The address browsers reach the host at, offered as the one ICE candidate (behind 1:1 NAT,
    /// the public address).
    pub public_ip: IpAddr,
    /// Where the UDP sockets bind, when that is not `public-ip` (behind 1:1 NAT: the private
    /// address, or 0.0.0.0).
    pub bind_ip: Option<IpAddr>,
    /// The UDP ports for web calls, one per call: `[first, last]`.
    #[serde(default = "default_ports")]
    pub ports: [u16; 2],
    /// One TCP port for browsers that cannot use UDP (ICE over TCP, passive): each call offers
    /// it beside its UDP port, ranked below. Off when unset.
    pub tcp_port: Option<u16>,
    /// Web calls at once, in total.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// Origins whose pages may start a web call on the public listener (CORS).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How long a browser has to connect (ICE and DTLS) once it has the answer.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Signs call tickets; without it a random secret is drawn at start, so tickets do not
    /// outlive the process (set it to share tickets between nodes).
    pub ticket_secret: Option<Secret>,
    /// The longest lifetime a ticket may be minted with.
    #[serde(default = "default_max_ticket_secs")]
    pub max_ticket_secs: u64,
}

fn default_ports() -> [u16; 2] {
    [40000, 40999]
}

fn default_max_calls() -> usize {
    100
}

fn default_connect_timeout_secs() -> u64 {
    15
}

fn default_max_ticket_secs() -> u64 {
    3600
}

impl WebRtcConfig {
    pub fn new(public_ip: IpAddr) -> WebRtcConfig {
        WebRtcConfig {
            public_ip,
            bind_ip: None,
            ports: default_ports(),
            tcp_port: None,
            max_calls: default_max_calls(),
            allowed_origins: Vec::new(),
            connect_timeout_secs: default_connect_timeout_secs(),
            ticket_secret: None,
            max_ticket_secs: default_max_ticket_secs(),
        }
    }
}

/// Why a web call did not start, in HTTP terms by [`WebCallError::status`].
#[derive(Debug, thiserror::Error)]
pub enum WebCallError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("too many web calls ({0} at once)")]
    TooMany(usize),
    #[error("no free UDP port for the call: {0}")]
    NoPort(String),
    #[error("{}", .0.reason)]
    Refused(Refused),
}

impl WebCallError {
    /// The HTTP status the page gets.
    pub fn status(&self) -> u16 {
        match self {
            WebCallError::Offer(_) => 400,
            WebCallError::Ticket(_) => 403,
            WebCallError::TooMany(_) => 429,
            WebCallError::NoPort(_) => 503,
            WebCallError::Refused(r) => match r.code {
                404 => 404,
                403 | 486 | 600 | 603 => 403,
                _ => 503,
            },
        }
    }
}

/// A page's offer to call `number`.
#[derive(Debug, Clone)]
pub struct WebOffer {
    pub number: String,
    pub sdp: String,
    /// Handed to the agent as the call's metadata.
    pub metadata: String,
    /// Where the offer came from, as the call's caller.
    pub remote: String,
}

/// A started web call.
#[derive(Debug)]
pub struct WebAnswer {
    pub call_id: String,
    pub sdp: String,
}

/// The web calls of this host.
pub struct WebCalls {
    config: WebRtcConfig,
    deps: Arc<CallDeps>,
    ports: PortPool,
    cert: DtlsCert,
    ice_tcp: Option<Arc<IceTcp>>,
    tickets: Tickets,
    active: AtomicUsize,
    pages: Arc<PageFeeds>,
}

impl WebCalls {
    /// Web calls on `deps`, or an error naming what in `[webrtc]` is wrong.
    pub fn new(config: &WebRtcConfig, deps: Arc<CallDeps>) -> anyhow::Result<Arc<WebCalls>> {
        let [first, last] = config.ports;
        let ports =
            PortPool::singles(first, last).map_err(|e| anyhow::anyhow!("[webrtc] ports: {e}"))?;
        // Idempotent; str0m reads the process default where a peer does not name one.
        str0m::crypto::from_feature_flags().install_process_default();
        // One certificate for every call: its fingerprint travels in each answer, and making one
        // per call would cost a key generation per call.
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("[webrtc]: no DTLS certificate could be made"))?;
        let secret = match &config.ticket_secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| anyhow::anyhow!("[webrtc]: no system randomness for tickets"))?;
                key
            }
        };
        let bind = config.bind_ip.unwrap_or(config.public_ip);
        let ice_tcp = config
            .tcp_port
            .map(|port| IceTcp::start(SocketAddr::new(bind, port), config.public_ip))
            .transpose()
            .map_err(|e| anyhow::anyhow!("[webrtc] tcp-port: {e}"))?;
        let pages = Arc::new(PageFeeds::default());
        pages.clone().follow(&deps);
        tracing::info!(
            public_ip = %config.public_ip, ports = ?config.ports, tcp_port = ?config.tcp_port,
            max_calls = config.max_calls, "web calls on"
        );
        Ok(Arc::new(WebCalls {
            config: config.clone(),
            deps,
            ports,
            cert,
            ice_tcp,
            tickets: Tickets::new(&secret),
            active: AtomicUsize::new(0),
            pages,
        }))
    }

    pub fn config(&self) -> &WebRtcConfig {
        &self.config
    }

    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// Answer `offer` and start the call; `admitted` is the ticket's hold on it, given back
    /// when the call ends (or at once when it does not start).
    pub async fn call(
        self: &Arc<Self>,
        offer: WebOffer,
        admitted: Option<Admitted>,
    ) -> Result<WebAnswer, WebCallError> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        // Dropped on any refusal below: the place and the ticket's call are given back.
        let mut slot = CallSlot {
            web: self.clone(),
            admitted,
            started: false,
        };
        if before >= self.config.max_calls {
            return Err(WebCallError::TooMany(self.config.max_calls));
        }
        let bind = self.config.bind_ip.unwrap_or(self.config.public_ip);
        let (socket, lease) = self
            .ports
            .allocate_single(bind)
            .map_err(|e| WebCallError::NoPort(e.to_string()))?;
        let local = SocketAddr::new(self.config.public_ip, lease.port());
        let local_tcp = self.ice_tcp.as_ref().map(|tcp| tcp.advertised());
        let (mut peer, answer) = Peer::answer(
            &offer.sdp,
            local,
            local_tcp,
            &self.cert,
            std::time::Instant::now(),
        )?;
        let tcp = self
            .ice_tcp
            .as_ref()
            .map(|tcp| tcp.expect(peer.ice_ufrag()));
        let call_id = self.deps.new_call_id();
        let span = tracing::info_span!("call", call_id = %call_id);
        let routed = inbound::offer(
            &self.deps,
            call_id.clone(),
            Offer {
                caller: offer.remote.clone(),
                callee: offer.number,
                transport: "webrtc".into(),
                headers: Vec::new(),
                leg_call_id: call_id.clone(),
                metadata: offer.metadata,
            },
        )
        .map_err(WebCallError::Refused)?;
        let mut ringing = routed
            .start()
            .instrument(span.clone())
            .await
            .map_err(WebCallError::Refused)?;
        let codec = peer.codec();
        let facts = LegFacts {
            transport: "webrtc".into(),
            codec: Some(codec.encoding_name().to_string()),
            remote: offer.remote,
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(self.config.connect_timeout_secs),
            media: self.deps.config.media_timeout(),
        };
        let texts = self.pages.open(&call_id);
        let mut leg = match WebLeg::start(peer, socket, lease, tcp, facts, texts, timeouts) {
            Ok(leg) => leg,
            Err(e) => {
                self.pages.close(&call_id);
                return Err(WebCallError::Refused(ringing.refuse(503, &e.to_string())));
            }
        };
        let pages = self.pages.clone();
        let id = call_id.clone();
        slot.started = true;
        tokio::spawn(
            async move {
                // The browser connects while the model does.
                let format = leg.format().unwrap_or(codec.into());
                match ringing.connect_model(format).await {
                    Some((model, failure)) => {
                        leg.for_model(model.input_format.sample_rate());
                        ringing.run(leg, model, failure).await;
                    }
                    None => {
                        ringing.refuse(503, "the model could not be reached");
                        let _ = leg.close().await;
                    }
                }
                drop(slot);
                // The call's last events reach the bus once stored, after it ended: the page's
                // feed stays for the leg's linger.
                tokio::time::sleep(leg::LINGER).await;
                pages.close(&id);
            }
            .instrument(span),
        );
        Ok(WebAnswer {
            call_id,
            sdp: answer,
        })
    }
}

/// A web call's place in the total, and its ticket's hold, given back when it is dropped.
struct CallSlot {
    web: Arc<WebCalls>,
    admitted: Option<Admitted>,
    /// Whether the call got going: a ticket's call counts as used only then.
    started: bool,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.web.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(a) = self.admitted.take() {
            if self.started {
                self.web.tickets.release(a);
            } else {
                self.web.tickets.refund(a);
            }
        }
    }
}

/// Where each web call's events go: one subscriber to the event bus hands each event to the
/// page of its call.
#[derive(Default)]
struct PageFeeds {
    feeds: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
}

impl PageFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<String>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, call_id: &str) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(call_id.to_string(), tx);
        rx
    }

    fn close(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    fn follow(self: Arc<Self>, deps: &CallDeps) {
        let mut events = deps.events.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let feeds = self.lock();
                        if let Some(tx) = feeds.get(&event.call_id)
                            && let Ok(json) = serde_json::to_string(&event)
                        {
                            let _ = tx.send(json);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "web pages missed call events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}
