//! HTTPS: certificates from `folio cert`, TLS 1.2+ only, Secure cookies, no plain HTTP.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn https_with_a_local_ca() {
    let certs = tempfile::tempdir().unwrap();
    folio_ok(&[
        "cert",
        "--dir",
        certs.path().to_str().unwrap(),
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
    ])
    .await;
    let cert = certs.path().join("server.pem");
    let key = certs.path().join("server-key.pem");
    let s = start(&[
        ("server.tls.cert", cert.to_str().unwrap()),
        ("server.tls.key", key.to_str().unwrap()),
    ])
    .await;
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).unwrap())
        .unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let login = trusting
        .post(format!("{}api/v1/login", s.url))
        .json(&json!({"username": ADMIN, "password": ADMIN_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let hsts = login.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");

    // TLS 1.2 is accepted; 1.3 is the default.
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(
        tls12
            .get(format!("{}health", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A client that does not trust the CA, and plain HTTP, both fail.
    assert!(
        client()
            .get(format!("{}health", s.url))
            .send()
            .await
            .is_err()
    );
    let plain = s.url.replace("https://", "http://");
    let plain_ok = client()
        .get(format!("{plain}health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(!plain_ok, "plain HTTP must not be served on the HTTPS port");
}

#[tokio::test]
async fn unreadable_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let data = dir.path().join("data");
    let config = folio::config::Config::with_overrides(&[
        ("server.listen", "127.0.0.1:0"),
        ("server.data_dir", data.to_str().unwrap()),
        ("server.tls.cert", bogus.to_str().unwrap()),
        ("server.tls.key", bogus.to_str().unwrap()),
    ])
    .unwrap();
    let err = folio::server::start(config)
        .await
        .err()
        .expect("must not start");
    assert!(err.to_string().contains("server.tls.cert"), "{err}");
}
