//! `switchboard routes|accounts|trunks|webhooks list|set|rm`: a client of a running host's `/v1/config` API,
//! for scripts. Each write first reads the effective configuration for its ETag and sends it
//! as `If-Match`, so a concurrent change is refused rather than overwritten; a refusal is an
//! error carrying the API's code, field and message.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Where the host's API is and who we are to it.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The host's API base URL.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_API",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api: String,
    /// An API token with write scope (for set and rm).
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Longest wait for a connection and for each answer.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// `switchboard routes ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RoutesCommand {
    /// The routes and the default agent, with where each comes from.
    List,
    /// Route a number or prefix (`+4930*`) to an agent.
    Set { pattern: String, agent: String },
    /// Remove a route.
    Rm { pattern: String },
}

/// `switchboard accounts ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// The registration accounts, with where each comes from and its registration state.
    List,
    /// Add or replace an account (it registers, or re-registers with the new values).
    Set {
        name: String,
        /// Registrar address, `ip:port`.
        #[arg(long)]
        registrar: String,
        /// Address of record, e.g. `sip:agent@pbx.example.com`.
        #[arg(long)]
        aor: String,
        #[arg(long)]
        auth_user: Option<String>,
        /// Digest password; left out, the account keeps its current one.
        #[arg(long, env = "SWITCHBOARD_ACCOUNT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// `udp`, `tcp` or `tls`.
        #[arg(long)]
        transport: Option<String>,
        /// Requested binding lifetime, seconds.
        #[arg(long)]
        expires: Option<u32>,
    },
    /// Remove an account (it un-REGISTERs).
    Rm { name: String },
}

/// `switchboard trunks ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TrunksCommand {
    /// The trunks, with where each comes from.
    List,
    /// Add or replace a trunk, whole (new calls through it use the new values at once).
    Set {
        name: String,
        /// Where outbound INVITEs are sent, `ip:port`.
        #[arg(long)]
        outbound_proxy: String,
        /// Domain of request URIs and From; the proxy's address when left out.
        #[arg(long)]
        domain: Option<String>,
        /// `udp`, `tcp` or `tls`.
        #[arg(long)]
        transport: Option<String>,
        /// User part of From.
        #[arg(long)]
        from_user: Option<String>,
        #[arg(long)]
        auth_user: Option<String>,
        /// Digest password; left out, the trunk keeps its current one.
        #[arg(long, env = "SWITCHBOARD_TRUNK_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The route for numbers that name no trunk.
        #[arg(long)]
        default: bool,
        /// A number prefix it may dial (repeatable); none: any number.
        #[arg(long = "allowed-prefix")]
        allowed_prefixes: Vec<String>,
        /// Calls it carries at once, inbound and outbound together; none: no cap.
        #[arg(long)]
        channels: Option<usize>,
    },
    /// Remove a trunk (new calls through it are refused; running ones finish).
    Rm { name: String },
}

/// `switchboard webhooks ...`.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// The webhooks, with where each comes from.
    List,
    /// Add or replace a webhook, whole (events from then on go to the new values).
    Set {
        name: String,
        /// The receiver, `http(s)://...`.
        #[arg(long)]
        url: String,
        /// An event type to send (repeatable): `call.started`, `call.answered`, `call.ended`,
        /// `call.transferred`, `call.outcome`, `recording.ready`, `campaign.progress`.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// The signing secret (`whsec_...`); left out, the webhook keeps its current one.
        #[arg(long, env = "SWITCHBOARD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Let the URL name a loopback, link-local or metadata address.
        #[arg(long)]
        allow_local: bool,
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        retry_ms: Option<u64>,
        #[arg(long)]
        queue_limit: Option<u32>,
    },
    /// Remove a webhook (its queued deliveries are dead-lettered).
    Rm { name: String },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad --api URL `{0}`")]
    BadUrl(String),
    #[error("{method} {url}")]
    Transport {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    /// The API refused: its status, error code, field (when it names one) and message.
    #[error("refused ({status} {code}{}): {message}", field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Refused {
        status: StatusCode,
        code: String,
        field: Option<String>,
        message: String,
    },
    #[error("GET /v1/config/effective answered without an ETag")]
    NoEtag,
}

/// One host's API.
pub struct ConfigClient {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ConfigClient {
    pub fn new(args: &ApiArgs) -> Result<ConfigClient, ClientError> {
        let base =
            reqwest::Url::parse(&args.api).map_err(|_| ClientError::BadUrl(args.api.clone()))?;
        if base.cannot_be_a_base() {
            return Err(ClientError::BadUrl(args.api.clone()));
        }
        let timeout = Duration::from_secs(args.timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|source| ClientError::Transport {
                method: Method::GET,
                url: args.api.clone(),
                source,
            })?;
        Ok(ConfigClient {
            base,
            token: args.token.clone(),
            http,
        })
    }

    /// `segments` below the base URL, each escaped (patterns hold `+` and `*`).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One request; the JSON answer and its ETag, or the API's refusal.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Value, Option<String>), ClientError> {
        let url = self.url(segments);
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(etag) = if_match {
            request = request.header(reqwest::header::IF_MATCH, etag);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let failed = |source| ClientError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.map_err(failed)?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Refused {
                status,
                code: json["error"].as_str().unwrap_or("unknown").into(),
                field: json["field"].as_str().map(str::to_string),
                message: json["detail"].as_str().map(str::to_string).unwrap_or(text),
            });
        }
        Ok((json, etag))
    }

    async fn effective(&self) -> Result<(Value, String), ClientError> {
        let (body, etag) = self
            .send(Method::GET, &["v1", "config", "effective"], None, None)
            .await?;
        Ok((body, etag.ok_or(ClientError::NoEtag)?))
    }

    /// A write based on the current ETag; the change record.
    async fn write(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (_, etag) = self.effective().await?;
        let (answer, _) = self.send(method, segments, Some(&etag), body).await?;
        Ok(answer["change"].clone())
    }
}

/// What a change did, for stdout.
fn describe(change: &Value) -> String {
    format!(
        "{} {}",
        change["action"].as_str().unwrap_or("changed"),
        change["target"].as_str().unwrap_or("?")
    )
}

/// Runs `switchboard routes ...`; prints its result on stdout.
pub async fn routes(args: &ApiArgs, command: RoutesCommand) -> Result<(), ClientError> {
    let client = ConfigClient::new(args)?;
    match command {
        RoutesCommand::List => {
            let (body, _) = client.effective().await?;
            if let Some(routes) = body["routes"].as_object() {
                for (pattern, r) in routes {
                    println!("{pattern}\t{}\t{}", text(&r["agent"]), text(&r["source"]));
                }
            }
            let default = &body["default_agent"];
            if !default.is_null() {
                println!(
                    "(default)\t{}\t{}",
                    text(&default["value"]),
                    text(&default["source"])
                );
            }
        }
        RoutesCommand::Set { pattern, agent } => {
            let body = json!({ "agent": agent });
            let change = client
                .write(
                    Method::PUT,
                    &["v1", "config", "routes", &pattern],
                    Some(&body),
                )
                .await?;
            println!("{}", describe(&change));
        }
        RoutesCommand::Rm { pattern } => {
            let change = client
                .write(Method::DELETE, &["v1", "config", "routes", &pattern], None)
                .await?;
            println!("{}", describe(&change));
        }
    }
    Ok(())
}

/// Runs `switchboard accounts ...`; prints its result on stdout.
pub async fn accounts(args: &ApiArgs, command: AccountsCommand) -> Result<(), ClientError> {
    let client = ConfigClient::new(args)?;
    match command {
        AccountsCommand::List => {
            let (body, _) = client.effective().await?;
            let (regs, _) = client
                .send(Method::GET, &["v1", "registrations"], None, None)
                .await?;
            let state = |name: &str| {
                regs["registrations"]
                    .as_array()
                    .and_then(|all| all.iter().find(|r| r["account"] == name))
                    .map_or("-".to_string(), |r| text(&r["state"]))
            };
            if let Some(accounts) = body["accounts"].as_object() {
                for (name, a) in accounts {
                    let v = &a["value"];
                    println!(
                        "{name}\t{}\t{}\t{}\t{}\t{}",
                        text(&v["aor"]),
                        text(&v["registrar"]),
                        text(&v["transport"]),
                        text(&a["source"]),
                        state(name)
                    );
                }
            }
        }
        AccountsCommand::Set {
            name,
            registrar,
            aor,
            auth_user,
            password,
            transport,
            expires,
        } => {
            let body = with_optional(
                json!({ "registrar": registrar, "aor": aor }),
                [
                    ("auth-user", auth_user.map(Value::from)),
                    ("password", password.map(Value::from)),
                    ("transport", transport.map(Value::from)),
                    ("expires", expires.map(Value::from)),
                ],
            );
            let change = client
                .write(
                    Method::PUT,
                    &["v1", "config", "accounts", &name],
                    Some(&body),
                )
                .await?;
            println!("{}", describe(&change));
        }
        AccountsCommand::Rm { name } => {
            let change = client
                .write(Method::DELETE, &["v1", "config", "accounts", &name], None)
                .await?;
            println!("{}", describe(&change));
        }
    }
    Ok(())
}

/// Runs `switchboard trunks ...`; prints its result on stdout.
pub async fn trunks(args: &ApiArgs, command: TrunksCommand) -> Result<(), ClientError> {
    let client = ConfigClient::new(args)?;
    match command {
        TrunksCommand::List => {
            let (body, _) = client.effective().await?;
            if let Some(trunks) = body["trunks"].as_object() {
                for (name, t) in trunks {
                    let v = &t["value"];
                    println!(
                        "{name}\t{}\t{}\t{}\t{}",
                        text(&v["outbound-proxy"]),
                        text(&v["transport"]),
                        if v["default"] == true { "default" } else { "-" },
                        text(&t["source"]),
                    );
                }
            }
        }
        TrunksCommand::Set {
            name,
            outbound_proxy,
            domain,
            transport,
            from_user,
            auth_user,
            password,
            default,
            allowed_prefixes,
            channels,
        } => {
            let body = with_optional(
                json!({
                    "outbound-proxy": outbound_proxy,
                    "default": default,
                    "allowed-prefixes": allowed_prefixes,
                }),
                [
                    ("domain", domain.map(Value::from)),
                    ("transport", transport.map(Value::from)),
                    ("from-user", from_user.map(Value::from)),
                    ("auth-user", auth_user.map(Value::from)),
                    ("password", password.map(Value::from)),
                    ("channels", channels.map(Value::from)),
                ],
            );
            let change = client
                .write(Method::PUT, &["v1", "config", "trunks", &name], Some(&body))
                .await?;
            println!("{}", describe(&change));
        }
        TrunksCommand::Rm { name } => {
            let change = client
                .write(Method::DELETE, &["v1", "config", "trunks", &name], None)
                .await?;
            println!("{}", describe(&change));
        }
    }
    Ok(())
}

/// Runs `switchboard webhooks ...`; prints its result on stdout.
pub async fn webhooks(args: &ApiArgs, command: WebhooksCommand) -> Result<(), ClientError> {
    let client = ConfigClient::new(args)?;
    match command {
        WebhooksCommand::List => {
            let (body, _) = client.effective().await?;
            if let Some(webhooks) = body["webhooks"].as_object() {
                for (name, w) in webhooks {
                    let v = &w["value"];
                    let events: Vec<String> = v["events"]
                        .as_array()
                        .map(|e| e.iter().map(text).collect())
                        .unwrap_or_default();
                    println!(
                        "{name}\t{}\t{}\t{}",
                        text(&v["url"]),
                        events.join(","),
                        text(&w["source"]),
                    );
                }
            }
        }
        WebhooksCommand::Set {
            name,
            url,
            events,
            secret,
            allow_local,
            timeout_ms,
            max_attempts,
            retry_ms,
            queue_limit,
        } => {
            let body = with_optional(
                json!({"url": url, "events": events, "allow-local": allow_local}),
                [
                    ("secret", secret.map(Value::from)),
                    ("timeout-ms", timeout_ms.map(Value::from)),
                    ("max-attempts", max_attempts.map(Value::from)),
                    ("retry-ms", retry_ms.map(Value::from)),
                    ("queue-limit", queue_limit.map(Value::from)),
                ],
            );
            let change = client
                .write(
                    Method::PUT,
                    &["v1", "config", "webhooks", &name],
                    Some(&body),
                )
                .await?;
            println!("{}", describe(&change));
        }
        WebhooksCommand::Rm { name } => {
            let change = client
                .write(Method::DELETE, &["v1", "config", "webhooks", &name], None)
                .await?;
            println!("{}", describe(&change));
        }
    }
    Ok(())
}

/// `body` with the fields that are given.
fn with_optional<const N: usize>(mut body: Value, optional: [(&str, Option<Value>); N]) -> Value {
    for (field, value) in optional {
        if let Some(value) = value {
            body[field] = value;
        }
    }
    body
}

/// A JSON string as plain text (`-` when absent).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
