//! Identical histories (SPEC §4, I1): three real `folio` processes in FIXED mode take saves on
//! every server through a partition, `kill -9` of each and a restart of the leader on a new
//! port; once they converge every server lists the same revisions of every item, in the same
//! order, and the same conflict records, and every revision any server acknowledged is among
//! them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::binary::{Proc, login, try_login};
use crate::harness::*;
use crate::proxy::LinkProxy;

/// A save some server answered 2xx: which server, the item and the revision it answered.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) server: usize,
    pub(crate) id: String,
    pub(crate) rev: String,
    pub(crate) status: u16,
}

pub(crate) type Acks = Arc<Mutex<Vec<Ack>>>;

/// The base URL of each server, which changes when a server restarts on a new port.
pub(crate) type Urls = Arc<Vec<Mutex<String>>>;

pub(crate) fn args(id: &str, leader: Option<&str>) -> Vec<String> {
    let mut a = vec![
        format!("server.id={id}"),
        "cluster.mode=FIXED".into(),
        format!("cluster.shared.secret={SECRET}"),
        "cluster.poll.interval=1s".into(),
        "cluster.push.timeout=300ms".into(),
        "content.history.keep=1000".into(),
    ];
    if let Some(url) = leader {
        a.push(format!("cluster.fixed.leader={url}"));
    }
    a.into_iter().flat_map(|s| ["--set".into(), s]).collect()
}

fn start(dir: &std::path::Path, args: &[String]) -> Proc {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(dir, &refs)
}

pub(crate) fn addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// How a writer saves: on which server, its number there, how often it saves an item every
/// writer shares (one save in `shared_every`), and whether each save names in `If-Match` the
/// revision this writer last saw of its item (so concurrent edits of one base meet on the
/// leader; after a refusal, 412, the next save names the current revision the refusal tells).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writing {
    pub(crate) server: usize,
    pub(crate) w: usize,
    pub(crate) shared_every: usize,
    pub(crate) if_match: bool,
}

/// Saves items as `how` says until told to stop (at most `BOUND` saves): mostly the writer's
/// own items, and one of two items every writer shares (so edits conflict). A server that is
/// down is retried; every 2xx answer is recorded.
pub(crate) async fn writer(how: Writing, urls: Urls, acks: Acks, stop: watch::Receiver<bool>) {
    const BOUND: usize = 4_000;
    let Writing { server, w, .. } = how;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Logging in takes longer than a save on a loaded machine (the password hash): a client
    // that gave up on it would only log in again, and again, each time adding to the load.
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut token: Option<(String, String)> = None;
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    for i in 0..BOUND {
        // Told to stop, or the run it served is over (it failed, and dropped the sender).
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
        let url = urls[server].lock().unwrap().clone();
        if token.as_ref().is_none_or(|(u, _)| *u != url) {
            match try_login(&slow, &url).await {
                Some(t) => token = Some((url.clone(), t)),
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let t = &token.as_ref().unwrap().1;
        let id = if i % how.shared_every == how.shared_every - 1 {
            format!("shared-{}", i % 2)
        } else {
            format!("s{server}w{w}-{}", i % 3)
        };
        let body = json!({"name": id, "content": {"server": server, "w": w, "i": i}});
        let mut put = http
            .put(format!("{url}api/v1/workbooks/{id}"))
            .bearer_auth(t)
            .json(&body);
        if let Some(rev) = seen.get(&id).filter(|_| how.if_match) {
            put = put.header("if-match", format!("\"{rev}\""));
        }
        let Ok(r) = put.send().await else {
            // Down (killed, paused or restarting): try again in a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = r.status().as_u16();
        if status == 401 {
            token = None;
            continue;
        }
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        match status {
            200..300 => {
                let rev = v["rev"].as_str().unwrap().to_string();
                seen.insert(id.clone(), rev.clone());
                acks.lock().unwrap().push(Ack {
                    server,
                    id,
                    rev,
                    status,
                });
            }
            // Refused: the item moved on. The next save names the revision the refusal tells.
            412 => match v["error"]["current_rev"].as_str() {
                Some(current) => {
                    seen.insert(id, current.to_string());
                }
                None => {
                    seen.remove(&id);
                }
            },
            _ if how.if_match => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => {}
        }
    }
}

/// Where a fault run is: in its workload (saves and faults, waited on with deadlines that a
/// loaded machine can miss) or checking what the servers kept.
#[derive(Clone, Default)]
pub(crate) struct Phase(Arc<std::sync::atomic::AtomicBool>);

impl Phase {
    /// The workload is over: what follows checks the servers.
    pub(crate) fn checking(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_checking(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs a fault run (`run`, given its phase) and runs it again, up to three times in all, while
/// it ends in its workload only because a wait passed its deadline (saves or an election too
/// slow on a loaded machine, which says nothing about what the servers keep). Any failure of
/// the checks, and any other failure, fails the test at once.
pub(crate) async fn again_while_too_slow<F, Fut>(run: F)
where
    F: Fn(Phase) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for attempt in 1..=3 {
        let phase = Phase::default();
        let Err(failed) = tokio::spawn(run(phase.clone())).await else {
            return;
        };
        let payload = failed.into_panic();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if attempt == 3 || phase.is_checking() || !message.starts_with("timed out waiting for") {
            std::panic::resume_unwind(payload);
        }
        eprintln!(
            "attempt {attempt} ended in its workload only because the machine was too slow \
             ({message}): running it again"
        );
    }
}

/// Two [`writer`]s on each of three servers, one save in `shared_every` of an item all share,
/// with `If-Match` or without; what the servers acknowledge gathers in `acks`.
pub(crate) struct Writers {
    pub(crate) acks: Acks,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub(crate) fn start(urls: &Urls, shared_every: usize, if_match: bool) -> Writers {
        let acks: Acks = Default::default();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for server in 0..3 {
            for w in 0..2 {
                let how = Writing {
                    server,
                    w,
                    shared_every,
                    if_match,
                };
                tasks.push(tokio::spawn(writer(
                    how,
                    urls.clone(),
                    acks.clone(),
                    stopped.clone(),
                )));
            }
        }
        Writers { acks, stop, tasks }
    }

    /// Tells every writer to stop and waits until each has.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// Waits until `more` further acknowledgements have arrived that `matches` selects.
pub(crate) async fn more_acks(
    acks: &Acks,
    more: usize,
    what: &str,
    matches: impl Fn(&Ack) -> bool,
) {
    let count = |acks: &Acks| acks.lock().unwrap().iter().filter(|a| matches(a)).count();
    let target = count(acks) + more;
    // Generous: under a loaded machine a debug build saves slowly.
    wait_for(what, Duration::from_secs(120), || async {
        (count(acks) >= target).then_some(())
    })
    .await
}

/// What a server lists: every workbook's history (revision summaries, newest first) and every
/// conflict record (its id, item, winner and loser revisions).
#[derive(Debug, PartialEq)]
pub(crate) struct Listing {
    pub(crate) histories: BTreeMap<String, Vec<Value>>,
    pub(crate) conflicts: Vec<Value>,
}

pub(crate) async fn listing(http: &reqwest::Client, url: &str, token: &str) -> Option<Listing> {
    let get = |path: String| async move {
        let r = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.json::<Value>().await.ok()
    };
    let mut histories = BTreeMap::new();
    for deleted in [false, true] {
        let page = get(format!("api/v1/workbooks?limit=1000&deleted={deleted}")).await?;
        assert!(page["next_cursor"].is_null(), "one page holds them all");
        for item in page["items"].as_array()? {
            let id = item["id"].as_str()?.to_string();
            let h = get(format!("api/v1/workbooks/{id}/history")).await?;
            histories.insert(id, h["items"].as_array()?.clone());
        }
    }
    let mut conflicts = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(format!("api/v1/conflicts?limit=1000{cursor}")).await?;
        conflicts.extend(page["items"].as_array()?.iter().map(|c| {
            json!({"id": c["id"], "rev": c["rev"], "item_id": c["item_id"],
                   "winner_rev": c["winner_rev"], "loser_rev": c["loser"]["rev"]})
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    Some(Listing {
        histories,
        conflicts,
    })
}

/// What differs between the first listing and the others, item by item.
pub(crate) fn differences(listings: &[Listing]) -> String {
    let mut out = String::new();
    let Some(first) = listings.first() else {
        return "no server answered".into();
    };
    for (n, other) in listings.iter().enumerate().skip(1) {
        let ids: std::collections::BTreeSet<&String> = first
            .histories
            .keys()
            .chain(other.histories.keys())
            .collect();
        for id in ids {
            let revs = |l: &Listing| -> Vec<String> {
                l.histories.get(id).map_or(Vec::new(), |h| {
                    h.iter()
                        .map(|r| r["rev"].as_str().unwrap_or("?").to_string())
                        .collect()
                })
            };
            let (a, b) = (revs(first), revs(other));
            if a != b {
                out += &format!("{id}: server 0 has {a:?}\n   server {n} has {b:?}\n");
            } else if first.histories.get(id) != other.histories.get(id) {
                out += &format!("{id}: same revisions, different summaries on server {n}\n");
            }
        }
        if first.conflicts != other.conflicts {
            let only = |a: &Listing, b: &Listing| -> Vec<Value> {
                a.conflicts
                    .iter()
                    .filter(|c| !b.conflicts.contains(c))
                    .cloned()
                    .collect()
            };
            out += &format!(
                "conflicts: {} on server 0, {} on server {n}\n   only on server 0: {:?}\n   only on server {n}: {:?}\n",
                first.conflicts.len(),
                other.conflicts.len(),
                only(first, other),
                only(other, first)
            );
        }
    }
    out
}

/// Waits (90 s at most) until every server at `urls` lists the same histories and conflict
/// records, then checks that every kept revision reads the same everywhere; answers the listing.
pub(crate) async fn identical_listings(http: &reqwest::Client, urls: &[String]) -> Listing {
    let mut tokens = Vec::new();
    for url in urls {
        tokens.push(login(http, url).await);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    let listed = loop {
        let mut listings = Vec::new();
        for (url, token) in urls.iter().zip(&tokens) {
            listings.extend(listing(http, url, token).await);
        }
        if listings.len() == urls.len() && listings.windows(2).all(|w| w[0] == w[1]) {
            break listings.pop().unwrap();
        }
        if tokio::time::Instant::now() > until {
            panic!(
                "the servers' histories differ 90 s after the last fault:\n{}",
                differences(&listings)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The same bodies, too: every kept revision reads the same on every server.
    for (id, revisions) in &listed.histories {
        for r in revisions {
            let rev = r["rev"].as_str().unwrap();
            let mut bodies = Vec::new();
            for (url, token) in urls.iter().zip(&tokens) {
                let got: Value = http
                    .get(format!("{url}api/v1/workbooks/{id}/history/{rev}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                bodies.push(got["content"].clone());
            }
            assert!(
                bodies.windows(2).all(|w| w[0] == w[1]),
                "{id} at {rev} reads differently: {bodies:?}"
            );
        }
    }
    listed
}

/// Asserts that every acknowledged revision is in its item's history or kept by a conflict
/// record; a failure lists, for each missing save, the saves of its item acknowledged around it.
pub(crate) fn assert_every_ack_kept(listed: &Listing, acks: &[Ack]) {
    let kept = |a: &Ack| {
        let in_history = listed
            .histories
            .get(&a.id)
            .is_some_and(|h| h.iter().any(|r| r["rev"] == a.rev.as_str()));
        let in_record = listed
            .conflicts
            .iter()
            .any(|c| c["item_id"] == a.id.as_str() && c["loser_rev"] == a.rev.as_str());
        in_history || in_record
    };
    let missing: Vec<(usize, &Ack)> = acks.iter().enumerate().filter(|(_, a)| !kept(a)).collect();
    if missing.is_empty() {
        return;
    }
    let mut by_kind: BTreeMap<(usize, u16), usize> = BTreeMap::new();
    for (_, a) in &missing {
        *by_kind.entry((a.server, a.status)).or_default() += 1;
    }
    let mut report = format!("\nmissing by (server, status): {by_kind:?}");
    for (k, a) in missing.iter().take(10) {
        report += &format!("\nmissing #{k} {a:?}; acknowledged around it:");
        for (n, b) in acks
            .iter()
            .enumerate()
            .skip(k.saturating_sub(400))
            .take(800)
            .filter(|(_, b)| b.id == a.id)
        {
            report += &format!("\n    #{n} {b:?}");
        }
        let records: Vec<&Value> = listed
            .conflicts
            .iter()
            .filter(|c| c["item_id"] == a.id.as_str())
            .map(|c| &c["loser_rev"])
            .collect();
        report += &format!("\n  conflict records of the item keep: {records:?}");
        let generation = a.rev.split('-').next().unwrap_or("");
        if let Some(same) = listed.histories.get(&a.id).and_then(|h| {
            h.iter().find(|r| {
                r["rev"]
                    .as_str()
                    .is_some_and(|r| r.split('-').next() == Some(generation))
            })
        }) {
            report += &format!("\n  the history's revision of that generation: {same}");
        }
        report += &format!(
            "\n  history: {:?}",
            listed.histories.get(&a.id).map(|h| h
                .iter()
                .map(|r| r["rev"].as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>())
        );
    }
    panic!(
        "{} of {} acknowledged revisions are on no server:{report}",
        missing.len(),
        acks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_kills_and_a_partition_every_server_lists_the_same_histories_with_every_save() {
    again_while_too_slow(kills_and_a_partition).await;
}

async fn kills_and_a_partition(phase: Phase) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let http = client();
    let leader = start(dirs[0].path(), &args("leader", None));
    // Each follower reaches the leader through a link the test can cut and point elsewhere.
    let links = [
        LinkProxy::start(addr(&leader.url)).await,
        LinkProxy::start(addr(&leader.url)).await,
    ];
    let args_of = |i: usize| match i {
        0 => args("leader", None),
        i => args(&format!("f{i}"), Some(&links[i - 1].url())),
    };
    let mut procs = [
        Some(leader),
        Some(start(dirs[1].path(), &args_of(1))),
        Some(start(dirs[2].path(), &args_of(2))),
    ];
    let url_of = |p: &Option<Proc>| p.as_ref().unwrap().url.clone();
    let urls: Urls = Arc::new(procs.iter().map(|p| Mutex::new(url_of(p))).collect());
    // kill -9 of server `i` (Drop sends SIGKILL), then a start on its data directory.
    let kill_and_start = |procs: &mut [Option<Proc>; 3], i: usize| {
        procs[i] = None;
        procs[i] = Some(start(dirs[i].path(), &args_of(i)));
        *urls[i].lock().unwrap() = url_of(&procs[i]);
    };
    let writers = Writers::start(&urls, 5, false);
    let acks = writers.acks.clone();
    more_acks(&acks, 100, "100 saves", |_| true).await;

    // Follower 1 loses its leader: its saves answer 202 pending, and later saves of an item
    // supersede earlier pending ones before any push.
    links[0].cut();
    let pending_on_1 = |a: &Ack| a.server == 1 && a.status == 202;
    more_acks(&acks, 12, "pending saves on follower 1", pending_on_1).await;
    // kill -9 with saves pending, and back (still cut off).
    kill_and_start(&mut procs, 1);
    more_acks(&acks, 12, "pending saves on follower 1 again", pending_on_1).await;

    // kill -9 of follower 2 amid its saves.
    kill_and_start(&mut procs, 2);
    more_acks(&acks, 20, "saves on follower 2 again", |a| a.server == 2).await;

    // kill -9 of the leader amid saves; it returns on another port, and the links follow it.
    procs[0] = None;
    more_acks(
        &acks,
        10,
        "saves pending on follower 2 without a leader",
        |a| a.server == 2 && a.status == 202,
    )
    .await;
    kill_and_start(&mut procs, 0);
    for link in &links {
        link.retarget(addr(&url_of(&procs[0])));
    }
    more_acks(&acks, 20, "saves on the returned leader", |a| a.server == 0).await;

    writers.stop().await;
    phase.checking();

    // While still cut off, follower 1 deletes one of its items and restores an old revision of
    // another: both pending.
    let f1 = url_of(&procs[1]);
    let t1 = login(&http, &f1).await;
    let deleted = http
        .delete(format!("{f1}api/v1/workbooks/s1w0-0"))
        .bearer_auth(&t1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        deleted.status(),
        202,
        "a deletion without the leader is pending"
    );
    let deleted: Value = deleted.json().await.unwrap();
    let history: Value = http
        .get(format!("{f1}api/v1/workbooks/s1w0-1/history"))
        .bearer_auth(&t1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oldest = history["items"].as_array().unwrap().last().unwrap()["rev"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = http
        .post(format!(
            "{f1}api/v1/workbooks/s1w0-1/history/{oldest}/restore"
        ))
        .bearer_auth(&t1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        restored.status(),
        202,
        "a restore without the leader is pending"
    );
    let restored: Value = restored.json().await.unwrap();
    let mut acks = acks.lock().unwrap().clone();
    for (id, answer) in [("s1w0-0", &deleted), ("s1w0-1", &restored)] {
        acks.push(Ack {
            server: 1,
            id: id.into(),
            rev: answer["rev"].as_str().unwrap().to_string(),
            status: 202,
        });
    }
    links[0].restore();

    // Converged: every server lists the same histories, bodies and conflict records.
    let urls: Vec<String> = urls.iter().map(|u| u.lock().unwrap().clone()).collect();
    let listed = identical_listings(&http, &urls).await;

    // Every acknowledged revision is in its item's history, or kept by a conflict record.
    let pending = acks.iter().filter(|a| a.status == 202).count();
    assert!(pending >= 24, "the run made pending saves ({pending})");
    let superseded_pending = acks
        .iter()
        .enumerate()
        .filter(|(k, a)| {
            a.status == 202
                && acks[k + 1..]
                    .iter()
                    .any(|b| b.server == a.server && b.id == a.id)
        })
        .count();
    assert!(
        superseded_pending > 0,
        "pending saves were superseded on their server"
    );
    eprintln!(
        "{} acknowledged saves ({pending} pending, {superseded_pending} of them followed by a later save of the item \
         on their server), {} items, {} conflict records, {} revisions listed per server",
        acks.len(),
        listed.histories.len(),
        listed.conflicts.len(),
        listed.histories.values().map(Vec::len).sum::<usize>()
    );
    assert_every_ack_kept(&listed, &acks);
    let deleted_now = &listed.histories["s1w0-0"][0];
    assert_eq!(deleted_now["deleted"], true, "the pending deletion stands");
    assert_eq!(
        listed.histories["s1w0-1"][0]["restored_from"],
        oldest.as_str(),
        "the pending restore stands"
    );
}
