//! SIP over TLS with a real peer (baresip, which links OpenSSL): calls in to our TLS listener
//! with audio both ways, and calls out from us to a TLS peer whose certificate we verify against
//! the configured CA, refusing one signed by another CA; and registration over TLS with
//! kamailio's tls module (digest included).

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
    let mut ctrl = good.ctrl().await;
    let to = format!("sip:callee@127.0.0.1:{};transport=tls", good.sip_port + 1);
    let reply = api
        .post("/v1/calls", &json!({"to": to, "agent": "menu"}))
        .await;
    assert!(reply.status < 300, "{:?}", reply.json);
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
            .await
            .is_some(),
        "{}",
        good.log()
    );
    host.expect(&["Answered"], 10);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 20);

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

/// REGISTER over TLS to kamailio's TLS listener (digest included), with its certificate checked
/// against our CA; a registrar whose certificate another CA signed fails the registration with
/// the certificate error.
#[tokio::test]
async fn registers_over_tls_with_kamailio_and_refuses_a_foreign_certificate() {
    if !require("kamailio") || !require("kamcmd") || !have_openssl() {
        return;
    }
    let kamailio_tls = std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so");
    if !kamailio_tls.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kamailio-tls-modules is required under CI=true"
        );
        eprintln!("SKIP: kamailio-tls-modules is not installed");
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
