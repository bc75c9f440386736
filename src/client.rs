//! The operator CLI's HTTP client: logs in to a running server and calls its API for
//! `folio backup`, `folio restore`, `folio drain` and `folio cluster status`.

use std::path::Path;

use serde_json::Value;

/// A logged-in client of one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
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
        Ok(Client { http, base, token })
    }

    /// Streams `GET /api/v1/export` into `out`; answers the number of lines written.
    pub async fn backup(&self, out: &Path) -> Result<usize, String> {
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
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
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
