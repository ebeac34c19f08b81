//! A protocol-faithful fake of an OpenAI-compatible chat completions server
//! (`POST /v1/chat/completions`, streaming), on 127.0.0.1.
//!
//! Wire facts from reference/protocols.md §5.1 (openai-python `chat_completion_chunk.py`):
//! `text/event-stream`, one `data: <chunk>` plus a blank line per event, `data: [DONE]` last;
//! the first delta carries `role`; a tool call's first delta carries `index`, `id`, `type`,
//! `function.name` and empty `arguments`, later ones only `index` and argument fragments; the
//! finishing chunk has `"delta":{}` and `finish_reason`; with `stream_options.include_usage`
//! every chunk has `"usage":null` and one last chunk with `"choices":[]` carries the usage.
//! Errors before the stream are `{"error":{"message","type","param","code"}}`.
//!
//! Checked with the search tool (issue threads quoting the API's answers verbatim):
//! - missing model: 400 `you must provide a model parameter`, `invalid_request_error`, code
//!   null (danielmiessler/Fabric#239);
//! - an assistant message whose tool calls are not each answered by the tool messages right
//!   after it: 400 `An assistant message with 'tool_calls' must be followed by tool messages
//!   responding to each 'tool_call_id'. …` (agno-agi/agno#3105);
//! - a `tool` message answering no earlier call: 400 `Invalid parameter: messages with role
//!   'tool' must be a response to a preceeding message with 'tool_calls'.`, param
//!   `messages.[N].role`, code null (miurla/morphic#136, smarter-sh/smarter#264);
//! - wrong key: 401 `Incorrect API key provided: …`, `invalid_request_error`, code
//!   `invalid_api_key` (chatanywhere/GPT_API_free#62).
//!
//! Unverified [MEM]: the wording for a missing `messages` and for a body that is not JSON.
//!
//! Each reply's first event is written in two TCP writes, cut inside its JSON, so the client's
//! reassembly is always exercised. While it streams, the fake watches the socket: a client
//! that closes before the end is counted in [`FakeChat::cancelled`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MODEL: &str = "gpt-4.1-mini";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` if it was not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
enum Content {
    Text(Vec<String>),
    /// (id, name, argument fragments) per call.
    ToolCalls(Vec<(String, String, Vec<String>)>),
    HttpError {
        status: u16,
        code: String,
        message: String,
    },
    Malformed,
    StallAfter(usize),
}

/// What the fake answers one accepted request with.
#[derive(Debug, Clone)]
pub struct Reply {
    content: Content,
    usage: Option<(u64, u64)>,
    chunk_delay: Duration,
    /// The pause between the two writes of the first event.
    split_gap: Duration,
}

impl Reply {
    fn new(content: Content) -> Reply {
        Reply {
            content,
            usage: None,
            chunk_delay: Duration::ZERO,
            split_gap: Duration::from_millis(5),
        }
    }

    /// Text streamed as these content deltas, then `finish_reason: stop`.
    pub fn text(pieces: &[&str]) -> Reply {
        Reply::new(Content::Text(
            pieces.iter().map(|p| p.to_string()).collect(),
        ))
    }

    /// Tool calls `(id, name, argument fragments)`; several are parallel calls, their
    /// fragments interleaved by index. Then `finish_reason: tool_calls`.
    pub fn tool_calls(calls: Vec<(&str, &str, Vec<&str>)>) -> Reply {
        Reply::new(Content::ToolCalls(
            calls
                .into_iter()
                .map(|(id, name, fragments)| {
                    let fragments = fragments.into_iter().map(str::to_string).collect();
                    (id.to_string(), name.to_string(), fragments)
                })
                .collect(),
        ))
    }

    /// An HTTP error with the API's error JSON (`code` is the body's `error.code`).
    pub fn http_error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(Content::HttpError {
            status,
            code: code.to_string(),
            message: message.to_string(),
        })
    }

    /// One good text chunk (`Hel`), then a chunk whose JSON is cut off, then a good one and
    /// `[DONE]` (which a client must no longer report).
    pub fn malformed() -> Reply {
        Reply::new(Content::Malformed)
    }

    /// `n` text chunks, then nothing, with the connection held open.
    pub fn stall_after(n: usize) -> Reply {
        Reply::new(Content::StallAfter(n))
    }

    /// The usage reported in the `include_usage` chunk (default: 10 prompt tokens and one
    /// completion token per chunk).
    pub fn with_usage(mut self, prompt: u64, completion: u64) -> Reply {
        self.usage = Some((prompt, completion));
        self
    }

    /// The first event's two halves without a pause between them, for benchmarks: the reply
    /// comes at once (still in two writes).
    pub fn at_once(mut self) -> Reply {
        self.split_gap = Duration::ZERO;
        self
    }

    /// Wait this long before each event after the first.
    pub fn with_chunk_delay(mut self, ms: u64) -> Reply {
        self.chunk_delay = Duration::from_millis(ms);
        self
    }
}

struct State {
    api_key: Option<String>,
    replies: Mutex<VecDeque<Reply>>,
    /// Used when no reply is queued.
    default: Reply,
    requests: Mutex<Vec<Recorded>>,
    cancelled: AtomicUsize,
    connections: AtomicUsize,
}

/// The fake server; stopped when dropped.
pub struct FakeChat {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeChat {
    /// A server that takes any key or none.
    pub async fn start() -> FakeChat {
        FakeChat::serve(None).await
    }

    /// A server that answers 401 unless the request carries `Authorization: Bearer <key>`
    /// or `api-key: <key>`.
    pub async fn start_with_key(key: &str) -> FakeChat {
        FakeChat::serve(Some(key.to_string())).await
    }

    async fn serve(api_key: Option<String>) -> FakeChat {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            api_key,
            replies: Mutex::new(VecDeque::new()),
            default: Reply::text(&["OK."]),
            requests: Mutex::new(Vec::new()),
            cancelled: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let accepting = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(stream, accepting.clone()));
            }
        });
        FakeChat { addr, state, task }
    }

    /// The plain-TCP port (for a TLS front).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The base URL, `/v1` included.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue a reply for the next accepted request (with none queued the fake answers `OK.`).
    pub fn push(&self, reply: Reply) {
        self.state.replies.lock().unwrap().push_back(reply);
    }

    /// Every request received, rejected ones included.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many TCP connections clients opened.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many streaming responses the client closed before their end.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

impl Drop for FakeChat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Some(request) = read_request(&mut read).await {
        state.requests.lock().unwrap().push(request.clone());
        let reply = match check(&request, &state) {
            Err((status, error)) => {
                let _ = write_json(&mut write, status, &json!({ "error": error })).await;
                continue;
            }
            Ok(()) => {
                let queued = state.replies.lock().unwrap().pop_front();
                queued.unwrap_or_else(|| state.default.clone())
            }
        };
        if let Content::HttpError {
            status,
            code,
            message,
        } = &reply.content
        {
            let error = json!({"message": message, "type": error_type(*status), "param": null,
                               "code": code});
            let _ = write_json(&mut write, *status, &json!({ "error": error })).await;
            continue;
        }
        match stream_reply(&reply, &request.body, &mut read, &mut write).await {
            Streamed::Whole => {}
            Streamed::ClosedByClient => {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Streamed::Broken => return,
        }
    }
}

/// HTTP/1.1 request: request line, headers, a `content-length` body.
async fn read_request(read: &mut BufReader<OwnedReadHalf>) -> Option<Recorded> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if read.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// The checks the real API makes before generating anything; `Err` is (status, `error`).
fn check(request: &Recorded, state: &State) -> Result<(), (u16, Value)> {
    let invalid = |message: &str, param: Value, code: Value| {
        (
            400,
            json!({"message": message, "type": "invalid_request_error", "param": param,
                   "code": code}),
        )
    };
    if request.method != "POST" || request.path != "/v1/chat/completions" {
        let message = format!("Invalid URL ({} {})", request.method, request.path);
        return Err((
            404,
            json!({"message": message, "type": "invalid_request_error",
                                "param": null, "code": null}),
        ));
    }
    if let Some(key) = &state.api_key {
        let bearer = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = bearer.or(request.header("api-key"));
        if given != Some(key.as_str()) {
            let shown: String = given.unwrap_or("").chars().take(4).collect();
            let message = format!(
                "Incorrect API key provided: {shown}****. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            return Err((
                401,
                json!({"message": message, "type": "invalid_request_error",
                                    "param": null, "code": "invalid_api_key"}),
            ));
        }
    }
    let body = &request.body;
    if !body.is_object() {
        return Err(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            Value::Null,
            Value::Null,
        ));
    }
    if !body["model"].is_string() {
        return Err(invalid(
            "you must provide a model parameter",
            Value::Null,
            Value::Null,
        ));
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err(invalid(
            "Missing required parameter: 'messages'.",
            json!("messages"),
            json!("missing_required_parameter"),
        ));
    };
    // Each assistant message with tool calls is followed by a tool message for every call,
    // before any other message (agno-agi/agno#3105, smallmain/vscode-unify-chat-provider#248
    // quote the API's answer).
    for (index, message) in messages.iter().enumerate() {
        let Some(calls) = message["tool_calls"].as_array() else {
            continue;
        };
        let answered: Vec<&str> = messages[index + 1..]
            .iter()
            .take_while(|m| m["role"] == "tool")
            .filter_map(|m| m["tool_call_id"].as_str())
            .collect();
        if calls
            .iter()
            .any(|call| !answered.contains(&call["id"].as_str().unwrap_or("")))
        {
            return Err(invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. (insufficient tool messages following tool_calls message)",
                json!(format!("messages.[{index}].role")),
                Value::Null,
            ));
        }
    }
    let mut called: Vec<&str> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if let Some(calls) = message["tool_calls"].as_array() {
            called.extend(calls.iter().filter_map(|call| call["id"].as_str()));
        }
        if message["role"] == "tool"
            && !called.contains(&message["tool_call_id"].as_str().unwrap_or(""))
        {
            return Err(invalid(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                json!(format!("messages.[{index}].role")),
                Value::Null,
            ));
        }
    }
    Ok(())
}

fn error_type(status: u16) -> &'static str {
    match status {
        429 => "requests",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

async fn write_json(write: &mut OwnedWriteHalf, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        reason(status),
        body.len()
    );
    write.write_all(format!("{head}{body}").as_bytes()).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

enum Streamed {
    Whole,
    ClosedByClient,
    /// The reply holds the connection (a stall) or the socket failed: the connection is over.
    Broken,
}

/// The server-sent events of `reply`: each `data:` line's JSON (or `[DONE]`, or broken text).
fn events(reply: &Reply, request: &Value) -> Vec<String> {
    let include_usage = request["stream_options"]["include_usage"] == true;
    let chunk = |choices: Value| {
        let mut chunk = json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk",
            "created": 1756400000, "model": MODEL, "system_fingerprint": "fp_fake",
            "choices": choices});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let delta = |delta: Value| {
        chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]))
    };
    let finish = |reason: &str| {
        chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]))
    };
    let mut out = Vec::new();
    let (finish_reason, completion) = match &reply.content {
        Content::Text(pieces) => {
            out.push(delta(
                json!({"role": "assistant", "content": "", "refusal": null}),
            ));
            out.extend(pieces.iter().map(|p| delta(json!({"content": p}))));
            ("stop", pieces.len())
        }
        Content::ToolCalls(calls) => {
            for (index, (id, name, _)) in calls.iter().enumerate() {
                let mut first = json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]});
                if index == 0 {
                    first["role"] = json!("assistant");
                    first["content"] = Value::Null;
                }
                out.push(delta(first));
            }
            let longest = calls.iter().map(|(_, _, f)| f.len()).max().unwrap_or(0);
            for round in 0..longest {
                for (index, (_, _, fragments)) in calls.iter().enumerate() {
                    if let Some(fragment) = fragments.get(round) {
                        out.push(delta(json!({"tool_calls": [{"index": index,
                            "function": {"arguments": fragment}}]})));
                    }
                }
            }
            ("tool_calls", out.len())
        }
        Content::Malformed => {
            let good = delta(json!({"content": "Hel"})).to_string();
            let broken = delta(json!({"content": "lo"})).to_string();
            let mut events = vec![good.clone(), broken[..broken.len() / 2].to_string()];
            events.extend([delta(json!({"content": "!"})).to_string(), "[DONE]".into()]);
            return events;
        }
        Content::StallAfter(n) => {
            return (0..*n)
                .map(|i| delta(json!({"content": format!("word{i} ")})).to_string())
                .collect();
        }
        Content::HttpError { .. } => unreachable!("answered before streaming"),
    };
    let mut out: Vec<String> = out.iter().map(Value::to_string).collect();
    out.push(finish(finish_reason).to_string());
    if include_usage {
        let (prompt, completion) = reply.usage.unwrap_or((10, completion as u64));
        let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        out.push(last.to_string());
    }
    out.push("[DONE]".into());
    out
}

/// Write `reply` as a chunked `text/event-stream`, watching for the client closing.
async fn stream_reply(
    reply: &Reply,
    request: &Value,
    read: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> Streamed {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
                transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n";
    if write.write_all(head.as_bytes()).await.is_err() {
        return Streamed::Broken;
    }
    let events = events(reply, request);
    for (index, data) in events.iter().enumerate() {
        let event = format!("data: {data}\n\n");
        let pieces = if index == 0 {
            let cut = event.len() / 2;
            vec![&event[..cut], &event[cut..]]
        } else {
            vec![event.as_str()]
        };
        let gap = if index == 0 {
            reply.split_gap
        } else {
            reply.chunk_delay
        };
        if index > 0 && wait_or_closed(read, gap).await {
            return Streamed::ClosedByClient;
        }
        for (n, piece) in pieces.iter().enumerate() {
            if n > 0 && wait_or_closed(read, gap).await {
                return Streamed::ClosedByClient;
            }
            let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
            if write.write_all(chunk.as_bytes()).await.is_err() {
                return Streamed::ClosedByClient;
            }
        }
    }
    if let Content::StallAfter(_) = reply.content {
        // Hold the connection open until the client gives up.
        if wait_or_closed(read, Duration::from_secs(600)).await {
            return Streamed::ClosedByClient;
        }
        return Streamed::Broken;
    }
    // The body's end in a segment of its own, as it often comes from a real server: a client
    // that stops reading at `[DONE]` closes the connection instead of reusing it.
    if wait_or_closed(read, Duration::from_millis(20)).await
        || write.write_all(b"0\r\n\r\n").await.is_err()
    {
        return Streamed::Broken;
    }
    Streamed::Whole
}

/// Sleep `gap`; true if the client closed the connection meanwhile (a client sends nothing
/// while it reads a response, so any read result but a timeout means it is gone).
async fn wait_or_closed(read: &mut BufReader<OwnedReadHalf>, gap: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(gap, read.get_mut().read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}
