//! The inbound half of the engine: latching, the jitter buffer, decoding, DTMF, the echo line's
//! intake and the peer's RTCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{CallerAudio, Engine, Output, RELATCH_AFTER, RTP_PAYLOAD_CN, payload_type_bit};
use crate::media::jitter::{BufferedPacket, Playout, PushOutcome};
use crate::media::rtcp::{self, RtcpPacket};
use crate::media::rtp::{RtpPacket, is_rtcp, is_stun};
use crate::media::session::{AudioFrame, MediaEvent, lock};
use crate::media::stats::ReceiveStats;

impl Engine {
    /// Symmetric RTP: the first source we hear from becomes where we send. Another source is
    /// accepted only once the latched one has been silent for a while.
    fn accept_source(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.latched {
            Some(addr) if addr == from => true,
            Some(addr) => {
                let stale = self
                    .last_rx
                    .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER);
                if stale {
                    info!(call_id = %self.config.call_id, old = %addr, new = %from, "re-latched RTP source");
                    self.latched = Some(from);
                    self.latched_rtcp = None;
                }
                stale
            }
            None => {
                debug!(call_id = %self.config.call_id, source = %from, "latched RTP source");
                self.latched = Some(from);
                true
            }
        }
    }

    pub(super) fn on_rtp(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        out: &mut Output,
    ) {
        if is_rtcp(datagram) {
            // rtcp-mux peers send RTCP on the RTP port.
            self.on_rtcp(datagram, from, now);
            return;
        }
        if is_stun(datagram) {
            // ICE connectivity checks we did not offer: not media, not an error.
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed_packets += 1;
                return;
            }
        };
        if !self.accept_source(from, now) {
            self.stats.foreign_packets += 1;
            return;
        }
        if self.remote_ssrc != Some(packet.ssrc) {
            if self.remote_ssrc.is_some() {
                // Counted in the statistics the call's end line reports.
                debug!(call_id = %self.config.call_id, old = ?self.remote_ssrc, new = packet.ssrc, "remote SSRC changed");
                self.stats.ssrc_changes += 1;
                // Drain what the old source left, then start over for the new one.
                self.release_inbound_all(now, out);
                self.jitter.reset();
            }
            self.rx_stats = ReceiveStats::new(self.media.codec.clock_rate());
            self.remote_ssrc = Some(packet.ssrc);
            self.stats.remote_ssrc = Some(packet.ssrc);
        }
        self.last_rx = Some(now);
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.payload.len() as u64;
        let is_audio = self.is_audio_pt(packet.payload_type);
        let is_dtmf = self.is_dtmf_pt(packet.payload_type);
        if !is_audio && !is_dtmf {
            // Comfort noise and unknown payloads still occupy sequence numbers.
            if packet.payload_type != RTP_PAYLOAD_CN {
                debug!(call_id = %self.config.call_id, pt = packet.payload_type, "unexpected payload type");
            }
        }
        self.rx_stats
            .on_packet(packet.sequence, is_audio.then_some(packet.timestamp), now);
        if self.jitter.release_in_order(packet.sequence) {
            self.play_packet(
                packet.payload_type,
                packet.timestamp,
                packet.payload,
                now,
                out,
            );
            return;
        }
        let outcome = self.jitter.push(
            packet.sequence,
            BufferedPacket {
                payload_type: packet.payload_type,
                marker: packet.marker,
                timestamp: packet.timestamp,
                payload: packet.payload.to_vec(),
            },
            now,
        );
        if outcome != PushOutcome::Buffered {
            self.stats.packets_discarded += 1;
        }
    }

    fn is_audio_pt(&self, pt: u8) -> bool {
        pt == self.media.recv_payload_type || pt == self.media.send_payload_type
    }

    fn is_dtmf_pt(&self, pt: u8) -> bool {
        self.dtmf_payload_types & payload_type_bit(pt) != 0
    }

    pub(super) fn release_inbound(&mut self, now: Instant, out: &mut Output) {
        while let Some(item) = self.jitter.pop(now) {
            self.play_inbound(item, now, out);
        }
    }

    /// Releases everything buffered regardless of the window (the source is going away).
    fn release_inbound_all(&mut self, now: Instant, out: &mut Output) {
        let far = now + Duration::from_secs(3600);
        while let Some(item) = self.jitter.pop(far) {
            self.play_inbound(item, now, out);
        }
    }

    fn play_inbound(&mut self, item: Playout, now: Instant, out: &mut Output) {
        match item {
            Playout::Packet(p) => {
                self.play_packet(p.payload_type, p.timestamp, &p.payload, now, out)
            }
            Playout::Lost { following } => {
                let decoded = &mut out.bufs.decoded;
                if std::mem::take(&mut self.decoder_behind) {
                    // Conceal from the last payload echoed, not from older audio.
                    decoded.clear();
                    let _ = self.decoder.decode(&self.echo_last, decoded);
                }
                decoded.clear();
                let samples = self.last_packet_samples;
                if let Err(e) = self.decoder.conceal(following.as_deref(), samples, decoded) {
                    debug!(call_id = %self.config.call_id, error = %e, "concealment failed");
                    return;
                }
                self.stats.concealed_ms +=
                    (decoded.len() as u64 * 1000) / self.media.codec.sample_rate() as u64;
                self.deliver_decoded(now, out);
            }
        }
    }

    /// The next packet of the inbound stream, in order: a DTMF event or audio.
    fn play_packet(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
        out: &mut Output,
    ) {
        if self.is_dtmf_pt(payload_type) {
            for e in self.dtmf_rx.on_packet(timestamp, payload, now) {
                self.on_dtmf(e, out);
            }
            return;
        }
        if !self.is_audio_pt(payload_type) {
            return;
        }
        if self.echoes_as_is(payload.len()) {
            self.echo.extend(payload);
            self.echo_last.clear();
            self.echo_last.extend_from_slice(payload);
            self.decoder_behind = true;
            self.last_packet_samples = payload.len();
            self.start_talkspurt(now);
            return;
        }
        out.bufs.decoded.clear();
        match self.decoder.decode(payload, &mut out.bufs.decoded) {
            Ok(()) => {
                self.last_packet_samples = out.bufs.decoded.len();
                self.decoder_behind = false;
            }
            Err(e) => {
                debug!(call_id = %self.config.call_id, error = %e, "undecodable packet");
                self.stats.malformed_packets += 1;
                return;
            }
        }
        self.deliver_decoded(now, out);
    }

    /// Caller audio just decoded (or concealed), in `out.bufs.decoded`: to the recording, and
    /// in frames at the inbound rate to the sink or as events, or back to the caller.
    fn deliver_decoded(&mut self, now: Instant, out: &mut Output) {
        if let Some(r) = self.recorder.as_mut() {
            r.caller(&out.bufs.decoded);
        }
        if let CallerAudio::Loopback = self.caller_audio {
            self.loop_decoded_back(&out.bufs.decoded, now);
            return;
        }
        let bufs = &mut out.bufs;
        if let Err(e) = self.inbound_resampler.push(&bufs.decoded) {
            warn!(call_id = %self.config.call_id, error = %e, "inbound resampling failed");
            return;
        }
        while self.inbound_resampler.pop_frame(&mut bufs.inbound_frame) {
            if let CallerAudio::Sink(sink) = &mut self.caller_audio {
                sink(&bufs.inbound_frame);
            } else {
                out.events.push(MediaEvent::Audio(AudioFrame {
                    samples: bufs.inbound_frame.clone(),
                    sample_rate: self.config.inbound_rate,
                }));
            }
        }
    }

    fn loop_decoded_back(&mut self, decoded: &[i16], now: Instant) {
        if self.echoes_as_is(decoded.len()) {
            // Concealed audio joins the echoed payloads, in order.
            let start = self.echo.len();
            let mut encoded = std::mem::take(&mut self.echo_last);
            encoded.clear();
            match self.encoder.encode(decoded, &mut encoded) {
                Ok(()) => self.echo.extend(&encoded),
                Err(e) => warn!(call_id = %self.config.call_id, error = %e, "encode failed"),
            }
            self.echo_last = encoded;
            if self.echo.len() > start {
                self.start_talkspurt(now);
            }
            return;
        }
        let rate = self.media.codec.sample_rate();
        let queued = lock(&self.shared).queue_audio(decoded, rate);
        match queued {
            // What `Command::Queued` would do, without the command to itself.
            Ok(true) => self.start_talkspurt(now),
            Ok(false) => {}
            Err(e) => {
                warn!(call_id = %self.config.call_id, error = %e, "looping audio back failed")
            }
        }
    }

    /// Whether the echo line sends a packet of `samples` back as it came rather than through
    /// the decoder, the playout queue and the encoder: G.711, a whole packet of our ptime, and
    /// no recording (which needs the audio decoded).
    pub(super) fn echoes_as_is(&self, samples: usize) -> bool {
        matches!(self.caller_audio, CallerAudio::Loopback)
            && self.media.codec.is_g711()
            && self.recorder.is_none()
            && samples == self.packet_samples()
    }

    pub(super) fn on_rtcp(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        if is_stun(datagram) {
            return;
        }
        let packets = match rtcp::parse_compound(datagram) {
            Ok(p) => p,
            Err(e) => {
                debug!(call_id = %self.config.call_id, error = %e, "bad rtcp");
                self.stats.malformed_packets += 1;
                return;
            }
        };
        self.stats.rtcp_received += 1;
        if self.latched_rtcp.is_none() && self.latched.is_none_or(|a| a.ip() == from.ip()) {
            self.latched_rtcp = Some(from);
        }
        for packet in packets {
            let blocks = match packet {
                RtcpPacket::SenderReport { info, blocks, .. } => {
                    self.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
                    blocks
                }
                RtcpPacket::ReceiverReport { blocks, .. } => blocks,
                RtcpPacket::Other(_) => continue,
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                self.stats.remote_fraction_lost = Some(block.fraction_lost as f64 / 256.0);
                self.stats.remote_jitter_ms =
                    Some(block.jitter as f64 * 1000.0 / self.media.codec.clock_rate() as f64);
                if block.last_sr != 0 {
                    let now_mid = rtcp::ntp_middle(self.wall.ntp(now));
                    let rtt = now_mid
                        .wrapping_sub(block.last_sr)
                        .wrapping_sub(block.delay_since_last_sr);
                    // Ignore nonsense from clock skew (RTT above a minute).
                    if rtt < 60 << 16 {
                        self.stats.round_trip_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                    }
                }
            }
        }
    }
}
