//! Offer/answer (RFC 3264): our offer, our answer to a peer's offer or re-offer, the peer's
//! answer to ours, and the choice of one stream's codec and DTMF formats.

use std::fmt::Write as _;

use crate::media::codec::Codec;
use crate::media::srtp::Suite;

use super::parse::{Crypto, Format, Stream, parse};
use super::write::{crypto_lines, session_header, write_media};
use super::*;

/// Builds our offer (new outbound call, or a re-INVITE for hold/resume).
pub fn create_offer(local: &LocalMedia) -> String {
    let mut formats = Vec::new();
    for codec in &local.codecs {
        let pt = codec.static_payload_type().unwrap_or(OPUS_PT);
        if !formats.iter().any(|(p, _)| *p == pt) {
            formats.push((pt, Format::Audio(*codec)));
        }
    }
    formats.push((DTMF_8K_PT, Format::Dtmf(8000)));
    if local.codecs.contains(&Codec::Opus) {
        formats.push((DTMF_48K_PT, Format::Dtmf(48000)));
    }
    // SRTP offered: every suite we have, one key (the answer picks one line, RFC 4568 §7.1.1).
    let (proto, crypto): (&str, Vec<(u32, Suite)>) = match local.srtp {
        SrtpPolicy::Off => ("RTP/AVP", Vec::new()),
        // Best-effort SRTP: keys in an RTP/AVP offer, which a plain peer ignores.
        SrtpPolicy::Optional => ("RTP/AVP", offered_crypto()),
        SrtpPolicy::Required => ("RTP/SAVP", offered_crypto()),
    };
    let mut sdp = session_header(local);
    write_media(
        &mut sdp,
        local.port,
        proto,
        &formats,
        local.ptime_ms,
        local.direction,
        &crypto_lines(&crypto, &local.srtp_key),
    );
    sdp
}

/// The `a=crypto` tags and suites of our offers.
fn offered_crypto() -> Vec<(u32, Suite)> {
    (1..).zip(Suite::ALL).collect()
}

/// Answers a peer's offer (inbound INVITE, or a re-INVITE such as hold/resume).
///
/// Returns our answer SDP and the negotiated media, or [`SdpError::NotAcceptable`] (→ 488) when
/// no audio stream has a codec in `local.codecs`. Every offered m-line gets an answer line;
/// the ones we do not take are answered with port 0.
pub fn answer_offer(
    offer: &str,
    local: &LocalMedia,
) -> Result<(String, NegotiatedMedia), SdpError> {
    let session = parse(offer)?;
    let mut chosen: Option<(usize, Accepted)> = None;
    let mut reasons = Vec::new();
    for (index, stream) in session.streams.iter().enumerate() {
        if chosen.is_some() {
            break;
        }
        match negotiate_stream(stream, local) {
            Ok(accepted) => chosen = Some((index, accepted)),
            Err(reason) => reasons.push(format!("m-line {index}: {reason}")),
        }
    }
    let Some((chosen_index, (media, formats, crypto))) = chosen else {
        return Err(SdpError::NotAcceptable(if reasons.is_empty() {
            "no m-line".to_string()
        } else {
            reasons.join("; ")
        }));
    };
    let mut sdp = session_header(local);
    for (index, stream) in session.streams.iter().enumerate() {
        if index == chosen_index {
            write_media(
                &mut sdp,
                local.port,
                &stream.proto,
                &formats,
                local.ptime_ms,
                media.direction,
                &crypto_lines(&crypto, &local.srtp_key),
            );
        } else {
            // Rejected stream: same media and proto, port 0, formats echoed (RFC 3264 §6).
            let _ = write!(
                sdp,
                "m={} 0 {} {}\r\n",
                stream.media, stream.proto, stream.fmt
            );
        }
    }
    Ok((sdp, media))
}

/// Our reply to a mid-call re-INVITE or UPDATE (hold, resume, a new address): the answer and
/// the new negotiation, with `local.session_version` bumped because our SDP changes (RFC 3264
/// §8; left as it was when the offer is refused). Without an offer the peer wants ours: our
/// current SDP goes back as an offer, and nothing is negotiated yet.
pub fn answer_reoffer(
    offer: Option<&str>,
    local: &mut LocalMedia,
) -> Result<(String, Option<NegotiatedMedia>), SdpError> {
    let Some(offer) = offer else {
        return Ok((create_offer(local), None));
    };
    local.session_version += 1;
    answer_offer(offer, local)
        .map(|(answer, media)| (answer, Some(media)))
        .inspect_err(|_| local.session_version -= 1)
}

/// Applies the peer's answer to our offer made from `local`.
pub fn process_answer(answer: &str, local: &LocalMedia) -> Result<NegotiatedMedia, SdpError> {
    let session = parse(answer)?;
    let stream = session
        .streams
        .iter()
        .find(|s| s.media.eq_ignore_ascii_case("audio"))
        .ok_or_else(|| SdpError::NotAcceptable("answer has no audio m-line".into()))?;
    if stream.port == 0 {
        return Err(SdpError::NotAcceptable(
            "peer rejected the audio stream (port 0)".into(),
        ));
    }
    // The answerer's first listed codec that we offered is the codec of the call.
    let (send_payload_type, codec) = stream
        .formats
        .iter()
        .find_map(|&pt| match stream.format(pt) {
            Some(Format::Audio(c)) if local.codecs.contains(&c) => Some((pt, c)),
            _ => None,
        })
        .ok_or_else(|| SdpError::NotAcceptable("answer has no codec we offered".into()))?;
    let recv_payload_type = codec.static_payload_type().unwrap_or(OPUS_PT);
    let offered = offered_crypto();
    let answered = stream
        .crypto
        .iter()
        .find(|c| offered.contains(&(c.tag, c.suite)));
    let srtp = match (local.srtp, answered) {
        (SrtpPolicy::Off, _) => None,
        (_, Some(c)) => Some(SrtpKeys {
            suite: c.suite,
            send: local.srtp_key.clone(),
            recv: c.key.clone(),
        }),
        (SrtpPolicy::Optional, None) => None,
        (SrtpPolicy::Required, None) => {
            return Err(SdpError::NotAcceptable(
                "SRTP is required and the answer has no a=crypto we offered".into(),
            ));
        }
    };
    let dtmf_send = stream.dtmf_for(codec.clock_rate());
    let mut dtmf_recv = vec![DtmfFormat {
        payload_type: DTMF_8K_PT,
        clock_rate: 8000,
    }];
    if local.codecs.contains(&Codec::Opus) {
        dtmf_recv.push(DtmfFormat {
            payload_type: DTMF_48K_PT,
            clock_rate: 48000,
        });
    }
    Ok(NegotiatedMedia {
        codec,
        send_payload_type,
        recv_payload_type,
        dtmf_send,
        dtmf_recv,
        remote_rtp: stream.rtp_addr(),
        remote_rtcp: stream.rtcp_addr(),
        ptime_ms: stream.send_ptime(codec, local.ptime_ms),
        direction: local.direction.answer_to(stream.effective_direction()),
        srtp,
    })
}

/// A stream we take: its negotiation, the formats our answer lists for it and the `a=crypto`
/// line we answer.
type Accepted = (NegotiatedMedia, Vec<(u8, Format)>, Vec<(u32, Suite)>);

/// The keys of an offered stream under our policy: `Ok(None)` for plain RTP, an error (the
/// stream is refused) when the offer and the policy do not meet.
fn offered_srtp(stream: &Stream, policy: SrtpPolicy) -> Result<Option<&Crypto>, String> {
    let savp = matches!(
        stream.proto.to_ascii_uppercase().as_str(),
        "RTP/SAVP" | "RTP/SAVPF"
    );
    // Best-effort offers (RTP/AVP with keys) are taken as SRTP when SRTP is on.
    match (policy, savp, stream.crypto.first()) {
        (SrtpPolicy::Off, true, _) => Err(format!("{} offered and SRTP is off", stream.proto)),
        (SrtpPolicy::Off, false, _) => Ok(None),
        (_, _, Some(c)) => Ok(Some(c)),
        (_, true, None) => Err("no usable a=crypto (a suite we have, no MKI)".into()),
        (SrtpPolicy::Required, false, None) => Err("plain RTP offered and SRTP is required".into()),
        (SrtpPolicy::Optional, false, None) => Ok(None),
    }
}

fn negotiate_stream(stream: &Stream, local: &LocalMedia) -> Result<Accepted, String> {
    if !stream.media.eq_ignore_ascii_case("audio") {
        return Err(format!("media {} not supported", stream.media));
    }
    if stream.port == 0 {
        return Err("stream disabled (port 0)".into());
    }
    if !matches!(
        stream.proto.to_ascii_uppercase().as_str(),
        "RTP/AVP" | "RTP/AVPF" | "RTP/SAVP" | "RTP/SAVPF"
    ) {
        return Err(format!("transport {} not supported", stream.proto));
    }
    let crypto = offered_srtp(stream, local.srtp)?;
    let (payload_type, codec) = local
        .codecs
        .iter()
        .find_map(|&wanted| {
            stream
                .formats
                .iter()
                .find_map(|&pt| match stream.format(pt) {
                    Some(Format::Audio(c)) if c == wanted => Some((pt, c)),
                    _ => None,
                })
        })
        .ok_or_else(|| format!("no common codec in formats [{}]", stream.fmt))?;
    let dtmf = stream.dtmf_for(codec.clock_rate());
    let mut formats = vec![(payload_type, Format::Audio(codec))];
    if let Some(d) = dtmf {
        formats.push((d.payload_type, Format::Dtmf(d.clock_rate)));
    }
    let media = NegotiatedMedia {
        codec,
        send_payload_type: payload_type,
        recv_payload_type: payload_type,
        dtmf_send: dtmf,
        dtmf_recv: dtmf.into_iter().collect(),
        remote_rtp: stream.rtp_addr(),
        remote_rtcp: stream.rtcp_addr(),
        ptime_ms: stream.send_ptime(codec, local.ptime_ms),
        direction: local.direction.answer_to(stream.effective_direction()),
        srtp: crypto.map(|c| SrtpKeys {
            suite: c.suite,
            send: local.srtp_key.clone(),
            recv: c.key.clone(),
        }),
    };
    let answer_crypto = crypto.map(|c| (c.tag, c.suite)).into_iter().collect();
    Ok((media, formats, answer_crypto))
}
