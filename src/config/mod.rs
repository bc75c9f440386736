//! Configuration: a Java properties file, environment variables and command-line overrides resolved
//! through the known-key table (`keys`) into one typed, validated [`Config`].
//!
//! Precedence is command line > environment > file > built-in default. Every resolved value keeps
//! its [`Source`] so errors and `folio config show` can say where it came from.
//!
//! The `config` crate merges the layers (`layers`: one source each, handing over flat keys with
//! their origins); `java-properties` does the file syntax and reports line numbers; the known-key
//! table types and checks what the merge gives.

pub mod keys;
mod layers;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keys::{KEYS, KeySpec, Kind};

/// Where a configured value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File { path: String, line: usize },
    Env(String),
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::CommandLine => write!(f, "command line"),
        }
    }
}

/// A configuration problem that prevents starting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value} for {key} ({origin}): expected {expected}")]
    Invalid {
        key: String,
        value: String,
        origin: Source,
        expected: String,
    },
    #[error("{key} is required{why}")]
    Missing { key: String, why: String },
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("invalid command-line setting {arg:?}: expected key=value")]
    BadOverride { arg: String },
    #[error("unknown key {key} on the command line{hint}")]
    UnknownOverride { key: String, hint: String },
}

/// A non-fatal remark about the configuration (an unknown key in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is never printed: `Debug` and `Display` show `******`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call sites are the only places it is handled.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

/// Cluster leadership mode (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Fixed,
    Bully,
    Kubernetes,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "NONE",
            Mode::Fixed => "FIXED",
            Mode::Bully => "BULLY",
            Mode::Kubernetes => "KUBERNETES",
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved raw strings for every set key with their sources, before typing.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    values: BTreeMap<&'static str, (String, Source)>,
    pub warnings: Vec<Warning>,
}

impl Resolved {
    /// The raw value and source of a key, if set (defaults included).
    pub fn get(&self, key: &str) -> Option<&(String, Source)> {
        self.values.get(key)
    }

    /// Every known key with its value (secrets redacted) and source, for `folio config show`.
    pub fn show(&self) -> Vec<(&'static str, String, String)> {
        KEYS.iter()
            .map(|spec| match self.values.get(spec.key) {
                Some((v, src)) => (spec.key, display_value(spec, v), src.to_string()),
                None => (spec.key, "(unset)".to_string(), "default".to_string()),
            })
            .collect()
    }
}

fn display_value(spec: &KeySpec, v: &str) -> String {
    if spec.secret && !v.is_empty() {
        "******".into()
    } else {
        v.to_string()
    }
}

/// Where configuration comes from; tests build one directly, `main` from the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The properties file; a missing file is an error only when it was named explicitly.
    pub file: Option<PathBuf>,
    pub file_required: bool,
    /// Environment variables (the process environment in `main`).
    pub env: Vec<(String, String)>,
    /// `key=value` overrides from the command line.
    pub overrides: Vec<String>,
}

impl Inputs {
    /// Inputs from the process environment.
    pub fn from_process(file: Option<PathBuf>, overrides: Vec<String>) -> Self {
        let file_required = file.is_some();
        let file = file.or_else(|| Some(PathBuf::from("conf/folio.properties")));
        Inputs {
            file,
            file_required,
            env: std::env::vars().collect(),
            overrides,
        }
    }
}

/// Resolves every key from defaults, the file, the environment and the command line.
pub fn resolve(inputs: &Inputs) -> Result<Resolved, Vec<ConfigError>> {
    let (r, errors) = resolve_all(inputs);
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(errors)
    }
}

/// Everything that could be read, with its warnings, and every error found on the way: the
/// layers (defaults, file, environment, command line) merged by the `config` crate.
pub fn resolve_all(inputs: &Inputs) -> (Resolved, Vec<ConfigError>) {
    let sink = Arc::new(Mutex::new(layers::Diagnostics::default()));
    let mut builder = config::Config::builder().add_source(layers::Defaults);
    if let Some(path) = &inputs.file {
        builder = builder.add_source(layers::PropertiesFile {
            path: path.clone(),
            required: inputs.file_required,
            sink: sink.clone(),
        });
    }
    let builder = builder
        .add_source(layers::Environment {
            vars: inputs.env.clone(),
        })
        .add_source(layers::CommandLine {
            overrides: inputs.overrides.clone(),
            sink: sink.clone(),
        });
    let mut r = Resolved::default();
    // Folio's sources cannot fail (they report to the sink), so neither can the merge.
    let merged = builder
        .build()
        .and_then(|c| config::Source::collect(&c))
        .unwrap_or_default();
    for spec in KEYS {
        if let Some(v) = merged.get(&layers::merge_key(spec.key)) {
            let source = layers::source_of(v);
            if let Ok(text) = v.clone().into_string() {
                r.values.insert(spec.key, (text, source));
            }
        }
    }
    let d = std::mem::take(&mut *sink.lock().unwrap_or_else(|p| p.into_inner()));
    r.warnings = d.warnings;
    (r, d.errors)
}

fn hint(key: &str) -> String {
    keys::nearest(key)
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// Lines (numbered from 1) that end with a line-continuing backslash and are followed by a blank
/// line: the value they continue ends at that blank line, which is seldom what was meant.
fn backslash_before_blank(bytes: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    (0..lines.len().saturating_sub(1))
        .filter(|&i| {
            let trailing = lines[i].chars().rev().take_while(|c| *c == '\\').count();
            trailing % 2 == 1 && lines[i + 1].trim().is_empty()
        })
        .map(|i| i + 1)
        .collect()
}

/// What a properties file holds: each known key's value with its line, and what is wrong.
struct FileRead {
    values: Vec<(&'static str, String, usize)>,
    warnings: Vec<Warning>,
    errors: Vec<ConfigError>,
}

/// Reads a properties file (`java-properties` does the syntax: continuations, escapes,
/// separators, comments), naming unknown keys and values cut short by a blank line.
fn read_file(path: &Path, bytes: &[u8]) -> FileRead {
    let mut out = FileRead {
        values: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let shown = path.display().to_string();
    // (line, key, value, known) of every pair, for explaining blank continuations below.
    let mut pairs: Vec<(usize, String, String, bool)> = Vec::new();
    let iter = java_properties::PropertiesIter::new_with_encoding(bytes, encoding_rs::UTF_8);
    for line in iter {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                out.errors.push(ConfigError::Syntax {
                    path: shown.clone(),
                    line: e.line_number().unwrap_or(0),
                    reason: e
                        .to_string()
                        .split(" (line_number")
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                });
                return out;
            }
        };
        let n = line.line_number();
        if let java_properties::LineContent::KVPair(key, value) = line.consume_content() {
            let spec = keys::spec(&key);
            pairs.push((n, key.clone(), value.clone(), spec.is_some()));
            if let Some(spec) = spec {
                out.values.push((spec.key, value, n));
            }
        }
    }
    // A backslash before a blank line ends the value there; what follows is read as new keys.
    let mut explained = std::collections::HashSet::new();
    for site in backslash_before_blank(bytes) {
        let Some((start, key, value, _)) = pairs.iter().rev().find(|p| p.0 <= site) else {
            continue;
        };
        let ends = if value.is_empty() {
            format!("so {key} is empty")
        } else {
            format!("so the value of {key} (line {start}) ends there")
        };
        let strays: Vec<&(usize, String, String, bool)> = pairs
            .iter()
            .filter(|p| p.0 > site + 1)
            .take_while(|p| !p.3)
            .collect();
        let mut said = format!(
            "{shown}:{site} ends with a backslash and line {} is blank, {ends}",
            site + 1
        );
        if !strays.is_empty() {
            let lines: Vec<String> = strays.iter().map(|p| p.0.to_string()).collect();
            let mut keys: Vec<&str> = strays.iter().map(|p| p.1.as_str()).collect();
            keys.dedup();
            let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            said.push_str(&format!(
                "; line{} {} {} read as {} {}",
                if lines.len() == 1 { "" } else { "s" },
                join_and(&lines),
                if lines.len() == 1 { "was" } else { "were" },
                if keys.len() == 1 { "a key" } else { "keys" },
                join_and(&keys)
            ));
            explained.extend(strays.iter().map(|p| p.0));
        }
        said.push_str(" (remove the blank line, or the backslash)");
        out.warnings.push(Warning(said));
    }
    for (n, key, _, known) in &pairs {
        if !known && !explained.contains(n) {
            out.warnings.push(Warning(format!(
                "{shown}:{n}: unknown key {key}{}",
                hint(key)
            )));
        }
    }
    out
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The typed configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cluster: ClusterConfig,
    pub content: ContentConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// Every key with its effective value (secrets redacted) and source, for operators.
    pub effective: Vec<(&'static str, String, String)>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Normalised: `/` or `/prefix` without a trailing slash.
    pub context_path: String,
    pub data_dir: PathBuf,
    pub tls: Option<TlsFiles>,
    /// Explicit `server.id`, if set.
    pub id: Option<String>,
    pub drain_grace: Duration,
    pub shutdown_timeout: Duration,
    /// The address users reach Folio at, when set (`server.public_url`).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub mode: Mode,
    pub shared_secret: Option<Secret>,
    pub shared_secret_previous: Option<Secret>,
    pub fixed_leader: Option<String>,
    pub bully_id: Option<String>,
    pub bully_bind: Option<String>,
    pub bully_boot: Vec<String>,
    pub bully_min_members: usize,
    pub bully_stability: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub kubernetes_id: Option<String>,
    pub kubernetes_label_selector: Option<String>,
    pub kubernetes_peer_path: String,
    pub kubernetes_container_name: Option<String>,
    pub kubernetes_api_url: Option<String>,
    pub kubernetes_token_file: PathBuf,
    pub kubernetes_ca_file: PathBuf,
    pub kubernetes_namespace_file: PathBuf,
    pub kubernetes_refresh: Duration,
    pub poll_interval: Duration,
    /// `cluster.clock.warn`: clock offsets to the leader beyond this are reported.
    pub clock_warn: Duration,
    pub push_timeout: Duration,
    pub token_ttl: Duration,
    pub source_address: Option<std::net::IpAddr>,
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ContentConfig {
    pub history_keep: usize,
    pub max_body_bytes: usize,
    pub import_max_bytes: usize,
    pub max_json_depth: usize,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub admin_user: Option<String>,
    pub admin_password: Option<Secret>,
    pub session_ttl: Duration,
    pub login_max_failures: u32,
    pub login_window: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub cache_bytes: u64,
    /// Free bytes saves keep on the data volume (`store.min_free.mb`).
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// Reads typed values out of a [`Resolved`], collecting every error instead of stopping at the first.
struct Reader<'a> {
    r: &'a Resolved,
    errors: Vec<ConfigError>,
}

/// A parsed value of one kind.
enum Val {
    Addr(SocketAddr),
    Str(String),
    List(Vec<String>),
    Dur(Duration),
    Int(u64),
    Mode(Mode),
    Format(LogFormat),
}

impl<'a> Reader<'a> {
    fn val(&mut self, key: &str) -> Option<Val> {
        let spec = keys::spec(key).expect("key is in the table");
        let (raw, source) = self.r.get(key)?;
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        match parse(spec.kind, raw) {
            Some(v) => Some(v),
            None => {
                self.errors.push(ConfigError::Invalid {
                    key: key.to_string(),
                    value: if spec.secret {
                        "******".into()
                    } else {
                        format!("{raw:?}")
                    },
                    origin: source.clone(),
                    expected: spec.kind.expected(),
                });
                None
            }
        }
    }
    fn str(&mut self, key: &str) -> Option<String> {
        match self.val(key) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn dur(&mut self, key: &str) -> Duration {
        match self.val(key) {
            Some(Val::Dur(d)) => d,
            _ => Duration::from_secs(1),
        }
    }
    fn int(&mut self, key: &str) -> u64 {
        match self.val(key) {
            Some(Val::Int(n)) => n,
            _ => 1,
        }
    }
    fn ip(&mut self, key: &str) -> Option<std::net::IpAddr> {
        let (raw, source) = self.r.get(key)?.clone();
        if raw.trim().is_empty() {
            return None;
        }
        match raw.trim().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.errors.push(ConfigError::Invalid {
                    key: key.into(),
                    value: format!("{raw:?}"),
                    origin: source,
                    expected: "an IP address such as 10.0.0.5".into(),
                });
                None
            }
        }
    }
    fn missing(&mut self, key: &str, why: impl Into<String>) {
        self.errors.push(ConfigError::Missing {
            key: key.into(),
            why: why.into(),
        });
    }
}

fn parse(kind: Kind, raw: &str) -> Option<Val> {
    Some(match kind {
        Kind::SocketAddr => Val::Addr(raw.parse().ok()?),
        Kind::ContextPath => {
            if !raw.starts_with('/') || raw.contains("//") || raw.contains("..") {
                return None;
            }
            let ok = raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
            if !ok {
                return None;
            }
            let trimmed = raw.trim_end_matches('/');
            Val::Str(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            })
        }
        Kind::Path | Kind::Text => Val::Str(raw.to_string()),
        Kind::Url => Val::Str(parse_url(raw)?),
        Kind::UrlList => {
            let urls: Option<Vec<String>> = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_url)
                .collect();
            let urls = urls?;
            if urls.is_empty() {
                return None;
            }
            Val::List(urls)
        }
        Kind::Mode => Val::Mode(match raw.to_ascii_uppercase().as_str() {
            "NONE" => Mode::None,
            "FIXED" => Mode::Fixed,
            "BULLY" => Mode::Bully,
            "KUBERNETES" => Mode::Kubernetes,
            _ => return None,
        }),
        Kind::Duration => {
            let d = humantime::parse_duration(raw).ok()?;
            if d.is_zero() {
                return None;
            }
            Val::Dur(d)
        }
        Kind::Int { min, max } => {
            let n: u64 = raw.parse().ok()?;
            if n < min || n > max {
                return None;
            }
            Val::Int(n)
        }
        Kind::LogLevel => {
            let l = raw.to_ascii_lowercase();
            if !["trace", "debug", "info", "warn", "error"].contains(&l.as_str()) {
                return None;
            }
            Val::Str(l)
        }
        Kind::LogFormat => Val::Format(match raw.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return None,
        }),
    })
}

/// Normalises a peer URL: scheme http/https, a host, and a path ending in `/`.
fn parse_url(raw: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Some(url.to_string())
}

impl Config {
    /// Resolves and validates; on failure every problem is reported, not only the first.
    pub fn load(inputs: &Inputs) -> Result<(Config, Resolved), Vec<ConfigError>> {
        let (resolved, config) = Config::load_all(inputs);
        Ok((config?, resolved))
    }

    /// Like [`Config::load`], also answering what could be read (values and warnings) when
    /// the configuration is invalid, so it can be shown beside the errors.
    pub fn load_all(inputs: &Inputs) -> (Resolved, Result<Config, Vec<ConfigError>>) {
        let (resolved, mut errors) = resolve_all(inputs);
        let config = match Config::from_resolved(&resolved) {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        };
        (resolved, config)
    }

    /// Types and cross-checks resolved values.
    pub fn from_resolved(r: &Resolved) -> Result<Config, Vec<ConfigError>> {
        let mut rd = Reader {
            r,
            errors: Vec::new(),
        };
        let listen = match rd.val("server.listen") {
            Some(Val::Addr(a)) => a,
            _ => SocketAddr::from(([0, 0, 0, 0], 8080)),
        };
        let context_path = rd.str("server.context_path").unwrap_or_else(|| "/".into());
        let data_dir = PathBuf::from(rd.str("server.data_dir").unwrap_or_else(|| "./data".into()));
        let cert = rd.str("server.tls.cert");
        let key = rd.str("server.tls.key");
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => {
                rd.missing("server.tls.key", " when server.tls.cert is set");
                None
            }
            (None, Some(_)) => {
                rd.missing("server.tls.cert", " when server.tls.key is set");
                None
            }
            (None, None) => None,
        };
        let server = ServerConfig {
            listen,
            context_path,
            data_dir,
            tls,
            id: rd.str("server.id"),
            drain_grace: rd.dur("server.drain.grace"),
            shutdown_timeout: rd.dur("server.shutdown.timeout"),
            public_url: rd.str("server.public_url"),
        };

        let mode = match rd.val("cluster.mode") {
            Some(Val::Mode(m)) => m,
            _ => Mode::None,
        };
        let shared_secret = rd.str("cluster.shared.secret").map(Secret);
        let why = format!(" when cluster.mode={}", mode.as_str());
        if mode != Mode::None && shared_secret.is_none() {
            rd.missing("cluster.shared.secret", why.clone());
        }
        let bully_boot = match rd.val("cluster.bully.boot") {
            Some(Val::List(l)) => l,
            _ => Vec::new(),
        };
        let cluster = ClusterConfig {
            mode,
            shared_secret,
            shared_secret_previous: rd.str("cluster.shared.secret.previous").map(Secret),
            fixed_leader: rd.str("cluster.fixed.leader"),
            bully_id: rd.str("cluster.bully.id"),
            bully_bind: rd.str("cluster.bully.bind"),
            bully_boot,
            bully_min_members: rd.int("cluster.bully.min_members") as usize,
            bully_stability: rd.dur("cluster.bully.stability"),
            heartbeat_interval: rd.dur("cluster.heartbeat.interval"),
            heartbeat_timeout: rd.dur("cluster.heartbeat.timeout"),
            kubernetes_id: rd.str("cluster.kubernetes.id"),
            kubernetes_label_selector: rd.str("cluster.kubernetes.label_selector"),
            kubernetes_peer_path: rd
                .str("cluster.kubernetes.peer_path")
                .unwrap_or_else(|| "/".into()),
            kubernetes_container_name: rd.str("cluster.kubernetes.container_name"),
            kubernetes_api_url: rd.str("cluster.kubernetes.api_url"),
            kubernetes_token_file: rd
                .str("cluster.kubernetes.token_file")
                .unwrap_or_default()
                .into(),
            kubernetes_ca_file: rd
                .str("cluster.kubernetes.ca_file")
                .unwrap_or_default()
                .into(),
            kubernetes_namespace_file: rd
                .str("cluster.kubernetes.namespace_file")
                .unwrap_or_default()
                .into(),
            kubernetes_refresh: rd.dur("cluster.kubernetes.refresh"),
            poll_interval: rd.dur("cluster.poll.interval"),
            clock_warn: rd.dur("cluster.clock.warn"),
            push_timeout: rd.dur("cluster.push.timeout"),
            token_ttl: rd.dur("cluster.token.ttl"),
            source_address: rd.ip("cluster.source_address"),
            tls_ca: rd.str("cluster.tls.ca").map(PathBuf::from),
        };
        if cluster.heartbeat_timeout < cluster.heartbeat_interval * 2 {
            let (raw, source) = r
                .get("cluster.heartbeat.timeout")
                .cloned()
                .unwrap_or((String::new(), Source::Default));
            rd.errors.push(ConfigError::Invalid {
                key: "cluster.heartbeat.timeout".into(),
                value: format!("{raw:?}"),
                origin: source,
                expected: "at least twice cluster.heartbeat.interval".into(),
            });
        }
        match mode {
            Mode::Bully => {
                for (key, set) in [
                    ("cluster.bully.id", cluster.bully_id.is_some()),
                    ("cluster.bully.bind", cluster.bully_bind.is_some()),
                    ("cluster.bully.boot", !cluster.bully_boot.is_empty()),
                ] {
                    if !set && r.get(key).is_none_or(|(v, _)| v.trim().is_empty()) {
                        rd.missing(key, why.clone());
                    }
                }
            }
            Mode::Kubernetes => {
                for (key, set) in [
                    ("cluster.kubernetes.id", cluster.kubernetes_id.is_some()),
                    (
                        "cluster.kubernetes.label_selector",
                        cluster.kubernetes_label_selector.is_some(),
                    ),
                ] {
                    if !set && r.get(key).is_none_or(|(v, _)| v.trim().is_empty()) {
                        rd.missing(key, why.clone());
                    }
                }
            }
            Mode::None | Mode::Fixed => {}
        }

        let content = ContentConfig {
            history_keep: rd.int("content.history.keep") as usize,
            max_body_bytes: rd.int("limits.body.max_bytes") as usize,
            import_max_bytes: rd.int("limits.import.max_bytes") as usize,
            max_json_depth: rd.int("limits.json.max_depth") as usize,
        };
        let admin_user = rd.str("auth.admin.user");
        if let Some(u) = &admin_user
            && !crate::ids::is_valid_id(u)
        {
            let (raw, source) = r
                .get("auth.admin.user")
                .cloned()
                .unwrap_or((String::new(), Source::Default));
            rd.errors.push(ConfigError::Invalid {
                key: "auth.admin.user".into(),
                value: format!("{raw:?}"),
                origin: source,
                expected: "a user name of letters, digits, '-' and '_' (at most 128)".into(),
            });
        }
        let admin_password = rd.str("auth.admin.password").map(Secret);
        if admin_user.is_some() != admin_password.is_some() {
            let key = if admin_user.is_some() {
                "auth.admin.password"
            } else {
                "auth.admin.user"
            };
            let other = if admin_user.is_some() {
                "auth.admin.user"
            } else {
                "auth.admin.password"
            };
            rd.missing(key, format!(" when {other} is set"));
        }
        let auth = AuthConfig {
            admin_user,
            admin_password,
            session_ttl: rd.dur("auth.session.ttl"),
            login_max_failures: rd.int("auth.login.max_failures") as u32,
            login_window: rd.dur("auth.login.window"),
        };
        let store = StoreConfig {
            cache_bytes: rd.int("store.cache.mb") * 1024 * 1024,
            min_free_bytes: rd.int("store.min_free.mb") * 1024 * 1024,
        };
        let level = rd.str("log.level").unwrap_or_else(|| "info".into());
        let format = match rd.val("log.format") {
            Some(Val::Format(f)) => f,
            _ => LogFormat::Text,
        };
        let log = LogConfig { level, format };
        if rd.errors.is_empty() {
            Ok(Config {
                server,
                cluster,
                content,
                auth,
                store,
                log,
                effective: r.show(),
            })
        } else {
            Err(rd.errors)
        }
    }

    /// A configuration for tests and tools: defaults plus the given overrides, no file, no environment.
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let inputs = Inputs {
            file: None,
            file_required: false,
            env: Vec::new(),
            overrides: overrides.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        Config::load(&inputs).map(|(c, _)| c)
    }
}
