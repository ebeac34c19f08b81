//! The language-model stage: a streaming client for any OpenAI-compatible chat completions
//! endpoint (OpenAI, Azure, Groq, Ollama, llama.cpp server, vLLM), with tools.
//!
//! Wire format (reference/protocols.md §5.1): `POST {base-url}/chat/completions` with
//! `stream: true` answers with server-sent events, one `data: <chunk JSON>` per event and
//! `data: [DONE]` at the end. Text arrives as `delta.content` fragments; a tool call as a first
//! delta with its `id` and `name`, then `arguments` fragments joined by the call's `index`
//! (parallel calls may interleave). With `stream_options.include_usage` the last chunk before
//! `[DONE]` carries `usage` (Groq puts it in `x_groq.usage` of the finishing chunk instead).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::http::{self, SseEvent, SseReader, WireError};
use crate::model::{ErrorKind, OpenAiAuth, ProviderError, Secret, ToolSpec};

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-4.1-mini".into()
}
fn default_context_tokens() -> usize {
    8000
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_stall_timeout_ms() -> u64 {
    10_000
}

/// One configured language model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LlmConfig {
    /// Requests go to `{base-url}/chat/completions`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// None: no auth header (local servers: Ollama, llama.cpp server, vLLM).
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub auth: OpenAiAuth,
    /// Extra trusted root certificates (PEM), for self-hosted endpoints with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The conversation budget for this model (see `history`).
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Sent as `max_tokens` when set.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Connect plus response headers.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest gap between body chunks, the first one included.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            model: default_model(),
            api_key: None,
            auth: OpenAiAuth::default(),
            ca_file: None,
            context_tokens: default_context_tokens(),
            max_tokens: None,
            temperature: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            stall_timeout_ms: default_stall_timeout_ms(),
        }
    }
}

/// A message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System(String),
    User(String),
    /// A model answer: its text, the tools it called, or both.
    Assistant {
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of tool call `call_id`.
    Tool {
        call_id: String,
        content: String,
    },
}

impl Message {
    /// The message in the request's `messages` array (§5.1).
    fn to_wire(&self) -> Value {
        match self {
            Message::System(text) => json!({"role": "system", "content": text}),
            Message::User(text) => json!({"role": "user", "content": text}),
            Message::Assistant { text, tool_calls } => {
                let mut message = json!({"role": "assistant", "content": text});
                // An empty `tool_calls` array is rejected by the API: leave it out instead.
                if !tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            json!({"id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments}})
                        })
                        .collect();
                }
                message
            }
            Message::Tool { call_id, content } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        }
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object as raw JSON text, as the model streamed it (not checked here).
    pub arguments: String,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    ToolCalls,
    /// `max_tokens` or the context ran out.
    Length,
    ContentFilter,
    Other(String),
}

impl FinishReason {
    fn from_wire(reason: &str) -> Self {
        match reason {
            "stop" => FinishReason::Stop,
            "tool_calls" => FinishReason::ToolCalls,
            "length" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

/// Token usage of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: Option<u64>,
}

/// What a completion streams out. `Finished` or `Failed` is the last event.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// A content delta, as soon as it arrives.
    Text(String),
    /// A tool call, whole, once its arguments are complete (when the model finishes).
    ToolCall(ToolCall),
    /// The completion's usage, once, just before `Finished`.
    Usage(LlmUsage),
    Finished(FinishReason),
    Failed(ProviderError),
}

/// The client of one configured model, shared by all calls.
#[derive(Debug, Clone)]
pub struct ChatClient {
    config: Arc<LlmConfig>,
    http: reqwest::Client,
    url: String,
}

impl ChatClient {
    /// A client over the configured roots (public ones plus `ca-file`).
    pub fn new(config: LlmConfig) -> Result<ChatClient, ProviderError> {
        let http = http::client(
            config.ca_file.as_deref(),
            Duration::from_millis(config.connect_timeout_ms),
        )?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(ChatClient {
            config: Arc::new(config),
            http,
            url,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// One streamed completion. Dropping the receiver cancels it: the HTTP request is dropped
    /// (the server sees the connection close) within milliseconds.
    pub fn complete(&self, messages: Vec<Message>, tools: &[ToolSpec]) -> mpsc::Receiver<LlmEvent> {
        let (events, receiver) = mpsc::channel(64);
        let body = request_body(&self.config, &messages, tools);
        let client = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = client.stream(body, &events) => {}
                () = events.closed() => {
                    tracing::debug!(model = %client.config.model, "completion cancelled");
                }
            }
        });
        receiver
    }

    /// Run one request, sending its events; a failure is sent as the last event.
    async fn stream(&self, body: Value, events: &mpsc::Sender<LlmEvent>) {
        let started = Instant::now();
        let model = self.config.model.as_str();
        match self.try_stream(body, events, started).await {
            Ok(reason) => tracing::debug!(
                model,
                ?reason,
                total_ms = started.elapsed().as_millis() as u64,
                "completion finished"
            ),
            Err(error) => {
                tracing::warn!(
                    model,
                    kind = ?error.kind,
                    code = error.code.as_deref(),
                    message = %error.message,
                    "completion failed"
                );
                let _ = events.send(LlmEvent::Failed(error)).await;
            }
        }
    }

    async fn try_stream(
        &self,
        body: Value,
        events: &mpsc::Sender<LlmEvent>,
        started: Instant,
    ) -> Result<FinishReason, ProviderError> {
        let model = self.config.model.as_str();
        let request = http::authorized(
            self.http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .body(body.to_string()),
            self.config.api_key.as_ref(),
            self.config.auth,
        );
        let connect = Duration::from_millis(self.config.connect_timeout_ms);
        let stall = Duration::from_millis(self.config.stall_timeout_ms);
        let response = tokio::time::timeout(connect, request.send())
            .await
            .map_err(|_| http::timed_out("no response headers", connect))?
            .map_err(http::transport_error)?;
        let status = response.status().as_u16();
        tracing::debug!(model, status, "completion response");
        if !response.status().is_success() {
            return Err(http::error_answer(response, stall).await);
        }

        let mut body = response.bytes_stream();
        let mut sse = SseReader::default();
        let mut completion = Completion::default();
        loop {
            let bytes = match tokio::time::timeout(stall, body.next()).await {
                Err(_) => return Err(http::timed_out("no data", stall)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let mut error = http::transport_error(e);
                    error.message = format!("the stream broke: {}", error.message);
                    return Err(error);
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            for event in sse.push(&bytes) {
                let data = match event {
                    SseEvent::Data(data) => data,
                    SseEvent::Done => {
                        let reason = completion.finish(events).await?;
                        // Read the body's end too (for at most the stall timeout), so the
                        // connection goes back to the pool and the next turn skips the TCP and
                        // TLS handshakes.
                        let rest = async { while let Some(Ok(_)) = body.next().await {} };
                        let _ = tokio::time::timeout(stall, rest).await;
                        return Ok(reason);
                    }
                };
                let generating = completion.generating;
                let ready = completion.apply(&data)?;
                if completion.generating && !generating {
                    tracing::debug!(
                        model,
                        first_token_ms = started.elapsed().as_millis() as u64,
                        "first token"
                    );
                }
                for event in ready {
                    // A closed receiver is the cancellation `complete` is waiting for.
                    let _ = events.send(event).await;
                }
            }
        }
        // Some compatible servers end the body without `[DONE]`.
        completion.finish(events).await
    }
}

/// The request body of §5.1.
fn request_body(config: &LlmConfig, messages: &[Message], tools: &[ToolSpec]) -> Value {
    let mut body = json!({
        "model": config.model,
        "messages": messages.iter().map(Message::to_wire).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name, "description": tool.description, "parameters": tool.parameters}})
            })
            .collect();
        body["tool_choice"] = json!("auto");
    }
    if let Some(max_tokens) = config.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = config.temperature {
        // Through its decimal text, so 0.7 goes out as 0.7 and not as 0.699999988079071.
        let temperature: f64 = temperature.to_string().parse().unwrap_or(1.0);
        body["temperature"] = json!(temperature);
    }
    body
}

/// One chunk (`chat.completion.chunk`); only what the client uses, any other field ignored
/// (compatible servers add their own).
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    x_groq: Option<GroqExtension>,
    /// An error reported inside the stream after it started.
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    /// Left out by some compatible servers: then a delta with an id starts a new call and one
    /// without continues the last.
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct GroqExtension {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The state of one streamed completion: tool calls being assembled, the finish reason, the
/// last usage seen (some servers repeat a running total on every chunk).
#[derive(Default)]
struct Completion {
    calls: BTreeMap<usize, ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<LlmUsage>,
    /// Text or a tool call has started to arrive.
    generating: bool,
}

impl Completion {
    /// Take one event's data; returns the events to send now.
    fn apply(&mut self, data: &str) -> Result<Vec<LlmEvent>, ProviderError> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            ProviderError::new(
                ErrorKind::Protocol,
                None,
                format!("malformed chunk ({e}): {}", truncated(data)),
            )
        })?;
        if let Some(error) = chunk.error {
            return Err(ProviderError::new(
                ErrorKind::Server,
                error.code_text(),
                error.message,
            ));
        }
        if let Some(usage) = chunk.usage.or(chunk.x_groq.and_then(|groq| groq.usage)) {
            self.usage = Some(LlmUsage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
            });
        }
        let mut out = Vec::new();
        // One choice is asked for (no `n`): the first is the answer.
        let Some(choice) = chunk.choices.into_iter().flatten().next() else {
            return Ok(out);
        };
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                self.generating = true;
                out.push(LlmEvent::Text(text));
            }
            for call in delta.tool_calls.into_iter().flatten() {
                self.generating = true;
                self.add_call_delta(call);
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.extend(
                std::mem::take(&mut self.calls)
                    .into_values()
                    .map(LlmEvent::ToolCall),
            );
            self.finish = Some(FinishReason::from_wire(&reason));
        }
        Ok(out)
    }

    fn add_call_delta(&mut self, delta: ToolCallDelta) {
        let index = delta.index.unwrap_or_else(|| {
            let last = self.calls.keys().next_back().copied();
            match (&delta.id, last) {
                (None, Some(last)) => last,
                (_, Some(last)) => last + 1,
                (_, None) => 0,
            }
        });
        let call = self.calls.entry(index).or_insert_with(|| ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name.filter(|name| !name.is_empty()) {
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
    }

    /// The end of the stream: usage, then the finish reason, or an error if the model never
    /// said it finished.
    async fn finish(
        &mut self,
        events: &mpsc::Sender<LlmEvent>,
    ) -> Result<FinishReason, ProviderError> {
        let Some(reason) = self.finish.take() else {
            return Err(ProviderError::new(
                ErrorKind::Protocol,
                None,
                "the stream ended without a finish_reason",
            ));
        };
        if let Some(usage) = self.usage.take() {
            let _ = events.send(LlmEvent::Usage(usage)).await;
        }
        let _ = events.send(LlmEvent::Finished(reason.clone())).await;
        Ok(reason)
    }
}

fn truncated(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groq_usage_and_cached_tokens_are_read() {
        let mut completion = Completion::default();
        let groq = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],
            "x_groq":{"id":"req_1","usage":{"queue_time":0.06,"prompt_tokens":18,"completion_tokens":439,"total_tokens":457}}}"#;
        completion.apply(groq).unwrap();
        assert_eq!(
            completion.usage,
            Some(LlmUsage {
                prompt_tokens: 18,
                completion_tokens: 439,
                cached_tokens: None
            })
        );
        let openai = r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":18,"total_tokens":138,
            "prompt_tokens_details":{"cached_tokens":64}}}"#;
        completion.apply(openai).unwrap();
        assert_eq!(completion.usage.unwrap().cached_tokens, Some(64));
    }

    #[test]
    fn tool_calls_without_index_follow_their_ids() {
        let mut completion = Completion::default();
        for data in [
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        ] {
            assert!(completion.apply(data).unwrap().is_empty());
        }
        let done = completion
            .apply(r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#)
            .unwrap();
        let call = |id: &str, name: &str, arguments: &str| {
            LlmEvent::ToolCall(ToolCall {
                id: id.into(),
                name: name.into(),
                arguments: arguments.into(),
            })
        };
        assert_eq!(done, [call("a", "f", "{\"x\":1}"), call("b", "g", "{}")]);
    }

    #[test]
    fn an_error_inside_the_stream_fails_it() {
        let error = Completion::default()
            .apply(r#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#)
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Server);
        assert_eq!(error.message, "overloaded");
    }

    #[test]
    fn config_reads_kebab_case_with_defaults() {
        let config: LlmConfig = toml::from_str(
            "base-url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3.2\"\ntemperature = 0.7\n",
        )
        .unwrap();
        assert_eq!(config.api_key, None);
        assert_eq!(config.context_tokens, 8000);
        assert_eq!(config.stall_timeout_ms, 10_000);
        assert!(toml::from_str::<LlmConfig>("modle = \"x\"\n").is_err());
        let body = request_body(&config, &[Message::User("hi".into())], &[]);
        assert_eq!(body["temperature"], json!(0.7));
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }
}
