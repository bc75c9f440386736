//! A stand-in for the Kubernetes API server, which cannot run here: an HTTPS server with its own
//! CA that checks the bearer token and the label selector like the real one and answers the
//! `PodList` in `tests/fixtures/kubernetes/pods.json` (the v1 API's shape for a StatefulSet's
//! pods, one of them still starting and not ready). The test chooses which pods are listed
//! (pods come and go) and points each pod's IP and port at a Folio server it started.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.service-account-token";
pub const NAMESPACE: &str = "folio";
pub const SELECTOR: &str = "app=folio";

/// What the fake lists: which pods, and where each one really listens.
#[derive(Default)]
pub struct Scene {
    pub listed: Vec<String>,
    pub addr: HashMap<String, std::net::SocketAddr>,
    pub requests: usize,
}

pub struct FakeApi {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub scene: Arc<Mutex<Scene>>,
    handle: actix_web::dev::ServerHandle,
}

fn recorded() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubernetes/pods.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn pods(
    req: HttpRequest,
    path: web::Path<String>,
    scene: web::Data<Arc<Mutex<Scene>>>,
) -> HttpResponse {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        let body = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kubernetes/unauthorized.json"
        ))
        .unwrap();
        return HttpResponse::Unauthorized()
            .content_type("application/json")
            .body(body);
    }
    let selector_ok = req
        .query_string()
        .split('&')
        .any(|kv| kv == "labelSelector=app%3Dfolio");
    let mut list = recorded();
    let mut scene = scene.lock().unwrap();
    scene.requests += 1;
    let items = list["items"].as_array_mut().unwrap();
    items.retain(|p| {
        selector_ok
            && path.as_str() == NAMESPACE
            && scene
                .listed
                .iter()
                .any(|n| n == p["metadata"]["name"].as_str().unwrap())
    });
    for p in items.iter_mut() {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        if let Some(addr) = scene.addr.get(&name) {
            p["status"]["podIP"] = Value::String(addr.ip().to_string());
            p["status"]["podIPs"] = serde_json::json!([{"ip": addr.ip().to_string()}]);
            p["spec"]["containers"][0]["ports"][0]["containerPort"] =
                serde_json::json!(addr.port());
        }
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .json(list)
}

/// The settings the StatefulSet in `deploy/kubernetes/statefulset.yaml` gives its container as
/// literal `env` values (those from the downward API or a Secret are the test's to give), as
/// configuration keys; only the keys a test server can take as they are (not its address or data
/// directory).
pub fn manifest_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/statefulset.yaml"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(var) = line.strip_prefix("- name: ") else {
            continue;
        };
        let Some(value) = lines.get(i + 1).and_then(|l| l.strip_prefix("value: ")) else {
            continue;
        };
        let Some(spec) = folio::config::keys::KEYS
            .iter()
            .find(|k| k.env_var() == var)
        else {
            continue;
        };
        if spec.key.starts_with("cluster.") {
            out.push((spec.key.to_string(), value.trim_matches('"').to_string()));
        }
    }
    out
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let certs = folio::certs::make(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("namespace"), NAMESPACE).unwrap();
        use rustls_pki_types::pem::PemObject;
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_file_iter(&certs.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&certs.key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let scene = Arc::new(Mutex::new(Scene::default()));
        let data = web::Data::new(scene.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/api/v1/namespaces/{ns}/pods", web::get().to(pods))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, tls)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeApi {
            url: format!("https://127.0.0.1:{port}/"),
            dir,
            scene,
            handle,
        }
    }

    /// The configuration a Folio pod named `name` needs to use this API server: what the
    /// StatefulSet in `deploy/kubernetes/` gives its container (its literal environment: mode,
    /// label selector, container name), then this pod's name (the downward API's part) and where
    /// this stand-in keeps the API server's address and the mounted files.
    pub fn overrides(&self, name: &str) -> Vec<(String, String)> {
        let p = |f: &str| self.dir.path().join(f).to_str().unwrap().to_string();
        let mut o = manifest_settings();
        o.extend([
            ("cluster.kubernetes.id".into(), name.into()),
            ("cluster.kubernetes.api_url".into(), self.url.clone()),
            ("cluster.kubernetes.token_file".into(), p("token")),
            ("cluster.kubernetes.ca_file".into(), p("ca.pem")),
            ("cluster.kubernetes.namespace_file".into(), p("namespace")),
            ("cluster.kubernetes.refresh".into(), "200ms".into()),
        ]);
        o
    }

    /// Lists exactly these pods (by name), as the API server would after pods come and go.
    pub fn list(&self, names: &[&str]) {
        self.scene.lock().unwrap().listed = names.iter().map(|s| s.to_string()).collect();
    }

    pub fn place(&self, name: &str, addr: std::net::SocketAddr) {
        self.scene
            .lock()
            .unwrap()
            .addr
            .insert(name.to_string(), addr);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let h = self.handle.clone();
        tokio::spawn(async move { h.stop(false).await });
    }
}
