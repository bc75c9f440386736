//! Makes a local certificate authority and a server certificate signed by it (rcgen), so a user
//! can try HTTPS in a minute: point `server.tls.cert`/`server.tls.key` at the server files and
//! trust `ca.pem` in the client (`curl --cacert`, `cluster.tls.ca`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The files written by [`make`].
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(data.as_bytes())
}

/// Writes `ca.pem`, `ca-key.pem`, `server.pem` and `server-key.pem` into `dir`; the server
/// certificate names every host in `hosts` (DNS names or IP addresses).
pub fn make(dir: &Path, hosts: &[String]) -> Result<Written, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Folio local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map(String::as_str).unwrap_or("localhost"),
    );
    for h in hosts {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into().map_err(|e| format!("{h}: {e}"))?),
        };
        params.subject_alt_names.push(san);
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;

    let out = Written {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    let io = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    std::fs::write(&out.ca, ca_cert.pem()).map_err(|e| io(&out.ca, e))?;
    let ca_key_path = dir.join("ca-key.pem");
    write_private(&ca_key_path, &ca_key.serialize_pem()).map_err(|e| io(&ca_key_path, e))?;
    std::fs::write(&out.cert, cert.pem()).map_err(|e| io(&out.cert, e))?;
    write_private(&out.key, &key.serialize_pem()).map_err(|e| io(&out.key, e))?;
    Ok(out)
}
