//! The table of every configuration key Folio knows: its type, default, whether it is a secret, and
//! what it means. Everything else in `config` (environment mapping, validation, `config show`, the
//! "did you mean" suggestions and the README table) is driven from this one table.

/// What kind of value a key takes; each kind has one parser in `config::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `host:port` socket address.
    SocketAddr,
    /// A URL path prefix such as `/` or `/folio`.
    ContextPath,
    /// A file system path.
    Path,
    /// Free text (non-empty when set).
    Text,
    /// An `http://` or `https://` URL.
    Url,
    /// A comma-separated list of URLs.
    UrlList,
    /// `NONE`, `FIXED`, `BULLY` or `KUBERNETES`, any case.
    Mode,
    /// A duration such as `250ms`, `5s`, `2m`.
    Duration,
    /// An unsigned integer in an inclusive range.
    Int { min: u64, max: u64 },
    /// `trace`, `debug`, `info`, `warn` or `error`.
    LogLevel,
    /// `text` or `json`.
    LogFormat,
}

impl Kind {
    /// What a valid value looks like, for error messages.
    pub fn expected(self) -> String {
        match self {
            Kind::SocketAddr => "a socket address such as 0.0.0.0:8080".into(),
            Kind::ContextPath => "a path starting with / such as / or /folio".into(),
            Kind::Path => "a file system path".into(),
            Kind::Text => "a non-empty string".into(),
            Kind::Url => "an http:// or https:// URL such as http://10.0.0.5:8080/folio/".into(),
            Kind::UrlList => "a comma-separated list of http:// or https:// URLs".into(),
            Kind::Mode => "one of NONE, FIXED, BULLY, KUBERNETES".into(),
            Kind::Duration => "a duration such as 250ms, 5s or 2m".into(),
            Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
            Kind::LogLevel => "one of trace, debug, info, warn, error".into(),
            Kind::LogFormat => "text or json".into(),
        }
    }
}

/// One known key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub key: &'static str,
    pub kind: Kind,
    /// Built-in default; `None` means unset unless configured.
    pub default: Option<&'static str>,
    /// Redacted in `config show`, logs and error messages.
    pub secret: bool,
    pub help: &'static str,
}

impl KeySpec {
    /// The environment variable that overrides this key: upper case, `.` → `_`.
    pub fn env_var(&self) -> String {
        self.key.replace('.', "_").to_ascii_uppercase()
    }
}

const fn k(
    key: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    help: &'static str,
) -> KeySpec {
    KeySpec {
        key,
        kind,
        default,
        secret: false,
        help,
    }
}

const fn secret(key: &'static str, help: &'static str) -> KeySpec {
    KeySpec {
        key,
        kind: Kind::Text,
        default: None,
        secret: true,
        help,
    }
}

const MAX_U32: u64 = u32::MAX as u64;

/// Every key Folio accepts, in the order `config show` and the README list them.
pub const KEYS: &[KeySpec] = &[
    k(
        "server.listen",
        Kind::SocketAddr,
        Some("0.0.0.0:8080"),
        "socket address to listen on",
    ),
    k(
        "server.context_path",
        Kind::ContextPath,
        Some("/"),
        "path the application is served under",
    ),
    k(
        "server.public_url",
        Kind::Url,
        None,
        "the address users reach Folio at (a load balancer's URL), named first in the start banner",
    ),
    k(
        "server.data_dir",
        Kind::Path,
        Some("./data"),
        "where the sled store and its write-ahead log (`wal/`) live",
    ),
    k(
        "server.tls.cert",
        Kind::Path,
        None,
        "PEM certificate chain; with server.tls.key the server speaks HTTPS only",
    ),
    k(
        "server.tls.key",
        Kind::Path,
        None,
        "PEM private key for server.tls.cert",
    ),
    k(
        "server.drain.grace",
        Kind::Duration,
        Some("5s"),
        "on SIGTERM, how long /ready answers 503 before the listener closes",
    ),
    k(
        "server.shutdown.timeout",
        Kind::Duration,
        Some("30s"),
        "how long in-flight requests may take to finish when stopping",
    ),
    k(
        "server.id",
        Kind::Text,
        None,
        "this server's id in origins and cluster views; default: the BULLY or KUBERNETES id, else one made at first start",
    ),
    k(
        "cluster.mode",
        Kind::Mode,
        Some("NONE"),
        "NONE, FIXED, BULLY or KUBERNETES",
    ),
    secret(
        "cluster.shared.secret",
        "same non-empty string on every server; required unless cluster.mode=NONE",
    ),
    secret(
        "cluster.shared.secret.previous",
        "the secret being rotated out, still accepted during the overlap",
    ),
    k(
        "cluster.fixed.leader",
        Kind::Url,
        None,
        "FIXED: the leader URL, on followers only; blank on the leader",
    ),
    k(
        "cluster.bully.id",
        Kind::Text,
        None,
        "BULLY: this server's unique id; the lowest running id leads",
    ),
    k(
        "cluster.bully.bind",
        Kind::Url,
        None,
        "BULLY: the URL at which the other servers reach this one",
    ),
    k(
        "cluster.bully.boot",
        Kind::UrlList,
        None,
        "BULLY: comma-separated URLs of the boot servers",
    ),
    k(
        "cluster.bully.min_members",
        Kind::Int { min: 1, max: 1000 },
        Some("1"),
        "BULLY: below this many reachable members, writes are queued as pending",
    ),
    k(
        "cluster.bully.stability",
        Kind::Duration,
        Some("10s"),
        "BULLY: how long a (re)joining lower id must be up before it takes over from a live leader",
    ),
    k(
        "cluster.clock.warn",
        Kind::Duration,
        Some("5s"),
        "a server whose clock is further than this from the leader's is named in the cluster view, /health, the metrics, the page and the log (nothing depends on clocks agreeing)",
    ),
    k(
        "cluster.heartbeat.interval",
        Kind::Duration,
        Some("1s"),
        "BULLY: how often servers exchange heartbeats",
    ),
    k(
        "cluster.heartbeat.timeout",
        Kind::Duration,
        Some("5s"),
        "BULLY: a member silent for this long counts as gone (at least twice the interval)",
    ),
    k(
        "cluster.kubernetes.id",
        Kind::Text,
        None,
        "KUBERNETES: this pod's name (downward API)",
    ),
    k(
        "cluster.kubernetes.label_selector",
        Kind::Text,
        None,
        "KUBERNETES: selector for the Folio pods, e.g. app=folio",
    ),
    k(
        "cluster.kubernetes.peer_path",
        Kind::Text,
        Some("/"),
        "KUBERNETES: application path on each pod, e.g. folio/",
    ),
    k(
        "cluster.kubernetes.container_name",
        Kind::Text,
        None,
        "KUBERNETES: container to take the port from; first container if unset",
    ),
    k(
        "cluster.kubernetes.api_url",
        Kind::Url,
        None,
        "KUBERNETES: API server URL; default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
    ),
    k(
        "cluster.kubernetes.token_file",
        Kind::Path,
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "KUBERNETES: service-account token (read again at every refresh, so rotation works)",
    ),
    k(
        "cluster.kubernetes.ca_file",
        Kind::Path,
        Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        "KUBERNETES: CA bundle of the API server",
    ),
    k(
        "cluster.kubernetes.namespace_file",
        Kind::Path,
        Some("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
        "KUBERNETES: file naming the namespace the pods run in",
    ),
    k(
        "cluster.kubernetes.refresh",
        Kind::Duration,
        Some("5s"),
        "KUBERNETES: how often the pod list is read again",
    ),
    k(
        "cluster.poll.interval",
        Kind::Duration,
        Some("5s"),
        "how often a follower polls when nothing arrives earlier",
    ),
    k(
        "cluster.push.timeout",
        Kind::Duration,
        Some("2s"),
        "how long a follower's save waits for the leader before answering 202 pending (and a request for a session made a moment ago elsewhere)",
    ),
    k(
        "cluster.token.ttl",
        Kind::Duration,
        Some("5m"),
        "lifetime of the server tokens this server issues to its peers",
    ),
    k(
        "cluster.source_address",
        Kind::Text,
        None,
        "local IP address to open connections to peers from (multi-homed hosts); any if unset",
    ),
    k(
        "cluster.tls.ca",
        Kind::Path,
        None,
        "PEM bundle trusted for peer HTTPS, beside the system roots",
    ),
    k(
        "content.history.keep",
        Kind::Int { min: 1, max: 1000 },
        Some("20"),
        "revisions kept per item",
    ),
    k(
        "limits.body.max_bytes",
        Kind::Int {
            min: 1024,
            max: 256 * 1024 * 1024,
        },
        Some("4194304"),
        "largest request body accepted (413 above)",
    ),
    k(
        "limits.import.max_bytes",
        Kind::Int {
            min: 1024,
            max: 1 << 36,
        },
        Some("1073741824"),
        "largest import (POST /api/v1/import) accepted",
    ),
    k(
        "limits.json.max_depth",
        Kind::Int { min: 2, max: 128 },
        Some("64"),
        "deepest JSON nesting accepted in a body",
    ),
    k(
        "auth.admin.user",
        Kind::Text,
        None,
        "bootstrap administrator, created on first start only",
    ),
    secret(
        "auth.admin.password",
        "password of the bootstrap administrator",
    ),
    k(
        "auth.session.ttl",
        Kind::Duration,
        Some("12h"),
        "how long a login session and its token stay valid",
    ),
    k(
        "auth.login.max_failures",
        Kind::Int {
            min: 1,
            max: MAX_U32,
        },
        Some("5"),
        "failed logins per user or address within auth.login.window before 429",
    ),
    k(
        "auth.login.window",
        Kind::Duration,
        Some("5m"),
        "window over which failed logins are counted",
    ),
    k(
        "store.cache.mb",
        Kind::Int { min: 1, max: 65536 },
        Some("16"),
        "sled page cache size in MiB (the process holds several times this)",
    ),
    k(
        "store.min_free.mb",
        Kind::Int {
            min: 0,
            max: 1_048_576,
        },
        Some("64"),
        "free space (MiB) saves keep on the data volume: below it they are refused with 507 insufficient_storage and reads go on; 0 turns the check off",
    ),
    k(
        "log.level",
        Kind::LogLevel,
        Some("info"),
        "trace, debug, info, warn or error",
    ),
    k("log.format", Kind::LogFormat, Some("text"), "text or json"),
];

/// The key table as Markdown: key, environment variable, meaning, default.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | environment | meaning | default |\n|---|---|---|---|\n");
    for s in KEYS {
        let default = match s.default {
            Some(d) if !d.is_empty() => format!("`{d}`"),
            _ => "unset".to_string(),
        };
        let help = if s.secret {
            format!("{} (secret: always redacted)", s.help)
        } else {
            s.help.to_string()
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            s.key,
            s.env_var(),
            help.replace('|', "\\|"),
            default
        ));
    }
    out
}

/// Looks a key up in the table.
pub fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|s| s.key == key)
}

/// The known key closest to an unknown one, when it is close enough to be a likely typo.
pub fn nearest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|s| (strsim::damerau_levenshtein(key, s.key), s.key))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, k)| *d <= (k.len() / 3).max(3))
        .map(|(_, k)| k)
}
