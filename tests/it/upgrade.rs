//! A rolling upgrade under load (SPEC §4, I1 and I2): three servers of an earlier build in FIXED
//! mode take saves with `If-Match` on every server while each is stopped (SIGTERM) and started
//! on this build over its data directory, the followers first and then the leader. Once they
//! converge, every server lists the same histories and conflict records, and every save any
//! server answered 200 or 202, before or after its upgrade, is in them.
//!
//! Opt-in: it needs the earlier build's binary in `FOLIO_UPGRADE_FROM` (and upgrades to
//! `FOLIO_UPGRADE_TO` when set, else to this build). `scripts/upgrade-test [FROM [TO]]` builds
//! them (FROM by default the build before identical histories) and runs this test.

use std::sync::{Arc, Mutex};

use crate::binary::Proc;
use crate::harness::*;
use crate::histories::{
    Urls, Writers, addr, args, assert_every_ack_kept, identical_listings, more_acks,
};
use crate::proxy::LinkProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an earlier build in FOLIO_UPGRADE_FROM: run scripts/upgrade-test"]
async fn a_rolling_upgrade_under_load_keeps_every_save_and_identical_histories() {
    let old = std::env::var("FOLIO_UPGRADE_FROM")
        .expect("FOLIO_UPGRADE_FROM names the earlier build's folio binary");
    // This build, or another one given (to see the test fail on a build that loses revisions).
    let to = std::env::var("FOLIO_UPGRADE_TO").ok();
    let new = to.as_deref().unwrap_or(env!("CARGO_BIN_EXE_folio"));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let labels = ["leader", "f1", "f2"];
    let start = |bin: &str, i: usize, leader: Option<&str>| {
        let a = args(labels[i], leader);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Proc::start_binary(bin, dirs[i].path(), &refs, labels[i], &[])
    };
    let leader = start(&old, 0, None);
    // The followers reach the leader through links that follow it to its next port.
    let links = [
        LinkProxy::start(addr(&leader.url)).await,
        LinkProxy::start(addr(&leader.url)).await,
    ];
    let mut procs = [
        Some(leader),
        Some(start(&old, 1, Some(&links[0].url()))),
        Some(start(&old, 2, Some(&links[1].url()))),
    ];
    let urls: Urls = Arc::new(
        procs
            .iter()
            .map(|p| Mutex::new(p.as_ref().unwrap().url.clone()))
            .collect(),
    );
    let writers = Writers::start(&urls, 4, true);
    let acks = writers.acks.clone();
    more_acks(&acks, 100, "100 saves on the earlier build", |_| true).await;

    for i in [1, 2, 0] {
        eprintln!("upgrading {}", labels[i]);
        procs[i].take().unwrap().stop().await;
        let upgraded = match i {
            0 => start(new, 0, None),
            i => start(new, i, Some(&links[i - 1].url())),
        };
        if i == 0 {
            for link in &links {
                link.retarget(addr(&upgraded.url));
            }
        }
        *urls[i].lock().unwrap() = upgraded.url.clone();
        procs[i] = Some(upgraded);
        more_acks(&acks, 30, "saves on the upgraded server", |a| a.server == i).await;
        more_acks(&acks, 30, "saves after the upgrade", |_| true).await;
    }

    writers.stop().await;
    let http = client();
    let urls: Vec<String> = urls.iter().map(|u| u.lock().unwrap().clone()).collect();
    let listed = identical_listings(&http, &urls).await;
    let acks = acks.lock().unwrap().clone();
    eprintln!(
        "{} acknowledged saves, {} items, {} conflict records",
        acks.len(),
        listed.histories.len(),
        listed.conflicts.len()
    );
    assert_every_ack_kept(&listed, &acks);
}
