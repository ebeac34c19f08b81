//! kamailio as a registrar and proxy for the tests of registration, digest auth and calls
//! through a proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::Proc;
use crate::support::raw_sip::{RawClient, fastrand_u64, request};
use crate::support::tempdir;

/// kamailio as registrar + record-routing proxy with digest auth (401 for REGISTER,
/// 407 for INVITE from known users). Users: alice/alicepw, bob/bobpw, agent/agentpw.
pub struct Kamailio {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Kamailio {
    /// Whether Debian's `kamailio-tls-modules` is installed; under `CI=true` it must be.
    pub fn has_tls() -> bool {
        let module = Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so");
        if module.exists() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kamailio-tls-modules is required under CI=true"
        );
        eprintln!("SKIP: kamailio-tls-modules is not installed");
        false
    }

    pub async fn start(port: u16) -> Kamailio {
        Self::start_with(port, None).await
    }

    /// Like [`Kamailio::start`], also serving SIP over TLS on `tls.0` with the certificate
    /// chain and key in `tls.1` and `tls.2` (Debian's `kamailio-tls-modules`).
    pub async fn start_tls(port: u16, tls: (u16, &Path, &Path)) -> Kamailio {
        Self::start_with(port, Some(tls)).await
    }

    async fn start_with(port: u16, tls: Option<(u16, &Path, &Path)>) -> Kamailio {
        let dir = tempdir("kam");
        let mut cfg = KAMAILIO_CFG.to_string();
        if let Some((tls_port, cert, key)) = tls {
            // Peers are not asked for certificates; ours is the one they check.
            std::fs::write(
                dir.path().join("tls.cfg"),
                format!(
                    "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                     require_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
                     [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
                    key.display(),
                    cert.display()
                ),
            )
            .unwrap();
            cfg = cfg.replacen(
                "auto_aliases=no\n",
                &format!(
                    "auto_aliases=no\nenable_tls=yes\nlisten=tls:127.0.0.1:{tls_port}\n\
                     alias=\"127.0.0.1:{tls_port}\"\n"
                ),
                1,
            );
            cfg = cfg.replacen(
                "loadmodule \"tm.so\"\n",
                "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"@DIR@/tls.cfg\")\n\
                 loadmodule \"tm.so\"\n",
                1,
            );
        }
        let cfg = cfg
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", dir.path().to_str().unwrap());
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        Self::launch(port, dir, &cfg_path, &["-n", "2"]).await
    }

    /// kamailio as the dispatcher of `deploy/kamailio/kamailio.cfg` on `port` (UDP and TCP) in
    /// front of the nodes whose SIP ports are `nodes`.
    pub async fn dispatcher(port: u16, nodes: &[u16]) -> Kamailio {
        let dir = tempdir("kam-dispatcher");
        let list = dir.path().join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|p| format!("1 sip:127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(&list, lines).unwrap();
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kamailio/kamailio.cfg");
        let udp = format!("udp:127.0.0.1:{port}");
        let tcp = format!("tcp:127.0.0.1:{port}");
        let define = format!("DISPATCHER_LIST={:?}", list.display().to_string());
        let args = ["-l", &udp, "-l", &tcp, "-A", &define, "-n", "4"];
        Self::launch(port, dir, &cfg, &args).await
    }

    /// Starts kamailio on `cfg` with `args`, its log and runtime files in `dir`; returns once
    /// it answers OPTIONS on `port`.
    async fn launch(port: u16, dir: tempfile::TempDir, cfg: &Path, args: &[&str]) -> Kamailio {
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let mut cmd = Command::new("kamailio");
        cmd.args([
            "-f",
            cfg.to_str().unwrap(),
            "-DD",
            "-E",
            "-Y",
            dir.path().to_str().unwrap(),
            "-P",
        ])
        .arg(dir.path().join("k.pid"))
        .args(["-m", "32", "-M", "4"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let proc = Proc::spawn("kamailio", &mut cmd);
        let k = Kamailio {
            port,
            dir,
            _proc: proc,
        };
        // Ready when it answers OPTIONS.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = RawClient::udp(k.addr()).await;
        while Instant::now() < deadline {
            let call_id = format!("kam-up-{}", fastrand_u64());
            let msg = request("OPTIONS", &call_id, c.local, "UDP", "", "").replacen(
                "sip:1000@127.0.0.1",
                &format!("sip:127.0.0.1:{port}"),
                1,
            );
            c.send(msg.as_bytes()).await;
            if c.response_for(&call_id, Duration::from_millis(500)).await == Some(200) {
                return k;
            }
        }
        panic!("kamailio did not come up; log: {}", k.log());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// `kamcmd ul.dump` output.
    pub fn ul_dump(&self) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio_ctl", self.dir.path().display()))
            .arg("ul.dump")
            .output()
            .expect("kamcmd");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:@PORT@
listen=tcp:127.0.0.1:@PORT@
alias="127.0.0.1:@PORT@"
auto_aliases=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "ctl.so"
loadmodule "auth.so"
loadmodule "htable.so"
modparam("ctl", "binrpc", "unix:@DIR@/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 1)
modparam("htable", "htable", "users=>size=4;")
modparam("rr", "enable_full_lr", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

event_route[htable:mod-init] {
    $sht(users=>alice) = "alicepw";
    $sht(users=>bob) = "bobpw";
    $sht(users=>agent) = "agentpw";
}

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    t_check_trans();
    if (is_method("OPTIONS") && uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$td", "$sht(users=>$tU)", "0")) {
            xlog("L_NOTICE", "CHALLENGE 401 $rm $tU\n");
            www_challenge("$td", "1");
            exit;
        }
        consume_credentials();
        xlog("L_NOTICE", "REGISTERED $tU expires $hdr(Expires)\n");
        save("location");
        exit;
    }
    if (is_method("INVITE|REFER") && $sht(users=>$fU) != $null) {
        if (!pv_proxy_authenticate("$fd", "$sht(users=>$fU)", "0")) {
            xlog("L_NOTICE", "CHALLENGE 407 $rm $fU\n");
            proxy_challenge("$fd", "1");
            exit;
        }
        consume_credentials();
    }
    if (is_method("INVITE|SUBSCRIBE")) { record_route(); }
    if (uri==myself) {
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    }
    if (!t_relay()) { sl_reply_error(); }
    exit;
}
"#;
