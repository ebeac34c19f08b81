//! Tests of the option parsers, direct URIs and WAV reading.

use super::args::{parse_dtmf_plan, parse_header};
use super::*;

#[test]
fn dtmf_plans() {
    assert_eq!(
        parse_dtmf_plan("2@4, 1@2.5,#*@10").unwrap(),
        DtmfPlan(vec![
            (Duration::from_millis(2500), "1".into()),
            (Duration::from_secs(4), "2".into()),
            (Duration::from_secs(10), "#*".into()),
        ])
    );
    assert_eq!(
        parse_dtmf_plan("a@0").unwrap().0,
        vec![(Duration::ZERO, "A".into())]
    );
    for bad in ["1", "@2", "x@1", "1@-1", "1@soon", "1@NaN"] {
        assert!(parse_dtmf_plan(bad).is_err(), "{bad}");
    }
}

#[test]
fn headers_and_uris() {
    assert_eq!(
        parse_header("X-Foo: bar baz").unwrap(),
        ("X-Foo".into(), "bar baz".into())
    );
    assert!(parse_header("no colon").is_err());
    assert!(parse_header("Bad Name: x").is_err());
    assert!(parse_header("X-A: x\r\nInjected: y").is_err());
    assert_eq!(
        direct_uri("1000@127.0.0.1:5060", None),
        "sip:1000@127.0.0.1:5060"
    );
    assert_eq!(
        direct_uri("sip:1000@127.0.0.1:5060", Some(Transport::Tcp)),
        "sip:1000@127.0.0.1:5060;transport=tcp"
    );
    assert_eq!(
        direct_uri("sip:a@h;transport=tcp", Some(Transport::Tcp)),
        "sip:a@h;transport=tcp"
    );
    assert_eq!(direct_uri("1000", None), "1000");
}

#[test]
fn wav_files_become_mono() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for (l, r) in [(1 << 22, 1 << 22), (-(1 << 22), 0), (0, 0)] {
        w.write_sample(l).unwrap();
        w.write_sample(r).unwrap();
    }
    w.finalize().unwrap();
    let (pcm, rate) = read_wav_mono(&path).unwrap();
    assert_eq!(rate, 44_100);
    assert_eq!(pcm, vec![16384, -8192, 0]);
    assert!(read_wav_mono(&dir.path().join("missing.wav")).is_err());
}
