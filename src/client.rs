//! The operator CLI's HTTP client: logs in to a running server and calls its API for
//! `folio backup`, `folio restore`, `folio drain` and `folio cluster status`.

use std::path::Path;

use serde_json::Value;

/// A logged-in client of one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Set when the client proved the cluster's shared secret instead of logging in as a user:
    /// the server's term, which server-token calls carry.
    operator_term: Option<u64>,
}

/// The id an operator's command names when it proves the shared secret (see
/// [`Client::operator`]); servers do not count it as a member.
pub const OPERATOR: &str = "operator";

/// The server-to-server route that does what a user route does, for the calls an operator may
/// make with the shared secret.
fn operator_path(path: &str) -> Option<&'static str> {
    match path {
        "api/v1/drain" => Some("cluster/v1/drain"),
        "api/v1/cluster" => Some("cluster/v1/cluster"),
        _ => None,
    }
}

fn http_client(ca: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| e.to_string())
}

/// `url` as the base of API paths (ending in `/`), or what is wrong with it.
fn base_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url);
    match parsed {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(format!("{}/", u.as_str().trim_end_matches('/')))
        }
        _ if !url.contains("://") => Err(format!(
            "--url {url} has no scheme: write http://{0} (or https://{0})",
            url.trim_start_matches('/')
        )),
        _ => Err(format!(
            "--url {url} is not an http:// or https:// URL of a server, such as http://127.0.0.1:8080/"
        )),
    }
}

/// The message of an error body, or the status when there is none.
async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<Value>().await {
        Ok(v) => match v["error"]["message"].as_str() {
            Some(m) => format!("{status}: {m}"),
            None => status.to_string(),
        },
        Err(_) => status.to_string(),
    }
}

impl Client {
    /// Logs in as `user`.
    pub async fn login(
        url: &str,
        user: &str,
        password: &str,
        ca: Option<&Path>,
    ) -> Result<Client, String> {
        let http = http_client(ca)?;
        let base = base_url(url)?;
        let resp = http
            .post(format!("{base}api/v1/login"))
            .json(&serde_json::json!({ "username": user, "password": password }))
            .send()
            .await
            .map_err(|e| format!("cannot reach {base}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("login failed: {}", failure(resp).await));
        }
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        let token = body["token"]
            .as_str()
            .ok_or("login answered no token")?
            .to_string();
        Ok(Client {
            http,
            base,
            token,
            operator_term: None,
        })
    }

    /// Authenticates with the cluster's shared secret instead of a user's password, as a command
    /// run on a server's host with its configuration can: a server token for the id
    /// [`OPERATOR`], good for draining and the cluster view.
    pub async fn operator(url: &str, secret: &str, ca: Option<&Path>) -> Result<Client, String> {
        let http = http_client(ca)?;
        let base = base_url(url)?;
        let health: Value = http
            .get(format!("{base}health"))
            .send()
            .await
            .map_err(|e| format!("cannot reach {base}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{base}health: {e}"))?;
        let server = health["server"].as_str().ok_or("/health names no server")?;
        // A challenge to answer (an earlier version has none: a timestamped proof then).
        let challenge: Option<Value> = match http
            .post(format!("{base}cluster/v1/challenge"))
            .header(
                crate::wire::PROTOCOL_HEADER,
                crate::wire::PROTOCOL.to_string(),
            )
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            Ok(_) => None,
            Err(e) => return Err(format!("cannot reach {base}: {e}")),
        };
        let req = match challenge.as_ref().and_then(|c| c["challenge"].as_str()) {
            Some(c) => crate::wire::make_request_answering(secret, OPERATOR, Some(server), c),
            None => crate::wire::make_request_for(secret, OPERATOR, Some(server)),
        };
        let resp = http
            .post(format!("{base}cluster/v1/token"))
            .header(
                crate::wire::PROTOCOL_HEADER,
                crate::wire::PROTOCOL.to_string(),
            )
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("cannot reach {base}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "the shared secret was refused: {}",
                failure(resp).await
            ));
        }
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        let token = body["token"]
            .as_str()
            .ok_or("the token exchange answered no token")?
            .to_string();
        Ok(Client {
            http,
            base,
            token,
            operator_term: Some(body["term"].as_u64().unwrap_or(0)),
        })
    }

    /// Streams `GET /api/v1/export` into `out`; answers the number of lines written.
    pub async fn backup(&self, out: &Path) -> Result<usize, String> {
        if self.operator_term.is_some() {
            return Err("a backup needs a user: set FOLIO_PASSWORD (or pass --password)".into());
        }
        use tokio::io::AsyncWriteExt;
        let mut resp = self
            .http
            .get(format!("{}api/v1/export", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "cannot write {}: the directory {} does not exist",
                out.display(),
                dir.display()
            ));
        }
        // Written beside the backup, then renamed over it: a failed backup never leaves a
        // half-written file under its name. Readable by this user only: it holds password hashes.
        let tmp = out.with_extension("partial");
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        let mut lines = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.sync_all()
            .await
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        tokio::fs::rename(&tmp, out)
            .await
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        Ok(lines)
    }

    /// Sends a backup file to `POST /api/v1/import`; answers the server's summary.
    pub async fn restore(&self, input: &Path) -> Result<Value, String> {
        let body = tokio::fs::read(input)
            .await
            .map_err(|e| format!("{}: {e}", input.display()))?;
        self.call(
            reqwest::Method::POST,
            "api/v1/import",
            Some(("application/x-ndjson", body)),
        )
        .await
    }

    /// Calls an endpoint and answers its JSON, or the error message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, String> {
        let mut req = match self.operator_term {
            None => self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token),
            Some(term) => {
                let path = operator_path(path).ok_or_else(|| {
                    format!("{path} needs a user: set FOLIO_PASSWORD (or pass --password)")
                })?;
                self.http
                    .request(method, format!("{}{path}", self.base))
                    .bearer_auth(&self.token)
                    .header(
                        crate::wire::PROTOCOL_HEADER,
                        crate::wire::PROTOCOL.to_string(),
                    )
                    .header(crate::wire::TERM_HEADER, term.to_string())
            }
        };
        if let Some((ct, bytes)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, ct).body(bytes);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        resp.json().await.map_err(|e| e.to_string())
    }
}
