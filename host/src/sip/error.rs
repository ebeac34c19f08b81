//! Errors of the signalling layer.

/// What can go wrong in `sip/`.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("invalid SIP configuration: {0}")]
    Config(String),
    #[error("cannot bind {transport} on {addr}: {reason}")]
    Bind {
        transport: &'static str,
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// A registration account the start-up rules refuse; `field` is its field at fault.
    #[error("account `{account}`: {field}: {reason}")]
    Account {
        account: String,
        field: &'static str,
        reason: String,
    },
    /// A trunk the start-up rules refuse; `field` is its field at fault.
    #[error("trunk `{trunk}`: {field}: {reason}")]
    Trunk {
        trunk: String,
        field: &'static str,
        reason: String,
    },
    #[error("invalid SIP URI or number `{0}`")]
    InvalidUri(String),
    #[error("unknown trunk `{0}`")]
    UnknownTrunk(String),
    /// Every channel of the trunk carries a call (inbound and outbound count alike).
    #[error("trunk `{trunk}` has all its {channels} channels in use")]
    NoChannel { trunk: String, channels: usize },
    #[error("call {call_id}: {action} failed: {reason}")]
    Call {
        call_id: String,
        action: &'static str,
        reason: String,
    },
    /// A TLS connection could not be made: refused, or the peer's certificate did not verify.
    #[error("TLS connection to {peer} failed: {reason}")]
    Tls { peer: String, reason: String },
    #[error("call {0} no longer exists (cancelled, ended or answered elsewhere)")]
    CallGone(String),
    #[error("transfer on call {call_id} refused: {code} {reason}")]
    TransferRefused {
        call_id: String,
        code: u16,
        reason: String,
    },
    #[error("this node is draining: it places no new call")]
    Draining,
    #[error("SIP endpoint is shut down")]
    Shutdown,
}
