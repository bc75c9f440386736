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
            .accept_pushed(vec![(wb, first.clone())], Descent, Gaps::Fill)
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
    let verdicts = leader
        .accept_pushed(chain, Descent, Gaps::Fill)
        .await
        .unwrap();
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
    // Its workbooks are marked to take the leader's history (earlier versions kept their own).
    assert!(
        store
            .history_resyncs(None, 1000)
            .unwrap()
            .contains(&(Collection::Workbooks, "sales".to_string()))
    );
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

/// Opens the store in `dir` as [`open`] does, answering the outcome whatever it is.
async fn try_open(dir: &Path) -> Result<Store, StoreError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, options()).await {
            Err(StoreError::Locked) if std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
}

/// A store in `dir` that acknowledged 30 new items, then stopped as a crash stops it (there is
/// no closing step: its log goes only when it next opens); answers the items, the newest log
/// file, and the offset and length of each of that file's frames, one a write.
async fn stopped_after_writes(dir: &Path) -> (Vec<Item>, PathBuf, Vec<(u64, u64)>) {
    let store = open(dir).await;
    let mut items = Vec::new();
    for i in 0..30 {
        items.push(save(&store, &format!("w{i:02}"), &format!("n{i}")).await);
    }
    drop(store);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let log = logs.pop().unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at as u64, (wal::HEADER + len) as u64));
        at += wal::HEADER + len;
    }
    assert_eq!(at, bytes.len(), "the log ends with a whole frame");
    assert_eq!(frames.len(), items.len(), "one frame a write");
    (items, log, frames)
}

/// The paths and bytes of the files in the write-ahead log's directory under `dir`.
fn log_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_log_damaged_before_frames_that_still_read_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log, frames) = stopped_after_writes(dir.path()).await;
    // Bit rot in the payload of a frame in the middle, synced long ago.
    let bad = frames.len() / 2;
    let (at, len) = frames[bad];
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[(at + len / 2) as usize] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let before = log_files(dir.path());

    let after = frames.len() - bad - 1;
    // Refused each time: the first refusal dropped nothing.
    for _ in 0..2 {
        let message = match try_open(dir.path()).await {
            Err(StoreError::Corrupt(m)) => m,
            Err(other) => panic!("refused, but not as a damaged log: {other}"),
            Ok(_) => panic!("a store whose log is damaged before frames that read was opened"),
        };
        assert!(message.contains(&log.display().to_string()), "{message}");
        assert!(
            message.contains(&format!(
                "is corrupt at byte {at}, with {after} readable frames after it"
            )),
            "{message}"
        );
        assert!(
            message.contains("restore this server's data directory from a backup"),
            "{message}"
        );
        assert!(
            log_files(dir.path()) == before,
            "the refused open changed the log"
        );
    }
}

#[tokio::test]
async fn a_torn_last_frame_is_dropped_and_every_write_before_it_made_again() {
    // sled's files as they were before any write, beside the log of the writes made after (see
    // `acknowledged_writes_sled_lost_are_made_again_from_the_log`): every write comes from the
    // log.
    let (live, lost) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    drop(open(live.path()).await);
    copy_dir(live.path(), lost.path());
    let (items, log, frames) = stopped_after_writes(live.path()).await;
    std::fs::remove_dir_all(lost.path().join("wal")).unwrap();
    copy_log(live.path(), lost.path());
    // A crash in the middle of writing the last frame.
    let (at, len) = frames[frames.len() - 1];
    let log = lost.path().join("wal").join(log.file_name().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(at + len / 2)
        .unwrap();

    let store = open(lost.path()).await;
    let wb = Collection::Workbooks;
    let (torn, kept) = items.split_last().unwrap();
    for item in kept {
        assert_eq!(
            store.get_live(wb, item.id.clone()).await.unwrap().rev,
            item.rev
        );
    }
    assert!(store.get(wb, torn.id.clone()).await.unwrap().is_none());
    assert_eq!(store.last_seq().await.unwrap(), kept[kept.len() - 1].seq);
    // The log goes on from what it kept.
    let next = save(&store, "next", "next").await;
    assert_eq!(next.seq, kept[kept.len() - 1].seq + 1);
    drop(store);
    let store = open(lost.path()).await;
    assert_eq!(
        store.get_live(wb, "next".into()).await.unwrap().rev,
        next.rev
    );
}

#[test]
fn a_page_file_sled_removes_between_the_listing_and_its_sync_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    for name in ["326504027", "326504028"] {
        std::fs::write(blobs.join(name), b"page").unwrap();
    }
    let listed: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    std::fs::remove_file(blobs.join("326504028")).unwrap();
    for path in &listed {
        wal::sync_blob(path).unwrap();
    }
}

#[tokio::test]
async fn checkpoint_failures_in_a_row_are_told_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny limit: nearly every write finishes a log file, and checkpoints run.
    let store = Store::open_with(dir.path(), options(), 512).await.unwrap();
    assert_eq!(store.checkpoint_health(), CheckpointHealth::default());
    for i in 0..12 {
        save(&store, &format!("w{i}"), &format!("n{i}")).await;
    }
    let logs = || {
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while logs() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(logs(), 1, "checkpoints let every finished file go");
    assert_eq!(store.checkpoint_health().consecutive_failures, 0);

    let failed: Result<(), StoreError> = Err(StoreError::Log(
        "sync of blobs/1: Input/output error".into(),
    ));
    checkpoint::note(&store.inner.checkpoints, &failed);
    assert_eq!(checkpoint::note(&store.inner.checkpoints, &failed), 2);
    let health = store.checkpoint_health();
    assert_eq!(health.consecutive_failures, 2);
    assert_eq!(
        health.last_error.as_deref(),
        Some("write-ahead log: sync of blobs/1: Input/output error")
    );
    assert_eq!(checkpoint::note(&store.inner.checkpoints, &Ok(())), 0);
    assert_eq!(store.checkpoint_health(), CheckpointHealth::default());
}

/// The leader's own saves and the pushes it takes decide against the same current revision in
/// one step: of a local save and a pushed edit on one base, in either order, exactly one
/// becomes current and the other is refused (412 to the local author, a lost verdict for the
/// push), never both taken.
#[tokio::test]
async fn a_local_save_and_a_push_on_one_base_are_decided_against_one_current_revision() {
    let wb = Collection::Workbooks;
    for push_first in [false, true] {
        let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let follower = open(dir.path()).await;
        let leader = open(leader_dir.path()).await;
        let base = save(&leader, "w", "base").await;
        follower
            .apply_feed(vec![(wb, base.clone())], Descent, None)
            .await
            .unwrap();
        let pushed = save(&follower, "w", "the follower's").await;
        assert_eq!(pushed.ancestors.first(), Some(&base.rev));
        let local = || {
            leader.write_edit(
                wb,
                "w".into(),
                edit("the leader's"),
                Precondition::Rev(base.rev.clone()),
                false,
            )
        };
        let (saved, verdicts) = if push_first {
            let verdicts = leader
                .accept_pushed(vec![(wb, pushed.clone())], Descent, Gaps::Fill)
                .await
                .unwrap();
            (local().await, verdicts)
        } else {
            let saved = local().await;
            let verdicts = leader
                .accept_pushed(vec![(wb, pushed.clone())], Descent, Gaps::Fill)
                .await
                .unwrap();
            (saved, verdicts)
        };
        let current = leader.get(wb, "w".into()).await.unwrap().unwrap();
        if push_first {
            assert_eq!(verdicts, vec![Pushed::Accepted]);
            assert!(
                matches!(saved, Err(StoreError::PreconditionFailed { current: Some(ref c) }) if *c == pushed.rev),
                "the local save on the same base is refused: {saved:?}"
            );
            assert_eq!(current.rev, pushed.rev);
        } else {
            let (item, _) = saved.expect("the local save goes first");
            assert!(
                matches!(&verdicts[..], [Pushed::Lost { winner, .. }] if winner.rev == item.rev),
                "the push on the same base loses to it: {verdicts:?}"
            );
            assert_eq!(current.rev, item.rev);
        }
    }
}

/// A line of revisions arriving in one write (the leader's feed carries every revision) is
/// pruned by its newest: the follower keeps exactly the leader's `history_keep` revisions.
#[tokio::test]
async fn a_line_applied_in_one_write_is_pruned_like_the_leaders() {
    let wb = Collection::Workbooks;
    let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let follower = open(dir.path()).await;
    let leader = open(leader_dir.path()).await;
    let first = save(&leader, "w", "w0").await;
    follower
        .apply_feed(vec![(wb, first)], Descent, None)
        .await
        .unwrap();
    // 16 more revisions on the leader; the follower then receives them all in one write.
    let mut line = Vec::new();
    for i in 1..=16 {
        line.push((wb, save(&leader, "w", &format!("w{i}")).await));
    }
    follower.apply_feed(line, Descent, None).await.unwrap();
    let revs = |h: Vec<Revision>| h.into_iter().map(|r| r.rev).collect::<Vec<_>>();
    let kept = revs(leader.history(wb, "w".into()).await.unwrap());
    assert_eq!(kept.len(), options().history_keep);
    assert_eq!(revs(follower.history(wb, "w".into()).await.unwrap()), kept);
}

/// A line a server wrote while it led alone (no outbox), longer than the ancestry an item
/// carries, queued whole when it follows again, is taken by a leader that holds the line's
/// start: every revision accepted, none lost; pushed again once the leader is ahead, it
/// changes nothing.
#[tokio::test]
async fn a_line_written_while_leading_alone_is_taken_whole_by_the_next_leader() {
    let wb = Collection::Workbooks;
    let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let former = Store::open(dir.path(), long_lines()).await.unwrap();
    let leader = Store::open(leader_dir.path(), long_lines()).await.unwrap();
    let mut shared = Vec::new();
    for i in 1..=2 {
        shared.push(save(&former, "w", &format!("w{i}")).await);
    }
    leader
        .apply_feed(
            shared.iter().map(|i| (wb, i.clone())).collect(),
            Descent,
            None,
        )
        .await
        .unwrap();
    former.clear_outbox_all().await.unwrap();
    // Leading alone: saves with no outbox entry.
    for i in 3..=130 {
        former
            .write_edit(
                wb,
                "w".into(),
                edit(&format!("w{i}")),
                Precondition::None,
                false,
            )
            .await
            .unwrap();
    }
    former.queue_for_push(vec![(wb, "w".into())]).await.unwrap();
    let lines = former.outbox_lines(10).await.unwrap();
    assert_eq!(lines.len(), 1);
    let (_, chain, whole) = &lines[0];
    assert!(*whole, "queued with what the leader holds unknown");
    assert_eq!(chain.len(), 130, "every kept revision");
    let mut whole_set = std::collections::HashSet::new();
    whole_set.insert((wb, "w".to_string()));
    let push = || {
        leader.accept_pushed(
            chain.iter().map(|i| (wb, i.clone())).collect(),
            Descent,
            Gaps::Refuse(whole_set.clone()),
        )
    };
    let verdicts = push().await.unwrap();
    assert!(
        verdicts.iter().all(|v| *v == Pushed::Accepted),
        "{verdicts:?}"
    );
    let got = leader.history(wb, "w".into()).await.unwrap();
    assert_eq!(got.len(), 130);
    assert!(
        leader.history_resyncs(None, 10).unwrap().is_empty(),
        "the line follows on from what the leader held: nothing missing"
    );
    // The leader goes on past the ancestry the pushed line's newest revision carries.
    let mut ahead = Vec::new();
    for i in 131..=250 {
        ahead.push(save(&leader, "w", &format!("w{i}")).await.rev);
    }
    let verdicts = push().await.unwrap();
    assert!(
        verdicts.iter().all(|v| *v == Pushed::Accepted),
        "{verdicts:?}"
    );
    let current = leader.get(wb, "w".into()).await.unwrap().unwrap();
    assert_eq!(Some(&current.rev), ahead.last(), "nothing changed");
}

/// A leader that takes a line pushed whole starting above the revision after the one it holds
/// (the pusher lacked the revisions between) marks the item, so that once it follows again it
/// takes its next leader's history of it rather than keep a history with a hole.
#[tokio::test]
async fn a_leader_taking_a_line_with_a_hole_below_it_marks_the_item() {
    let wb = Collection::Workbooks;
    let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pusher = open(dir.path()).await;
    let leader = open(leader_dir.path()).await;
    let first = save(&pusher, "w", "w1").await;
    leader
        .apply_feed(vec![(wb, first)], Descent, None)
        .await
        .unwrap();
    save(&pusher, "w", "w2").await;
    let third = save(&pusher, "w", "w3").await;
    let mut whole = std::collections::HashSet::new();
    whole.insert((wb, "w".to_string()));
    let verdicts = leader
        .accept_pushed(vec![(wb, third.clone())], Descent, Gaps::Refuse(whole))
        .await
        .unwrap();
    assert_eq!(verdicts, vec![Pushed::Accepted]);
    assert_eq!(
        leader.get(wb, "w".into()).await.unwrap().unwrap().rev,
        third.rev
    );
    assert_eq!(
        leader.history_resyncs(None, 10).unwrap(),
        vec![(wb, "w".to_string())]
    );
}

/// A revision from the leader's feed that skips revisions this follower never received (the
/// leader took them whole, with a history) is taken, and marks the item for a history resync.
#[tokio::test]
async fn a_feed_revision_skipping_revisions_marks_its_item_for_a_history_resync() {
    let wb = Collection::Workbooks;
    let (dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let follower = open(dir.path()).await;
    let leader = open(leader_dir.path()).await;
    let first = save(&leader, "w", "w1").await;
    follower
        .apply_feed(vec![(wb, first)], Descent, None)
        .await
        .unwrap();
    save(&leader, "w", "w2").await;
    let third = save(&leader, "w", "w3").await;
    follower
        .apply_feed(vec![(wb, third.clone())], Descent, None)
        .await
        .unwrap();
    let current = follower.get(wb, "w".into()).await.unwrap().unwrap();
    assert_eq!(current.rev, third.rev);
    assert_eq!(
        follower.history_resyncs(None, 10).unwrap(),
        vec![(wb, "w".to_string())]
    );
}

/// A server whose leadership moved on commits nothing as its leader: a save meant to be
/// committed waits in the outbox, a push is refused, the outbox is not emptied; and a barrier
/// returns once earlier writes are in.
#[tokio::test]
async fn a_store_fenced_off_leading_queues_saves_and_refuses_pushes() {
    let wb = Collection::Workbooks;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let leads = Arc::new(AtomicBool::new(true));
    let flag = leads.clone();
    store.fence_leading(Arc::new(move || flag.load(Ordering::SeqCst)));
    let request = |name: &str| EditRequest {
        coll: wb,
        id: "w".into(),
        edit: edit(name),
        pre: Precondition::None,
        queue: false,
    };
    let first = store.write_edits(vec![request("led")]).await.pop().unwrap();
    assert!(!first.unwrap().queued, "committed while leading");
    assert!(!store.is_queued(wb, "w").unwrap());

    leads.store(false, Ordering::SeqCst);
    store.barrier().await.unwrap();
    let second = store
        .write_edits(vec![request("after")])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert!(
        second.queued,
        "queued for the leader once leadership moved on"
    );
    assert!(store.is_queued(wb, "w").unwrap());
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path()).await;
    let pushed = save(&other, "p", "pushed").await;
    let refused = store
        .accept_pushed(vec![(wb, pushed)], Descent, Gaps::Fill)
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotLeading)),
        "a push is refused: {refused:?}"
    );
    assert!(store.get(wb, "p".into()).await.unwrap().is_none());
    assert_eq!(store.clear_outbox_all().await.unwrap(), 0);
    assert!(store.is_queued(wb, "w").unwrap(), "the outbox is kept");
}
