//! baresip as a test phone: a config on reserved ports, a microphone track, and its ctrl_tcp
//! interface for dialling and events.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::media::write_wav;
use crate::support::ports::ports;
use crate::support::process::Proc;
use crate::support::tempdir;

/// A headless baresip driven over ctrl_tcp (netstring JSON).
pub struct Baresip {
    /// SIP over UDP and TCP; TLS (with `sip_certificate` set) listens on the port above.
    pub sip_port: u16,
    pub ctrl_port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

/// RTP ports a baresip gets for its calls (it picks one pair a call at random).
const RTP_PORTS: u16 = 100;

impl Baresip {
    /// `account` is the full account line, e.g. `<sip:bob@127.0.0.1:5070>;auth_pass=bobpw;regint=60`.
    pub async fn start(account: &str) -> Baresip {
        Self::start_with(account, "").await
    }

    /// Like [`Baresip::start`] with extra config lines (e.g. `module sndfile.so` to record
    /// what it hears into `<dir>/rec`).
    pub async fn start_with(account: &str, extra_config: &str) -> Baresip {
        Self::start_with_mic(account, extra_config, &[0; 8000 * 30]).await
    }

    /// Like [`Baresip::start_with`], with `mic` (8 kHz mono samples, played from the start of
    /// each call) as what the phone's user says.
    pub async fn start_with_mic(account: &str, extra_config: &str, mic: &[i16]) -> Baresip {
        Self::start_with_mic_at(account, extra_config, mic, 8000).await
    }

    /// As [`Baresip::start_with_mic`], with the microphone at `rate`: a wideband codec then
    /// sends the track as it is, without baresip's own 8 → 16 kHz resampler, whose images
    /// above 4 kHz would blur a comparison with the track.
    pub async fn start_with_mic_at(
        account: &str,
        extra_config: &str,
        mic: &[i16],
        rate: u32,
    ) -> Baresip {
        // SIP (UDP and TCP), TLS on the port above, ctrl_tcp, then its RTP ports.
        let ports = ports(4 + RTP_PORTS);
        let (sip_port, ctrl_port) = (ports.first(), ports.get(2));
        let rtp = format!("{}-{}", ports.get(4), ports.last());
        let dir = tempdir("baresip");
        let wav = dir.path().join("mic.wav");
        write_wav(&wav, rate, mic);
        let config = format!(
            "sip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\ndns_server 127.0.0.1:53\n\
             audio_source aufile,{}\nausrc_srate {rate}\nausrc_channels 1\nauplay_srate 8000\nauplay_channels 1\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module_tmp uuid.so\nmodule_tmp account.so\nmodule_app contact.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nrtp_ports {rtp}\nrtp_timeout 0\nsip_trans_def udp\n\
             snd_path {}\n{extra_config}\n",
            wav.display(),
            dir.path().join("rec").display()
        );
        std::fs::create_dir_all(dir.path().join("rec")).unwrap();
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(dir.path().join("accounts"), format!("{account}\n")).unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut proc = Proc::spawn("baresip", &mut cmd);
        proc.hold(ports);
        let b = Baresip {
            sip_port,
            ctrl_port,
            dir,
            _proc: proc,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", ctrl_port))
                .await
                .is_ok()
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("baresip did not come up: {}", b.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Connects the (single) ctrl_tcp client.
    pub async fn ctrl(&self) -> BaresipCtrl {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", self.ctrl_port))
            .await
            .unwrap();
        BaresipCtrl { s, buf: Vec::new() }
    }
}

pub struct BaresipCtrl {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl BaresipCtrl {
    /// Dials `uri` and waits (20 s at most) until the call is up; fails with `phone`'s log.
    pub async fn dial(&mut self, uri: &str, phone: &Baresip) {
        self.command("dial", uri).await;
        assert!(
            self.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
                .await
                .is_some(),
            "{}",
            phone.log()
        );
    }

    pub async fn command(&mut self, cmd: &str, params: &str) {
        use tokio::io::AsyncWriteExt;
        let json = format!(r#"{{"command":"{cmd}","params":"{params}","token":"t"}}"#);
        let ns = format!("{}:{},", json.len(), json);
        self.s.write_all(ns.as_bytes()).await.unwrap();
    }

    /// Waits for an event whose `type` equals `ty`; returns the JSON text.
    pub async fn wait_event(&mut self, ty: &str, timeout: Duration) -> Option<String> {
        self.wait_event_any(&[ty], timeout).await
    }

    /// Waits for an event whose `type` is one of `types`; returns the JSON text.
    pub async fn wait_event_any(&mut self, types: &[&str], timeout: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(msg) = self.take_netstring() {
                if types
                    .iter()
                    .any(|ty| msg.contains(&format!("\"type\":\"{ty}\"")))
                {
                    return Some(msg);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take_netstring(&mut self) -> Option<String> {
        let colon = self.buf.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&self.buf[..colon]).ok()?.parse().ok()?;
        if self.buf.len() < colon + 1 + len + 1 {
            return None;
        }
        let msg = String::from_utf8_lossy(&self.buf[colon + 1..colon + 1 + len]).into_owned();
        self.buf.drain(..colon + 1 + len + 1);
        Some(msg)
    }
}
