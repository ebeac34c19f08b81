//! The `switchboard` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::app::{Agents, Host, describe_routes};
use switchboard::authoring::new;
use switchboard::config::Config;
use switchboard::config_client::{
    self, AccountsCommand, ApiArgs, RoutesCommand, TrunksCommand, WebhooksCommand,
};
use switchboard::logs::LogFeed;
use switchboard::otlp;
use switchboard::plugins::{Language, deploy};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "AI phone agents over SIP, as hot-reloadable WebAssembly"
)]
struct Cli {
    /// Configuration file (default: the bundled switchboard.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: load and watch agents, answer calls.
    Run,
    /// Create an agent project that builds, deploys and answers a call as it is.
    New {
        /// Agent name: it names the folder, the files and the agent (lowercase letters, digits,
        /// '-' or '_').
        name: String,
        /// rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: Language,
        /// The number it serves.
        #[arg(long, default_value = "5000")]
        number: String,
        /// Folder to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The switchboard-sdk folder a Rust agent depends on (default: this binary's checkout's
        /// guest-sdk).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// List the routing table and the agent versions that would be live.
    Agents,
    /// Build agents (Rust, Python or JavaScript, as their manifest says) and install them into
    /// the agents folder.
    Deploy {
        /// Agent folders (each with its agent.toml).
        #[arg(required = true)]
        crates: Vec<PathBuf>,
    },
    /// Run the host and rebuild + reload an agent whenever its sources change.
    Dev {
        /// The agent folder.
        crate_dir: PathBuf,
    },
    /// Run scripted conversations against an agent: no phone, network or voice model. Prints
    /// PASS/FAIL per conversation (the diff on failure) and a summary; exits 0 when all pass,
    /// 1 when one fails, 2 when the scripts, the build or the agent's load fail.
    Test {
        /// The agent's folder (its Cargo.toml and agent.toml).
        #[arg(default_value = ".")]
        agent_dir: PathBuf,
        /// Script files; by default every *.toml in the agent's tests/ folder.
        scripts: Vec<PathBuf>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Place a call from the command line (a softphone with a WAV microphone and recorder):
    /// one `event=... key=value` line per step on stdout; the exit code tells how it ended
    /// (0 answered and ended normally, 3 busy, 4 no answer, 5 interrupted before answer,
    /// 6 rejected, 7 no response or transport failure, 8 answered then dropped).
    Call(Box<switchboard::softphone::CallArgs>),
    /// Routes of a running host, through its API (`--api`, `--token` or SWITCHBOARD_API,
    /// SWITCHBOARD_TOKEN).
    Routes {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        what: RoutesCommand,
    },
    /// Registration accounts of a running host, through its API.
    Accounts {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        what: AccountsCommand,
    },
    /// Trunks of a running host, through its API.
    Trunks {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        what: TrunksCommand,
    },
    /// Outgoing webhooks of a running host, through its API.
    Webhooks {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        what: WebhooksCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Agent runtime costs: instantiate + on-start, hook call, reload-to-live, RSS per session.
    Agents {
        /// Deployed agent to measure.
        #[arg(long, default_value = "menu")]
        agent: String,
        /// Live sessions for the memory figure.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
}

/// Logs go to stderr (text or JSON) and to the API's live log feed.
fn init_logging(config: &Config, feed: &LogFeed) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only for a person at a terminal: files and pipes get plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(feed.layer());
    if config.log.json {
        registry.with(stderr.json()).init();
    } else {
        registry.with(stderr).init();
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(switchboard::app::main_worker_threads());
    }
    runtime
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(start())
}

async fn start() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Command::Call(_)
    | Command::Test { .. }
    | Command::Routes { .. }
    | Command::Accounts { .. }
    | Command::Trunks { .. }
    | Command::Webhooks { .. } = cli.command
    {
        // stdout carries the call's steps or the answer; stderr only what needs attention
        // (RUST_LOG overrides).
        config.log.level = "warn".into();
    }
    let logs = LogFeed::default();
    init_logging(&config, &logs);
    let done = match cli.command {
        Command::Call(args) => {
            let ended = switchboard::softphone::run(*args, &config).await?;
            return Ok(ExitCode::from(ended.exit_code()));
        }
        Command::Test {
            agent_dir,
            scripts,
            json,
        } => return Ok(agent_test(&agent_dir, &scripts, json, &config).await),
        Command::Run => run(config, None, logs).await,
        Command::New {
            name,
            lang,
            number,
            dir,
            sdk,
        } => {
            let dir = new::create(&new::NewAgent {
                name,
                language: lang,
                number: number.clone(),
                dir,
                sdk,
            })?;
            let dir = dir.display();
            println!("created the {lang} agent in {dir}; it serves {number}. Next:");
            println!(
                "  switchboard deploy {dir}        # build and install it (or: switchboard dev {dir})"
            );
            println!("  switchboard call sip:{number}@127.0.0.1:5060");
            Ok(())
        }
        // Clients of a running host: the host's configuration counts, not this one.
        Command::Routes { api, what } => {
            return Ok(client_exit(config_client::routes(&api, what).await));
        }
        Command::Accounts { api, what } => {
            return Ok(client_exit(config_client::accounts(&api, what).await));
        }
        Command::Trunks { api, what } => {
            return Ok(client_exit(config_client::trunks(&api, what).await));
        }
        Command::Webhooks { api, what } => {
            return Ok(client_exit(config_client::webhooks(&api, what).await));
        }
        Command::Agents => {
            let agents = Agents::start(config).await?;
            print!("{}", describe_routes(&agents.registry));
            Ok(())
        }
        Command::Deploy { crates } => {
            for dir in crates {
                let name = deploy::deploy(&dir, &config.agents.dir)?;
                println!("deployed {name} into {}", config.agents.dir.display());
            }
            Ok(())
        }
        Command::Dev { crate_dir } => run(config, Some(crate_dir), logs).await,
        Command::Bench {
            what: Bench::Agents { agent, sessions },
        } => {
            let figures = switchboard::bench::agents(&config.agents.dir, &agent, sessions)
                .await
                .with_context(|| {
                    format!(
                        "benchmarking `{agent}` from {} (deploy it first)",
                        config.agents.dir.display()
                    )
                })?;
            print!("{figures}");
            Ok(())
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// `switchboard test`: the report on stdout, its verdict in the exit code.
async fn agent_test(
    agent_dir: &Path,
    scripts: &[PathBuf],
    json: bool,
    config: &Config,
) -> ExitCode {
    use switchboard::authoring::script;
    let report = match script::scripts_for(agent_dir, scripts) {
        Ok(scripts) => script::run(agent_dir, &scripts, &config.agents).await,
        Err(e) => Err(e),
    };
    match report {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report is JSON")
                );
            } else {
                print!("{}", report.text());
            }
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A client command's exit: its error on one stderr line (with its causes), for scripts.
fn client_exit(result: Result<(), config_client::ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, dev_crate: Option<PathBuf>, logs: LogFeed) -> anyhow::Result<()> {
    let agents_dir = config.agents.dir.clone();
    if let Some(dir) = &dev_crate {
        // A failed first build is reported; the host still starts with what it has.
        deploy::rebuild(dir, &agents_dir).await;
    }
    let exporter = match &config.log.otlp_endpoint {
        Some(endpoint) => Some(otlp::spawn_exporter(
            &logs,
            endpoint,
            &config.log.otlp_service_name,
        )?),
        None => None,
    };
    let host = Host::start(config, logs).await?;
    let addrs = host.sip.local_addrs();
    let http = host.api.addr();
    tracing::info!(
        sip_udp = ?addrs.udp, sip_tcp = ?addrs.tcp, %http, model = host.calls.provider().name(),
        agents = %agents_dir.display(), "switchboard running"
    );
    println!("{}", describe_routes(&host.agents.registry));
    println!("HTTP API: http://{http}/v1 (OpenAPI: http://{http}/v1/openapi.json)");
    let _dev = match dev_crate {
        Some(dir) => Some(deploy::watch_crate(dir, agents_dir)?),
        None => None,
    };
    let mut signals = StopSignals::install()?;
    let drain = tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for Ctrl-C")?;
            false
        }
        _ = signals.term.recv() => true,
        () = host.drain.requested() => true,
    };
    if drain {
        // A second signal cuts the drain short.
        tokio::select! {
            () = host.drain() => {}
            r = signals.next() => r?,
        }
    }
    tracing::info!("shutting down");
    host.shutdown().await;
    if let Some(exporter) = exporter {
        exporter.finish().await;
    }
    Ok(())
}

/// The signals that stop the process: SIGTERM drains first (a load balancer moves new calls
/// elsewhere), Ctrl-C stops at once.
struct StopSignals {
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        Ok(StopSignals { term })
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = self.term.recv() => {}
        }
        Ok(())
    }
}
