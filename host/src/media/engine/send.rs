//! The outbound half of the engine: the packet clock's ticks, talkspurts, digits, the echo
//! line's output, RTP and RTCP packets into the [`Output`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{DTMF_GAP_PACKETS, Engine, Output, PUBLISH_EVERY_PACKETS, Socket};
use crate::media::codec::new_decoder;
use crate::media::dtmf::{DtmfPacket, DtmfSender};
use crate::media::rtcp::{self, ReportBlock, SenderInfo};
use crate::media::rtp::RtpPacket;
use crate::media::session::{MediaEvent, SilenceMode, lock};

/// What the engine sends on one tick.
enum TickPayload {
    /// Queued audio, in `Buffers::frame`.
    Audio,
    /// The caller's G.711 audio echoed as it came, in `Buffers::payload`.
    Echo,
    Dtmf(DtmfPacket, u8),
    /// Nothing queued: silence packets or none, as configured.
    Idle,
}

impl Engine {
    /// Agent audio was queued. On an idle line its first packet goes out now rather than at
    /// the next slot of the packet grid (up to one packet interval later), and the grid
    /// restarts here. The RTP timestamps stay contiguous, so they run ahead of the wall clock
    /// by the time gained until the talkspurt ends.
    pub(super) fn start_talkspurt(&mut self, now: Instant) {
        if !self.idle || !self.sending() || self.dtmf_tx.is_some() || self.dtmf_gap > 0 {
            return;
        }
        self.catch_up(now);
        let gained = self.clock.deadline().saturating_duration_since(now);
        if gained.is_zero() {
            return;
        }
        self.ahead += gained;
        self.clock.restart(now, self.clock.period());
    }

    /// An idle engine with suppressed silence sleeps through ticks that would have sent
    /// nothing; their time still passes for the RTP timestamps (and the recording's silence).
    pub(super) fn catch_up(&mut self, now: Instant) {
        if self.config.silence != SilenceMode::Suppress || !self.idle {
            return;
        }
        let slept = self.clock.skip_past(now);
        if slept == 0 {
            return;
        }
        self.timestamp = self
            .timestamp
            .wrapping_add((self.packet_ticks() * slept) as u32);
        let samples = self.packet_samples();
        if let Some(r) = self.recorder.as_mut() {
            r.agent(&vec![0; samples * slept as usize]);
        }
    }

    /// Whether the next tick has nothing to send but silence.
    pub(super) fn line_goes_idle(&self) -> bool {
        if !self.echo.is_empty() {
            return false;
        }
        let shared = lock(&self.shared);
        shared.queue.is_empty() && shared.dtmf_queue.is_empty() && self.dtmf_tx.is_none()
    }

    /// One packet interval: send a DTMF packet, queued audio, or silence.
    pub(super) fn tick(&mut self, now: Instant, out: &mut Output) {
        if !self.ahead.is_zero() && self.line_goes_idle() {
            // Give back the time a talkspurt gained (see `start_talkspurt`) before the line
            // goes quiet, so the timestamps meet the wall clock again.
            let resume = self.clock.deadline() + self.ahead;
            self.clock.restart(resume, self.clock.period());
            self.ahead = Duration::ZERO;
            return;
        }
        let skipped = self.clock.advance(now);
        let samples = self.packet_samples();
        // Time the process could not keep up with still passed on the call: the recording
        // keeps it as silence so it stays as long as the call.
        if skipped > 0
            && let Some(r) = self.recorder.as_mut()
        {
            r.agent(&vec![0; samples * skipped as usize]);
        }
        let sending = self.sending();
        let payload = if sending {
            self.next_payload(samples, out)
        } else {
            TickPayload::Idle
        };
        let talking = matches!(payload, TickPayload::Audio | TickPayload::Echo);
        match payload {
            TickPayload::Dtmf(packet, pt) => {
                out.bufs.payload.clear();
                out.bufs.payload.extend_from_slice(&packet.payload);
                self.send_packet(pt, packet.marker, packet.timestamp, out);
                if let Some(r) = self.recorder.as_mut() {
                    r.agent(&vec![0; samples]);
                }
            }
            TickPayload::Audio | TickPayload::Echo => {
                if std::mem::take(&mut self.idle) {
                    let at = tokio::time::Instant::from_std(now);
                    out.events.push(MediaEvent::PlayoutStarted { at });
                }
                let marker = std::mem::take(&mut self.talkspurt_start);
                if let TickPayload::Echo = payload {
                    let pt = self.media.send_payload_type;
                    self.send_packet(pt, marker, self.timestamp, out);
                    self.record_echo(out);
                } else {
                    self.send_audio(marker, out);
                }
            }
            TickPayload::Idle => {
                // Set before the engine decides whether to sleep (`needs_tick` looks at the
                // queue), so audio queued from here on is never missed.
                lock(&self.shared).wake_on_queue = true;
                if !std::mem::replace(&mut self.idle, true) {
                    out.events.push(MediaEvent::PlayoutIdle);
                }
                // The next queued audio starts a talkspurt (marker bit), after silence packets
                // as after a pause in sending.
                self.talkspurt_start = true;
                out.bufs.frame.clear();
                out.bufs.frame.resize(samples, 0);
                if sending && self.config.silence == SilenceMode::SendSilence {
                    self.send_audio(false, out);
                } else if let Some(r) = self.recorder.as_mut() {
                    r.agent(&out.bufs.frame);
                }
            }
        }
        // Timestamps advance with the clock whether or not a packet went out.
        self.timestamp = self
            .timestamp
            .wrapping_add((self.packet_ticks() * (1 + skipped)) as u32);
        // During a talkspurt the statistics go out every few packets, and on every other tick:
        // readers see them at most that stale, and the shell is spared a lock and a copy per
        // packet.
        if !talking
            || self
                .stats
                .packets_sent
                .is_multiple_of(PUBLISH_EVERY_PACKETS)
        {
            self.publish_stats(out);
        }
    }

    /// Records the echoed payload in `Buffers::payload` (it was queued before a recording
    /// began; from then on the echo goes through the decoder and is recorded as it is sent).
    fn record_echo(&mut self, out: &mut Output) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        let bufs = &mut out.bufs;
        bufs.frame.clear();
        match new_decoder(self.media.codec) {
            Ok(mut decoder) => match decoder.decode(&bufs.payload, &mut bufs.frame) {
                Ok(()) => r.agent(&bufs.frame),
                Err(e) => debug!(call_id = %self.config.call_id, error = %e, "echo not recorded"),
            },
            Err(e) => debug!(call_id = %self.config.call_id, error = %e, "echo not recorded"),
        }
    }

    /// Encodes and sends the audio in `Buffers::frame` at the current timestamp, and records
    /// it.
    fn send_audio(&mut self, marker: bool, out: &mut Output) {
        out.bufs.payload.clear();
        match self.encoder.encode(&out.bufs.frame, &mut out.bufs.payload) {
            Ok(()) => {
                let pt = self.media.send_payload_type;
                self.send_packet(pt, marker, self.timestamp, out);
            }
            Err(e) => warn!(call_id = %self.config.call_id, error = %e, "encode failed"),
        }
        if let Some(r) = self.recorder.as_mut() {
            r.agent(&out.bufs.frame);
        }
    }

    /// What the next packet carries: echoed audio goes to `Buffers::payload`, queued audio to
    /// `Buffers::frame`. Digits come first; the echo line needs nothing from the shared state.
    fn next_payload(&mut self, samples: usize, out: &mut Output) -> TickPayload {
        if (self.digits_may_wait || self.dtmf_tx.is_some())
            && let Some(dtmf) = self.next_dtmf_packet()
        {
            return dtmf;
        }
        self.dtmf_gap = self.dtmf_gap.saturating_sub(1);
        if self.echo.len() >= samples {
            return self.take_echo(samples, out);
        }
        if lock(&self.shared).queue.pop(samples, &mut out.bufs.frame) {
            TickPayload::Audio
        } else {
            TickPayload::Idle
        }
    }

    /// The next packet of the digit being sent, starting the next queued digit when none is
    /// and the gap after the last has passed.
    fn next_dtmf_packet(&mut self) -> Option<TickPayload> {
        let mut shared = lock(&self.shared);
        self.digits_may_wait = !shared.dtmf_queue.is_empty();
        let format = shared.dtmf_format?;
        if self.dtmf_tx.is_none()
            && self.dtmf_gap == 0
            && let Some((digit, ms)) = shared.dtmf_queue.pop_front()
        {
            let start = self.timestamp;
            match DtmfSender::new(digit, ms, format.clock_rate, self.media.ptime_ms, start) {
                Ok(sender) => {
                    self.dtmf_tx = Some(sender);
                    self.stats.dtmf_events_sent += 1;
                }
                Err(e) => warn!(call_id = %self.config.call_id, error = %e, "dtmf"),
            }
        }
        let packet = self.dtmf_tx.as_mut()?.next_packet();
        if packet.is_none() {
            self.dtmf_tx = None;
            self.dtmf_gap = DTMF_GAP_PACKETS;
            // Audio after an event starts a new talkspurt.
            self.talkspurt_start = true;
        }
        packet.map(|packet| TickPayload::Dtmf(packet, format.payload_type))
    }

    /// The next `samples` echoed bytes, into `Buffers::payload`.
    fn take_echo(&mut self, samples: usize, out: &mut Output) -> TickPayload {
        let payload = &mut out.bufs.payload;
        let (front, back) = self.echo.as_slices();
        let from_front = front.len().min(samples);
        payload.clear();
        payload.extend_from_slice(&front[..from_front]);
        payload.extend_from_slice(&back[..samples - from_front]);
        self.echo.drain(..samples);
        TickPayload::Echo
    }

    /// Whether we send media now: the direction allows it and we know where to.
    pub(super) fn sending(&self) -> bool {
        self.media.direction.sends() && self.destination().is_some()
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.media.remote_rtp)
    }

    /// Queues `Buffers::payload` as the next RTP packet.
    fn send_packet(&mut self, payload_type: u8, marker: bool, timestamp: u32, out: &mut Output) {
        let Some(dest) = self.destination() else {
            return;
        };
        let header = RtpPacket {
            payload_type,
            marker,
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
            payload: &out.bufs.payload,
        };
        let start = out.bytes.len();
        if let Err(e) = header.write(&mut out.bytes) {
            out.bytes.truncate(start);
            warn!(call_id = %self.config.call_id, error = %e, "rtp build");
            return;
        }
        if let Some(srtp) = self.srtp.as_mut()
            && let Err(e) = srtp.protect_rtp(&mut out.bytes, start)
        {
            out.bytes.truncate(start);
            warn!(call_id = %self.config.call_id, error = %e, "srtp protect");
            return;
        }
        out.transmit(Socket::Rtp, dest, start);
        self.sequence = self.sequence.wrapping_add(1);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += out.bufs.payload.len() as u64;
        self.sent_since_report = true;
    }

    pub(super) fn send_rtcp(&mut self, now: Instant, out: &mut Output) {
        self.next_rtcp = now + self.config.rtcp_interval;
        let block = self.remote_ssrc.map(|ssrc| {
            let (last_sr, delay_since_last_sr) = self.last_sr.map_or((0, 0), |(mid, at)| {
                let delay = now.saturating_duration_since(at).as_secs_f64() * 65536.0;
                (mid, delay as u32)
            });
            ReportBlock {
                ssrc,
                fraction_lost: self.rx_stats.take_fraction_lost(),
                cumulative_lost: self.rx_stats.lost().min(0x7F_FFFF) as i32,
                highest_seq: self.rx_stats.extended_max(),
                jitter: self.rx_stats.jitter_units(),
                last_sr,
                delay_since_last_sr,
            }
        });
        let sender = std::mem::take(&mut self.sent_since_report).then(|| SenderInfo {
            ntp: self.wall.ntp(now),
            rtp_timestamp: self.timestamp,
            packets: self.stats.packets_sent as u32,
            octets: self.stats.bytes_sent as u32,
        });
        let dest = self.latched_rtcp.or(self.media.remote_rtcp).or_else(|| {
            self.latched
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        });
        if let Some(dest) = dest {
            let report =
                rtcp::build_report(self.ssrc, sender, block.as_slice(), &self.config.cname);
            let start = out.bytes.len();
            out.bytes.extend_from_slice(&report);
            if let Some(srtp) = self.srtp.as_mut()
                && let Err(e) = srtp.protect_rtcp(&mut out.bytes, start)
            {
                out.bytes.truncate(start);
                warn!(call_id = %self.config.call_id, error = %e, "srtcp protect");
                return;
            }
            out.transmit(Socket::Rtcp, dest, start);
            self.stats.rtcp_sent += 1;
        }
        self.publish_stats(out);
        out.events.push(MediaEvent::Stats(self.stats.clone()));
    }

    /// Brings the receive figures into the statistics and has the shell publish them.
    pub(super) fn publish_stats(&mut self, out: &mut Output) {
        self.stats.packets_lost = self.rx_stats.lost();
        self.stats.packets_expected = self.rx_stats.expected();
        self.stats.jitter_ms = self.rx_stats.jitter_ms();
        out.stats_changed = true;
    }
}
