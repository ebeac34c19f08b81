//! SIP over TLS with a real peer (baresip, which links OpenSSL): calls in to our TLS listener
//! with audio both ways, and calls out from us to a TLS peer whose certificate we verify against
//! the configured CA, refusing one signed by another CA; registration over TLS with kamailio's
//! tls module (digest included); and trunks against a rustls carrier edge: verified by their
//! configured name though dialled by address (SNI included), mutual TLS, our TLS port in the
//! Via, and expired or wrongly named certificates refused with the cause in the call's events.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::sip::{AccountConfig, RegistrationState, SipConfig, SipEndpoint, Transport};

use crate::support::api::Api;
use crate::support::baresip::Baresip;
use crate::support::calls::{AudioCheck, audio_both_ways};
use crate::support::consumer::test_config;
use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::model_tls::{TestCerts, have_openssl};
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::tls_peer::{PING, TlsPeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_in_over_tls_with_audio_both_ways() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let mut host = Host::builder()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .calls("codecs = [\"pcmu\"]\nrecord = true")
        .start();
    let run = AudioCheck::new("pcmu");
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1;transport=tls>;regint=0;audio_codecs=pcmu",
        &format!("module sndfile.so\nsip_cafile {}\n", certs.ca.display()),
        &run.mic,
    )
    .await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    audio_both_ways(&mut host, &phone, &uri, &run).await;
    let answered = host.expect(&["incoming call", "transport=tls"], 1);
    assert!(answered.contains("1000"), "{answered}");
}

/// A baresip that answers calls over TLS, presenting `certs`' leaf.
async fn tls_callee(certs: &TestCerts) -> Baresip {
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&certs.cert).unwrap(),
        std::fs::read_to_string(&certs.key).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("callee.pem");
    std::fs::write(&both, pem).unwrap();
    let phone = Baresip::start_with(
        "<sip:callee@127.0.0.1;transport=tls>;regint=0;answermode=auto;audio_codecs=pcmu",
        &format!("sip_certificate {}\n", both.display()),
    )
    .await;
    // baresip has read the file by the time its control port is up.
    drop(dir);
    phone
}

/// The SIP TLS listener's certificate renewed and reloaded by SIGHUP while a call over TLS runs:
/// the next handshake gets the new certificate, and the call (its dialog on the old
/// connection) goes on until the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_sighup_without_dropping_the_call() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let mut host = Host::builder()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .start();
    let phone = Baresip::start_with(
        "<sip:caller@127.0.0.1;transport=tls>;regint=0;audio_codecs=pcmu",
        &format!("sip_cafile {}\n", certs.ca.display()),
    )
    .await;
    let mut ctrl = phone.ctrl().await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    ctrl.dial(&uri, &phone).await;
    host.expect(&["Answered"], 10);
    certs
        .renew_and_reload(host.process.child.id(), host.tls_port)
        .await;
    // The call is still up a moment later, and ends when the caller hangs up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !host.log.seen.iter().any(|l| l.contains("call ended")),
        "the call stayed up"
    );
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);
}

/// The host calls `callee` over TLS through the API; the call is answered, then hung up.
async fn call_answered_over_tls(host: &mut Host, api: &Api, callee: &Baresip) {
    let mut ctrl = callee.ctrl().await;
    let to = format!("sip:callee@127.0.0.1:{};transport=tls", callee.sip_port + 1);
    let reply = api
        .post("/v1/calls", &json!({"to": to, "agent": "menu"}))
        .await;
    assert!(reply.status < 300, "{:?}", reply.json);
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
            .await
            .is_some(),
        "{}",
        callee.log()
    );
    host.expect(&["Answered"], 10);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_over_tls_verifies_the_peer_certificate() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let (trusted, stranger) = (TestCerts::make(), TestCerts::make());
    let mut host = Host::builder()
        .examples(&["menu"])
        .tls(&trusted.cert, &trusted.key)
        .sip(&format!(
            "tls-ca-file = {:?}",
            trusted.ca.display().to_string()
        ))
        .start();
    let api = Api::new(host.http, None);

    let good = tls_callee(&trusted).await;
    call_answered_over_tls(&mut host, &api, &good).await;

    // A peer whose certificate another CA signed is refused before any SIP is sent.
    let bad = tls_callee(&stranger).await;
    let to = format!("sip:callee@127.0.0.1:{};transport=tls", bad.sip_port + 1);
    let reply = api
        .post("/v1/calls", &json!({"to": to, "agent": "menu"}))
        .await;
    assert!(reply.status >= 400, "{:?}", reply.json);
    // Both CAs carry the same name, so the chain fails on its signature.
    host.expect(&["call event", "Ended", "invalid peer certificate"], 10);
    assert!(!bad.log().contains("INVITE"), "{}", bad.log());
}

/// `tls-insecure`, for lab PBXs: a certificate no configured CA signed is taken, and the
/// start-up log says that certificates are not verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_insecure_takes_any_certificate_and_says_so() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let (ours, stranger) = (TestCerts::make(), TestCerts::make());
    let mut host = Host::builder()
        .examples(&["menu"])
        .tls(&ours.cert, &ours.key)
        .sip(&format!(
            "tls-ca-file = {:?}\ntls-insecure = true",
            ours.ca.display().to_string()
        ))
        .start();
    host.expect(&["tls-insecure is set", "NOT verified"], 10);
    let api = Api::new(host.http, None);
    let callee = tls_callee(&stranger).await;
    call_answered_over_tls(&mut host, &api, &callee).await;
}

/// REGISTER over TLS to kamailio's TLS listener (digest included), with its certificate checked
/// against our CA; a registrar whose certificate another CA signed fails the registration with
/// the certificate error.
#[tokio::test]
async fn registers_over_tls_with_kamailio_and_refuses_a_foreign_certificate() {
    if !require("kamailio") || !require("kamcmd") || !have_openssl() {
        return;
    }
    if !Kamailio::has_tls() {
        return;
    }
    let (ours, registrar, stranger) = (TestCerts::make(), TestCerts::make(), TestCerts::make());
    let (kport, tls_port) = (free_port(), free_port());
    let kam = Kamailio::start_tls(kport, (tls_port, &registrar.cert, &registrar.key)).await;
    let account = AccountConfig {
        name: "pbx".into(),
        registrar: ([127, 0, 0, 1], tls_port).into(),
        aor: format!("sip:agent@127.0.0.1:{kport}"),
        auth_user: None,
        password: Some("agentpw".into()),
        transport: Transport::Tls,
        expires: 60,
        backoff_base_secs: 1,
        backoff_max_secs: 2,
        keepalive_secs: 0,
        timeout_secs: 2,
    };
    let config = |ca: &std::path::Path| SipConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(ours.cert.clone()),
        tls_key: Some(ours.key.clone()),
        tls_ca_file: Some(ca.to_path_buf()),
        accounts: vec![account.clone()],
        ..test_config()
    };

    let (ep, _events) = SipEndpoint::start(config(&registrar.ca)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !ep
            .registrations()
            .iter()
            .any(|r| r.state == RegistrationState::Registered)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dump = kam.ul_dump();
    assert!(
        dump.to_ascii_lowercase().contains("transport=tls"),
        "{:?}\n{dump}\n{}",
        ep.registrations(),
        kam.log()
    );
    ep.shutdown().await;

    let (ep, _events) = SipEndpoint::start(config(&stranger.ca)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = ep.registrations();
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(
        status[0].state != RegistrationState::Registered
            && error.contains("invalid peer certificate"),
        "{status:?}"
    );
    ep.shutdown().await;
}

/// An outbound call over TLS through kamailio's TLS listener, its certificate checked against
/// our CA: kamailio challenges the INVITE (407, digest), forwards it to baresip registered
/// over UDP, and our BYE returns through kamailio over the same TLS connection.
#[tokio::test]
async fn outbound_call_over_tls_through_kamailio_with_digest() {
    if !require("kamailio") || !require("baresip") || !require("kamcmd") || !have_openssl() {
        return;
    }
    if !Kamailio::has_tls() {
        return;
    }
    let registrar = TestCerts::make();
    let (kport, tls_port) = (free_port(), free_port());
    let kam = Kamailio::start_tls(kport, (tls_port, &registrar.cert, &registrar.key)).await;
    let cfg = SipConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(registrar.cert.clone()),
        tls_key: Some(registrar.key.clone()),
        tls_ca_file: Some(registrar.ca.clone()),
        ..test_config()
    };
    crate::sip_kamailio::call_bob_through(&kam, tls_port, Transport::Tls, cfg).await;
}

/// RFC 5626 §3.5.1 keep-alives over TLS: a registration sends the double-CRLF ping on its
/// connection every `keepalive-secs` (the registrar answers with a CRLF), and our listener
/// answers a caller's ping with the CRLF pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_keepalives_over_tls_both_ways() {
    if !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let registrar = TlsPeer::start(&certs.cert, &certs.key, None).await;
    let account = AccountConfig {
        name: "pbx".into(),
        registrar: ([127, 0, 0, 1], registrar.port).into(),
        aor: "sip:agent@127.0.0.1".into(),
        auth_user: None,
        password: None,
        transport: Transport::Tls,
        expires: 60,
        backoff_base_secs: 1,
        backoff_max_secs: 2,
        keepalive_secs: 1,
        timeout_secs: 2,
    };
    let (ep, _events) = SipEndpoint::start(SipConfig {
        tls_ca_file: Some(certs.ca.clone()),
        accounts: vec![account],
        ..test_config()
    })
    .await
    .unwrap();
    assert!(registrar.request("REGISTER", 10).await.is_some());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let pings = registrar
        .requests()
        .iter()
        .filter(|s| s.request == PING)
        .count();
    assert!((2..=5).contains(&pings), "{pings} pings in 3.5 s");
    assert_eq!(
        ep.registrations()[0].state,
        RegistrationState::Registered,
        "the pongs did not upset the registration"
    );
    ep.shutdown().await;

    let host = Host::builder()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .start();
    let mut tls = certs.connect(host.tls_port).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(PING.as_bytes()).await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut pong))
        .await
        .expect("a pong in time")
        .unwrap();
    assert_eq!(&pong, b"\r\n");
}

/// A trunk dialled by address (`outbound-proxy = 127.0.0.1:…`) whose certificate names only
/// `carrier.test` (its `domain`): the connection sends that name as SNI and verifies it, presents
/// the trunk's client certificate to a carrier that requires one, and the INVITE's Via names our
/// TLS listener. The same carrier reached by a trunk without the name, or presenting an expired
/// certificate, is refused before any SIP is sent: a log line and the call's `Ended` event say
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_over_tls_verify_the_configured_name_with_mutual_tls_and_refuse_bad_certificates() {
    if !require("espeak-ng") || !have_openssl() {
        return;
    }
    let (carrier_ca, our_ca, listener) = (TestCerts::make(), TestCerts::make(), TestCerts::make());
    let (cert, key) = carrier_ca.issue("carrier", "DNS:carrier.test", "serverAuth", None);
    let (expired_cert, expired_key) = carrier_ca.issue(
        "expired",
        "DNS:carrier.test",
        "serverAuth",
        Some(("200101000000Z", "200102000000Z")),
    );
    let (client_cert, client_key) =
        our_ca.issue("switchboard", "DNS:switchboard.test", "clientAuth", None);
    let carrier = TlsPeer::start(&cert, &key, Some(&our_ca.ca)).await;
    let expired = TlsPeer::start(&expired_cert, &expired_key, None).await;
    let trunk = |name: &str, port: u16, extra: &str| {
        format!(
            "[[sip.trunks]]\nname = \"{name}\"\noutbound-proxy = \"127.0.0.1:{port}\"\n\
             transport = \"tls\"\n{extra}\n"
        )
    };
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let mut host = Host::builder()
        .examples(&["menu"])
        .tls(&listener.cert, &listener.key)
        .sip(&format!("tls-ca-file = {}", path(&carrier_ca.ca)))
        .config(&format!(
            "{}{}{}",
            trunk(
                "carrier",
                carrier.port,
                &format!(
                    "domain = \"carrier.test\"\ntls-client-cert = {}\ntls-client-key = {}",
                    path(&client_cert),
                    path(&client_key)
                )
            ),
            trunk("by-address", carrier.port, ""),
            trunk("expired", expired.port, "domain = \"carrier.test\""),
        ))
        .start();
    let api = Api::new(host.http, None);
    let call = |trunk: &str| json!({"to": "5550100", "trunk": trunk, "agent": "menu"});

    let reply = api.post("/v1/calls", &call("carrier")).await;
    assert!(reply.status < 300, "{:?}", reply.json);
    let invite = carrier
        .request("INVITE", 10)
        .await
        .unwrap_or_else(|| panic!("no INVITE; handshakes refused: {:?}", carrier.refused()));
    assert_eq!(invite.sni.as_deref(), Some("carrier.test"), "SNI");
    assert!(invite.client_cert, "our client certificate was presented");
    let via = invite
        .request
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        via.starts_with(&format!("Via: SIP/2.0/TLS 127.0.0.1:{};", host.tls_port)),
        "the Via names our TLS listener: {via}"
    );
    assert!(
        invite.request.contains("@carrier.test"),
        "{}",
        invite.request
    );
    host.expect(&["call event", "Ended", "busy"], 10);

    // Dialled by address without a name: the certificate names carrier.test only.
    let reply = api.post("/v1/calls", &call("by-address")).await;
    assert!(reply.status >= 400, "{:?}", reply.json);
    host.expect(
        &["TLS connection refused", "by-address", "not valid for name"],
        10,
    );
    host.expect(
        &[
            "call event",
            "Ended",
            "abnormal: true",
            "not valid for name",
        ],
        10,
    );
    // The one INVITE above is all the carrier ever got.
    assert_eq!(
        carrier
            .requests()
            .iter()
            .filter(|s| s.request.starts_with("INVITE"))
            .count(),
        1
    );

    let reply = api.post("/v1/calls", &call("expired")).await;
    assert!(reply.status >= 400, "{:?}", reply.json);
    host.expect(
        &["TLS connection refused", "expired", "certificate expired"],
        10,
    );
    host.expect(
        &[
            "call event",
            "Ended",
            "invalid peer certificate",
            "certificate expired",
        ],
        10,
    );
    assert!(expired.requests().is_empty(), "{:?}", expired.requests());
}
