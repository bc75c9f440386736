use super::*;
use std::sync::atomic::Ordering;

use commit::TRANSACTION_FROM;
use keys::{CHANGES, encode, idx};
use serde_json::json;

fn edit(name: &str) -> Edit {
    Edit {
        name: name.into(),
        content: json!({ "name": name }),
        deleted: false,
        author: "tester".into(),
        origin: "here".into(),
        restored_from: None,
    }
}

fn options() -> Options {
    Options {
        cache_bytes: 1 << 20,
        history_keep: 10,
        without_history: vec![Collection::Sessions],
        min_free_bytes: 0,
    }
}

/// Opens the store in `dir`, waiting (a few seconds at most) for a handle just dropped to let
/// go of it: a blocking task of the old handle may still be finishing.
async fn open(dir: &Path) -> Store {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, options()).await {
            Err(StoreError::Locked) if std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other.unwrap(),
        }
    }
}

/// Makes a write (a new revision of `a` and a new item `b`, both queued for the leader) stop
/// after its record and the first two of its changes reached the disk; answers the items it
/// was to write.
async fn cut_short(store: &Store) -> Vec<Item> {
    let wb = Collection::Workbooks;
    let inner = store.inner.clone();
    let (written, made) = tokio::task::spawn_blocking(move || {
        let _g = lock(&inner.write_lock);
        let writes = vec![
            inner
                .prepare(wb, "a", edit("a2"), &Precondition::None, true)
                .unwrap()
                .0,
            inner
                .prepare(wb, "b", edit("b1"), &Precondition::None, true)
                .unwrap()
                .0,
        ];
        let (ops, out, _) = inner.plan(&writes).unwrap();
        let made = ops.len();
        inner.trees[JOURNAL]
            .insert(journal::KEY, journal::encode(&ops))
            .unwrap();
        journal::apply(&inner.trees, ops.into_iter().take(2).collect()).unwrap();
        inner.db.flush().unwrap();
        (out, made)
    })
    .await
    .unwrap();
    assert!(made > 2, "the write makes more changes than the two made");
    written
}

/// A store holding `a`, then a write cut short as a storage error part-way through a recorded
/// write leaves it (see [`cut_short`]); answers the items that write was to make.
async fn failed_part_way(dir: &Path) -> (Store, Vec<Item>) {
    let store = open(dir).await;
    store
        .write_edit(
            Collection::Workbooks,
            "a".into(),
            edit("a1"),
            Precondition::None,
            false,
        )
        .await
        .unwrap();
    let written = cut_short(&store).await;
    store.inner.unfinished.store(true, Ordering::SeqCst);
    (store, written)
}

#[tokio::test]
async fn a_write_that_failed_part_way_is_completed_before_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (store, written) = failed_part_way(dir.path()).await;
    let wb = Collection::Workbooks;
    let (c, _) = store
        .write_edit(wb, "c".into(), edit("c1"), Precondition::None, false)
        .await
        .unwrap();
    assert_eq!(c.seq, written[1].seq + 1);
    let (changes, _) = store.changes_since(0, c.seq, 100).await.unwrap();
    let listed: Vec<(&str, &str)> = changes
        .iter()
        .map(|ch| (ch.item.id.as_str(), ch.item.rev.as_str()))
        .collect();
    // Every revision is in the log: `a`'s first (now history) and the completed write's.
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[0].0, "a");
    assert_eq!(
        listed[1..],
        [
            ("a", written[0].rev.as_str()),
            ("b", written[1].rev.as_str()),
            ("c", c.rev.as_str())
        ]
    );
    assert!(store.counts().await.unwrap().contains(&(wb, 3)));
    assert_eq!(store.outbox(10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_save_after_a_write_that_failed_part_way_sees_that_write_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (store, written) = failed_part_way(dir.path()).await;
    let wb = Collection::Workbooks;
    // The cut-short write had not yet created `b`.
    assert!(store.get(wb, "b".into()).await.unwrap().is_none());

    // Refused against the completed write, though it changes nothing itself...
    let refused = store
        .write_edit(wb, "b".into(), edit("b2"), Precondition::Absent, false)
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists)),
        "{refused:?}"
    );
    // ...the completed write is published to the change feed at once.
    assert_eq!(*store.watch_seq().borrow(), written[1].seq);

    // A later save of `b` descends from the revision the completed write made.
    let (b2, _) = store
        .write_edit(wb, "b".into(), edit("b2"), Precondition::None, false)
        .await
        .unwrap();
    assert_eq!(b2.ancestors.first(), Some(&written[1].rev));
    let (changes, _) = store.changes_since(0, b2.seq, 100).await.unwrap();
    let ids: Vec<&str> = changes.iter().map(|c| c.item.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "a", "b", "b"],
        "one change-log entry per revision"
    );
}

/// One async thread only: a save that found the writer lock held and waited for it there
/// would stop every other task until the holder let go.
#[tokio::test(flavor = "current_thread")]
async fn a_save_meeting_a_held_writer_lock_leaves_the_async_thread_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let inner = store.inner.clone();
        let released = released.clone();
        std::thread::spawn(move || {
            let _g = inner.writer().unwrap();
            held_tx.send(()).unwrap();
            // Bounded, so that a blocked thread fails the test instead of hanging it.
            let _ = release_rx.recv_timeout(std::time::Duration::from_secs(10));
            released.store(true, Ordering::SeqCst);
        })
    };
    held_rx.recv().unwrap();
    let save = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write_edit(wb, "a".into(), edit("a1"), Precondition::None, false)
                .await
        }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(store.get(wb, "a".into()).await.unwrap().is_none());
    assert!(
        !released.load(Ordering::SeqCst),
        "the async thread waited for the writer lock"
    );
    assert!(!save.is_finished());
    release_tx.send(()).unwrap();
    let (item, replaced) = save.await.unwrap().unwrap();
    assert_eq!((item.name.as_str(), replaced), ("a1", false));
    holder.join().unwrap();
}

#[tokio::test]
async fn a_write_cut_short_is_completed_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    let (first, _) = store
        .write_edit(wb, "a".into(), edit("a1"), Precondition::None, false)
        .await
        .unwrap();
    store.durable().await.unwrap();

    let written = cut_short(&store).await;
    drop(store);

    let store = open(dir.path()).await;
    let a = store.get(wb, "a".into()).await.unwrap().unwrap();
    let b = store.get(wb, "b".into()).await.unwrap().unwrap();
    assert_eq!(
        (a.rev.as_str(), b.rev.as_str()),
        (written[0].rev.as_str(), written[1].rev.as_str())
    );
    let history: Vec<String> = store
        .history(wb, "a".into())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.rev)
        .collect();
    assert_eq!(history, vec![a.rev.clone(), first.rev.clone()]);
    let seq = store.last_seq().await.unwrap();
    assert_eq!(seq, written[1].seq);
    let (changes, more) = store.changes_since(0, seq, 100).await.unwrap();
    let listed: Vec<(u64, &str)> = changes
        .iter()
        .map(|c| (c.seq, c.item.id.as_str()))
        .collect();
    assert_eq!(listed, vec![(first.seq, "a"), (a.seq, "a"), (b.seq, "b")]);
    assert!(!more);
    let counts = store.counts().await.unwrap();
    assert!(counts.contains(&(wb, 2)), "{counts:?}");
    let mut queued: Vec<(String, String)> = store
        .outbox(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, i)| (i.id, i.rev))
        .collect();
    queued.sort();
    assert_eq!(
        queued,
        vec![("a".into(), a.rev.clone()), ("b".into(), b.rev.clone())]
    );

    // Completed once: the record is gone, and the next write follows on.
    drop(store);
    let store = open(dir.path()).await;
    let (c, _) = store
        .write_edit(wb, "c".into(), edit("c1"), Precondition::None, false)
        .await
        .unwrap();
    assert_eq!(c.seq, seq + 1);
    assert_eq!(store.get(wb, "a".into()).await.unwrap().unwrap().rev, a.rev);
}

#[tokio::test]
async fn large_and_small_writes_leave_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    // One write of many saves (made in a transaction), then one of a single save (recorded).
    let many = TRANSACTION_FROM + 8;
    let edits = (0..many)
        .map(|i| {
            let id = format!("w{i:02}");
            EditRequest {
                coll: wb,
                id: id.clone(),
                edit: edit(&id),
                pre: Precondition::None,
                queue: true,
            }
        })
        .collect();
    let mut seqs = Vec::new();
    for written in store.write_edits(edits).await {
        seqs.push(written.unwrap().item.seq);
    }
    assert_eq!(seqs, (1..=many as u64).collect::<Vec<_>>());
    let (one, _) = store
        .write_edit(wb, "w00".into(), edit("again"), Precondition::None, true)
        .await
        .unwrap();
    assert_eq!(one.seq, many as u64 + 1);
    store.durable().await.unwrap();
    drop(store);

    let store = open(dir.path()).await;
    let seq = store.last_seq().await.unwrap();
    assert_eq!(seq, many as u64 + 1);
    let (changes, _) = store.changes_since(0, seq, 1000).await.unwrap();
    assert_eq!(
        changes.len(),
        many + 1,
        "one entry per revision, the rewritten item's newest at the end"
    );
    assert_eq!(
        changes.last().map(|c| c.item.rev.clone()),
        Some(one.rev.clone())
    );
    assert!(store.counts().await.unwrap().contains(&(wb, many as u64)));
    assert_eq!(store.outbox(1000).await.unwrap().len(), many + 1);
    assert_eq!(store.history(wb, "w00".into()).await.unwrap().len(), 2);
}

/// Copies the write-ahead log files of the store in `from` into the store directory `to`.
fn copy_log(from: &Path, to: &Path) {
    let (from, to) = (from.join("wal"), to.join("wal"));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn save(store: &Store, id: &str, name: &str) -> Item {
    let item = store
        .write_edit(
            Collection::Workbooks,
            id.into(),
            edit(name),
            Precondition::None,
            true,
        )
        .await
        .unwrap()
        .0;
    store.durable().await.unwrap();
    item
}

#[tokio::test]
async fn acknowledged_writes_sled_lost_are_made_again_from_the_log() {
    // sled's files as they were before any write, beside the log of the writes made after:
    // what a machine that lost power can be left with, since sled does not sync its files.
    let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    drop(open(live.path()).await);
    copy_dir(live.path(), lost.path());
    let store = open(live.path()).await;
    save(&store, "a", "a1").await;
    let a2 = save(&store, "a", "a2").await;
    let b1 = save(&store, "b", "b1").await;
    store.meta_set("cursor", b"7".to_vec()).await.unwrap();
    store.durable().await.unwrap();
    std::fs::remove_dir_all(lost.path().join("wal")).unwrap();
    copy_log(live.path(), lost.path());
    drop(store);

    let store = open(lost.path()).await;
    let wb = Collection::Workbooks;
    assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
    assert_eq!(store.get_live(wb, "b".into()).await.unwrap().rev, b1.rev);
    assert_eq!(store.history(wb, "a".into()).await.unwrap().len(), 2);
    assert_eq!(store.last_seq().await.unwrap(), b1.seq);
    assert!(store.counts().await.unwrap().contains(&(wb, 2)));
    // `a`'s chain (both revisions, the first never pushed) and `b`.
    assert_eq!(store.outbox(10).await.unwrap().len(), 3);
    assert_eq!(store.meta_get("cursor").await.unwrap(), Some(b"7".to_vec()));
    // The log was taken into sled's files: opening again finds the same.
    drop(store);
    let store = open(lost.path()).await;
    assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
    assert_eq!(store.last_seq().await.unwrap(), b1.seq);
}

#[tokio::test]
async fn logged_writes_sled_already_holds_are_not_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let old_log = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    save(&store, "a", "a1").await;
    // The log as it was after the first save: making it again would undo the second.
    copy_log(dir.path(), old_log.path());
    let a2 = save(&store, "a", "a2").await;
    drop(store);
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    copy_log(old_log.path(), dir.path());

    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    assert_eq!(store.get_live(wb, "a".into()).await.unwrap().rev, a2.rev);
    assert_eq!(store.last_seq().await.unwrap(), a2.seq);
    let next = save(&store, "c", "c1").await;
    assert_eq!(next.seq, a2.seq + 1);
}

#[tokio::test]
async fn finished_log_files_go_once_sled_holds_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wal_files = || {
        std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count()
    };
    // A tiny limit: nearly every write finishes a log file.
    let store = Store::open_with(dir.path(), options(), 512).await.unwrap();
    let mut last = None;
    for i in 0..40 {
        last = Some(save(&store, &format!("w{}", i % 8), &format!("n{i}")).await);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let spare = || dir.path().join("wal/spare").exists();
    // The log's thread finishes its jobs after the last write returns: wait for both outcomes.
    while (wal_files() > 1 || !spare()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(wal_files(), 1, "checkpoints let every finished file go");
    assert!(spare(), "one was kept as the spare");
    drop(store);

    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    let last = last.unwrap();
    assert_eq!(
        store.get_live(wb, last.id.clone()).await.unwrap().rev,
        last.rev
    );
    assert_eq!(store.last_seq().await.unwrap(), last.seq);
    assert!(store.counts().await.unwrap().contains(&(wb, 8)));
}

#[tokio::test]
async fn the_change_log_gives_heads_without_reading_items_and_reads_older_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = save(&store, "a", "a1").await;
    let b = save(&store, "b", "b1").await;
    let gone = store
        .write_edit(
            Collection::Workbooks,
            "b".into(),
            Edit {
                deleted: true,
                ..edit("b1")
            },
            Precondition::Live,
            false,
        )
        .await
        .unwrap()
        .0;
    assert_ne!(gone.rev, b.rev);
    let heads = |store: Store| async move {
        let (heads, more) = store.change_heads(0, 10).await.unwrap();
        assert!(!more);
        heads
            .into_iter()
            .map(|(_, c, h)| (c, h.id, h.rev, h.deleted))
            .collect::<Vec<_>>()
    };
    let wb = Collection::Workbooks;
    let expected = vec![
        (wb, "a".to_string(), a.rev.clone(), false),
        (wb, "b".to_string(), b.rev.clone(), false),
        (wb, "b".to_string(), gone.rev.clone(), true),
    ];
    assert_eq!(heads(store.clone()).await, expected);

    // With the item bodies unreadable, the heads still come from the change log alone.
    let trees = store.inner.trees.clone();
    for id in ["a", "b"] {
        trees[idx(wb)].insert(id, b"not an item".to_vec()).unwrap();
    }
    assert_eq!(heads(store.clone()).await, expected);

    // An entry an earlier version wrote (the key alone) is read through its item.
    for id in ["a", "b"] {
        let item = if id == "a" { &a } else { &gone };
        trees[idx(wb)].insert(id, encode(item)).unwrap();
    }
    let (seq, _) = trees[CHANGES].first().unwrap().unwrap();
    trees[CHANGES].insert(seq, b"workbooks/a".to_vec()).unwrap();
    assert_eq!(heads(store.clone()).await, expected);
    let (changes, _) = store.changes_since(0, 10, 10).await.unwrap();
    let revs: Vec<_> = changes.iter().map(|c| c.item.rev.clone()).collect();
    assert_eq!(revs, [a.rev.clone(), b.rev.clone(), gone.rev.clone()]);
}

#[tokio::test]
async fn a_store_in_use_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    match Store::open(dir.path(), options()).await {
        Err(StoreError::Locked) => {}
        Err(other) => panic!("refused, but not as locked: {other}"),
        Ok(_) => panic!("a store in use was opened a second time"),
    }
    drop(store);
}

/// Options keeping the history of a line longer than an item's ancestry.
fn long_lines() -> Options {
    Options {
        history_keep: 200,
        ..options()
    }
}

/// Saves `a` in `store`, which the leader takes (`leader`, when given, takes it as pushed),
/// then 150 more revisions of it while the leader is away; answers the first and the later
/// revisions, oldest first.
async fn a_long_line(store: &Store, leader: Option<&Store>) -> (Item, Vec<String>) {
    let wb = Collection::Workbooks;
    let first = save(store, "a", "a0").await;
    if let Some(leader) = leader {
        let taken = leader
            .accept_pushed(vec![(wb, first.clone())], Descent)
            .await
            .unwrap();
        assert_eq!(taken, vec![Pushed::Accepted]);
    }
    store
        .settle_pushes(vec![(
            (wb, "a".to_string(), first.rev.clone()),
            Pushed::Accepted,
        )])
        .await
        .unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 0);
    let mut revs = Vec::new();
    for i in 1..=150 {
        revs.push(save(store, "a", &format!("a{i}")).await.rev);
    }
    (first, revs)
}

#[tokio::test]
async fn the_outbox_holds_every_revision_of_a_line_longer_than_its_ancestry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), long_lines()).await.unwrap();
    let wb = Collection::Workbooks;
    let (first, revs) = a_long_line(&store, None).await;
    let queued: Vec<String> = store
        .outbox(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, item)| item.rev)
        .collect();
    assert_eq!(queued.len(), revs.len());
    assert_eq!(
        queued, revs,
        "every revision above the leader's, oldest first"
    );
    let newest = store.get(wb, "a".into()).await.unwrap().unwrap();
    let chain = store.pending_chain(wb, newest).await.unwrap();
    assert_eq!(chain.len(), 150);
    assert!(
        chain.iter().all(|i| i.descends_from(&first.rev)),
        "each descends from what the leader holds"
    );
}

/// Rules that take what descends from the held revision and refuse the rest (no records).
struct Descent;

impl MergeRules for Descent {
    fn on_push(&self, _: Collection, held: Held<'_>, pushed: &Item) -> PushMerge {
        match held {
            Held::Nothing => PushMerge::Take,
            Held::Same => PushMerge::Keep,
            Held::Other(h) if pushed.descends_from(&h.rev) => PushMerge::Take,
            Held::Other(h) if h.descends_from(&pushed.rev) => PushMerge::Keep,
            Held::Other(_) => PushMerge::Refuse { record: None },
        }
    }

    fn on_feed(&self, _: Collection, _: Held<'_>, _: Option<&str>, _: &Item) -> FeedMerge {
        FeedMerge {
            action: FeedAction::Take,
            settles_pending: false,
        }
    }
}

#[tokio::test]
async fn a_leader_keeps_every_revision_of_a_pushed_line_longer_than_its_ancestry() {
    let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(dir.path(), long_lines()).await.unwrap();
    let leader = Store::open(leader_dir.path(), long_lines()).await.unwrap();
    let wb = Collection::Workbooks;
    let (first, later) = a_long_line(&store, Some(&leader)).await;
    let mut revs = vec![first.rev.clone()];
    revs.extend(later);
    let chain = store.outbox(10).await.unwrap();
    let verdicts = leader.accept_pushed(chain, Descent).await.unwrap();
    assert!(verdicts.iter().all(|v| *v == Pushed::Accepted));
    let kept: Vec<String> = leader
        .history(wb, "a".into())
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| r.rev)
        .collect();
    assert_eq!(kept.len(), revs.len());
    assert_eq!(kept, revs, "the leader keeps every revision, in order");
}

/// A store written by the version before bodies were kept once (format 1), unpacked into `dir`,
/// and the histories that version listed for it.
fn format_1_store(dir: &Path) -> Vec<(Collection, String, Vec<String>)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixtures.join("store-format-1.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar runs");
    assert!(status.success());
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("store-format-1.json")).unwrap())
            .unwrap();
    expected["histories"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, revs)| {
            let (c, id) = key.split_once('/').unwrap();
            let revs = revs
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (Collection::parse(c).unwrap(), id.to_string(), revs)
        })
        .collect()
}

/// Every item holds the history `expected` lists, each revision's body the one its revision's
/// hash was made of, and the current item is a head whose body is kept once, in history.
async fn holds_format_1_content(store: &Store, expected: &[(Collection, String, Vec<String>)]) {
    for (c, id, revs) in expected {
        let history = store.history(*c, id.clone()).await.unwrap();
        let listed: Vec<&str> = history.iter().map(|r| r.rev.as_str()).collect();
        assert_eq!(&listed, revs, "{id}");
        for (at, r) in history.iter().enumerate() {
            let parent = history.get(at + 1).map(|p| p.rev.as_str());
            let content = r.content.value();
            assert_eq!(
                crate::item::next_rev(parent, &r.name, r.deleted, &content),
                r.rev,
                "the body of {id} at {} is the one its revision was made of",
                r.rev
            );
        }
        let current = store.get(*c, id.clone()).await.unwrap().unwrap();
        assert_eq!(current.rev, revs[0]);
        assert_eq!(current.content, history[0].content);
        let stored = store.inner.trees[idx(*c)].get(id).unwrap().unwrap();
        assert!(keys::is_head(&stored), "{id} is stored as a head");
    }
}

#[tokio::test]
async fn a_store_of_the_earlier_format_is_migrated_when_it_opens_and_again_if_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let expected = format_1_store(dir.path());
    let data = dir.path().join("data");
    let store = open(&data).await;
    holds_format_1_content(&store, &expected).await;
    // Opening again changes nothing.
    drop(store);
    let store = open(&data).await;
    holds_format_1_content(&store, &expected).await;
    // And it goes on: a new revision writes its body once, history keeps the old ones.
    let sales = store
        .get(Collection::Workbooks, "sales".into())
        .await
        .unwrap()
        .unwrap();
    let (next, _) = store
        .write_edit(
            Collection::Workbooks,
            "sales".into(),
            edit("Sales 4"),
            Precondition::Rev(sales.rev.clone()),
            false,
        )
        .await
        .unwrap();
    let history = store
        .history(Collection::Workbooks, "sales".into())
        .await
        .unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[0].rev, next.rev);
    assert_eq!(history[1].content, sales.content);
    drop(store);

    // A migration cut short: one item converted (its body written, then its head), the format
    // not yet recorded, as a crash would leave it.
    let dir = tempfile::tempdir().unwrap();
    let expected = format_1_store(dir.path());
    let data = dir.path().join("data");
    {
        let db = sled::Config::new().path(&data).open().unwrap();
        let trees: Vec<sled::Tree> = keys::tree_names()
            .into_iter()
            .map(|n| db.open_tree(n).unwrap())
            .collect();
        let wb = Collection::Workbooks;
        let (k, v) = trees[idx(wb)].first().unwrap().unwrap();
        let mut item: Item = keys::decode(&v).unwrap();
        trees[keys::hist(wb)]
            .insert(keys::hist_key(&item), keys::encode_body(&item.revision()))
            .unwrap();
        db.flush().unwrap();
        trees[idx(wb)]
            .insert(k, keys::encode_head(&mut item))
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(&data).await;
    holds_format_1_content(&store, &expected).await;
}

#[tokio::test]
async fn a_large_body_is_kept_compressed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let wb = Collection::Workbooks;
    let sheets: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"title": format!("Sheet {i}"), "query": "select region, sum(amount) from sales group by region", "width": 640 + i}))
        .collect();
    let big = Edit {
        content: json!({ "sheets": sheets }),
        ..edit("big")
    };
    let (first, _) = store
        .write_edit(wb, "big".into(), big.clone(), Precondition::None, false)
        .await
        .unwrap();
    let stored = store.inner.trees[keys::hist(wb)]
        .get(keys::hist_key(&first))
        .unwrap()
        .unwrap();
    let json_len = encode(&first.revision()).len();
    assert!(
        stored.len() * 4 < json_len,
        "compressed: {} of {json_len} bytes",
        stored.len()
    );
    let head = store.inner.trees[idx(wb)].get("big").unwrap().unwrap();
    assert!(
        head.len() < 1_000,
        "the head holds no body: {} bytes",
        head.len()
    );
    assert_eq!(
        store.get(wb, "big".into()).await.unwrap().unwrap().content,
        first.content
    );
    // Superseding it writes no second copy: the same entry, untouched, is its history.
    store
        .write_edit(wb, "big".into(), edit("small"), Precondition::None, false)
        .await
        .unwrap();
    let after = store.inner.trees[keys::hist(wb)]
        .get(keys::hist_key(&first))
        .unwrap()
        .unwrap();
    assert_eq!(after, stored);
    assert_eq!(
        store
            .revision(wb, "big".into(), first.rev.clone())
            .await
            .unwrap()
            .content,
        first.content
    );
}
