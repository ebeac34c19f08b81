//! A real Postgres server for tests (Debian's `postgresql`), one per test process, started on
//! first use, and an empty database per test. Shared by the store's unit tests and the
//! end-to-end tests (`tests/all` includes this file), so it uses std and libc only.
//!
//! Start-up is a copy, not an `initdb`: the first process initialises a template cluster
//! under `<target>/postgres/template` (guarded by a lock file), every process copies it to
//! `<target>/postgres/runs/<pid>` and starts a server there on a free port, listening on
//! 127.0.0.1 and a socket in that folder. The server is stopped (`pg_ctl -m immediate`) when
//! the process exits, a failed test included; a run killed before that leaves its folder, and
//! the next process stops that server and removes it.
//!
//! `initdb` refuses root: as root, the cluster belongs to (and every server command runs as)
//! the `postgres` user. Without Postgres installed the tests that need it are skipped with a
//! message, except under `CI=true`, where that is a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The superuser of the test clusters (no password: `trust` on 127.0.0.1).
const USER: &str = "test";

struct Server {
    bin: PathBuf,
    run: PathBuf,
    port: u16,
    owner: Owner,
}

/// Who runs the server commands: this process's user, or `postgres` when that is root.
#[derive(Clone, Copy)]
struct Owner {
    ids: Option<(u32, u32)>,
}

impl Owner {
    fn find() -> Owner {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Owner { ids: None };
        }
        // SAFETY: getpwnam gets a NUL-terminated name; its result is read before any other
        // passwd call.
        let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        assert!(
            !pw.is_null(),
            "running as root, and there is no postgres user to run Postgres as"
        );
        // SAFETY: pw is non-null and points to a valid passwd entry.
        let ids = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Owner { ids: Some(ids) }
    }

    fn command(self, program: &Path) -> Command {
        match self.ids {
            None => Command::new(program),
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
        }
    }

    /// Makes `dir` (created if missing) the owner's.
    fn own(self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        }
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, or `$SWITCHBOARD_POSTGRES_BIN`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `<target>/postgres`: the test binary is `<target>/<profile>/deps/<name>`.
fn base_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("postgres")
}

/// Stops the servers of test processes that are gone and removes their folders.
fn remove_leftovers(bin: &Path, runs: &Path, owner: Owner) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = entry.path().join("data");
        if data.join("postmaster.pid").exists() {
            let mut stop = owner.command(&bin.join("pg_ctl"));
            stop.arg("-D").arg(&data).args(["-m", "immediate", "stop"]);
            let _ = run(stop, "stopping a leftover test server");
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// The template cluster, initialised once for all test processes.
fn template(bin: &Path, base: &Path, owner: Owner) -> Result<PathBuf, String> {
    let template = base.join("template");
    let lock = File::create(base.join("template.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if !template.join("PG_VERSION").exists() {
        let partial = base.join("template.partial");
        let _ = std::fs::remove_dir_all(&partial);
        owner.own(&partial);
        let mut initdb = owner.command(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&partial)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--no-locale"])
            .arg("--no-sync");
        run(initdb, "initdb")?;
        std::fs::rename(&partial, &template).map_err(|e| e.to_string())?;
    }
    Ok(template)
}

impl Server {
    fn start(bin: PathBuf) -> Result<Server, String> {
        let started = Instant::now();
        let owner = Owner::find();
        let base = base_dir();
        let runs = base.join("runs");
        owner.own(&base);
        owner.own(&runs);
        remove_leftovers(&bin, &runs, owner);
        let template = template(&bin, &base, owner)?;
        let run_dir = runs.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&run_dir);
        owner.own(&run_dir);
        let data = run_dir.join("data");
        let mut copy = owner.command(Path::new("cp"));
        copy.arg("-a").arg(&template).arg(&data);
        run(copy, "copying the template cluster")?;
        let mut last_error = String::new();
        // A free port may be taken between the probe and the server's bind: try again.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let mut start = owner.command(&bin.join("pg_ctl"));
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(run_dir.join("server.log"))
                .args(["-w", "-t", "30", "-o"])
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1",
                    run_dir.display()
                ))
                .arg("start");
            match run(start, "pg_ctl start") {
                Ok(()) => {
                    eprintln!(
                        "test Postgres on 127.0.0.1:{port} started in {} ms",
                        started.elapsed().as_millis()
                    );
                    return Ok(Server {
                        bin,
                        run: run_dir,
                        port,
                        owner,
                    });
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn stop(&self) {
        let mut stop = self.owner.command(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.run.join("data"))
            .args(["-m", "immediate", "stop"]);
        if let Err(e) = run(stop, "stopping the test Postgres") {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_at_exit() {
    if let Some(Some(server)) = SERVER.get() {
        server.stop();
    }
}

fn server() -> Option<&'static Server> {
    SERVER
        .get_or_init(|| {
            let Some(bin) = find_bin() else {
                let missing = "Postgres is not installed (no /usr/lib/postgresql/*/bin/initdb; \
                               apt-get install postgresql, or set SWITCHBOARD_POSTGRES_BIN)";
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{missing}: required under CI"
                );
                eprintln!("skipped: {missing}");
                return None;
            };
            let server = Server::start(bin).unwrap_or_else(|e| panic!("test Postgres: {e}"));
            // SAFETY: registers a plain function; it runs once, at exit.
            unsafe { libc::atexit(stop_at_exit) };
            Some(server)
        })
        .as_ref()
}

/// The URL of a new, empty database on this process's test server (started on first use);
/// None, after a message, when Postgres is not installed and this is not CI.
pub fn database() -> Option<String> {
    let server = server()?;
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let mut create = Command::new(server.bin.join("psql"));
    create
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", USER, "-d", "postgres", "-Atqc"])
        .arg(format!("CREATE DATABASE {name}"));
    run(create, "creating a test database").unwrap();
    Some(format!(
        "postgres://{USER}@127.0.0.1:{}/{name}",
        server.port
    ))
}

/// Runs `sql` on the database at `url` (a [`database`] of this process) with `psql`; its output.
pub fn psql(url: &str, sql: &str) -> String {
    let server = server().expect("psql needs the test server");
    let out = Command::new(server.bin.join("psql"))
        .args([url, "-Atqc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
