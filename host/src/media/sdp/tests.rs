//! Offer/answer tests against real-world SDP (FreeSWITCH, Asterisk, hold, re-INVITEs, bad input).

use super::parse::parse;
use super::*;
use crate::media::srtp::Suite;

fn local(codecs: &[Codec]) -> LocalMedia {
    LocalMedia::new("192.0.2.10".parse().unwrap(), 40000, codecs.to_vec(), 42)
}

const FREESWITCH_OFFER: &str = "v=0\r\n\
o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7\r\n\
s=FreeSWITCH\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 24580 RTP/AVP 9 0 8 101 13\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:13 CN/8000\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:24581 IN IP4 198.51.100.7\r\n";

// Asterisk putting us on hold: legacy zero address plus sendonly, no rtpmap for static PTs.
const ASTERISK_HOLD: &str = "v=0\n\
o=- 1234 1236 IN IP4 203.0.113.5\n\
s=Asterisk\n\
c=IN IP4 0.0.0.0\n\
t=0 0\n\
m=audio 17890 RTP/AVP 8 0 101\n\
a=rtpmap:101 telephone-event/8000\n\
a=fmtp:101 0-16\n\
a=ptime:20\n\
a=maxptime:150\n\
a=sendonly\n";

const BARESIP_OFFER: &str = "v=0\r\n\
o=- 3891 1952 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
a=tool:baresip 1.0.0\r\n\
m=audio 10262 RTP/AVP 96 0 8 120\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:120 telephone-event/8000\r\n\
a=fmtp:120 0-15\r\n\
a=rtcp-rsize\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=ssrc:1298389212 cname:sip@127.0.0.1\r\n\
a=mid:1\r\n";

// SIPp's stock uac scenario body.
const SIPP_OFFER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

#[test]
fn asterisk_offer_where_pt_111_is_not_opus() {
    // Asterisk maps dynamic PT 111 to G726-32: only the rtpmap name counts.
    let offer = "v=0\r\no=- 1697029483 1697029483 IN IP4 192.168.1.10\r\ns=Asterisk\r\n\
c=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 10004 RTP/AVP 0 8 3 111 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:3 GSM/8000\r\n\
a=rtpmap:111 G726-32/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
a=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n";
    let (answer, media) = answer_offer(offer, &local(&[Codec::Opus, Codec::Pcmu])).unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
    assert!(answer.contains("m=audio 40000 RTP/AVP 0 101\r\n"));
}

#[test]
fn sipp_pcap_scenario_body_with_trailing_blank_line() {
    let offer = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n\r\n";
    let (_, media) = answer_offer(offer, &local(&[Codec::Pcmu, Codec::Pcma])).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 101,
            clock_rate: 8000
        })
    );
    assert_eq!(media.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));
}

#[test]
fn reoffers_bump_the_version_only_when_answered() {
    let mut ours = local(&[Codec::Pcma]);
    let (answer, media) = answer_reoffer(Some(ASTERISK_HOLD), &mut ours).unwrap();
    assert_eq!(ours.session_version, 2);
    assert!(answer.contains("o=switchboard 42 2 IN IP4"), "{answer}");
    assert!(media.is_some());
    assert_eq!(
        answer_reoffer(Some(SIPP_OFFER), &mut ours)
            .unwrap_err()
            .sip_status(),
        488
    );
    assert_eq!(ours.session_version, 2);
    let (offer, media) = answer_reoffer(None, &mut ours).unwrap();
    assert_eq!((offer, media), (create_offer(&ours), None));
}

#[test]
fn ipv6_offer_and_answer() {
    let offer = "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\n";
    let mut ours = local(&[Codec::Pcmu]);
    ours.address = "2001:db8::10".parse().unwrap();
    let (answer, media) = answer_offer(offer, &ours).unwrap();
    assert_eq!(
        media.remote_rtp,
        Some("[2001:db8::5]:5004".parse().unwrap())
    );
    assert!(answer.contains("c=IN IP6 2001:db8::10\r\n"), "{answer}");
    let bad = offer.replace("2001:db8::5\r\nt=", "not-an-address\r\nt=");
    assert_eq!(answer_offer(&bad, &ours).unwrap_err().sip_status(), 400);
}

#[test]
fn answers_freeswitch_offer_with_our_preference_and_its_dtmf_pt() {
    let (answer, media) =
        answer_offer(FREESWITCH_OFFER, &local(&[Codec::Pcmu, Codec::Pcma])).unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
    assert_eq!(media.send_payload_type, 0);
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 101,
            clock_rate: 8000
        })
    );
    assert_eq!(
        media.remote_rtp,
        Some("198.51.100.7:24580".parse().unwrap())
    );
    assert_eq!(
        media.remote_rtcp,
        Some("198.51.100.7:24581".parse().unwrap())
    );
    assert_eq!(media.direction, Direction::SendRecv);
    assert_eq!(media.ptime_ms, 20);
    assert!(
        answer.contains("m=audio 40000 RTP/AVP 0 101\r\n"),
        "{answer}"
    );
    assert!(answer.contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert!(answer.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
    assert!(answer.contains("c=IN IP4 192.0.2.10\r\n"));
    assert!(answer.contains("a=sendrecv\r\n"));
    // Our own answer parses back.
    parse(&answer).unwrap();
}

#[test]
fn preference_list_decides_between_offered_codecs() {
    let (_, media) = answer_offer(
        FREESWITCH_OFFER,
        &local(&[Codec::Opus, Codec::Pcma, Codec::Pcmu]),
    )
    .unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!(media.send_payload_type, 8);
}

#[test]
fn legacy_hold_with_static_payload_types() {
    let (answer, media) = answer_offer(ASTERISK_HOLD, &local(&[Codec::Pcmu])).unwrap();
    assert_eq!(media.codec, Codec::Pcmu, "PT 0 without rtpmap is PCMU");
    assert_eq!(media.remote_rtp, None);
    assert_eq!(media.direction, Direction::Inactive);
    assert!(answer.contains("a=inactive\r\n"));
}

#[test]
fn sendonly_hold_is_answered_recvonly_and_resume_sendrecv() {
    let hold = SIPP_OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
    );
    let (answer, media) = answer_offer(&hold, &local(&[Codec::Pcmu])).unwrap();
    assert_eq!(media.direction, Direction::RecvOnly);
    assert!(answer.contains("a=recvonly\r\n"));
    let inactive = SIPP_OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=inactive\r\n",
    );
    assert_eq!(
        answer_offer(&inactive, &local(&[Codec::Pcmu]))
            .unwrap()
            .1
            .direction,
        Direction::Inactive
    );
    let recvonly = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    assert_eq!(
        answer_offer(&recvonly, &local(&[Codec::Pcmu]))
            .unwrap()
            .1
            .direction,
        Direction::SendOnly,
        "session-level direction applies"
    );
    let (_, resumed) = answer_offer(SIPP_OFFER, &local(&[Codec::Pcmu])).unwrap();
    assert_eq!(resumed.direction, Direction::SendRecv);
}

#[test]
fn baresip_opus_offer_with_dtmf_pt_120_at_8k() {
    let (answer, media) = answer_offer(BARESIP_OFFER, &local(&[Codec::Opus, Codec::Pcmu])).unwrap();
    assert_eq!(media.codec, Codec::Opus);
    assert_eq!(media.send_payload_type, 96);
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 120,
            clock_rate: 8000
        })
    );
    assert!(
        answer.contains("m=audio 40000 RTP/AVP 96 120\r\n"),
        "{answer}"
    );
    assert!(answer.contains("a=rtpmap:96 opus/48000/2\r\n"));
    assert!(answer.contains("a=fmtp:96 minptime=10;useinbandfec=1\r\n"));
}

#[test]
fn sipp_offer_and_unknown_ptime_fallback() {
    let odd = SIPP_OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=ptime:30\r\n",
    );
    let (_, media) = answer_offer(&odd, &local(&[Codec::Pcmu])).unwrap();
    assert_eq!(media.ptime_ms, 30);
    assert_eq!(media.dtmf_send, None);
    let bad = SIPP_OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=ptime:250\r\n",
    );
    assert_eq!(
        answer_offer(&bad, &local(&[Codec::Pcmu]))
            .unwrap()
            .1
            .ptime_ms,
        20
    );
}

#[test]
fn nothing_in_common_is_488() {
    let err = answer_offer(FREESWITCH_OFFER, &local(&[Codec::Opus])).unwrap_err();
    assert!(matches!(err, SdpError::NotAcceptable(_)));
    assert_eq!(err.sip_status(), 488);
    let srtp = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP");
    assert_eq!(
        answer_offer(&srtp, &local(&[Codec::Pcmu]))
            .unwrap_err()
            .sip_status(),
        488
    );
    let disabled = SIPP_OFFER.replace("m=audio 6000", "m=audio 0");
    assert_eq!(
        answer_offer(&disabled, &local(&[Codec::Pcmu]))
            .unwrap_err()
            .sip_status(),
        488
    );
    let garbage = answer_offer("hello", &local(&[Codec::Pcmu])).unwrap_err();
    assert_eq!(garbage.sip_status(), 400);
}

#[test]
fn extra_streams_are_answered_with_port_zero_in_order() {
    let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio 5002 RTP/SAVP 0\r\n\
m=audio 5004 RTP/AVP 18 0\r\nc=IN IP4 10.0.0.2\r\n\
m=audio 5006 RTP/AVP 0\r\n";
    let (answer, media) = answer_offer(offer, &local(&[Codec::Pcmu])).unwrap();
    assert_eq!(media.remote_rtp, Some("10.0.0.2:5004".parse().unwrap()));
    let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m_lines,
        [
            "m=video 0 RTP/AVP 96",
            "m=audio 0 RTP/SAVP 0",
            "m=audio 40000 RTP/AVP 0",
            "m=audio 0 RTP/AVP 0"
        ]
    );
}

#[test]
fn offer_then_answer_roundtrip() {
    let mut ours = local(&[Codec::Opus, Codec::Pcmu, Codec::Pcma]);
    let offer = create_offer(&ours);
    assert!(
        offer.contains("m=audio 40000 RTP/AVP 111 0 8 101 102\r\n"),
        "{offer}"
    );
    assert!(offer.contains("a=rtpmap:102 telephone-event/48000\r\n"));
    // The peer answers our offer as our own answerer would (its preference: PCMA).
    let mut peer = local(&[Codec::Pcma]);
    peer.address = "192.0.2.99".parse().unwrap();
    peer.port = 30000;
    let (answer, peer_view) = answer_offer(&offer, &peer).unwrap();
    assert_eq!(peer_view.codec, Codec::Pcma);
    let media = process_answer(&answer, &ours).unwrap();
    assert_eq!(media.codec, Codec::Pcma);
    assert_eq!((media.send_payload_type, media.recv_payload_type), (8, 8));
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 101,
            clock_rate: 8000
        })
    );
    assert_eq!(media.remote_rtp, Some("192.0.2.99:30000".parse().unwrap()));
    assert_eq!(media.remote_rtcp, Some("192.0.2.99:30001".parse().unwrap()));
    // Hold: we offer sendonly, the peer answers recvonly.
    ours.direction = Direction::SendOnly;
    ours.session_version += 1;
    let hold_offer = create_offer(&ours);
    assert!(hold_offer.contains("o=switchboard 42 2 IN IP4"));
    let (hold_answer, peer_hold) = answer_offer(&hold_offer, &peer).unwrap();
    assert_eq!(peer_hold.direction, Direction::RecvOnly);
    assert_eq!(
        process_answer(&hold_answer, &ours).unwrap().direction,
        Direction::SendOnly
    );
}

#[test]
fn answer_with_different_dynamic_pt_is_honoured() {
    let ours = local(&[Codec::Opus]);
    let answer = "v=0\r\no=- 5 5 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n\
m=audio 7000 RTP/AVP 98 100\r\na=rtpmap:98 OPUS/48000/2\r\na=rtpmap:100 telephone-event/48000\r\na=ptime:40\r\n";
    let media = process_answer(answer, &ours).unwrap();
    assert_eq!(
        (media.send_payload_type, media.recv_payload_type),
        (98, 111)
    );
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 100,
            clock_rate: 48000
        })
    );
    assert_eq!(media.ptime_ms, 40);
    let rejected = answer.replace("m=audio 7000", "m=audio 0");
    assert_eq!(
        process_answer(&rejected, &ours).unwrap_err().sip_status(),
        488
    );
}

/// An offer with `proto` and `crypto` lines (RFC 4568 §9.1 examples' shape).
fn srtp_offer(proto: &str, crypto: &[&str]) -> String {
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
         m=audio 30000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    for c in crypto {
        sdp.push_str(&format!("a=crypto:{c}\r\n"));
    }
    sdp
}

const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

#[test]
fn srtp_policy_matrix_for_offers() {
    let sha80 = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20");
    let sha32_only = format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}");
    let mki = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4");
    let unknown = format!("2 AES_256_CM_HMAC_SHA1_80 inline:{KEY}");
    let plain = srtp_offer("RTP/AVP", &[]);
    let best_effort = srtp_offer("RTP/AVP", &[&sha80]);
    let savp = srtp_offer("RTP/SAVP", &[&unknown, &sha80]);
    let savp32 = srtp_offer("RTP/SAVP", &[&sha32_only]);
    let savp_mki = srtp_offer("RTP/SAVP", &[&mki]);

    // (policy, offer) → None: refused with 488; Some(srtp?)
    let cases = [
        (SrtpPolicy::Off, &plain, Some(false)),
        (SrtpPolicy::Off, &best_effort, Some(false)),
        (SrtpPolicy::Off, &savp, None),
        (SrtpPolicy::Optional, &plain, Some(false)),
        (SrtpPolicy::Optional, &best_effort, Some(true)),
        (SrtpPolicy::Optional, &savp, Some(true)),
        (SrtpPolicy::Required, &plain, None),
        (SrtpPolicy::Required, &best_effort, Some(true)),
        (SrtpPolicy::Required, &savp, Some(true)),
        (SrtpPolicy::Required, &savp32, Some(true)),
        (SrtpPolicy::Required, &savp_mki, None),
    ];
    for (policy, offer, expected) in cases {
        let mut l = local(&[Codec::Pcmu]);
        l.srtp = policy;
        let result = answer_offer(offer, &l);
        match expected {
            None => {
                let e = result.expect_err(&format!("{policy:?} refuses {offer}"));
                assert_eq!(e.sip_status(), 488);
            }
            Some(srtp) => {
                let (answer, media) = result.unwrap();
                assert_eq!(media.srtp.is_some(), srtp, "{policy:?}: {offer}");
                assert_eq!(answer.contains("a=crypto:"), srtp, "{answer}");
                let proto = offer.split("m=audio 30000 ").nth(1).unwrap();
                let proto = proto.split(' ').next().unwrap();
                assert!(
                    answer.contains(&format!("m=audio 40000 {proto} ")),
                    "{answer}"
                );
                if let Some(keys) = media.srtp {
                    assert_eq!(keys.send, l.srtp_key);
                    // The answer takes the offer's tag and suite, with our key.
                    let line = answer.lines().find(|l| l.starts_with("a=crypto:")).unwrap();
                    let tag_suite = match keys.suite {
                        Suite::AesCm128HmacSha1_80 => "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
                        Suite::AesCm128HmacSha1_32 => "a=crypto:3 AES_CM_128_HMAC_SHA1_32",
                    };
                    assert!(line.starts_with(tag_suite), "{line}");
                    assert!(line.ends_with(&l.srtp_key.inline()), "{line}");
                }
            }
        }
    }
}

#[test]
fn srtp_offers_and_answers_we_make() {
    let mut l = local(&[Codec::Pcmu]);
    l.srtp = SrtpPolicy::Required;
    let offer = create_offer(&l);
    assert!(offer.contains("m=audio 40000 RTP/SAVP "), "{offer}");
    assert!(offer.contains(&format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}",
        l.srtp_key.inline()
    )));
    assert!(offer.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
    l.srtp = SrtpPolicy::Optional;
    assert!(create_offer(&l).contains("m=audio 40000 RTP/AVP "));

    let answer_with = |crypto: &[&str]| srtp_offer("RTP/SAVP", crypto);
    let peer = format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}");
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Required] {
        l.srtp = policy;
        let media = process_answer(&answer_with(&[&peer]), &l).unwrap();
        let keys = media.srtp.unwrap();
        assert_eq!(keys.suite, Suite::AesCm128HmacSha1_32);
        assert_eq!(
            keys.recv,
            crate::media::srtp::MasterKey::from_inline(KEY).unwrap()
        );
    }
    // A plain answer: fine when SRTP is optional, refused when it is required.
    l.srtp = SrtpPolicy::Optional;
    assert!(
        process_answer(&answer_with(&[]), &l)
            .unwrap()
            .srtp
            .is_none()
    );
    l.srtp = SrtpPolicy::Required;
    assert_eq!(
        process_answer(&answer_with(&[]), &l)
            .unwrap_err()
            .sip_status(),
        488
    );
    // A tag we did not offer is no answer to our offer.
    let stray = format!("7 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
    assert!(process_answer(&answer_with(&[&stray]), &l).is_err());
}

/// G.722 as FreeSWITCH and desk phones offer it: static PT 9 declared `G722/8000` (RFC 3551
/// §4.5.2), answered in kind with telephone-event at the same 8000 clock; and our own offer
/// and the answer to it.
#[test]
fn g722_at_its_8000_sdp_clock_both_ways() {
    let (answer, media) =
        answer_offer(FREESWITCH_OFFER, &local(&[Codec::G722, Codec::Pcmu])).unwrap();
    assert_eq!(media.codec, Codec::G722);
    assert_eq!((media.send_payload_type, media.recv_payload_type), (9, 9));
    assert_eq!(
        media.dtmf_send,
        Some(DtmfFormat {
            payload_type: 101,
            clock_rate: 8000
        })
    );
    assert!(
        answer.contains("m=audio 40000 RTP/AVP 9 101\r\n"),
        "{answer}"
    );
    assert!(answer.contains("a=rtpmap:9 G722/8000\r\n"), "{answer}");
    // Without an rtpmap, PT 9 is G.722 by its static assignment.
    let bare = SIPP_OFFER
        .replace("RTP/AVP 0", "RTP/AVP 9")
        .replace("a=rtpmap:0 PCMU/8000\r\n", "");
    let (_, media) = answer_offer(&bare, &local(&[Codec::Pcmu, Codec::G722])).unwrap();
    assert_eq!(media.codec, Codec::G722);

    let ours = local(&[Codec::G722, Codec::Pcmu]);
    let offer = create_offer(&ours);
    assert!(
        offer.contains("m=audio 40000 RTP/AVP 9 0 101\r\n"),
        "{offer}"
    );
    assert!(offer.contains("a=rtpmap:9 G722/8000\r\n"), "{offer}");
    let (answer, _) = answer_offer(&offer, &local(&[Codec::G722])).unwrap();
    let media = process_answer(&answer, &ours).unwrap();
    assert_eq!(media.codec, Codec::G722);
    assert_eq!(media.dtmf_send.map(|d| d.clock_rate), Some(8000));
}

/// Fuzz-target inputs (fuzz/corpus/sdp/telephone_event_0, telephone_event_huge): the negotiated
/// clock reached the DTMF receiver, which divides by it, and the sender, which multiplies it
/// by the packet time. Such a telephone-event is not taken; the audio still is.
#[test]
fn telephone_event_at_a_clock_of_zero_or_beyond_telephony_is_not_taken() {
    for clock in ["0", "4294967295", "96000"] {
        let offer = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/{clock}\r\n"
        );
        let (answer, media) = answer_offer(&offer, &local(&[Codec::Pcmu])).unwrap();
        assert_eq!(media.codec, Codec::Pcmu, "{clock}");
        assert_eq!(
            (media.dtmf_send, media.dtmf_recv),
            (None, vec![]),
            "{clock}"
        );
        assert!(answer.contains("m=audio 40000 RTP/AVP 0\r\n"), "{answer}");
    }
}
