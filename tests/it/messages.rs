//! What the `folio` command tells an operator when something is wrong: each message says what
//! happened and what to do, in words, never in Rust's debug formatting; and what it writes is
//! safe to leave lying around (backups readable by their owner only, logs without colour codes
//! when they go to a file).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

/// Runs `folio` with `args` (and `FOLIO_PASSWORD` unless `password` is `None`); answers its exit
/// code and what it printed on stderr.
async fn folio(args: &[&str], password: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_folio"));
    cmd.args(args).env_remove("FOLIO_PASSWORD");
    if let Some(pw) = password {
        cmd.env("FOLIO_PASSWORD", pw);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("folio ends")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Words that only Rust's debug formatting or a library's internals would print.
const NOT_FOR_OPERATORS: [&str; 6] = [
    "Os {",
    "kind:",
    "code:",
    "builder error",
    "Error {",
    ".partial",
];

/// What the operator did, the arguments, the password, the exit code expected, and words the
/// message must hold.
type Case<'a> = (&'a str, Vec<&'a str>, Option<&'a str>, i32, Vec<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_message_says_what_happened_and_what_to_do() {
    let s = start(&[]).await;
    let data = s.dir.path().join("data");
    let data_dir = format!("server.data_dir={}", data.display());
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-dir").join("backup.jsonl");
    let missing = missing.to_str().unwrap();
    let bare_url = s.url.trim_start_matches("http://").to_string();

    let table: Vec<Case> = vec![
        (
            "a second server on a data directory in use",
            vec!["--set", &data_dir, "--set", "server.listen=127.0.0.1:0"],
            None,
            1,
            vec![
                "another Folio server is using the data directory",
                "server.data_dir",
            ],
        ),
        (
            "a backup into a directory that does not exist",
            vec!["backup", "--url", &s.url, "--out", missing],
            Some(ADMIN_PW),
            1,
            vec!["does not exist", "no-such-dir"],
        ),
        (
            "a URL without a scheme",
            vec!["drain", "--url", &bare_url],
            Some(ADMIN_PW),
            1,
            vec!["has no scheme", "write http://"],
        ),
        (
            "no password",
            vec!["cluster", "status", "--url", &s.url],
            None,
            2,
            vec!["FOLIO_PASSWORD"],
        ),
    ];
    for (what, args, password, code, says) in table {
        let (exit, stderr) = folio(&args, password).await;
        assert_eq!(exit, Some(code), "{what}: exit code; stderr: {stderr}");
        for words in says {
            assert!(
                stderr.contains(words),
                "{what}: {words:?} not in {stderr:?}"
            );
        }
        for words in NOT_FOR_OPERATORS {
            assert!(!stderr.contains(words), "{what}: {words:?} in {stderr:?}");
        }
    }
    assert!(!std::path::Path::new(missing).exists());
    // The second server wrote nothing: the first still serves its store.
    assert_eq!(s.get("health", None).await.status, 200);
    let t = s.admin().await;
    assert_eq!(
        s.create(&t, "workbooks", "still here", serde_json::json!(1))
            .await["state"],
        "committed"
    );
}

#[tokio::test]
async fn a_backup_is_readable_by_its_owner_only() {
    let s = start(&[]).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.jsonl");
    folio_ok(&["backup", "--url", &s.url, "--out", file.to_str().unwrap()]).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .args([
            "--set",
            "server.listen=127.0.0.1:0",
            "--set",
            &format!("server.data_dir={}", dir.path().join("data").display()),
            "--set",
            "log.format=text",
            "--set",
            "log.level=info",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let running = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("Folio is running at "));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(running, "the server started");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("folio is running"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in {log:?}");
}
