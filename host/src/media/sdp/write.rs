//! Writing SDP: the session header and one audio m-line with its attributes.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::media::codec::Codec;
use crate::media::srtp::{MasterKey, Suite};

use super::parse::Format;
use super::*;

pub(super) fn session_header(local: &LocalMedia) -> String {
    let ip = ip_words(local.address);
    format!(
        "v=0\r\no=switchboard {} {} IN {ip}\r\ns=switchboard\r\nc=IN {ip}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    )
}

pub(super) fn ip_words(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IP4 {v4}"),
        IpAddr::V6(v6) => format!("IP6 {v6}"),
    }
}

pub(super) fn write_media(
    sdp: &mut String,
    port: u16,
    proto: &str,
    formats: &[(u8, Format)],
    ptime_ms: u32,
    direction: Direction,
    crypto: &str,
) {
    let list: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    let _ = write!(sdp, "m=audio {port} {proto} {}\r\n", list.join(" "));
    for (pt, format) in formats {
        match format {
            Format::Audio(codec) => {
                let _ = write!(
                    sdp,
                    "a=rtpmap:{pt} {}/{}",
                    codec.encoding_name(),
                    codec.clock_rate()
                );
                if let Some(ch) = codec.rtpmap_channels() {
                    let _ = write!(sdp, "/{ch}");
                }
                sdp.push_str("\r\n");
                if *codec == Codec::Opus {
                    let _ = write!(sdp, "a=fmtp:{pt} minptime=10;useinbandfec=1\r\n");
                }
            }
            Format::Dtmf(clock) => {
                let _ = write!(
                    sdp,
                    "a=rtpmap:{pt} telephone-event/{clock}\r\na=fmtp:{pt} 0-16\r\n"
                );
            }
        }
    }
    sdp.push_str(crypto);
    let _ = write!(sdp, "a=ptime:{ptime_ms}\r\na={}\r\n", direction.as_str());
}

/// `a=crypto` lines (RFC 4568 §9.1) for these tags and suites, all with `key`.
pub(super) fn crypto_lines(crypto: &[(u32, Suite)], key: &MasterKey) -> String {
    let mut lines = String::new();
    for (tag, suite) in crypto {
        let _ = write!(
            lines,
            "a=crypto:{tag} {} inline:{}\r\n",
            suite.name(),
            key.inline()
        );
    }
    lines
}
