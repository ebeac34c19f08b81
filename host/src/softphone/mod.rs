//! `switchboard call`: a command-line SIP caller with media, for trying an agent, a trunk or a
//! PBX without a phone. It sits on top of `sip` and `media` (as `call` does for inbound calls)
//! and nothing below imports it.
//!
//! One line per step goes to stdout as `event=<name> t=<seconds since start> key=value...`
//! (values with spaces are double-quoted); logs go to stderr. The exit code tells how the call
//! went, see [`Ended::exit_code`].

mod args;
#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use crate::config::Config;
use crate::media::sdp::{self, LocalMedia};
use crate::media::session::DEFAULT_DTMF_MS;
use crate::media::{
    MediaConfig, MediaEvent, MediaSession, NegotiatedMedia, PendingMedia, PortPool,
};
use crate::sip::{
    CallOutcome, CallProgress, Dialog, DialogEvent, EndReason, OutboundCall, SipEndpoint, SipEvent,
    Transport,
};
pub use args::{CallArgs, DtmfPlan};

/// How long a BYE may take before we stop waiting for the far end to confirm it.
const BYE_WAIT: Duration = Duration::from_secs(5);

/// How a call placed by `switchboard call` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Answered, then hung up by either side.
    Normal,
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// 408 / 480, or our ring timeout (CANCEL, 487).
    NoAnswer,
    /// Interrupted (Ctrl-C) before the answer: CANCEL, 487.
    Cancelled,
    /// Any other final status (e.g. 404, or 401/407 without the right credentials).
    Rejected(u16),
    /// No final response, or a transport failure.
    Failed,
    /// Answered, then lost: media timeout or a SIP failure mid-call.
    Dropped,
}

impl Ended {
    /// The process exit code: 0 answered and ended normally, 3 busy, 4 no answer, 5
    /// interrupted before answer, 6 rejected with another status (printed as `status=`),
    /// 7 no response or transport failure, 8 answered then dropped. (1 is
    /// a local error such as a bad file or address, 2 a usage error.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Ended::Normal => 0,
            Ended::Busy => 3,
            Ended::NoAnswer => 4,
            Ended::Cancelled => 5,
            Ended::Rejected(_) => 6,
            Ended::Failed => 7,
            Ended::Dropped => 8,
        }
    }
}

/// Prints the step lines.
#[derive(Clone, Copy)]
struct Steps {
    start: Instant,
}

impl Steps {
    fn print(&self, event: &str, fields: &[(&str, &dyn Display)]) {
        let mut line = format!("event={event} t={:.3}", self.start.elapsed().as_secs_f64());
        for (key, value) in fields {
            let value = value.to_string();
            if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"') {
                line.push_str(&format!(" {key}={value:?}"));
            } else {
                line.push_str(&format!(" {key}={value}"));
            }
        }
        println!("{line}");
    }
}

/// Our side of the RTP: bound before the INVITE (its port goes into the offer), started at the
/// first SDP from the far end (early media or the answer).
struct Media {
    local: LocalMedia,
    pending: Option<PendingMedia>,
    session: Option<MediaSession>,
    record: Option<PathBuf>,
}

impl Media {
    /// Starts media on the far end's SDP, or applies a changed one.
    fn apply(&mut self, remote_sdp: &str) -> anyhow::Result<NegotiatedMedia> {
        let negotiated =
            sdp::process_answer(remote_sdp, &self.local).context("the far end's SDP")?;
        match (&self.session, self.pending.take()) {
            (Some(session), _) => session.update(&negotiated)?,
            (None, Some(pending)) => {
                let session = pending.start(&negotiated).context("starting RTP")?;
                if let Some(path) = &self.record {
                    session
                        .start_recording(path)
                        .with_context(|| format!("--record {}", path.display()))?;
                }
                self.session = Some(session);
            }
            (None, None) => bail!("media was neither pending nor running"),
        }
        Ok(negotiated)
    }

    async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }
}

/// Reads a WAV (8–32-bit integer or float, any channels) as mono 16-bit PCM and its rate.
fn read_wav_mono(path: &Path) -> anyhow::Result<(Vec<i16>, u32)> {
    let context = || format!("--play {}", path.display());
    let mut reader = hound::WavReader::open(path).with_context(context)?;
    let spec = reader.spec();
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .with_context(context)?,
        hound::SampleFormat::Int => {
            let full_scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 / full_scale))
                .collect::<Result<_, _>>()
                .with_context(context)?
        }
    };
    let channels = usize::from(spec.channels.max(1));
    let mono = interleaved
        .chunks(channels)
        .map(|frame| {
            let mean = frame.iter().sum::<f32>() / frame.len() as f32;
            (mean * 32768.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    Ok((mono, spec.sample_rate))
}

/// The Request-URI for a direct call: `sip:` added when missing, `;transport=tcp` for TCP.
fn direct_uri(target: &str, transport: Option<Transport>) -> String {
    let lower = target.to_ascii_lowercase();
    let mut uri =
        if lower.starts_with("sip:") || lower.starts_with("sips:") || !target.contains('@') {
            target.to_string()
        } else {
            format!("sip:{target}")
        };
    if transport == Some(Transport::Tcp) && !lower.contains(";transport=") {
        uri.push_str(";transport=tcp");
    }
    uri
}

/// Places the call described by `args` with the SIP, trunk and RTP settings of `config`,
/// runs it to its end and reports how it ended. Errors are local failures (files, sockets,
/// bad options) that prevented or broke the call.
pub async fn run(args: CallArgs, config: &Config) -> anyhow::Result<Ended> {
    let steps = Steps {
        start: Instant::now(),
    };
    if args.trunk.is_some() && args.transport.is_some() {
        bail!("--transport applies to direct URIs; a trunk uses its own transport");
    }
    if args.codec.is_empty() {
        bail!("--codec names no codec");
    }
    let media_ip: IpAddr = match config.sip.external_address {
        Some(ip) => ip,
        None if args.bind.ip().is_unspecified() => {
            bail!(
                "--bind {} has no address to put in our SDP: name one, or set [sip] external-address",
                args.bind
            )
        }
        None => args.bind.ip(),
    };
    // Read the file before calling anyone, so a bad path costs no call.
    let play = args.play.as_deref().map(read_wav_mono).transpose()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;

    let mut sip = config.sip.clone();
    sip.udp_listen = Some(args.bind);
    sip.tcp_listen = Some(args.bind);
    // A caller never registers the host's accounts nor follows transfers (REFER gets 403).
    sip.accounts.clear();
    sip.refer_allow.clear();
    let (endpoint, mut sip_events) = SipEndpoint::start(sip)
        .await
        .with_context(|| format!("starting SIP on {}", args.bind))?;
    // Nobody is meant to call the softphone.
    tokio::spawn(async move {
        while let Some(event) = sip_events.recv().await {
            if let SipEvent::IncomingCall(call) = event {
                call.reject(486, "Busy Here").ok();
            }
        }
    });

    let ports = PortPool::new(config.calls.rtp_port_min, config.calls.rtp_port_max)
        .context("[calls] rtp ports")?;
    let pending = PendingMedia::bind(
        &ports,
        MediaConfig {
            bind_ip: args.bind.ip(),
            media_timeout: config.calls.media_timeout(),
            call_id: "softphone".into(),
            ..MediaConfig::default()
        },
    )?;
    let session_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut media = Media {
        local: LocalMedia::new(media_ip, pending.port(), args.codec.clone(), session_id),
        pending: Some(pending),
        session: None,
        record: args.record.clone(),
    };
    let to = match &args.trunk {
        Some(_) => args.target.clone(),
        None => direct_uri(&args.target, args.transport),
    };
    let mut call = endpoint
        .place_call(OutboundCall {
            to: to.clone(),
            trunk: args.trunk.clone(),
            from: args.from.clone(),
            sdp_offer: sdp::create_offer(&media.local),
            headers: args.header.clone(),
            ring_timeout: args.ring_timeout.map(Duration::from_secs_f64),
        })
        .await
        .with_context(|| format!("calling {to}"))?;
    steps.print("trying", &[("to", &to), ("call_id", &call.call_id())]);

    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            progress = call.next() => match progress {
                Some(CallProgress::Ringing) => steps.print("ringing", &[]),
                // Early media we cannot take is only not heard; the call goes on.
                Some(CallProgress::EarlyMedia { remote_sdp }) => match media.apply(&remote_sdp) {
                    Ok(negotiated) => {
                        steps.print("early-media", &[("codec", &negotiated.codec.encoding_name())]);
                    }
                    Err(e) => steps.print("early-media", &[("error", &format!("{e:#}"))]),
                },
                Some(CallProgress::Final(outcome)) => break outcome,
                None => break CallOutcome::Failed("the call task ended".into()),
            },
            _ = interrupt.recv(), if !interrupted => {
                interrupted = true;
                steps.print("cancelling", &[]);
                call.cancel();
            }
        }
    };
    let ended = match outcome {
        CallOutcome::Answered { remote_sdp, dialog } => {
            answered(
                &args,
                steps,
                &mut media,
                &mut interrupt,
                remote_sdp,
                dialog,
                play,
            )
            .await
        }
        CallOutcome::Busy => {
            steps.print("ended", &[("reason", &"busy")]);
            Ok(Ended::Busy)
        }
        CallOutcome::NoAnswer => {
            steps.print("ended", &[("reason", &"no-answer")]);
            Ok(Ended::NoAnswer)
        }
        CallOutcome::Cancelled => {
            steps.print("ended", &[("reason", &"cancelled")]);
            Ok(Ended::Cancelled)
        }
        CallOutcome::Rejected { code, reason } => {
            steps.print(
                "ended",
                &[
                    ("reason", &"rejected"),
                    ("status", &code),
                    ("phrase", &reason),
                ],
            );
            Ok(Ended::Rejected(code))
        }
        CallOutcome::Failed(error) => {
            steps.print("ended", &[("reason", &"failed"), ("error", &error)]);
            Ok(Ended::Failed)
        }
    };
    // Finishes the recording file before the process exits.
    media.close().await;
    endpoint.shutdown().await;
    ended
}

/// The answered call; a local failure on the way still hangs up.
async fn answered(
    args: &CallArgs,
    steps: Steps,
    media: &mut Media,
    interrupt: &mut Signal,
    remote_sdp: Option<String>,
    mut dialog: Dialog,
    play: Option<(Vec<i16>, u32)>,
) -> anyhow::Result<Ended> {
    let result = talk(args, steps, media, interrupt, remote_sdp, &mut dialog, play).await;
    if result.is_err() {
        hang_up(&mut dialog).await;
    }
    result
}

/// Why the talking stopped.
enum Stop {
    /// We hang up, for this reason (`hangup-after`, `interrupted`).
    HangUp(&'static str),
    /// The dialog ended without us.
    Ended(EndReason),
}

/// Our audio, the planned keys, the far end's keys and re-INVITEs, until either side hangs up.
async fn talk(
    args: &CallArgs,
    steps: Steps,
    media: &mut Media,
    interrupt: &mut Signal,
    remote_sdp: Option<String>,
    dialog: &mut Dialog,
    play: Option<(Vec<i16>, u32)>,
) -> anyhow::Result<Ended> {
    let answered_at = Instant::now();
    let negotiated = match remote_sdp.as_deref().map(|sdp| media.apply(sdp)) {
        Some(Ok(negotiated)) => negotiated,
        failed => {
            hang_up(dialog).await;
            let error = match failed {
                Some(Err(e)) => format!("{e:#}"),
                _ => "the answer carried no SDP".into(),
            };
            steps.print("ended", &[("reason", &"media-failed"), ("error", &error)]);
            return Ok(Ended::Dropped);
        }
    };
    steps.print(
        "answered",
        &[
            ("codec", &negotiated.codec.encoding_name()),
            ("ptime", &negotiated.ptime_ms),
            ("remote", &display_addr(negotiated.remote_rtp)),
            ("telephone_event", &negotiated.dtmf_send.is_some()),
        ],
    );
    // Split the borrow: re-INVITEs change `local` while the session keeps running.
    let Media { local, session, .. } = media;
    let session = session
        .as_mut()
        .context("media not running after the answer")?;
    if let Some((pcm, rate)) = &play {
        session
            .queue_audio(pcm, *rate)
            .with_context(|| format!("--play at {rate} Hz"))?;
        steps.print(
            "playing",
            &[("ms", &(pcm.len() as u64 * 1000 / u64::from(*rate)))],
        );
    }
    let mut media_events = session
        .take_events()
        .context("media events already taken")?;
    let session = &*session;
    let mut keys = args
        .dtmf
        .as_ref()
        .map(|plan| plan.0.clone())
        .unwrap_or_default()
        .into_iter();
    let mut next_key = keys.next();
    let hangup_at = answered_at + Duration::from_secs_f64(args.hangup_after);
    let stop = loop {
        let key_at = next_key.as_ref().map(|(at, _)| answered_at + *at);
        tokio::select! {
            _ = sleep_until(hangup_at) => break Stop::HangUp("hangup-after"),
            _ = interrupt.recv() => break Stop::HangUp("interrupted"),
            _ = sleep_until(key_at.unwrap_or(hangup_at)), if key_at.is_some() => {
                if let Some((_, digits)) = next_key.take() {
                    press(args.dtmf_info, steps, dialog, session, &digits);
                }
                next_key = keys.next();
            }
            event = dialog.recv() => match event {
                Some(DialogEvent::Dtmf { digit, duration_ms }) => steps.print(
                    "dtmf-received",
                    &[("digit", &digit), ("method", &"info"), ("ms", &duration_ms)],
                ),
                Some(DialogEvent::Reinvite(request)) => {
                    match sdp::answer_reoffer(request.remote_sdp.as_deref(), local) {
                        Ok((reply, negotiated)) => {
                            if let Some(negotiated) = negotiated {
                                session.update(&negotiated)?;
                            }
                            steps.print("reinvite", &[("hold", &request.hold)]);
                            request.accept(reply);
                        }
                        Err(e) => request.reject(e.sip_status()),
                    }
                }
                Some(DialogEvent::Ended(reason)) => break Stop::Ended(reason),
                None => break Stop::Ended(EndReason::Timeout),
                // REFER is refused by the endpoint (no allowed targets); nothing else applies.
                Some(_) => {}
            },
            event = media_events.recv() => match event {
                Some(MediaEvent::Dtmf(d)) => steps.print(
                    "dtmf-received",
                    &[("digit", &d.digit), ("method", &"rfc4733"), ("ms", &d.duration_ms)],
                ),
                Some(MediaEvent::Timeout { silent_for }) => {
                    hang_up(dialog).await;
                    steps.print(
                        "ended",
                        &[("reason", &"media-timeout"), ("silent_ms", &silent_for.as_millis())],
                    );
                    return Ok(Ended::Dropped);
                }
                Some(
                    MediaEvent::Audio(_)
                    | MediaEvent::Stats(_)
                    | MediaEvent::PlayoutStarted { .. }
                    | MediaEvent::PlayoutIdle,
                ) => {}
                None => {
                    hang_up(dialog).await;
                    steps.print("ended", &[("reason", &"media-stopped")]);
                    return Ok(Ended::Dropped);
                }
            },
        }
    };
    let (reason, by) = match stop {
        Stop::HangUp(by) => (hang_up(dialog).await, Some(by)),
        Stop::Ended(reason) => (reason, None),
    };
    let (name, ended) = match reason {
        EndReason::LocalHangup => ("local-hangup", Ended::Normal),
        EndReason::RemoteHangup => ("remote-hangup", Ended::Normal),
        EndReason::Cancelled => ("cancelled", Ended::Dropped),
        EndReason::Timeout => ("timeout", Ended::Dropped),
        EndReason::SessionExpired => ("session-expired", Ended::Dropped),
        EndReason::Failed(_) => ("failed", Ended::Dropped),
    };
    let stats = session.stats();
    let mut fields: Vec<(&str, &dyn Display)> = vec![("reason", &name)];
    if let Some(by) = &by {
        fields.push(("by", by));
    }
    if let EndReason::Failed(code) = &reason {
        fields.push(("status", code));
    }
    fields.extend([
        ("rtp_sent", &stats.packets_sent as &dyn Display),
        ("rtp_received", &stats.packets_received),
        ("rtp_lost", &stats.packets_lost),
    ]);
    steps.print("ended", &fields);
    Ok(ended)
}

/// Sends BYE and waits for the dialog to end, both bounded: a far end that has gone away
/// must not hold the command for the 32 s of a SIP transaction timeout.
async fn hang_up(dialog: &mut Dialog) -> EndReason {
    match tokio::time::timeout(BYE_WAIT, dialog.hangup()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "BYE failed"),
        Err(_) => tracing::warn!("no answer to our BYE within {BYE_WAIT:?}"),
    }
    loop {
        match tokio::time::timeout(BYE_WAIT, dialog.recv()).await {
            Ok(Some(DialogEvent::Ended(reason))) => return reason,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return EndReason::LocalHangup,
        }
    }
}

/// Presses `digits`: RFC 4733 events queued on the media stream, or one SIP INFO per key
/// sent in the background so the call loop keeps running. A key the far end cannot take is
/// reported, not fatal.
fn press(info: bool, steps: Steps, dialog: &Dialog, session: &MediaSession, digits: &str) {
    if !info {
        match session.send_dtmf(digits, DEFAULT_DTMF_MS) {
            Ok(()) => steps.print("dtmf-sent", &[("digits", &digits), ("method", &"rfc4733")]),
            Err(e) => steps.print(
                "dtmf-failed",
                &[("digits", &digits), ("method", &"rfc4733"), ("error", &e)],
            ),
        }
        return;
    }
    let handle = dialog.handle();
    let digits = digits.to_string();
    tokio::spawn(async move {
        for digit in digits.chars() {
            match handle.send_dtmf_info(digit, DEFAULT_DTMF_MS).await {
                Ok(()) => steps.print("dtmf-sent", &[("digits", &digit), ("method", &"info")]),
                Err(e) => steps.print(
                    "dtmf-failed",
                    &[("digits", &digit), ("method", &"info"), ("error", &e)],
                ),
            }
        }
    });
}

fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "none".into(), |a| a.to_string())
}
