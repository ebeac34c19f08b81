//! A browser for tests: a full ICE agent that offers audio and the data channel, as a page
//! does, driven by hand (no sockets of its own).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::crypto::dtls::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::media::{Frequency, MediaTime};
use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Event, Output, Rtc};

use super::peer::CHANNEL_LABEL;

pub fn cert() -> DtlsCert {
    str0m::crypto::from_feature_flags().install_process_default();
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .unwrap()
}

/// A browser: a full ICE agent at `addr` offering audio (unless told not to; Opus and PCMU,
/// or PCMU only) and the data channel, over UDP or (as one whose UDP is blocked) over TCP,
/// connecting actively.
pub struct Browser {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    /// How its one candidate reaches the host.
    pub proto: Protocol,
    pub mid: Option<Mid>,
    pub channel: Option<ChannelId>,
    /// Each audio frame received, with its RTP time.
    pub audio: Vec<(u64, Vec<u8>)>,
    pub texts: Vec<String>,
    pub connected: bool,
}

impl Browser {
    pub fn offer(
        addr: SocketAddr,
        proto: Protocol,
        audio: bool,
        pcmu_only: bool,
        now: Instant,
    ) -> (Browser, String, SdpPendingOffer) {
        let mut config = Rtc::builder().clear_codecs();
        config = if pcmu_only {
            config.enable_pcmu(true, false)
        } else {
            config.enable_opus(true, false).enable_pcmu(true, false)
        };
        let mut rtc = config.build(now);
        let candidate = match proto {
            Protocol::Udp => Candidate::host(addr, "udp").unwrap(),
            _ => Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Active)
                .build()
                .unwrap(),
        };
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mid =
            audio.then(|| api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
        api.add_channel(CHANNEL_LABEL.into());
        let (offer, pending) = api.apply().unwrap();
        let browser = Browser {
            rtc,
            addr,
            proto,
            mid,
            channel: None,
            audio: Vec::new(),
            texts: Vec::new(),
            connected: false,
        };
        (browser, offer.to_sdp_string(), pending)
    }

    /// Run the browser's outputs: datagrams for the host, events kept.
    pub fn poll(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => out.push((t.source, t.contents.to_vec())),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::ChannelOpen(id, _)) => self.channel = Some(id),
                Output::Event(Event::MediaData(d)) => {
                    self.audio.push((d.time.numer(), d.data.to_vec()))
                }
                Output::Event(Event::ChannelData(d)) => self
                    .texts
                    .push(String::from_utf8_lossy(&d.data).into_owned()),
                Output::Event(_) => {}
            }
        }
    }

    /// Take the host's answer to the offer `pending` is for.
    pub fn accept(&mut self, pending: SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    /// Send one Opus frame at `rtp_time` (48 kHz clock).
    pub fn send_opus(&mut self, now: Instant, rtp_time: u64, payload: Vec<u8>) {
        let mid = self.mid.unwrap();
        let writer = self.rtc.writer(mid).unwrap();
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, now, time, payload).unwrap();
    }

    /// Send `text` on the data channel.
    pub fn send_text(&mut self, text: &str) {
        let channel = self.channel.unwrap();
        self.rtc
            .channel(channel)
            .unwrap()
            .write(false, text.as_bytes())
            .unwrap();
    }
}
