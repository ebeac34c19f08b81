//! One browser's peer connection, sans-IO: str0m does ICE-lite, DTLS-SRTP, RTP and the SCTP
//! data channel; this wraps it in the call's terms (an answer to an offer, audio frames in and
//! out, text messages, the far end going away). Time and datagrams come in as arguments, so
//! two peers can be driven against each other in a test without sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::crypto::dtls::DtlsCert;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use crate::media::Codec;

/// The data channel the page opens for events and keys.
pub const CHANNEL_LABEL: &str = "switchboard";

/// Why an offer could not be answered; each is the browser's fault (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no audio")]
    NoAudio,
    #[error("no common audio codec (Opus at 48 kHz or PCMU)")]
    NoCommonCodec,
}

/// The negotiated audio: where it goes and how it is coded.
#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    pt: Pt,
    codec: Codec,
}

/// What the peer has for its driver.
#[derive(Debug)]
pub enum PeerOutput {
    /// A datagram to send, over UDP or on the TCP connection from `to`.
    Transmit {
        proto: Protocol,
        to: SocketAddr,
        datagram: Vec<u8>,
    },
    /// Call [`Peer::timeout`] at this instant at the latest.
    Wake(Instant),
    Event(PeerEvent),
}

/// Something the far end did.
#[derive(Debug, PartialEq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: audio may flow.
    Connected,
    /// One coded audio frame and its RTP time (in the codec's clock).
    Audio { payload: Arc<[u8]>, rtp_time: u64 },
    /// The page's data channel is open: text can go out.
    ChannelOpen,
    /// A text message from the page.
    Text(String),
    /// The page closed the data channel or stopped answering ICE checks.
    Gone(&'static str),
}

/// A peer connection that answered a browser's offer.
pub struct Peer {
    rtc: Rtc,
    /// Our UDP host candidate: every datagram arrives for it, whatever address the socket is
    /// bound on (behind 1:1 NAT it is the public address).
    local: SocketAddr,
    /// Our passive TCP candidate, when ICE over TCP is on.
    local_tcp: Option<SocketAddr>,
    track: Track,
    channel: Option<ChannelId>,
}

impl Peer {
    /// Answer `offer` with a UDP host candidate at `local` (and a passive TCP one at
    /// `local_tcp`, ranked below it) and the process's DTLS certificate; returns the peer and
    /// the SDP answer.
    pub fn answer(
        offer: &str,
        local: SocketAddr,
        local_tcp: Option<SocketAddr>,
        cert: &DtlsCert,
        now: Instant,
    ) -> Result<(Peer, String), OfferError> {
        let offer_text = offer;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| {
            // The parser's first line is a position in memory; the last one says what is wrong.
            let text = e.to_string();
            OfferError::Malformed(text.lines().last().unwrap_or_default().to_string())
        })?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .build(now);
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| OfferError::Malformed(format!("our candidate {local}: {e}")))?;
        rtc.add_local_candidate(candidate);
        if let Some(addr) = local_tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| OfferError::Malformed(format!("our TCP candidate {addr}: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Malformed(e.to_string()))?;
        // str0m tells of the offer's media lines only once connected; their mids are in the offer.
        let mut audio = audio_mids(offer_text).peekable();
        if audio.peek().is_none() {
            return Err(OfferError::NoAudio);
        }
        let track = audio
            .find_map(|mid| negotiated(&mut rtc, Mid::from(mid)))
            .ok_or(OfferError::NoCommonCodec)?;
        Ok((
            Peer {
                rtc,
                local,
                local_tcp,
                track,
                channel: None,
            },
            answer.to_sdp_string(),
        ))
    }

    /// The negotiated audio codec.
    pub fn codec(&self) -> Codec {
        self.track.codec
    }

    /// The ICE user name fragment of our side: a browser's checks over TCP name it, which is
    /// how their connection finds this peer.
    pub fn ice_ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }

    /// A datagram from `from` (over UDP, or a frame on a TCP connection); garbage that is not
    /// STUN, DTLS or RTP is dropped here.
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), RtcError> {
        let destination = match proto {
            Protocol::Udp => self.local,
            _ => match self.local_tcp {
                Some(addr) => addr,
                None => return Ok(()),
            },
        };
        let Ok(contents) = datagram.try_into() else {
            return Ok(());
        };
        self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto,
                source: from,
                destination,
                contents,
            },
        ))
    }

    /// Time passed: retransmissions, keep-alives, RTCP, queued media.
    pub fn timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.rtc.handle_input(Input::Timeout(now))
    }

    /// Queue one coded frame of agent audio at `rtp_time` (the codec's clock).
    pub fn send_audio(
        &mut self,
        now: Instant,
        rtp_time: u64,
        payload: Vec<u8>,
    ) -> Result<(), RtcError> {
        let Track { mid, pt, codec } = self.track;
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        let time = MediaTime::new(rtp_time, frequency(codec));
        writer.write(pt, now, time, payload)
    }

    /// Send `text` on the data channel; `false` when it is not open (yet, or any more).
    pub fn send_text(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut channel) => channel.write(false, text.as_bytes()).unwrap_or(false),
            None => false,
        }
    }

    /// Start an orderly close: SCTP shutdown and DTLS close_notify go out on the next polls.
    pub fn close(&mut self) {
        if let Err(e) = self.rtc.close() {
            tracing::debug!(error = %e, "closing the peer connection");
        }
    }

    /// Whether the peer still has anything to do (a closed one has sent its last datagram).
    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// The next thing to do; ends with a [`PeerOutput::Wake`] when there is nothing more now.
    pub fn poll(&mut self) -> Result<PeerOutput, RtcError> {
        loop {
            let event = match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(PeerOutput::Wake(at)),
                Output::Transmit(t) => {
                    return Ok(PeerOutput::Transmit {
                        proto: t.proto,
                        to: t.destination,
                        datagram: t.contents.to_vec(),
                    });
                }
                Output::Event(event) => event,
            };
            if let Some(event) = self.translate(event) {
                return Ok(PeerOutput::Event(event));
            }
        }
    }

    fn translate(&mut self, event: Event) -> Option<PeerEvent> {
        match event {
            Event::Connected => Some(PeerEvent::Connected),
            Event::MediaData(data) if data.mid == self.track.mid => Some(PeerEvent::Audio {
                payload: data.data,
                rtp_time: data.time.numer(),
            }),
            Event::ChannelOpen(id, label) if label == CHANNEL_LABEL => {
                self.channel = Some(id);
                Some(PeerEvent::ChannelOpen)
            }
            Event::ChannelData(data) if Some(data.id) == self.channel && !data.binary => Some(
                PeerEvent::Text(String::from_utf8_lossy(&data.data).into_owned()),
            ),
            Event::ChannelClose(id) if Some(id) == self.channel => {
                self.channel = None;
                Some(PeerEvent::Gone("the page closed the call"))
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => Some(
                PeerEvent::Gone("the browser stopped answering (ICE disconnected)"),
            ),
            _ => None,
        }
    }
}

/// Whether an error of the peer ends the call: the DTLS handshake failed or the browser's
/// certificate is not the one its offer named. A bad packet does not.
pub fn is_fatal(e: &RtcError) -> bool {
    matches!(e, RtcError::Dtls(_) | RtcError::RemoteSdp(_))
}

/// The mids of the audio media lines of an SDP offer (bundled lines all have one).
fn audio_mids(sdp: &str) -> impl Iterator<Item = &str> {
    let mut in_audio = false;
    sdp.lines().filter_map(move |line| {
        if line.starts_with("m=") {
            in_audio = line.starts_with("m=audio ");
        }
        line.strip_prefix("a=mid:")
            .filter(|_| in_audio)
            .map(str::trim)
    })
}

/// The audio codec negotiated on `mid`: Opus if the browser offered it, else PCMU.
fn negotiated(rtc: &mut Rtc, mid: Mid) -> Option<Track> {
    let writer = rtc.writer(mid)?;
    let mut best: Option<Track> = None;
    for params in writer.payload_params() {
        let codec = match params.spec().codec {
            RtcCodec::Opus => Codec::Opus,
            RtcCodec::PCMU => Codec::Pcmu,
            _ => continue,
        };
        if best.is_none_or(|b| b.codec != Codec::Opus) {
            best = Some(Track {
                mid,
                pt: params.pt(),
                codec,
            });
        }
    }
    best
}

fn frequency(codec: Codec) -> Frequency {
    match codec {
        Codec::Opus => Frequency::FORTY_EIGHT_KHZ,
        _ => Frequency::EIGHT_KHZ,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_browser::{Browser, cert};
    use super::*;
    use std::time::Duration;

    fn page() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }

    /// Drive both ends on a fake clock until `done` or 10 s of it.
    fn run(
        host: &mut Peer,
        host_events: &mut Vec<PeerEvent>,
        browser: &mut Browser,
        now: &mut Instant,
        done: impl Fn(&[PeerEvent], &Browser) -> bool,
    ) {
        drive(host, host_events, browser, now, done).unwrap();
    }

    /// [`run`], returning the host's first error (the browser's are ignored: a test may make
    /// it misbehave).
    fn drive(
        host: &mut Peer,
        host_events: &mut Vec<PeerEvent>,
        browser: &mut Browser,
        now: &mut Instant,
        done: impl Fn(&[PeerEvent], &Browser) -> bool,
    ) -> Result<(), RtcError> {
        let end = *now + Duration::from_secs(10);
        let host_addr = match browser.proto {
            Protocol::Udp => host.local,
            _ => host.local_tcp.unwrap(),
        };
        while !done(host_events, browser) {
            assert!(*now < end, "not done in 10 s; host saw {host_events:?}");
            let mut to_host = Vec::new();
            let browser_wake = browser.poll(&mut to_host);
            for (from, datagram) in to_host {
                host.receive(*now, browser.proto, from, &datagram)?;
            }
            let host_wake;
            loop {
                match host.poll()? {
                    PeerOutput::Wake(at) => {
                        host_wake = at;
                        break;
                    }
                    PeerOutput::Transmit {
                        proto,
                        to,
                        datagram,
                    } => {
                        assert_eq!((proto, to), (browser.proto, browser.addr));
                        let r = Receive {
                            proto,
                            source: host_addr,
                            destination: browser.addr,
                            contents: datagram.as_slice().try_into().unwrap(),
                        };
                        let _ = browser.rtc.handle_input(Input::Receive(*now, r));
                    }
                    PeerOutput::Event(e) => host_events.push(e),
                }
            }
            *now = (*now + Duration::from_millis(1)).max(
                browser_wake
                    .min(host_wake)
                    .min(*now + Duration::from_millis(20)),
            );
            host.timeout(*now)?;
            let _ = browser.rtc.handle_input(Input::Timeout(*now));
        }
        Ok(())
    }

    fn connect(proto: Protocol, pcmu_only: bool) -> (Peer, Vec<PeerEvent>, Browser, Instant) {
        let mut now = Instant::now();
        let (mut browser, offer, pending) = Browser::offer(page(), proto, true, pcmu_only, now);
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local_tcp: SocketAddr = "127.0.0.1:40443".parse().unwrap();
        let (mut host, answer) =
            Peer::answer(&offer, local, Some(local_tcp), &cert(), now).unwrap();
        // Both candidates are offered, the TCP one passive and ranked below.
        let candidates: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert_eq!(candidates.len(), 2, "{answer}");
        assert!(
            candidates[1].contains("40443 typ host tcptype passive"),
            "{answer}"
        );
        browser.accept(pending, &answer);
        let mut events = Vec::new();
        run(&mut host, &mut events, &mut browser, &mut now, |e, b| {
            e.contains(&PeerEvent::Connected)
                && e.contains(&PeerEvent::ChannelOpen)
                && b.channel.is_some()
        });
        (host, events, browser, now)
    }

    #[test]
    fn a_browser_that_cannot_use_udp_connects_over_tcp_to_the_passive_candidate() {
        let (mut host, mut events, mut browser, mut now) = connect(Protocol::Tcp, false);
        host.send_audio(now, 0, vec![0xf8, 0xff, 0xfe]).unwrap();
        browser.send_opus(now, 0, vec![0xf8, 0xff, 0xfe]);
        run(&mut host, &mut events, &mut browser, &mut now, |e, b| {
            e.iter().any(|e| matches!(e, PeerEvent::Audio { .. })) && !b.audio.is_empty()
        });
    }

    #[test]
    fn a_browser_connects_and_audio_and_text_flow_both_ways() {
        let (mut host, mut events, mut browser, mut now) = connect(Protocol::Udp, false);
        assert_eq!(host.codec(), Codec::Opus);
        // Agent → page: audio frames and a call event.
        for i in 0..5u64 {
            host.send_audio(now, i * 960, vec![0xf8, 0xff, 0xfe])
                .unwrap();
        }
        assert!(host.send_text(r#"{"type":"transcript"}"#));
        // Page → agent: audio and a key.
        for i in 0..5u64 {
            browser.send_opus(now, i * 960, vec![0xf8, 0xff, 0xfe]);
        }
        browser.send_text(r#"{"type":"key","key":"5"}"#);
        run(&mut host, &mut events, &mut browser, &mut now, |e, b| {
            let audio = e
                .iter()
                .filter(|e| matches!(e, PeerEvent::Audio { .. }))
                .count();
            audio >= 4
                && b.audio.len() >= 4
                && !b.texts.is_empty()
                && e.iter().any(|e| matches!(e, PeerEvent::Text(_)))
        });
        assert_eq!(browser.texts, [r#"{"type":"transcript"}"#]);
        assert!(events.contains(&PeerEvent::Text(r#"{"type":"key","key":"5"}"#.into())));
        let times: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Audio { rtp_time, .. } => Some(*rtp_time),
                _ => None,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[1] == w[0] + 960), "{times:?}");
        // The page closes: the host hears it go.
        let channel = browser.channel.unwrap();
        browser.rtc.direct_api().close_data_channel(channel);
        run(&mut host, &mut events, &mut browser, &mut now, |e, _| {
            e.iter().any(|e| matches!(e, PeerEvent::Gone(_)))
        });
    }

    #[test]
    fn a_browser_whose_certificate_is_not_the_one_it_offered_fails_dtls() {
        let mut now = Instant::now();
        let (mut browser, offer, pending) = Browser::offer(page(), Protocol::Udp, true, false, now);
        // The offer names another certificate than the one the browser will present.
        let fingerprint = offer
            .lines()
            .find_map(|l| l.strip_prefix("a=fingerprint:sha-256 "))
            .unwrap()
            .to_string();
        let forged: String = fingerprint
            .chars()
            .map(|c| if c == ':' { c } else { '0' })
            .collect();
        let offer = offer.replace(&fingerprint, &forged);
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (mut host, answer) = Peer::answer(&offer, local, None, &cert(), now).unwrap();
        browser.accept(pending, &answer);
        let mut events = Vec::new();
        let failed = drive(&mut host, &mut events, &mut browser, &mut now, |e, _| {
            e.contains(&PeerEvent::Connected)
        });
        let e = failed.unwrap_err();
        assert!(is_fatal(&e), "{e:?} {events:?}");
        assert!(e.to_string().contains("fingerprint"), "{e}");
        assert!(!events.contains(&PeerEvent::Connected));
    }

    #[test]
    fn a_page_that_offers_only_pcmu_gets_pcmu() {
        let (host, ..) = connect(Protocol::Udp, true);
        assert_eq!(host.codec(), Codec::Pcmu);
    }

    #[test]
    fn offers_that_cannot_be_answered_say_why() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let cert = cert();
        let now = Instant::now();
        let err = |sdp: &str| Peer::answer(sdp, local, None, &cert, now).err().unwrap();
        assert!(matches!(err("v=0\r\nnonsense"), OfferError::Malformed(_)));
        assert!(matches!(err(""), OfferError::Malformed(_)));
        let (_, no_audio, _) = Browser::offer(page(), Protocol::Udp, false, false, now);
        assert_eq!(err(&no_audio), OfferError::NoAudio);
        // Audio in a codec we do not speak (G.722 only).
        let (_, opus, _) = Browser::offer(page(), Protocol::Udp, true, false, now);
        let g722_only = opus
            .lines()
            .map(|l| {
                if l.starts_with("m=audio") {
                    let mut parts: Vec<&str> = l.split(' ').take(3).collect();
                    parts.push("9");
                    parts.join(" ")
                } else if l.starts_with("a=rtpmap:")
                    || l.starts_with("a=fmtp:")
                    || l.starts_with("a=rtcp-fb:")
                {
                    String::new()
                } else {
                    l.to_string()
                }
            })
            .filter(|l| !l.is_empty())
            .chain(["a=rtpmap:9 G722/8000".to_string()])
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n";
        assert_eq!(err(&g722_only), OfferError::NoCommonCodec);
    }
}
