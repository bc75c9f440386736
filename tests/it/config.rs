//! Configuration: properties syntax, environment mapping, precedence, errors and warnings, and the
//! `folio config` commands of the real binary.

use std::io::Write;
use std::time::Duration;

use folio::config::{Config, ConfigError, Inputs, Mode, Source};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn inputs(f: &tempfile::NamedTempFile, env: &[(&str, &str)], overrides: &[&str]) -> Inputs {
    Inputs {
        file: Some(f.path().to_path_buf()),
        file_required: true,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn continuation_lines_escapes_and_separators() {
    let f = file(
        "# comment\n! also a comment\ncluster.mode = bully\ncluster.shared.secret: s3cr\\u0065t\n\
         cluster.bully.id folio-1\ncluster.bully.bind=http://10.0.0.1:8080/folio\n\
         cluster.bully.boot=\\\n    http://10.0.0.1:8080/folio,\\\n    http://10.0.0.2:8080/folio\n\
         auth.admin.user=admin\nauth.admin.password=p\\=q\\:r\n",
    );
    let (c, _) = Config::load(&inputs(&f, &[], &[])).unwrap();
    assert_eq!(c.cluster.mode, Mode::Bully);
    assert_eq!(c.cluster.shared_secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(c.cluster.bully_id.as_deref(), Some("folio-1"));
    assert_eq!(
        c.cluster.bully_boot,
        vec!["http://10.0.0.1:8080/folio/", "http://10.0.0.2:8080/folio/"]
    );
    assert_eq!(c.auth.admin_password.unwrap().expose(), "p=q:r");
}

#[test]
fn environment_reaches_keys_with_underscores() {
    let f =
        file("cluster.mode=KUBERNETES\ncluster.shared.secret=x\ncluster.kubernetes.id=folio-0\n");
    let env = [
        ("CLUSTER_KUBERNETES_LABEL_SELECTOR", "app=folio"),
        ("CLUSTER_KUBERNETES_PEER_PATH", "folio/"),
    ];
    let (c, r) = Config::load(&inputs(&f, &env, &[])).unwrap();
    assert_eq!(
        c.cluster.kubernetes_label_selector.as_deref(),
        Some("app=folio")
    );
    assert_eq!(c.cluster.kubernetes_peer_path, "folio/");
    assert_eq!(
        r.get("cluster.kubernetes.label_selector").unwrap().1,
        Source::Env("CLUSTER_KUBERNETES_LABEL_SELECTOR".into())
    );
}

#[test]
fn precedence_is_cli_then_env_then_file_then_default() {
    let f =
        file("cluster.poll.interval=7s\nserver.listen=127.0.0.1:1111\ncontent.history.keep=9\n");
    let env = [
        ("SERVER_LISTEN", "127.0.0.1:2222"),
        ("CONTENT_HISTORY_KEEP", "8"),
    ];
    let (c, r) = Config::load(&inputs(&f, &env, &["content.history.keep=7"])).unwrap();
    assert_eq!(c.content.history_keep, 7, "command line beats environment");
    assert_eq!(c.server.listen.port(), 2222, "environment beats file");
    assert_eq!(
        c.cluster.poll_interval,
        Duration::from_secs(7),
        "file beats default"
    );
    assert_eq!(c.server.drain_grace, Duration::from_secs(5), "default");
    assert_eq!(
        r.get("content.history.keep").unwrap().1,
        Source::CommandLine
    );
    assert_eq!(
        r.get("cluster.poll.interval").unwrap().1.to_string(),
        format!("{}:1", f.path().display())
    );
}

#[test]
fn bad_value_names_key_value_line_and_expectation() {
    let f = file(
        "server.listen=127.0.0.1:8080\n\ncluster.poll.interval=soon\nlimits.json.max_depth=9999\n",
    );
    let errs = Config::load(&inputs(&f, &[], &[])).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{text:?}");
    let path = f.path().display().to_string();
    assert!(
        matches!(&errs[0], ConfigError::Invalid { key, origin: Source::File { line: 3, .. }, .. } if key == "cluster.poll.interval"),
        "{text:?}"
    );
    assert!(
        text[0].contains("\"soon\"")
            && text[0].contains(&format!("{path}:3"))
            && text[0].contains("duration"),
        "{}",
        text[0]
    );
    assert!(
        text[1].contains("limits.json.max_depth")
            && text[1].contains(":4")
            && text[1].contains("2 to 128"),
        "{}",
        text[1]
    );
}

#[test]
fn bad_env_value_names_the_variable_and_secrets_stay_hidden() {
    let f = file("cluster.mode=FIXED\n");
    let env = [
        ("CLUSTER_POLL_INTERVAL", "-3"),
        ("CLUSTER_SHARED_SECRET", ""),
    ];
    let errs = Config::load(&inputs(&f, &env, &[])).unwrap_err();
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("environment variable CLUSTER_POLL_INTERVAL"),
        "{text}"
    );
    assert!(
        text.contains("cluster.shared.secret is required when cluster.mode=FIXED"),
        "{text}"
    );
}

#[test]
fn unknown_key_warns_with_line_and_suggestion() {
    let f = file("cluster.mode=NONE\ncluster.bully.bot=http://x/\n");
    let (_, r) = Config::load(&inputs(&f, &[], &[])).unwrap();
    assert_eq!(r.warnings.len(), 1);
    let w = r.warnings[0].to_string();
    assert!(
        w.contains(":2:")
            && w.contains("cluster.bully.bot")
            && w.contains("did you mean cluster.bully.boot?"),
        "{w}"
    );
}

#[test]
fn cross_key_rules() {
    let errs = Config::with_overrides(&[("cluster.mode", "bully"), ("cluster.shared.secret", "s")])
        .unwrap_err();
    let text = errs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for key in [
        "cluster.bully.id",
        "cluster.bully.bind",
        "cluster.bully.boot",
    ] {
        assert!(
            text.contains(&format!("{key} is required when cluster.mode=BULLY")),
            "{text}"
        );
    }
    let errs = Config::with_overrides(&[("server.tls.cert", "a.pem")]).unwrap_err();
    assert!(errs[0].to_string().contains("server.tls.key is required"));
}

fn folio() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_folio"))
}

#[test]
fn config_check_and_show_commands() {
    let f = file(
        "cluster.mode=fixed\ncluster.shared.secret=very-secret-value\ncluster.poll.interval=2s\n",
    );
    let out = folio()
        .args(["--config", f.path().to_str().unwrap(), "config", "show"])
        .env("CLUSTER_POLL_INTERVAL", "3s")
        .output()
        .unwrap();
    assert!(out.status.success());
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(!show.contains("very-secret-value"), "secret shown: {show}");
    let secret_line = show
        .lines()
        .find(|l| l.starts_with("cluster.shared.secret "))
        .unwrap();
    assert!(
        secret_line.contains("******") && secret_line.contains(":2"),
        "{secret_line}"
    );
    let poll = show
        .lines()
        .find(|l| l.starts_with("cluster.poll.interval"))
        .unwrap();
    assert!(
        poll.contains("3s") && poll.contains("environment variable CLUSTER_POLL_INTERVAL"),
        "{poll}"
    );

    let bad = file("server.listen=nowhere\n");
    let out = folio()
        .args(["--config", bad.path().to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("server.listen") && err.contains(":1") && err.contains("\"nowhere\""),
        "{err}"
    );

    let out = folio()
        .args([
            "--config",
            "/nonexistent/folio.properties",
            "config",
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a named missing file is an error"
    );
}

#[test]
fn readme_lists_every_key() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for row in folio::config::keys::markdown_table().lines() {
        assert!(
            readme.contains(row),
            "README.md lacks the row: {row}\n(regenerate it with `folio config keys`)"
        );
    }
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/folio.properties"
    ))
    .unwrap();
    for spec in folio::config::keys::KEYS {
        assert!(
            example.contains(&format!("{}=", spec.key)),
            "conf/folio.properties lacks {}",
            spec.key
        );
    }
}

#[test]
fn the_reference_bully_example_reads_as_written() {
    // The three-server example of the product Folio is modelled on, with its continuation lines.
    for (n, ip) in [(1, "10"), (2, "11"), (3, "12")] {
        let f = file(&format!(
            "cluster.shared.secret=supersecretpassword\n\ncluster.mode=BULLY\n\ncluster.bully.id=panopticon-{n}\n\n\
             cluster.bully.bind=http://192.168.0.{ip}/panopticon\n\ncluster.bully.boot=\\\n\
             http://192.168.0.10/panopticon,\\\nhttp://192.168.0.11/panopticon\n"
        ));
        let (c, r) = Config::load(&inputs(&f, &[], &[])).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(c.cluster.mode, Mode::Bully);
        assert_eq!(
            c.cluster.bully_id.as_deref(),
            Some(format!("panopticon-{n}").as_str())
        );
        assert_eq!(
            c.cluster.bully_bind.as_deref(),
            Some(format!("http://192.168.0.{ip}/panopticon/").as_str())
        );
        assert_eq!(
            c.cluster.bully_boot,
            vec![
                "http://192.168.0.10/panopticon/",
                "http://192.168.0.11/panopticon/"
            ]
        );
    }
}

#[test]
fn a_blank_line_after_a_backslash_is_named_beside_the_error() {
    // The reference's BULLY example as printed there, a blank line after each backslash.
    let f = file(
        "cluster.shared.secret=supersecretpassword\n\ncluster.mode=BULLY\n\n\
         cluster.bully.id=panopticon-1\n\ncluster.bully.bind=http://192.168.0.10/panopticon\n\n\
         cluster.bully.boot=\\\n\nhttp://192.168.0.10/panopticon,\\\n\nhttp://192.168.0.11/panopticon\n",
    );
    let out = folio()
        .args(["--config", f.path().to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let path = f.path().display().to_string();
    let said = format!(
        "{path}:9 ends with a backslash and line 10 is blank, so cluster.bully.boot is empty; \
         lines 11 and 13 were read as a key `http`"
    );
    let warning = err
        .find(&said)
        .unwrap_or_else(|| panic!("{said:?} not in {err}"));
    let error = err
        .find("cluster.bully.boot is required")
        .unwrap_or_else(|| panic!("no error in {err}"));
    assert!(
        warning < error,
        "the explanation comes with the error: {err}"
    );
    assert!(
        !err.contains("unknown key http"),
        "the stray keys are explained, not listed again: {err}"
    );
}

#[test]
fn config_check_refuses_unknown_keys_unless_allowed() {
    let f = file("server.listne=127.0.0.1:9999\n");
    let check = |extra: &[&str]| {
        folio()
            .args(["--config", f.path().to_str().unwrap(), "config", "check"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = check(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":1: unknown key server.listne (did you mean server.listen?)")
            && err.contains("--allow-unknown"),
        "{err}"
    );
    let out = check(&["--allow-unknown"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("unknown key server.listne"),
        "still warned: {err}"
    );
}

#[test]
fn config_show_prints_what_it_read_despite_errors_in_a_table_or_json() {
    let f = file(
        "server.listen=nowhere\ncluster.shared.secret=very-secret-value\nauth.admin.user=a\\tb\\nc\n",
    );
    let show = |extra: &[&str]| {
        folio()
            .args(["--config", f.path().to_str().unwrap(), "config", "show"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = show(&[]);
    assert_eq!(out.status.code(), Some(2));
    let table = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("server.listen") && err.contains("\"nowhere\""),
        "{err}"
    );
    assert_eq!(
        table.lines().count(),
        folio::config::keys::KEYS.len(),
        "one line a key: {table}"
    );
    let user = table
        .lines()
        .find(|l| l.starts_with("auth.admin.user "))
        .unwrap();
    assert!(
        user.contains(r"a\tb\nc"),
        "control characters escaped: {user}"
    );
    assert!(!table.contains("very-secret-value"), "{table}");

    let out = show(&["--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), folio::config::keys::KEYS.len());
    let secret = rows
        .iter()
        .find(|r| r["key"] == "cluster.shared.secret")
        .unwrap();
    assert_eq!(secret["value"], "******");
    assert!(
        secret["source"].as_str().unwrap().ends_with(":2"),
        "{secret}"
    );
    let user = rows.iter().find(|r| r["key"] == "auth.admin.user").unwrap();
    assert_eq!(user["value"], "a\tb\nc");
}
