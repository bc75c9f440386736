//! The `folio` command: runs the server (the default) and the operator tools beside it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use folio::config::{Config, Inputs, LogFormat};

#[derive(Parser)]
#[command(
    name = "folio",
    version,
    about = "Keeps the workbooks and data sources of a cluster of servers identical"
)]
struct Cli {
    /// Properties file (default conf/folio.properties, if present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Override a key, e.g. --set server.listen=127.0.0.1:9090 (repeatable; beats env and file).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args)]
struct Remote {
    /// Server URL including the context path.
    #[arg(long, env = "FOLIO_URL", default_value = "http://localhost:8080/")]
    url: String,
    /// User to log in as.
    #[arg(long, env = "FOLIO_USER", default_value = "admin")]
    user: String,
    /// Password; read from FOLIO_PASSWORD so it stays out of the process list.
    #[arg(long, env = "FOLIO_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM bundle to trust for an HTTPS server with a private CA.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Check or show the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Make a local CA and a server certificate for HTTPS.
    Cert {
        /// Directory for ca.pem, ca-key.pem, server.pem, server-key.pem.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Host names or IP addresses the certificate is valid for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Export every collection of a running server into a JSON-lines file.
    Backup {
        #[command(flatten)]
        remote: Remote,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Import a backup file into a running server.
    Restore {
        #[command(flatten)]
        remote: Remote,
        /// Backup file.
        #[arg(long = "in", short)]
        input: PathBuf,
    },
    /// Turn a running server DRAINING so the load balancer moves sessions off it (or, with
    /// --cancel, back to RUNNING).
    Drain {
        #[command(flatten)]
        remote: Remote,
        /// Cancel a drain: the server becomes ready again (not once it is stopping).
        #[arg(long)]
        cancel: bool,
    },
    /// Exit 0 when the local server (per the configuration) answers /ready, 1 otherwise; for
    /// container health checks.
    Probe,
    /// Show the cluster as a running server sees it.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Mode, term, leader and every member with role, health, last contact, lag and version.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and exit (0 valid, 2 invalid or with unknown keys).
    Check {
        /// Accept unknown keys (they are still listed as warnings).
        #[arg(long)]
        allow_unknown: bool,
    },
    /// Print every key with its effective value and source (secrets redacted), even when the
    /// configuration is invalid (the errors follow, and the exit code is 2).
    Show {
        /// `table` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Print the table of every known key (Markdown), as in the README.
    Keys,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ShowFormat {
    Table,
    Json,
}

/// Loads the configuration, printing its warnings and then its errors (warnings often explain
/// the errors: an unknown key beside a missing one).
fn load(cli: &Cli) -> Result<(Config, folio::config::Resolved), ExitCode> {
    let inputs = Inputs::from_process(cli.config.clone(), cli.set.clone());
    let (resolved, config) = Config::load_all(&inputs);
    for w in &resolved.warnings {
        eprintln!("warning: {w}");
    }
    match config {
        Ok(config) => Ok((config, resolved)),
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// `folio config check` and `folio config show`.
fn config_command(cli: &Cli, action: &ConfigAction) -> ExitCode {
    let inputs = Inputs::from_process(cli.config.clone(), cli.set.clone());
    let (resolved, config) = Config::load_all(&inputs);
    if let ConfigAction::Show { format } = action {
        let rows = resolved.show();
        match format {
            ShowFormat::Json => {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|(k, v, s)| serde_json::json!({ "key": k, "value": v, "source": s }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            ShowFormat::Table => {
                let rows: Vec<(&str, String, String)> = rows
                    .into_iter()
                    .map(|(k, v, s)| (k, printable(&v), printable(&s)))
                    .collect();
                let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
                let v = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).min(48);
                for (key, value, source) in rows {
                    println!("{key:w$}  {value:v$}  {source}");
                }
            }
        }
    }
    for w in &resolved.warnings {
        eprintln!("warning: {w}");
    }
    if let Err(errors) = &config {
        for e in errors {
            eprintln!("error: {e}");
        }
        return ExitCode::from(2);
    }
    if let ConfigAction::Check { allow_unknown } = action {
        let unknown = resolved.warnings.len();
        if unknown > 0 && !allow_unknown {
            eprintln!(
                "error: the configuration has {unknown} problem(s) above that would be ignored; fix them, or pass --allow-unknown to accept them"
            );
            return ExitCode::from(2);
        }
        println!("configuration is valid");
    }
    ExitCode::SUCCESS
}

/// `s` with control characters escaped (`\t`, `\n`, `\u{1b}`), so one value stays on one line.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},actix_server=warn", config.log.level))
    });
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    init_logging(&config);
    let admin = config.auth.admin_user.clone();
    let public = config.server.public_url.clone();
    let mut running = match folio::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let users_url = match &public {
        Some(p) => {
            println!(
                "Folio is running: users reach it at {p} (this server listens at {})",
                running.base_url
            );
            p.clone()
        }
        None => {
            println!("Folio is running at {}", running.base_url);
            running.base_url.clone()
        }
    };
    if let Some(admin) = admin {
        println!("Log in as {admin} at {users_url}admin (or POST {users_url}api/v1/login)");
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = term.recv() => running.shutdown().await,
        _ = tokio::signal::ctrl_c() => running.shutdown().await,
        _ = running.wait() => {}
    }
    ExitCode::SUCCESS
}

/// `GET /api/v1/cluster` as a table.
fn cluster_table(v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "mode {}   term {}   leader {}   this server {}\n\n",
        s(&v["mode"]),
        s(&v["term"]),
        s(&v["leader"]["id"]),
        s(&v["me"]["id"])
    );
    let head = [
        "SERVER",
        "ROLE",
        "HEALTH",
        "LAST CONTACT",
        "LAG",
        "VERSION",
        "CLOCK OFFSET MS",
    ];
    let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for m in v["members"].as_array().into_iter().flatten() {
        let id = if m["self"] == true {
            format!("{} *", s(&m["id"]))
        } else {
            s(&m["id"])
        };
        rows.push(vec![
            id,
            s(&m["role"]),
            s(&m["health"]),
            s(&m["last_contact"]),
            s(&m["lag"]),
            s(&m["version"]),
            s(&m["clock_offset_ms"]),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("(* this server)");
    for m in v["members"].as_array().into_iter().flatten() {
        if let Some(reason) = m["reason"].as_str() {
            out.push_str(&format!(
                "\n{} is {}: {reason}",
                s(&m["id"]),
                s(&m["health"])
            ));
        }
    }
    for w in v["clock_warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("\n{}", s(&w["message"])));
    }
    out
}

async fn probe(config: &Config) -> ExitCode {
    let addr = config.server.listen;
    let host = if addr.ip().is_unspecified() {
        if addr.is_ipv6() {
            "[::1]".to_string()
        } else {
            "127.0.0.1".to_string()
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let ctx = config.server.context_path.trim_end_matches('/');
    let url = format!("{scheme}://{host}:{}{ctx}/ready", addr.port());
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3));
    if let Some(ca) = &config.cluster.tls_ca
        && let Ok(pem) = std::fs::read(ca)
        && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
    {
        builder = builder.tls_certs_merge(certs);
    }
    let ok = match builder.build() {
        Ok(c) => c
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("{url} is not ready");
        ExitCode::from(1)
    }
}

/// The shared secret of the configuration, when it names one: on a server's host it stands in
/// for a user's password (read quietly: the operator commands need no other key).
fn operator_secret(cli: &Cli) -> Option<folio::config::Secret> {
    let inputs = Inputs::from_process(cli.config.clone(), cli.set.clone());
    folio::config::resolve(&inputs).ok().and_then(|r| {
        r.get("cluster.shared.secret")
            .map(|(v, _)| folio::config::Secret::new(v.clone()))
            .filter(|s| !s.expose().is_empty())
    })
}

async fn remote<F, Fut>(cli: &Cli, r: &Remote, f: F) -> ExitCode
where
    F: FnOnce(folio::client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let secret = match r.password {
        Some(_) => None,
        None => operator_secret(cli),
    };
    let login = match (r.password.as_deref(), secret) {
        (Some(password), _) => {
            folio::client::Client::login(&r.url, &r.user, password, r.ca.as_deref()).await
        }
        // On a server's host, its configuration's shared secret stands in for a password.
        (None, Some(secret)) => {
            folio::client::Client::operator(&r.url, secret.expose(), r.ca.as_deref()).await
        }
        (None, None) => {
            eprintln!(
                "error: no password for {}: set FOLIO_PASSWORD (or pass --password, which other users of this machine can see); on a server's host, a configuration with cluster.shared.secret (--config) will do for drain and cluster status",
                r.user
            );
            return ExitCode::from(2);
        }
    };
    let client = match login {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match f(client).await {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// jemalloc rather than the system allocator: a server's memory stays near what it holds instead
/// of growing with the bursts it has handled.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread hands freed memory back to the system within a
/// second, and one arena serves every thread (jemalloc's default of four per core keeps a
/// server's freed memory spread over arenas it seldom reuses: 15-25 % more resident memory here,
/// for no measurable gain in throughput). `_RJEM_MALLOC_CONF` in the environment still overrides
/// them.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0"[0];

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None | Some(Command::Serve) => match load(&cli) {
            Ok((config, resolved)) => {
                if !resolved.warnings.is_empty() {
                    eprintln!(
                        "warning: the {} configuration problem(s) above are ignored and the defaults apply there; `folio config check` lists them",
                        resolved.warnings.len()
                    );
                }
                serve(config).await
            }
            Err(code) => code,
        },
        Some(Command::Config {
            action: ConfigAction::Keys,
        }) => {
            print!("{}", folio::config::keys::markdown_table());
            ExitCode::SUCCESS
        }
        Some(Command::Config { action }) => config_command(&cli, action),
        Some(Command::Cert { dir, hosts }) => match folio::certs::make(dir, hosts) {
            Ok(w) => {
                println!(
                    "wrote {}, {} and {}",
                    w.ca.display(),
                    w.cert.display(),
                    w.key.display()
                );
                println!(
                    "use: --set server.tls.cert={} --set server.tls.key={}",
                    w.cert.display(),
                    w.key.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Backup { remote: r, out }) => {
            remote(&cli, r, |c| async move {
                c.backup(out)
                    .await
                    .map(|n| format!("wrote {n} lines to {}", out.display()))
            })
            .await
        }
        Some(Command::Restore { remote: r, input }) => {
            remote(&cli, r, |c| async move {
                c.restore(input).await.map(|v| v.to_string())
            })
            .await
        }
        Some(Command::Cluster {
            action: ClusterAction::Status { remote: r },
        }) => {
            remote(&cli, r, |c| async move {
                c.call(reqwest::Method::GET, "api/v1/cluster", None)
                    .await
                    .map(|v| cluster_table(&v))
            })
            .await
        }
        Some(Command::Probe) => match load(&cli) {
            Ok((config, _)) => probe(&config).await,
            Err(code) => code,
        },
        Some(Command::Drain { remote: r, cancel }) => {
            let method = if *cancel {
                reqwest::Method::DELETE
            } else {
                reqwest::Method::POST
            };
            remote(&cli, r, |c| async move {
                c.call(method, "api/v1/drain", None)
                    .await
                    .map(|v| v.to_string())
            })
            .await
        }
    }
}
