//! Web calls at the HTTP level (issue 27): what the offer endpoints answer to good and bad
//! offers, call tickets (missing, forged, expired, for another number, used up), CORS for the
//! widget's origin, the limit on web calls, and the control API's absence on the public
//! listener. An offer that is answered but never connected ends its call with the reason.
//! (Media with a real browser: webrtc_browser.rs; with a str0m client: the load generator.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::{Api, ended, find};
use crate::support::host::Host;
use crate::support::ports::{Ports, ports};

/// An origin the host lets start web calls.
const PAGE_ORIGIN: &str = "http://127.0.0.1:8123";

/// A browser's offer as Chromium writes it (a data channel, one host candidate) with `m_line`
/// and `rtpmaps` as its audio.
fn offer_with(m_line: &str, rtpmaps: &str) -> String {
    let ice = "a=ice-ufrag:Zq9b\r\na=ice-pwd:b0Nx5qM7m8p6rL2eT4yWcV1k\r\na=ice-options:trickle\r\n\
               a=fingerprint:sha-256 8E:2A:0B:6F:31:C4:9D:55:7A:E0:12:3C:BB:48:90:DE:71:0F:A6:2C:\
               5E:83:94:D1:07:BE:6A:3F:C8:25:E9:44\r\na=setup:actpass\r\n";
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         {m_line}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0\r\n{ice}\
         a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n{rtpmaps}a=ssrc:1001 cname:web\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n{ice}\
         a=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    )
}

/// Chromium's audio: Opus, PCMU, telephone-event.
fn offer() -> String {
    offer_with(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126",
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n",
    )
}

/// The offer with only a data channel.
fn offer_without_audio() -> String {
    let full = offer();
    let data = full.find("m=application").unwrap();
    let audio = full.find("m=audio").unwrap();
    format!("{}{}", &full[..audio], &full[data..]).replace("BUNDLE 0 1", "BUNDLE 1")
}

struct Web {
    host: Host,
    api: Api,
    public: String,
    client: reqwest::Client,
    /// The UDP ports of web calls and the public listener's, held while the host runs.
    _ports: (Ports, Ports),
}

/// The host with the offline provider, menu on 1000 and receptionist on 2000, web calls on
/// (at most `max_calls`, 2 s to connect) and a public listener.
fn start(max_calls: usize) -> Web {
    let udp = ports(8);
    let public = ports(1);
    let host = Host::builder()
        .examples(&["menu", "receptionist"])
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{0}\"\npublic-url = \"http://127.0.0.1:{0}\"",
            public.first()
        ))
        .config(&format!(
            "[webrtc]\npublic-ip = \"127.0.0.1\"\nports = [{}, {}]\nmax-calls = {max_calls}\n\
             connect-timeout-secs = 2\nallowed-origins = [\"{PAGE_ORIGIN}\"]\n",
            udp.first(),
            udp.last()
        ))
        .start();
    let api = Api::new(host.http, None);
    Web {
        public: format!("http://127.0.0.1:{}", public.first()),
        host,
        api,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _ports: (udp, public),
    }
}

/// What a public POST of an offer got: status, body, headers.
struct Answer {
    status: u16,
    text: String,
    headers: reqwest::header::HeaderMap,
}

impl Web {
    async fn public_offer(
        &self,
        number: &str,
        ticket: Option<&str>,
        origin: Option<&str>,
    ) -> Answer {
        let mut rb = self
            .client
            .post(format!("{}/webrtc/{number}", self.public))
            .header("content-type", "application/sdp")
            .body(offer());
        if let Some(t) = ticket {
            rb = rb.bearer_auth(t);
        }
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        let resp = rb.send().await.unwrap();
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    async fn ticket(&self, body: Value) -> String {
        let r = self.api.post("/v1/webrtc/tickets", &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["number"], body["number"]);
        r.json["ticket"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_offers_are_answered_or_refused_with_the_reason() {
    let web = start(10);
    let api = &web.api;

    // A good offer (with the page's metadata for the agent): an ICE-lite answer with our one
    // candidate, and the call it started.
    let resp = web
        .client
        .post(format!("http://{}/v1/webrtc/2000", web.host.http))
        .header("content-type", "application/sdp")
        .header("x-switchboard-metadata", r#"{"page":"pricing"}"#)
        .body(offer())
        .send()
        .await
        .unwrap();
    let r = crate::support::api::Reply {
        status: resp.status().as_u16(),
        content_type: resp.headers()["content-type"].to_str().unwrap().to_string(),
        text: resp.text().await.unwrap(),
        json: Value::Null,
        etag: None,
    };
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.content_type, "application/sdp");
    assert!(r.text.contains("a=ice-lite"), "{}", r.text);
    assert!(r.text.contains("opus/48000/2"), "{}", r.text);
    assert!(r.text.contains("a=fingerprint:sha-256"), "{}", r.text);
    assert!(r.text.contains("webrtc-datachannel"), "{}", r.text);
    let candidate = r
        .text
        .lines()
        .find(|l| l.starts_with("a=candidate"))
        .unwrap();
    assert!(
        candidate.contains(" 127.0.0.1 ") && candidate.contains("typ host"),
        "{candidate}"
    );

    // Nobody connects: the call ends once the connect time is over, saying why.
    let calls = api
        .poll(
            "/v1/calls?agent=receptionist",
            Duration::from_secs(20),
            |b| b["calls"][0]["ended_at_ms"].is_number(),
        )
        .await;
    let id = calls["calls"][0]["id"].as_str().unwrap();
    let events = ended(api, id).await;
    assert_eq!(
        find(&events, "created")[0]["metadata"],
        json!({"page": "pricing"}),
        "{events:?}"
    );
    assert_eq!(
        find(&events, "created")[0]["transport"],
        "webrtc",
        "{events:?}"
    );
    let ended = find(&events, "ended");
    assert!(
        ended[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not connect"),
        "{ended:?}"
    );

    // Offers that cannot be answered.
    for (offer, status, why) in [
        ("v=0\r\nm=nonsense".to_string(), 400, "malformed SDP"),
        (offer_without_audio(), 400, "no audio"),
        (
            offer_with("m=audio 9 UDP/TLS/RTP/SAVPF 9", "a=rtpmap:9 G722/8000\r\n"),
            400,
            "no common audio codec",
        ),
    ] {
        let r = api
            .post_raw("/v1/webrtc/2000", "application/sdp", &offer)
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert!(r.text.contains(why), "{}", r.text);
    }
    let r = api
        .post_raw("/v1/webrtc/9999", "application/sdp", &offer())
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // The public listener: never the control API, and web calls only with a ticket.
    let get = |path: &str| web.client.get(format!("{}{path}", web.public)).send();
    assert_eq!(get("/v1/calls").await.unwrap().status(), 404);
    let r = web
        .client
        .post(format!("{}/v1/webrtc/1000", web.public))
        .body(offer())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = web.public_offer("1000", None, None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = web
        .public_offer("1000", Some("wt1.forged.ticket"), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // A ticket for 1000: refused for 2000, good once for 1000, then used up.
    let ticket = web.ticket(json!({"number": "1000"})).await;
    let r = web.public_offer("2000", Some(&ticket), None).await;
    assert_eq!(
        (r.status, r.text.trim()),
        (403, "the ticket is for another number")
    );
    let r = web
        .public_offer("1000", Some(&ticket), Some(PAGE_ORIGIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["access-control-allow-origin"], PAGE_ORIGIN);
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-switchboard-call-id")
    );
    assert!(
        r.headers["x-switchboard-call-id"]
            .to_str()
            .unwrap()
            .starts_with('c')
    );
    let r = web.public_offer("1000", Some(&ticket), None).await;
    assert_eq!(
        (r.status, r.text.trim()),
        (403, "the ticket has been used for all its calls")
    );

    // An expired ticket.
    let short = web.ticket(json!({"number": "1000", "ttl-secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = web.public_offer("1000", Some(&short), None).await;
    assert_eq!((r.status, r.text.trim()), (403, "the ticket has expired"));

    // Tickets are minted only for numbers an agent serves, within the limits.
    let r = api
        .post("/v1/webrtc/tickets", &json!({"number": "9999"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api
        .post(
            "/v1/webrtc/tickets",
            &json!({"number": "1000", "ttl-secs": 999999}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = api
        .post(
            "/v1/webrtc/tickets",
            &json!({"number": "1000", "calls": 2, "concurrent": 3}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // CORS: the configured origin may ask, another may not, nor post.
    let preflight = |origin: &'static str| {
        web.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/webrtc/1000", web.public),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight(PAGE_ORIGIN).await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE_ORIGIN);
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(
        preflight("http://evil.example").await.unwrap().status(),
        403
    );
    let other = web.ticket(json!({"number": "1000"})).await;
    let r = web
        .public_offer("1000", Some(&other), Some("http://evil.example"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // …and that refusal did not use the ticket up.
    let r = web
        .public_offer("1000", Some(&other), Some(PAGE_ORIGIN))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    drop(web.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_calls_beyond_the_limit_are_refused_and_off_without_the_section() {
    let web = start(2);
    for _ in 0..2 {
        let r = web
            .api
            .post_raw("/v1/webrtc/1000", "application/sdp", &offer())
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = web
        .api
        .post_raw("/v1/webrtc/1000", "application/sdp", &offer())
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.text.contains("too many web calls"), "{}", r.text);
    // The two unconnected calls end after their 2 s; then there is room again.
    let api = &web.api;
    api.poll("/v1/calls?agent=menu", Duration::from_secs(20), |b| {
        b["calls"]
            .as_array()
            .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["ended_at_ms"].is_number()))
    })
    .await;
    let r = web
        .api
        .post_raw("/v1/webrtc/1000", "application/sdp", &offer())
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    drop(web);

    let host = Host::builder().examples(&["menu"]).start();
    let api = Api::new(host.http, None);
    let r = api
        .post_raw("/v1/webrtc/1000", "application/sdp", &offer())
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("[webrtc]"), "{}", r.text);
}
