//! TLS for the tests: a throwaway CA and a 127.0.0.1 leaf certificate made with the `openssl`
//! program ([`TestCerts`]), and a rustls (ring) front that forwards decrypted bytes to a fake.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Listens on 127.0.0.1 with TLS and forwards to a plain-TCP backend; stops when dropped.
pub struct TlsFront {
    pub port: u16,
    /// PEM of the CA that signed the server certificate.
    pub ca_file: PathBuf,
    _certs: TestCerts,
    task: JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the `openssl` program is here; under CI a missing one fails the test.
pub fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is required under CI=true"
        );
        eprintln!("SKIP: openssl is not installed");
    }
    ok
}

/// A throwaway CA and a leaf certificate for 127.0.0.1 and localhost, made with `openssl`.
pub struct TestCerts {
    /// PEM of the CA.
    pub ca: PathBuf,
    /// PEM of the leaf (the chain a server presents) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    leaf: LeafKey,
    dir: tempfile::TempDir,
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// The key of a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKey {
    /// ECDSA on P-256 (what [`TestCerts::make`] makes).
    EcdsaP256,
    Rsa2048,
}

impl LeafKey {
    /// `openssl req` arguments for a new key of this kind.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            LeafKey::EcdsaP256 => &EC,
            LeafKey::Rsa2048 => &["-newkey", "rsa:2048", "-nodes"],
        }
    }
}

impl TestCerts {
    /// A CA and an ECDSA P-256 leaf.
    pub fn make() -> TestCerts {
        TestCerts::make_with(LeafKey::EcdsaP256)
    }

    /// A CA (ECDSA P-256) and a leaf with a `leaf` key.
    pub fn make_with(leaf: LeafKey) -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=Switchboard test CA",
        ];
        ca.extend(EC);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(dir.path(), &ca);
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let certs = TestCerts {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("leaf.pem"),
            key: dir.path().join("leaf.key"),
            leaf,
            dir,
        };
        certs.renew_leaf();
        certs
    }

    /// A new key and leaf certificate from the same CA, written over the old files.
    pub fn renew_leaf(&self) {
        let dir = self.dir.path();
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(self.leaf.newkey());
        csr.extend(["-keyout", "leaf.key.new", "-out", "leaf.csr"]);
        openssl(dir, &csr);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem.new",
            ],
        );
        std::fs::rename(dir.join("leaf.key.new"), &self.key).unwrap();
        std::fs::rename(dir.join("leaf.pem.new"), &self.cert).unwrap();
    }

    /// Another certificate from this CA, in `<name>.pem` and `<name>.key`: for `san` (e.g.
    /// `DNS:carrier.test`), for `usage` (`serverAuth` or `clientAuth`), valid for a day or over
    /// `dates` (`YYMMDDHHMMSSZ` from and to: one that expired, say).
    pub fn issue(
        &self,
        name: &str,
        san: &str,
        usage: &str,
        dates: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        let (key, csr, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req", "-subj", "/CN=switchboard-test"];
        req.extend(EC);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let pem = format!("{name}.pem");
        // `openssl ca` sets any validity period (`x509 -req` only counts days from now).
        let (start, end) = dates.unwrap_or(("", ""));
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
             serial = ca.srl.ca\ndefault_md = sha256\ndefault_days = 1\npolicy = any\n\
             unique_subject = no\n[any]\ncommonName = supplied\n",
        )
        .unwrap();
        if !dir.join("ca.srl.ca").exists() {
            std::fs::write(dir.join("ca.srl.ca"), "1000\n").unwrap();
            std::fs::write(dir.join("index.txt"), "").unwrap();
        }
        let mut sign = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
            "ca.key", "-in", &csr, "-extfile", &ext, "-out", &pem,
        ];
        if dates.is_some() {
            sign.extend(["-startdate", start, "-enddate", end]);
        }
        openssl(dir, &sign);
        (dir.join(pem), dir.join(key))
    }

    /// The leaf certificate (DER) as the files hold it now.
    pub fn leaf_der(&self) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    }

    /// A client configuration that trusts the CA only.
    pub fn client_config(&self) -> rustls::ClientConfig {
        client_config_trusting(&self.ca)
    }

    /// Renews the leaf, as an operator would, and sends SIGHUP to the process `pid` serving it
    /// on 127.0.0.1:`port`: the old leaf was served before, the new one is within 10 s.
    pub async fn renew_and_reload(&self, pid: u32, port: u16) {
        let old = self.leaf_der().to_vec();
        assert_eq!(self.served_leaf(port).await, Some(old.clone()));
        self.renew_leaf();
        let new = self.leaf_der().to_vec();
        assert_ne!(old, new);
        // SAFETY: kill(2) on a process the test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.served_leaf(port).await.as_ref() != Some(&new) {
            assert!(
                std::time::Instant::now() < deadline,
                "the renewed certificate is served"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The leaf certificate a TLS listener on 127.0.0.1:`port` serves now, verified against
    /// this CA (`None` when the handshake fails).
    pub async fn served_leaf(&self, port: u16) -> Option<Vec<u8>> {
        let tls = self.connect(port).await.ok()?;
        Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
    }

    /// A TLS connection to a listener on 127.0.0.1:`port`, its certificate verified against
    /// this CA.
    pub async fn connect(
        &self,
        port: u16,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(self.client_config()))
            .connect(name, tcp)
            .await
    }
}

/// A rustls (ring) client configuration, TLS 1.2 and 1.3, that trusts the CAs in the PEM file
/// `ca` only.
pub fn client_config_trusting(ca: &Path) -> rustls::ClientConfig {
    client_config_with(ca, rustls::DEFAULT_VERSIONS)
}

/// A rustls (ring) client configuration of these TLS `versions` that trusts the CAs in the PEM
/// file `ca` only.
pub fn client_config_with(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()))
    {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl TlsFront {
    pub async fn start(backend_port: u16) -> TlsFront {
        let certs = TestCerts::make();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut backend) = TcpStream::connect(("127.0.0.1", backend_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
                });
            }
        });
        TlsFront {
            port,
            ca_file: certs.ca.clone(),
            _certs: certs,
            task,
        }
    }
}
