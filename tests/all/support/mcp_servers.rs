//! Real MCP servers for the MCP tests, each stopped when dropped:
//! - [`Bookings`]: tests/fixtures/mcp/bookings.py, written with the official Python SDK (`mcp`,
//!   pinned in .ci/setup), on 127.0.0.1 with a port the test picks; it logs every tool call
//!   with its arguments and Authorization header;
//! - [`Everything`]: the reference server `@modelcontextprotocol/server-everything` (pinned by
//!   tests/fixtures/mcp/package-lock.json, installed by .ci/setup) in its streamable-HTTP mode.
//!   It listens on every interface, so it runs inside a network namespace made for it, reached
//!   over a veth pair with 10.231.x.y addresses chosen per server (process id and a counter).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agents::repo_root;
use crate::support::ports::{Ports, ports};
use crate::support::process::{Proc, present_or_skip, require, require_python};

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/mcp")
}

fn everything_js() -> PathBuf {
    fixtures().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// Whether both servers can run here (under `CI=true` a missing one fails the test).
pub fn available() -> bool {
    require_python("mcp.server.mcpserver")
        && require("node")
        && require("ip")
        && present_or_skip(
            "npm package @modelcontextprotocol/server-everything (tests/fixtures/mcp)",
            everything_js().exists(),
        )
}

/// Waits (bounded) until `addr` accepts TCP connections.
async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python SDK's server on 127.0.0.1.
pub struct Bookings {
    proc: Option<Proc>,
    /// Its port's reservation while no process holds it.
    ports: Vec<Ports>,
    pub port: u16,
    token: Option<String>,
    /// Answers as plain JSON bodies instead of event streams.
    json: bool,
    log: tempfile::NamedTempFile,
}

impl Bookings {
    /// Starts it; with `token`, requests must carry `Authorization: Bearer <token>`.
    pub async fn start(token: Option<&str>) -> Bookings {
        Bookings::start_with(token, false).await
    }

    /// Like [`Bookings::start`]; `json` answers with JSON bodies instead of event streams.
    pub async fn start_with(token: Option<&str>, json: bool) -> Bookings {
        let ports = ports(1);
        let mut server = Bookings {
            proc: None,
            port: ports.first(),
            ports: vec![ports],
            token: token.map(String::from),
            json,
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Starts the server (again) on its port: a new process knows none of the old sessions.
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("python3");
        cmd.arg(fixtures().join("bookings.py"))
            .arg(self.port.to_string())
            .arg(self.log.path())
            .args(&self.token)
            .env("MCP_JSON_RESPONSE", if self.json { "1" } else { "0" })
            .stdout(Stdio::null());
        let mut proc = Proc::spawn("bookings.py", &mut cmd);
        for ports in self.ports.drain(..) {
            proc.hold(ports);
        }
        self.proc = Some(proc);
        wait_listening(([127, 0, 0, 1], self.port).into(), "bookings.py").await;
    }

    /// Stops the server (its port stays this test's).
    pub fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            // The port stays reserved across a restart.
            self.ports = proc.take_ports();
        }
    }

    /// The tool calls the server saw: `{tool, arguments, authorization}`.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A network namespace with a veth pair to it, deleted when dropped.
struct Netns {
    name: String,
    veth: String,
}

impl Netns {
    /// A namespace whose end of the veth is `10.231.a.b+2`, ours `+1`; returns it and its
    /// address.
    fn new() -> (Netns, String) {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let slot = (std::process::id() * 8 + n) % 16384;
        let (c, d) = (slot / 64, (slot % 64) * 4);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let netns = Netns {
            name: format!("sbmcp{tag}"),
            veth: format!("sbm{tag}"),
        };
        let peer = format!("sbp{tag}");
        let (ours, theirs) = (
            format!("10.231.{c}.{}", d + 1),
            format!("10.231.{c}.{}", d + 2),
        );
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&[
            "link",
            "add",
            &netns.veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        netns.ip(&["link", "set", &peer, "netns", &netns.name]);
        netns.ip(&["addr", "add", &format!("{ours}/30"), "dev", &netns.veth]);
        netns.ip(&["link", "set", &netns.veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns.name, "ip"];
            all.extend_from_slice(args);
            netns.ip(&all);
        };
        inside(&["addr", "add", &format!("{theirs}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        (netns, theirs)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The reference server, alone in its network namespace.
pub struct Everything {
    // Dropped in order: the server, then its namespace.
    _proc: Proc,
    _netns: Netns,
    pub addr: String,
}

impl Everything {
    const PORT: u16 = 3001;

    pub async fn start() -> Everything {
        let (netns, addr) = Netns::new();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns.name, "node"])
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", Self::PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("server-everything", &mut cmd);
        let socket: SocketAddr = format!("{addr}:{}", Self::PORT).parse().unwrap();
        wait_listening(socket, "server-everything").await;
        Everything {
            _proc: proc,
            _netns: netns,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}/mcp", self.addr, Self::PORT)
    }

    /// The allow-list entry that grants it (a literal address must be listed exactly).
    pub fn host(&self) -> String {
        format!("{}:{}", self.addr, Self::PORT)
    }
}
