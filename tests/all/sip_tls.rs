//! SIP over TLS with a real peer (baresip, which links OpenSSL): calls in to our TLS listener
//! with audio both ways, and calls out from us to a TLS peer whose certificate we verify against
//! the configured CA, refusing one signed by another CA.

use std::time::Duration;

use serde_json::json;

use crate::support::api::Api;
use crate::support::baresip::Baresip;
use crate::support::calls::{AudioCheck, audio_both_ways};
use crate::support::host::Host;
use crate::support::model_tls::{TestCerts, have_openssl};
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
