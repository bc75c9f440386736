//! The client side of the server-to-server API: one `Remote` per other server, holding a reused
//! HTTP connection pool and a cached server token. Every call carries the protocol version, this
//! server's id, version and term; answers carrying a newer term are adopted, answers from an older
//! term are refused (a fenced leader), a 401 renews the token once and a `stale_term` refusal
//! adopts the newer term and retries once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cluster::Terms;
use crate::config::Secret;
use crate::error::Code;
use crate::wire::{
    self, DELTAS_HEADER, NOW_HEADER, PROTOCOL, PROTOCOL_HEADER, TERM_HEADER, VERSION_HEADER,
};

/// Why a call to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer (connection refused, reset, timed out).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// An answer refusing the call, with its code when Folio knows it (another version may send
    /// codes this one does not).
    #[error("refused with {status} {}: {message}", code.map_or("(unknown code)", Code::as_str))]
    Refused {
        status: u16,
        code: Option<Code>,
        message: String,
        details: Value,
    },
    /// The answer came from an older term than ours: a leader that has been replaced.
    #[error("the peer answered from term {theirs}, older than ours ({ours})")]
    Fenced { theirs: u64, ours: u64 },
    /// The answer could not be understood.
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
}

impl RemoteError {
    /// The peer could not be reached at all (as opposed to answering with a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RemoteError::Unreachable(_))
    }

    /// The peer answered and refused the call.
    pub fn is_refusal(&self) -> bool {
        matches!(self, RemoteError::Refused { .. })
    }
}

/// What a token exchange told about the server that answered it.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Its id.
    pub id: String,
    /// Its clock minus ours, in milliseconds.
    pub offset_ms: i64,
    /// When that was measured (on our monotonic clock).
    pub at: Instant,
}

/// A client of one other server.
pub struct Remote {
    http: reqwest::Client,
    /// Base URL including the context path, ending in `/`.
    pub base: String,
    me: String,
    secret: Secret,
    terms: Arc<Terms>,
    /// The cached token, when it was obtained and how long it lives.
    token: tokio::sync::Mutex<Option<(String, Instant, Duration)>>,
    /// What the last token exchange told about the peer.
    pub hello: std::sync::Mutex<Option<Hello>>,
    /// The id the peer gave in its last challenge answer (known even when it then refuses the
    /// proof).
    named: std::sync::Mutex<Option<String>>,
    /// Body bytes received from peers (`folio_peer_bytes_received_total`).
    received: prometheus_client::metrics::counter::Counter,
}

/// Clients of the other servers, one per base URL, made on first use and shared by
/// synchronisation and the BULLY election (so a token obtained by one serves the other).
pub struct Remotes {
    http: reqwest::Client,
    /// This server's id, which its token requests name.
    me: String,
    /// `cluster.shared.secret`; without it no other server can be called.
    secret: Option<Secret>,
    terms: Arc<Terms>,
    /// Body bytes received from other servers (`folio_peer_bytes_received_total`).
    received: prometheus_client::metrics::counter::Counter,
    by_url: std::sync::Mutex<std::collections::HashMap<String, Arc<Remote>>>,
}

impl Remotes {
    pub fn new(
        http: reqwest::Client,
        me: String,
        secret: Option<Secret>,
        terms: Arc<Terms>,
        received: prometheus_client::metrics::counter::Counter,
    ) -> Remotes {
        Remotes {
            http,
            me,
            secret,
            terms,
            received,
            by_url: Default::default(),
        }
    }

    /// The client of the server at `url` (`None` without a shared secret).
    pub fn get(&self, url: &str) -> Option<Arc<Remote>> {
        let secret = self.secret.clone()?;
        let mut by_url = crate::lock(&self.by_url);
        let remote = by_url.entry(url.to_string()).or_insert_with(|| {
            Arc::new(Remote::new(
                self.http.clone(),
                url.to_string(),
                self.me.clone(),
                secret,
                self.terms.clone(),
                self.received.clone(),
            ))
        });
        Some(remote.clone())
    }
}

/// The most an answer may grow to when decompressed (a bound against a hostile peer).
const MAX_ANSWER: u64 = 1 << 30;

/// Decompresses a zstd answer, refusing one that would grow past [`MAX_ANSWER`].
fn unzstd(bytes: &[u8]) -> Result<bytes::Bytes, RemoteError> {
    use std::io::Read;
    let bad = |e: std::io::Error| RemoteError::BadAnswer(format!("undecodable zstd answer: {e}"));
    let mut out = Vec::with_capacity(bytes.len() * 4);
    zstd::stream::read::Decoder::new(bytes)
        .map_err(bad)?
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() as u64 > MAX_ANSWER {
        return Err(RemoteError::BadAnswer(
            "a compressed answer grows past 1 GiB".into(),
        ));
    }
    Ok(out.into())
}

/// Builds the HTTP client used to call other servers, trusting `cluster.tls.ca` beside the system roots and
/// connecting from `cluster.source_address` when set.
pub fn http_client(
    ca: &[reqwest::Certificate],
    source: Option<std::net::IpAddr>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(90))
        .local_address(source)
        .tcp_nodelay(true);
    if !ca.is_empty() {
        b = b.tls_certs_merge(ca.iter().cloned());
    }
    b.build().map_err(|e| e.to_string())
}

impl Remote {
    pub fn new(
        http: reqwest::Client,
        base: String,
        me: String,
        secret: Secret,
        terms: Arc<Terms>,
        received: prometheus_client::metrics::counter::Counter,
    ) -> Remote {
        Remote {
            http,
            base,
            me,
            secret,
            terms,
            token: tokio::sync::Mutex::new(None),
            hello: std::sync::Mutex::new(None),
            named: std::sync::Mutex::new(None),
            received,
        }
    }

    async fn token(&self, renew: bool) -> Result<String, RemoteError> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some((t, at, ttl)) = cached.as_ref()
            && at.elapsed() < *ttl / 2
        {
            return Ok(t.clone());
        }
        // The proof is bound to the server at this URL, so it cannot be replayed on another.
        let audience = self.server_id().await?;
        let sent = wire::now_ms();
        let answer = self.exchange(Some(&audience)).await;
        let body = match answer {
            Err(
                e @ RemoteError::Refused {
                    code: Some(Code::ProofForAnotherServer),
                    ..
                },
            ) => {
                // Another server answers at this URL now: learn its id for the next try.
                *crate::lock(&self.hello) = None;
                return Err(e);
            }
            // An older version, which knows no audience: its own form of the proof.
            Err(RemoteError::Refused {
                code: Some(Code::InvalidBody),
                ..
            }) => self.exchange(None).await?,
            other => other?,
        };
        let token = body["token"]
            .as_str()
            .ok_or_else(|| RemoteError::BadAnswer("no token".into()))?
            .to_string();
        let received = wire::now_ms();
        if let (Some(id), Some(their_now)) = (body["server"].as_str(), body["now_ms"].as_u64()) {
            let offset = wire::offset_ms(their_now, sent / 2 + received / 2);
            *crate::lock(&self.hello) = Some(Hello {
                id: id.to_string(),
                offset_ms: offset,
                at: Instant::now(),
            });
        }
        if let Some(t) = body["term"].as_u64() {
            let _ = self.terms.observe(t).await;
        }
        let ttl = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(60));
        *cached = Some((token.clone(), Instant::now(), ttl));
        Ok(token)
    }

    /// Sends a fresh proof (bound to `audience` when given) and answers the token exchange's
    /// answer.
    async fn exchange(&self, audience: Option<&str>) -> Result<Value, RemoteError> {
        let secret = self.secret.expose();
        let req = match self.challenge().await? {
            Some(c) => wire::make_request_answering(secret, &self.me, audience, &c),
            // An earlier version: a timestamped proof, which needs the clocks to agree.
            None => wire::make_request_for(secret, &self.me, audience),
        };
        let resp = self
            .http
            .post(format!("{}cluster/v1/token", self.base))
            .header(PROTOCOL_HEADER, PROTOCOL.to_string())
            .timeout(Duration::from_secs(5))
            .json(&req)
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        self.read(resp).await
    }

    /// A challenge of the server at this URL for the next proof to answer; `None` from an
    /// earlier version, which has no such call (404, 405).
    async fn challenge(&self) -> Result<Option<String>, RemoteError> {
        let resp = self
            .http
            .post(format!("{}cluster/v1/challenge", self.base))
            .header(PROTOCOL_HEADER, PROTOCOL.to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        match self
            .read_with(resp, |b| serde_json::from_slice::<wire::ChallengeAnswer>(b))
            .await
        {
            Ok(answer) => {
                *crate::lock(&self.named) = Some(answer.server);
                Ok(Some(answer.challenge))
            }
            Err(RemoteError::Refused {
                status: 404 | 405,
                code,
                ..
            }) if code != Some(Code::NotClustered) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id the server at this URL last gave: in a token exchange, else in a challenge answer.
    pub fn named(&self) -> Option<String> {
        let named = crate::lock(&self.named).clone();
        named.or_else(|| crate::lock(&self.hello).as_ref().map(|h| h.id.clone()))
    }

    /// The id of the server at this URL: as its last token exchange said, else as its
    /// `/health` says.
    async fn server_id(&self) -> Result<String, RemoteError> {
        if let Some(hello) = crate::lock(&self.hello).clone() {
            return Ok(hello.id);
        }
        let resp = self
            .http
            .get(format!("{}health", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        let body = self.read(resp).await?;
        body["server"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RemoteError::BadAnswer("/health names no server".into()))
    }

    async fn read(&self, resp: reqwest::Response) -> Result<Value, RemoteError> {
        self.read_with(resp, |b| serde_json::from_slice(b)).await
    }

    /// Decodes a successful answer's body with `decode`; a refusal becomes
    /// [`RemoteError::Refused`].
    async fn read_with<R>(
        &self,
        resp: reqwest::Response,
        decode: impl FnOnce(&[u8]) -> serde_json::Result<R>,
    ) -> Result<R, RemoteError> {
        let status = resp.status();
        let zstd = resp
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        // What crossed the wire, compressed or not.
        self.received.inc_by(bytes.len() as u64);
        let bytes = if zstd { unzstd(&bytes)? } else { bytes };
        let bad = |e: serde_json::Error| RemoteError::BadAnswer(format!("{status}: {e}"));
        if status.is_success() {
            return decode(&bytes).map_err(bad);
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(bad)?;
        let err = &body["error"];
        Err(RemoteError::Refused {
            status: status.as_u16(),
            code: err["code"].as_str().and_then(Code::parse),
            message: err["message"].as_str().unwrap_or("").to_string(),
            details: err.clone(),
        })
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
        renew: bool,
    ) -> Result<T, RemoteError> {
        let token = self.token(renew).await?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}cluster/v1/{path}", self.base))
            .bearer_auth(token)
            .header(PROTOCOL_HEADER, PROTOCOL.to_string())
            .header(TERM_HEADER, self.terms.current().to_string())
            .header(VERSION_HEADER, env!("CARGO_PKG_VERSION"))
            .header(NOW_HEADER, wire::now_ms().to_string())
            .header(reqwest::header::ACCEPT_ENCODING, "zstd")
            .header(DELTAS_HEADER, "1")
            .timeout(timeout);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
        let (term, answer) = self
            .read_with(resp, |b| {
                let head: Head = serde_json::from_slice(b)?;
                Ok((head.term, serde_json::from_slice::<T>(b)?))
            })
            .await?;
        if let Some(theirs) = term {
            let ours = self.terms.current();
            if theirs < ours {
                return Err(RemoteError::Fenced { theirs, ours });
            }
            let _ = self.terms.observe(theirs).await;
        }
        Ok(answer)
    }

    /// Calls `cluster/v1/{path}` with a JSON body (encoded once, whatever the retries) and
    /// decodes the answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Duration,
    ) -> Result<T, RemoteError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| RemoteError::BadAnswer(e.to_string()))?;
        let mut renew = false;
        let mut attempts = 0;
        let value = loop {
            attempts += 1;
            match self
                .once(&method, path, body.as_deref(), timeout, renew)
                .await
            {
                Err(RemoteError::Refused {
                    code: Some(Code::Unauthorized | Code::ProofForAnotherServer),
                    ..
                }) if attempts < 3 && !renew => renew = true,
                Err(RemoteError::Refused {
                    code: Some(Code::StaleTerm),
                    details,
                    ..
                }) if attempts < 3 => {
                    if let Some(t) = details["term"].as_u64() {
                        let _ = self.terms.observe(t).await;
                    }
                }
                other => break other?,
            }
        };
        Ok(value)
    }
}

/// The term every server-to-server answer may carry.
#[derive(serde::Deserialize)]
struct Head {
    term: Option<u64>,
}
