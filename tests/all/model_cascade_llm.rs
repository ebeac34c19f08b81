//! The cascade's chat completions client against the protocol-faithful fake
//! (support/fake_chat): streaming, tools, auth, typed errors, timeouts, cancellation.

use std::time::{Duration, Instant};

use crate::support::fake_chat::{FakeChat, Reply};
use serde_json::json;
use switchboard::model::cascade::llm::{
    ChatClient, FinishReason, LlmConfig, LlmEvent, LlmUsage, Message, ToolCall,
};
use switchboard::model::{ErrorKind, OpenAiAuth, ProviderError, Secret, ToolSpec};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn client(fake: &FakeChat, key: Option<&str>) -> ChatClient {
    ChatClient::new(LlmConfig {
        base_url: fake.url(),
        api_key: key.map(Secret::new),
        connect_timeout_ms: 3_000,
        stall_timeout_ms: 3_000,
        ..LlmConfig::default()
    })
    .unwrap()
}

fn ask(text: &str) -> Vec<Message> {
    vec![
        Message::System("You are Acme's phone agent. Be brief.".into()),
        Message::User(text.into()),
    ]
}

fn lookup_order() -> ToolSpec {
    ToolSpec {
        name: "lookup_order".into(),
        description: "Look up an order by id.".into(),
        parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}},
                           "required": ["order_id"]}),
    }
}

/// Every event until the channel closes, each with when it arrived.
async fn collect(mut events: mpsc::Receiver<LlmEvent>) -> Vec<(Instant, LlmEvent)> {
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(event)) => all.push((Instant::now(), event)),
            Ok(None) => return all,
            Err(_) => panic!("no end of the completion within {WAIT:?}: {all:?}"),
        }
    }
}

async fn events(events: mpsc::Receiver<LlmEvent>) -> Vec<LlmEvent> {
    collect(events).await.into_iter().map(|(_, e)| e).collect()
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

/// The only event must be a failure; returns it.
async fn failure(receiver: mpsc::Receiver<LlmEvent>) -> ProviderError {
    match events(receiver).await.as_slice() {
        [LlmEvent::Failed(error)] => error.clone(),
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[tokio::test]
async fn model_cascade_llm_text_deltas_arrive_in_order_before_the_end() {
    let fake = FakeChat::start().await;
    fake.push(
        Reply::text(&["Hel", "lo, how can", " I help?"])
            .with_usage(120, 18)
            .with_chunk_delay(150),
    );
    let client = ChatClient::new(LlmConfig {
        base_url: fake.url(),
        max_tokens: Some(200),
        temperature: Some(0.7),
        ..LlmConfig::default()
    })
    .unwrap();
    let got = collect(client.complete(ask("Hi"), &[])).await;

    let events: Vec<&LlmEvent> = got.iter().map(|(_, e)| e).collect();
    assert_eq!(
        events,
        [
            &LlmEvent::Text("Hel".into()),
            &LlmEvent::Text("lo, how can".into()),
            &LlmEvent::Text(" I help?".into()),
            &LlmEvent::Usage(LlmUsage {
                prompt_tokens: 120,
                completion_tokens: 18,
                cached_tokens: Some(0)
            }),
            &LlmEvent::Finished(FinishReason::Stop),
        ]
    );
    // Four more events follow the first text, each 150 ms later: it came as it was sent.
    let first_text_to_end = got[4].0 - got[0].0;
    assert!(
        first_text_to_end >= Duration::from_millis(400),
        "{first_text_to_end:?}"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "model": "gpt-4.1-mini",
            "messages": [
                {"role": "system", "content": "You are Acme's phone agent. Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 200,
            "temperature": 0.7,
        })
    );
}

#[tokio::test]
async fn model_cascade_llm_tool_call_streamed_in_fragments() {
    let fake = FakeChat::start().await;
    fake.push(Reply::tool_calls(vec![(
        "call_abc",
        "lookup_order",
        vec!["{\"order", "_id\":\"A1", "234\"}"],
    )]));
    let client = client(&fake, None);
    let got = events(client.complete(ask("Where is order A1234?"), &[lookup_order()])).await;
    assert_eq!(
        got[0],
        LlmEvent::ToolCall(call("call_abc", "lookup_order", "{\"order_id\":\"A1234\"}"))
    );
    assert!(matches!(got[1], LlmEvent::Usage(_)), "{got:?}");
    assert_eq!(got[2], LlmEvent::Finished(FinishReason::ToolCalls));
    assert_eq!(got.len(), 3);

    let body = &fake.requests()[0].body;
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "lookup_order", "description": "Look up an order by id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                           "required": ["order_id"]}}}])
    );
    assert_eq!(body["tool_choice"], "auto");
}

#[tokio::test]
async fn model_cascade_llm_parallel_tool_calls_interleaved() {
    let fake = FakeChat::start().await;
    fake.push(Reply::tool_calls(vec![
        ("call_1", "lookup_order", vec!["{\"order_id\"", ":\"A1\"}"]),
        (
            "call_2",
            "lookup_order",
            vec!["{\"order_id\"", ":\"B2\"", "}"],
        ),
    ]));
    let client = client(&fake, None);
    let got = events(client.complete(ask("Orders A1 and B2?"), &[lookup_order()])).await;
    assert_eq!(
        got[..2],
        [
            LlmEvent::ToolCall(call("call_1", "lookup_order", "{\"order_id\":\"A1\"}")),
            LlmEvent::ToolCall(call("call_2", "lookup_order", "{\"order_id\":\"B2\"}")),
        ]
    );
    assert_eq!(
        got.last(),
        Some(&LlmEvent::Finished(FinishReason::ToolCalls))
    );
}

#[tokio::test]
async fn model_cascade_llm_follow_up_carries_tool_calls_and_results() {
    let fake = FakeChat::start().await;
    fake.push(Reply::text(&["It has shipped."]));
    let client = client(&fake, None);
    let mut messages = ask("Where is order A1234?");
    messages.push(Message::Assistant {
        text: None,
        tool_calls: vec![call("call_abc", "lookup_order", "{\"order_id\":\"A1234\"}")],
    });
    messages.push(Message::Tool {
        call_id: "call_abc".into(),
        content: "{\"status\":\"shipped\"}".into(),
    });
    let got = events(client.complete(messages, &[lookup_order()])).await;
    assert_eq!(got[0], LlmEvent::Text("It has shipped.".into()));
    assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
    assert_eq!(
        fake.requests()[0].body["messages"],
        json!([
            {"role": "system", "content": "You are Acme's phone agent. Be brief."},
            {"role": "user", "content": "Where is order A1234?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"A1234\"}"}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "{\"status\":\"shipped\"}"},
        ])
    );

    // A result for a call the model never made is refused as the API refuses it.
    let mut orphan = ask("Hi");
    orphan.push(Message::Tool {
        call_id: "call_zzz".into(),
        content: "{}".into(),
    });
    let error = failure(client.complete(orphan, &[])).await;
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.code.as_deref(), Some("400"));
    assert!(
        error
            .message
            .contains("messages with role 'tool' must be a response"),
        "{error:?}"
    );
}

#[tokio::test]
async fn model_cascade_llm_auth_headers() {
    // No key: no auth header at all (local servers).
    let open = FakeChat::start().await;
    let got = events(client(&open, None).complete(ask("Hi"), &[])).await;
    assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
    let request = &open.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.header("api-key"), None);

    // Bearer (the default) and Azure's `api-key` header.
    let keyed = FakeChat::start_with_key("sk-right").await;
    let got = events(client(&keyed, Some("sk-right")).complete(ask("Hi"), &[])).await;
    assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
    assert_eq!(
        keyed.requests()[0].header("authorization"),
        Some("Bearer sk-right")
    );

    let azure = ChatClient::new(LlmConfig {
        base_url: keyed.url(),
        api_key: Some(Secret::new("sk-right")),
        auth: OpenAiAuth::ApiKeyHeader,
        ..LlmConfig::default()
    })
    .unwrap();
    let got = events(azure.complete(ask("Hi"), &[])).await;
    assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
    let request = &keyed.requests()[1];
    assert_eq!(request.header("api-key"), Some("sk-right"));
    assert_eq!(request.header("authorization"), None);

    // A wrong key: the fake's 401, typed, with its message.
    let error = failure(client(&keyed, Some("sk-wrong")).complete(ask("Hi"), &[])).await;
    assert_eq!(error.kind, ErrorKind::Auth);
    assert_eq!(error.code.as_deref(), Some("401"));
    assert!(
        error.message.starts_with("Incorrect API key provided"),
        "{error:?}"
    );
}

#[tokio::test]
async fn model_cascade_llm_http_errors_are_typed() {
    let fake = FakeChat::start().await;
    let client = client(&fake, None);
    for (status, code, message, kind) in [
        (
            401,
            "invalid_api_key",
            "Incorrect API key provided: sk-x****.",
            ErrorKind::Auth,
        ),
        (
            429,
            "rate_limit_exceeded",
            "Rate limit reached for gpt-4.1-mini on requests per min (RPM): Limit 3.",
            ErrorKind::RateLimited,
        ),
        (
            500,
            "server_error",
            "The server had an error while processing your request.",
            ErrorKind::Server,
        ),
    ] {
        fake.push(Reply::http_error(status, code, message));
        let error = failure(client.complete(ask("Hi"), &[])).await;
        assert_eq!(
            error,
            ProviderError::new(kind, Some(status.to_string()), message)
        );
    }
}

#[tokio::test]
async fn model_cascade_llm_malformed_chunk_is_a_protocol_error() {
    let fake = FakeChat::start().await;
    fake.push(Reply::malformed());
    let got = events(client(&fake, None).complete(ask("Hi"), &[])).await;
    // The good chunk, then the failure, then nothing (the fake sent more after the bad one).
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], LlmEvent::Text("Hel".into()));
    assert!(
        matches!(&got[1], LlmEvent::Failed(e) if e.kind == ErrorKind::Protocol),
        "{got:?}"
    );
}

#[tokio::test]
async fn model_cascade_llm_stall_times_out_within_stall_timeout() {
    let fake = FakeChat::start().await;
    fake.push(Reply::stall_after(2));
    let client = ChatClient::new(LlmConfig {
        base_url: fake.url(),
        stall_timeout_ms: 400,
        ..LlmConfig::default()
    })
    .unwrap();
    let got = collect(client.complete(ask("Hi"), &[])).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let (last_text, _) = got[1];
    let (failed_at, ref failed) = got[2];
    assert!(
        matches!(failed, LlmEvent::Failed(e) if e.kind == ErrorKind::Timeout),
        "{failed:?}"
    );
    let waited = failed_at - last_text;
    assert!(
        waited >= Duration::from_millis(380) && waited < Duration::from_millis(1_000),
        "{waited:?}"
    );
    // The client let the connection go.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fake.cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.cancelled(), 1);
}

#[tokio::test]
async fn model_cascade_llm_no_response_headers_times_out_within_connect_timeout() {
    // Accepts the connection and reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let client = ChatClient::new(LlmConfig {
        base_url: url,
        connect_timeout_ms: 300,
        ..LlmConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let error = failure(client.complete(ask("Hi"), &[])).await;
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_millis(1_000));
    held.abort();
}

#[tokio::test]
async fn model_cascade_llm_dropping_the_receiver_closes_the_request() {
    let fake = FakeChat::start().await;
    fake.push(
        Reply::text(&["One.", " Two.", " Three.", " Four.", " Five."]).with_chunk_delay(1_000),
    );
    let client = client(&fake, None);
    let mut receiver = client.complete(ask("Count"), &[]);
    loop {
        match tokio::time::timeout(WAIT, receiver.recv()).await.unwrap() {
            Some(LlmEvent::Text(text)) if text == "One." => break,
            Some(_) => {}
            None => panic!("ended before the first sentence"),
        }
    }
    drop(receiver);
    let dropped = Instant::now();
    while fake.cancelled() == 0 && dropped.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.cancelled(), 1);
    // Seen while the fake was still waiting to send the next chunk.
    assert!(
        dropped.elapsed() < Duration::from_millis(500),
        "{:?}",
        dropped.elapsed()
    );
}

#[tokio::test]
async fn model_cascade_llm_fake_rejects_what_the_api_rejects() {
    let fake = FakeChat::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", fake.url());
    for (body, message) in [
        (
            "{not json",
            "We could not parse the JSON body of your request.",
        ),
        (r#"{"messages":[]}"#, "you must provide a model parameter"),
        (
            r#"{"model":"gpt-4.1-mini"}"#,
            "Missing required parameter: 'messages'.",
        ),
    ] {
        let response = http.post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(message),
            "{error}"
        );
    }
    let orphan = json!({"model": "gpt-4.1-mini", "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "{}"}]});
    let response = http
        .post(&url)
        .body(orphan.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(error["error"]["param"], "messages.[1].role");
    assert_eq!(fake.requests().len(), 4);
}

/// Real TLS (rustls with ring) to an endpoint behind a private CA: trusted only when the CA
/// file is configured.
#[tokio::test]
async fn model_cascade_llm_https_endpoint_with_private_ca() {
    use crate::support::model_tls::{TlsFront, have_openssl};
    if !have_openssl() {
        return;
    }
    let fake = FakeChat::start().await;
    let front = TlsFront::start(fake.port()).await;
    let mut config = LlmConfig {
        base_url: format!("https://127.0.0.1:{}/v1", front.port),
        ..LlmConfig::default()
    };

    let untrusted = ChatClient::new(config.clone()).unwrap();
    let error = failure(untrusted.complete(ask("Hi"), &[])).await;
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{error:?}"
    );
    assert!(fake.requests().is_empty());

    config.ca_file = Some(front.ca_file.clone());
    let got = events(ChatClient::new(config).unwrap().complete(ask("Hi"), &[])).await;
    assert_eq!(got[0], LlmEvent::Text("OK.".into()));
    assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
}

/// The body is read to its end after `[DONE]`, so later turns skip the handshakes.
#[tokio::test]
async fn model_cascade_llm_turns_reuse_the_connection() {
    let fake = FakeChat::start().await;
    let client = client(&fake, None);
    for turn in ["Hi", "Still there?", "Bye"] {
        let got = events(client.complete(ask(turn), &[])).await;
        assert_eq!(got.last(), Some(&LlmEvent::Finished(FinishReason::Stop)));
    }
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.cancelled(), 0);
}
