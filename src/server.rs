//! Runs one Folio server: opens the store, bootstraps the administrator, builds the actix app
//! (HTTP, or HTTPS with rustls when `server.tls.*` is set) and manages the lifecycle
//! STARTING → RUNNING → DRAINING → STOPPING with a graceful stop.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::{HttpServer, web};

use crate::api;
use crate::app::{AppState, Lifecycle, Phase};
use crate::auth::server::{ServerGate, ServerTokens};
use crate::auth::{Auth, Role, UserRecord, password};
use crate::cluster::{self, Terms};
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::store::{Collection, Precondition, Store};
use crate::sync::{self, Replication};

/// The shared secrets Folio's example files carry, which a server warns about at start.
const EXAMPLE_SECRETS: [&str; 2] = ["change-this-shared-secret", "change-this-secret"];

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "another Folio server is using the data directory {0}: stop it, or give this server its own server.data_dir"
    )]
    DataDirInUse(String),
    #[error(
        "the data volume of {0} is full, too full even to open the store: free some space there and start again"
    )]
    VolumeFull(String),
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: String,
        source: crate::store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("cluster.mode=KUBERNETES: {0}")]
    Kubernetes(#[from] crate::cluster::kubernetes::KubeError),
    #[error("{0}")]
    Join(#[from] crate::cluster::bully::NoBootServer),
}

/// A started server.
pub struct Running {
    /// The bound address (the real port when `server.listen` used port 0).
    pub addr: SocketAddr,
    /// `http(s)://addr` + context path, ending in `/`.
    pub base_url: String,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Drains (ready answers 503) for `server.drain.grace`, then stops gracefully. A server an
    /// operator drained already stops at once: its balancer has had that time.
    pub async fn shutdown(self) {
        let drained = self.state.lifecycle.leave();
        // A BULLY leader hands leadership over now, not when it is gone.
        if let Some(bully) = &self.state.bully {
            bully.set_draining(true).await;
        }
        if drained {
            tracing::info!("stopping a server that was drained already");
        } else {
            tracing::info!(grace = ?self.state.config.server.drain_grace, "draining");
            tokio::time::sleep(self.state.config.server.drain_grace).await;
        }
        self.stop().await;
    }

    /// Stops at once, letting in-flight requests finish within `server.shutdown.timeout`.
    pub async fn stop(self) {
        self.state.lifecycle.advance(Phase::Stopping);
        self.shutdown.send_replace(true);
        self.handle.stop(true).await;
        let _ = self.task.await;
        for w in self.workers {
            let _ = w.await;
        }
        let _ = self.state.store.durable().await;
        // The store closes (and releases its lock) when the last handle goes: wait for the HTTP
        // workers to let go of the application state, so a restart in the same process can open it.
        // Calls to other servers still under way (a BULLY heartbeat) hold the store too.
        let store = self.state.store.clone();
        let state = self.state.into_inner();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&state) > 1 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(state);
        while store.handles() > 1 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if store.handles() > 1 {
            tracing::warn!(
                holders = store.handles() - 1,
                "stopped with the store still held by tasks under way; it closes when they end"
            );
        }
        drop(store);
        tracing::info!("stopped");
    }

    /// Resolves when the server stops by itself (or is stopped from a handle elsewhere).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

async fn server_id(config: &Config, store: &Store) -> Result<String, StartError> {
    if let Some(id) = config
        .server
        .id
        .clone()
        .or(config.cluster.bully_id.clone())
        .or(config.cluster.kubernetes_id.clone())
    {
        return Ok(id);
    }
    let made = format!("folio-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let stored = store
        .meta_init("server_id", made.into_bytes())
        .await
        .map_err(|e| StartError::Bootstrap(e.to_string()))?;
    Ok(String::from_utf8_lossy(&stored).into_owned())
}

/// Creates the configured administrator on the first start of a store, and never again.
async fn bootstrap_admin(
    config: &Config,
    sync: &Replication,
    origin: &str,
) -> Result<(), StartError> {
    let store = &sync.store;
    let err = |e: String| StartError::Bootstrap(e);
    if store
        .meta_get("bootstrapped")
        .await
        .map_err(|e| err(e.to_string()))?
        .is_some()
    {
        return Ok(());
    }
    match (&config.auth.admin_user, &config.auth.admin_password) {
        (Some(user), Some(pw)) => {
            let exists = store
                .get(Collection::Users, user.clone())
                .await
                .map_err(|e| err(e.to_string()))?;
            if exists.is_none_or(|i| i.deleted) {
                let pw = pw.expose().to_string();
                let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .map_err(err)?;
                let record = UserRecord {
                    role: Role::Admin,
                    password_hash: hash,
                };
                api::users::write_user(
                    sync,
                    user,
                    &record,
                    "bootstrap",
                    origin,
                    Precondition::None,
                )
                .await
                .map_err(|e| err(e.message))?;
                tracing::info!(user = %user, "created the bootstrap administrator");
            }
        }
        _ => tracing::warn!(
            "no auth.admin.user/auth.admin.password configured and no users yet: nobody can log in"
        ),
    }
    store
        .meta_init("bootstrapped", b"1".to_vec())
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn tls_config(config: &Config) -> Result<Option<rustls::ServerConfig>, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(tls) = &config.server.tls else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| StartError::Tls(format!("server.tls.cert {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "server.tls.cert {}: no certificate in the file",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| StartError::Tls(format!("server.tls.key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("certificate and key do not fit together: {e}")))?;
    Ok(Some(cfg))
}

/// Opens everything and starts serving; answers once the socket is bound and the server RUNNING.
fn peer_roots(config: &Config) -> Result<Vec<reqwest::Certificate>, StartError> {
    let Some(path) = &config.cluster.tls_ca else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path)
        .map_err(|e| StartError::Tls(format!("cluster.tls.ca {}: {e}", path.display())))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| StartError::Tls(format!("cluster.tls.ca {}: {e}", path.display())))
}

/// A server with its state built and its store, leadership and immediate pusher running, before
/// any socket is bound: what [`start`] serves, and what a test can hand to
/// [`app::create_app`] to call handlers in-process. Dropping it stops the pusher.
pub struct Prepared {
    pub state: web::Data<AppState>,
    lifecycle: Arc<Lifecycle>,
    shutdown: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    bully: Option<Arc<cluster::bully::Bully>>,
    kube: Option<Arc<cluster::kubernetes::Kubernetes>>,
}

/// Opens the store, takes part in leadership and bootstraps the administrator: everything but
/// the socket and the background workers.
pub async fn prepare(config: Config) -> Result<Prepared, StartError> {
    let config = Arc::new(config);
    if let Some(secret) = &config.cluster.shared_secret
        && EXAMPLE_SECRETS.contains(&secret.expose())
    {
        tracing::warn!(
            "cluster.shared.secret is still the example value printed in Folio's own files: anyone who read them can join this cluster and drive it. Set a secret of your own on every server (for docker-compose.yml: FOLIO_SHARED_SECRET in .env; scripts/compose-up writes a random one)"
        );
    }
    let lifecycle = Arc::new(Lifecycle::default());
    let dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Store {
        dir: dir.display().to_string(),
        source: crate::store::StoreError::Task(e.to_string()),
    })?;
    let options = crate::store::Options {
        cache_bytes: config.store.cache_bytes,
        history_keep: config.content.history_keep,
        without_history: crate::auth::WITHOUT_HISTORY.to_vec(),
        min_free_bytes: config.store.min_free_bytes,
    };
    let store = Store::open(&dir, options)
        .await
        .map_err(|source| match source {
            crate::store::StoreError::Locked => StartError::DataDirInUse(dir.display().to_string()),
            crate::store::StoreError::NoSpace(_) => {
                StartError::VolumeFull(dir.display().to_string())
            }
            source => StartError::Store {
                dir: dir.display().to_string(),
                source,
            },
        })?;
    let server_id = server_id(&config, &store).await?;
    let boot = |e: crate::store::StoreError| StartError::Bootstrap(e.to_string());
    let terms = Arc::new(Terms::load(store.clone()).await.map_err(boot)?);
    let metrics = Arc::new(Metrics::default());
    let http = cluster::remote::http_client(&peer_roots(&config)?, config.cluster.source_address)
        .map_err(StartError::Tls)?;
    let remotes = Arc::new(cluster::remote::Remotes::new(
        http,
        server_id.clone(),
        config.cluster.shared_secret.clone(),
        terms.clone(),
        metrics.peer_bytes.clone(),
    ));
    let mut bully = None;
    let mut kube = None;
    let leadership: Arc<dyn cluster::Leadership> = match config.cluster.mode {
        Mode::Bully => {
            let me = cluster::bully::Node {
                id: server_id.clone(),
                url: config.cluster.bully_bind.clone().unwrap_or_default(),
            };
            let b = cluster::bully::Bully::join(
                &config,
                me,
                store.clone(),
                terms.clone(),
                remotes.clone(),
                metrics.clone(),
            )
            .await?;
            bully = Some(b.clone());
            b
        }
        Mode::Kubernetes => {
            let k = cluster::kubernetes::Kubernetes::start(
                &config,
                terms.clone(),
                metrics.clone(),
                remotes.clone(),
            )
            .await?;
            kube = Some(k.clone());
            k
        }
        _ => {
            let l = cluster::fixed(&config);
            if config.cluster.mode != Mode::None && l.view().borrow().i_lead {
                let t = terms.bump().await.map_err(boot)?;
                tracing::info!(term = t, "leading");
            }
            l
        }
    };
    let sync = Arc::new(Replication::new(
        store.clone(),
        config.clone(),
        server_id.clone(),
        terms.clone(),
        leadership,
        metrics.clone(),
        remotes.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    // Saves (the admin bootstrap's among them) are pushed by this task from the start.
    let push_now = sync.take_push_now_queue().map(|queue| {
        tokio::spawn(sync::push::run_now(
            sync.clone(),
            queue,
            shutdown_rx.clone(),
        ))
    });
    bootstrap_admin(&config, &sync, &server_id).await?;
    let auth = Auth::new(&config, &store).await.map_err(boot)?;
    let server_tokens = if config.cluster.mode == Mode::None {
        None
    } else {
        ServerTokens::new(&config, &server_id)
    };
    let state = web::Data::new(AppState {
        config: config.clone(),
        store,
        auth: web::Data::new(auth),
        lifecycle: lifecycle.clone(),
        metrics,
        terms: terms.clone(),
        servers: web::Data::new(ServerGate {
            tokens: server_tokens,
            terms: terms.clone(),
        }),
        sync: sync.clone(),
        bully: bully.clone(),
        kubernetes: kube.clone(),
        shutdown: shutdown_rx.clone(),
        server_id,
    });
    Ok(Prepared {
        state,
        lifecycle,
        shutdown: shutdown_tx,
        workers: push_now.into_iter().collect(),
        bully,
        kube,
    })
}

/// Opens everything and starts serving; answers once the socket is bound and the server RUNNING.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let Prepared {
        state,
        lifecycle,
        shutdown: shutdown_tx,
        workers: mut started,
        bully,
        kube,
    } = prepare(config).await?;
    let shutdown_rx = shutdown_tx.subscribe();
    let config = state.config.clone();
    let sync = state.sync.clone();
    let listener =
        TcpListener::bind(config.server.listen).map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    // Answers go out at once, not held back for the client's delayed acknowledgement: a streamed
    // (compressed) answer is written in several pieces. Accepted connections inherit this.
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on the listener");
    }
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let tls = tls_config(&config)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ctx = config.server.context_path.clone();
    let shown_host = if addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    let base_url = format!(
        "{scheme}://{}:{}{}/",
        if addr.is_ipv6() {
            format!("[{shown_host}]")
        } else {
            shown_host
        },
        addr.port(),
        ctx.trim_end_matches('/')
    );

    let app_state = state.clone();
    let factory = move || api::create_app(app_state.clone());
    let server = HttpServer::new(factory)
        .disable_signals()
        .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1));
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls),
        None => server.listen(listener),
    }
    .map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let mut workers = Vec::new();
    if config.cluster.mode != Mode::None {
        workers.push(tokio::spawn(sync::follow::run(
            sync.clone(),
            shutdown_rx.clone(),
        )));
        workers.push(tokio::spawn(sync::push::run(
            sync.clone(),
            shutdown_rx.clone(),
        )));
    }
    workers.append(&mut started);
    let sweep_every = crate::auth::expiry::PERIOD.min(config.auth.session_ttl);
    workers.push(tokio::spawn(crate::auth::expiry::run(
        sync.clone(),
        sweep_every,
        shutdown_rx.clone(),
    )));
    if let Some(b) = bully {
        workers.push(tokio::spawn(b.run(shutdown_rx.clone())));
    }
    if let Some(k) = kube {
        workers.push(tokio::spawn(k.run(shutdown_rx.clone())));
    }
    lifecycle.advance(Phase::Running);
    tracing::info!(url = %base_url, server = %state.server_id, mode = config.cluster.mode.as_str(), "folio is running");
    Ok(Running {
        addr,
        base_url,
        state,
        handle,
        task,
        shutdown: shutdown_tx,
        workers,
    })
}
