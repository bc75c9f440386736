//! The store's write-ahead log: what makes an acknowledged write survive a crash of the machine,
//! not only of the process. sled makes its own log durable with `sync_file_range`, which writes
//! neither the file's size nor the disk's cache, so a write is acknowledged once its changes are
//! in this log and the log is synced (`fdatasync`, shared by every write since the last sync).
//!
//! Every write's changes are appended as one frame with a log sequence number (LSN), and the write
//! itself sets that number in meta as its last change, so sled's own state says which frames it
//! holds whole (it recovers one writer's inserts as a prefix of their order). When the store
//! opens, frames above that number are made again, in order. The log is a series of files in
//! `wal/` under the store's directory; when one grows past its limit the next one is started and
//! a checkpoint (a sled flush, then a sync of sled's files) lets the old ones go.
//!
//! Files are written in place over blocks already allocated (a spare file zero-filled ahead of
//! need, or a finished file recycled), as etcd does with its log: syncing a file whose size
//! does not change commits no file-system metadata, which halves the sync's latency here
//! (docs/benchmarks.md). What follows the last frame of a file is zeros or older frames; reading
//! stops at the first frame that fails its checksum or does not continue the LSN sequence. A
//! frame that fails its checksum with frames of the log after it that read is damage, though:
//! the store refuses to open rather than drop the acknowledged writes after it (see [`replay`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;
use super::journal::{self, Op};

/// The meta key holding the LSN of the latest frame whose write sled holds.
pub(super) const META_APPLIED: &[u8] = b"wal";

/// A new log file is started once the current one holds this many bytes.
pub(super) const ROTATE_BYTES: u64 = 32 << 20;

/// The file ready to become the next log file.
const SPARE: &str = "spare";

/// Frame header: payload length (4 bytes), CRC-32 of the LSN and payload (4), LSN (8).
pub(super) const HEADER: usize = 16;

/// The log being written.
pub(super) struct Wal {
    dir: PathBuf,
    file: Arc<File>,
    number: u64,
    len: u64,
    next_lsn: u64,
    rotate_bytes: u64,
    /// A file of allocated blocks ready to become the next one (see [`Wal::wants_spare`]).
    spare: Option<PathBuf>,
    spare_asked: bool,
}

/// One frame read back: its LSN and the changes it carries.
#[cfg(test)]
struct Frame {
    pub lsn: u64,
    pub ops: Vec<Op>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let text = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::StorageFull => StoreError::NoSpace(text),
        _ => StoreError::Log(text),
    }
}

fn file_name(number: u64) -> String {
    format!("{number:016x}.log")
}

/// The log files in `dir`, oldest first.
fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("directory", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(n) = u64::from_str_radix(stem, 16) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("directory", dir, e))
}

/// Encodes one frame, in one buffer.
fn frame(lsn: u64, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + journal::encoded_len(ops));
    out.resize(HEADER, 0);
    journal::encode_into(&mut out, ops);
    let len = (out.len() - HEADER) as u32;
    let crc = checksum(lsn, &out[HEADER..]);
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out[8..16].copy_from_slice(&lsn.to_be_bytes());
    out
}

/// A frame's checksum: CRC-32 of its LSN and payload.
fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&lsn.to_be_bytes());
    crc.update(payload);
    crc.finalize()
}

/// A frame header's payload length, checksum and LSN.
fn parse_header(h: &[u8; HEADER]) -> (u64, u32, u64) {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let lsn = u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    (u64::from(len), crc, lsn)
}

/// Reads the frame at `reader`'s position, `left` bytes before the end of its file, into
/// `payload`: its LSN, or `None` when it is cut short or fails its checksum.
fn next_frame(
    reader: &mut impl Read,
    left: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Option<u64>> {
    if left < HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header)?;
    let (len, crc, lsn) = parse_header(&header);
    // A length beyond the file is not a frame (and is never allocated).
    if len > left - HEADER as u64 {
        return Ok(None);
    }
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    Ok((checksum(lsn, payload) == crc).then_some(lsn))
}

/// [`next_frame`] for the frame at byte `at` of `file`, `size` bytes long.
fn frame_at(
    file: &File,
    at: u64,
    size: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Option<u64>> {
    let left = size.saturating_sub(at);
    if left < HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, at)?;
    let (len, crc, lsn) = parse_header(&header);
    if len > left - HEADER as u64 {
        return Ok(None);
    }
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, at + HEADER as u64)?;
    Ok((checksum(lsn, payload) == crc).then_some(lsn))
}

/// A log file that cannot be read at byte `at`.
fn unreadable(path: &Path, at: u64, e: std::io::Error) -> StoreError {
    io(&format!("read at byte {at} of"), path, e)
}

/// The error refusing a damaged log file: what is wrong with it, and what the operator can do.
fn refuse(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the write-ahead log {} {what}: restore this server's data directory from a backup, or \
         move it aside and let the server take its content from the cluster's leader",
        path.display()
    ))
}

/// Bytes of a file [`damage`] reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Judges the bytes from `at` on in `file` (`size` bytes long), where no frame reads whole;
/// `floor` is the LSN of the frame before (for the first frame of the log, the LSN sled holds
/// up to). When a frame of this log begins anywhere after `at` (its checksum matches, and its
/// LSN lies above `floor`, where no frame a recycled file held before lies, and within reach of
/// it), the frame at `at` is damage, refused: dropping it would drop the acknowledged writes
/// after it. Otherwise the bytes are a torn tail (a frame a crash left half written, never
/// acknowledged), dropped with a warning, or the zeros of a file not yet filled or what a
/// recycled file held before, passed over quietly.
fn damage(file: &File, path: &Path, at: u64, size: u64, floor: u64) -> Result<(), StoreError> {
    let rest = size.saturating_sub(at);
    let mut buf = vec![0u8; rest.min((SCAN_CHUNK + HEADER) as u64) as usize];
    let mut payload = Vec::new();
    let mut found = None;
    let mut base = at;
    'scan: while base < size {
        let n = (size - base).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], base)
            .map_err(|e| unreadable(path, base, e))?;
        // Windows overlap by a header: a position is tried in the first window holding it whole.
        for i in 0..n.saturating_sub(HEADER - 1).min(SCAN_CHUNK) {
            let p = base + i as u64;
            if p == at {
                continue;
            }
            let lsn = u64::from_be_bytes(buf[i + 8..i + HEADER].try_into().unwrap_or_default());
            // Every frame takes a header at least: the one at `p` is at most this far on.
            let reach = floor
                .saturating_add(1)
                .saturating_add((p - at).div_ceil(HEADER as u64));
            if lsn <= floor || lsn > reach {
                continue;
            }
            if frame_at(file, p, size, &mut payload)
                .map_err(|e| unreadable(path, p, e))?
                .is_some()
            {
                found = Some((p, lsn));
                break 'scan;
            }
        }
        base += SCAN_CHUNK as u64;
    }
    if let Some((mut next, mut expected)) = found {
        let mut readable = 0u64;
        while let Some(lsn) =
            frame_at(file, next, size, &mut payload).map_err(|e| unreadable(path, next, e))?
        {
            if lsn != expected {
                break;
            }
            readable += 1;
            expected += 1;
            next += (HEADER + payload.len()) as u64;
        }
        return Err(refuse(
            path,
            &format!("is corrupt at byte {at}, with {readable} readable frames after it"),
        ));
    }
    // A torn frame began at `at` when its header names the next frame of this log, or when the
    // file ends within a header that is not zeros.
    let mut header = [0u8; HEADER];
    let torn = if rest >= HEADER as u64 {
        file.read_exact_at(&mut header, at)
            .map_err(|e| unreadable(path, at, e))?;
        let (len, _, lsn) = parse_header(&header);
        (lsn == floor.saturating_add(1)).then_some(rest.min(HEADER as u64 + len))
    } else {
        let tail = &mut header[..rest as usize];
        file.read_exact_at(tail, at)
            .map_err(|e| unreadable(path, at, e))?;
        tail.iter().any(|b| *b != 0).then_some(rest)
    };
    if let Some(bytes) = torn {
        tracing::warn!(
            file = %path.display(),
            offset = at,
            bytes,
            "dropped a write-ahead log frame a crash left half written (never acknowledged)"
        );
    }
    Ok(())
}

/// Reads the log files under `dir`, oldest first, and hands `each` every frame's LSN and encoded
/// changes (decode them with `journal::decode`), one frame in memory at a time; `applied` is the
/// LSN sled holds up to.
///
/// Within a file, reading stops at the first frame that is cut short or fails its checksum (the
/// tail a crash left half written, or the zeros of a file not yet filled), unless frames of the
/// log still read after it: that is damage, refused rather than skipped (see [`damage`]; for the
/// first frame of the log, only frames above `applied` tell this log's from those a recycled
/// file held before, and losing the others loses nothing sled does not hold). Reading also
/// stops at a frame that comes before the LSN sequence (what a recycled file held before). A
/// file whose first frame comes before the sequence so far was recycled and not yet written; a
/// frame beyond the sequence means frames are missing, refused too.
pub(super) fn replay(
    dir: &Path,
    applied: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut last: Option<u64> = None;
    let mut payload = Vec::new();
    for (_, path) in files(dir)? {
        let file = File::open(&path).map_err(|e| io("file", &path, e))?;
        let size = file.metadata().map_err(|e| io("file", &path, e))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut at = 0u64;
        let mut first = true;
        loop {
            let read = next_frame(&mut reader, size - at, &mut payload)
                .map_err(|e| unreadable(&path, at, e))?;
            let Some(lsn) = read else {
                let floor = last.unwrap_or(applied);
                damage(reader.get_ref(), &path, at, size, floor)?;
                break;
            };
            match last.map(|l| l + 1) {
                Some(expected) if first && lsn < expected => break,
                Some(expected) if first && lsn > expected => {
                    return Err(refuse(
                        &path,
                        &format!(
                            "starts at write {lsn} but the files before it end at write {}",
                            expected - 1
                        ),
                    ));
                }
                Some(expected) if lsn < expected => break,
                Some(expected) if lsn > expected => {
                    return Err(refuse(
                        &path,
                        &format!(
                            "goes from write {} to write {lsn} at byte {at}",
                            expected - 1
                        ),
                    ));
                }
                _ => {}
            }
            first = false;
            last = Some(lsn);
            each(lsn, &payload)?;
            at += (HEADER + payload.len()) as u64;
        }
    }
    Ok(())
}

/// Every frame [`replay`] reads, decoded.
#[cfg(test)]
fn recover(dir: &Path, trees: usize) -> Result<Vec<Frame>, StoreError> {
    let mut out = Vec::new();
    replay(dir, 0, |lsn, payload| {
        out.push(Frame {
            lsn,
            ops: journal::decode(payload, trees)?,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Removes every log file under `dir` (after their frames are safe in sled).
pub(super) fn remove_all(dir: &Path) -> Result<(), StoreError> {
    for (_, path) in files(dir)? {
        std::fs::remove_file(&path).map_err(|e| io("file", &path, e))?;
    }
    Ok(())
}

impl Wal {
    /// Starts a new log file in `dir` after any that exist; the next frame gets `next_lsn`.
    /// A spare file left by an earlier run is used first.
    pub fn create(dir: &Path, next_lsn: u64, rotate_bytes: u64) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("directory", dir, e))?;
        let number = files(dir)?.last().map_or(1, |(n, _)| n + 1);
        let spare = Some(dir.join(SPARE)).filter(|p| p.exists());
        Ok(Wal {
            dir: dir.to_path_buf(),
            file: open_next(dir, number, spare)?,
            number,
            len: 0,
            next_lsn,
            rotate_bytes,
            spare: None,
            spare_asked: false,
        })
    }

    /// The LSN the next frame gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends `ops` as the frame of `lsn` (which must be [`Wal::next_lsn`]). Not yet durable:
    /// see [`Wal::file`]. Frames are written at their offset, so the next append overwrites
    /// whatever part of a failed one reached the file (and what is left of it beyond fails its
    /// checksum or the LSN sequence when read).
    pub fn append(&mut self, lsn: u64, ops: &[Op]) -> Result<(), StoreError> {
        let bytes = frame(lsn, ops);
        self.file
            .write_all_at(&bytes, self.len)
            .map_err(|e| io("file", &self.dir.join(file_name(self.number)), e))?;
        self.len += bytes.len() as u64;
        self.next_lsn = lsn + 1;
        Ok(())
    }

    /// The file being appended to: syncing it makes every frame appended so far durable (an
    /// earlier file was synced before the next one started).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Whether the current file has grown past its limit.
    pub fn full(&self) -> bool {
        self.len >= self.rotate_bytes
    }

    /// Whether a spare file should be made now (the current file is half full and there is
    /// none); answers true once, until [`Wal::set_spare`].
    pub fn wants_spare(&mut self) -> bool {
        let wanted = self.spare.is_none() && !self.spare_asked && self.len >= self.rotate_bytes / 2;
        self.spare_asked |= wanted;
        wanted
    }

    /// A spare file is ready (or could not be made: `None`, asked for again later).
    pub fn set_spare(&mut self, spare: Option<PathBuf>) {
        if self.spare.is_none() {
            self.spare = spare;
        }
        self.spare_asked = false;
    }

    /// Whether a spare file is ready.
    pub fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// The number of bytes a log file holds before the next one starts.
    pub fn rotate_bytes(&self) -> u64 {
        self.rotate_bytes
    }

    /// Syncs the current file and starts the next one; answers the path of the one finished.
    pub fn rotate(&mut self) -> Result<PathBuf, StoreError> {
        let old = self.dir.join(file_name(self.number));
        self.file.sync_data().map_err(|e| io("file", &old, e))?;
        self.file = open_next(&self.dir, self.number + 1, self.spare.take())?;
        self.number += 1;
        self.len = 0;
        Ok(old)
    }
}

/// Opens log file `number` in `dir`, from `spare` when there is one, else as a new empty file.
fn open_next(dir: &Path, number: u64, spare: Option<PathBuf>) -> Result<Arc<File>, StoreError> {
    let path = dir.join(file_name(number));
    if let Some(spare) = spare {
        match std::fs::rename(&spare, &path) {
            Ok(()) => {
                sync_dir(dir)?;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("file", &path, e))?;
                return Ok(Arc::new(file));
            }
            Err(e) => tracing::warn!(error = %e, "cannot use the spare write-ahead log file"),
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io("file", &path, e))?;
    sync_dir(dir)?;
    Ok(Arc::new(file))
}

/// Makes a spare log file of `bytes` zeros in `dir`, synced, and answers its path.
pub(super) fn make_spare(dir: &Path, bytes: u64) -> Result<PathBuf, StoreError> {
    let tmp = dir.join("spare.tmp");
    let zeros = vec![0u8; 1 << 20];
    let mut file = File::create(&tmp).map_err(|e| io("file", &tmp, e))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .map_err(|e| io("file", &tmp, e))?;
        left -= n as u64;
    }
    file.sync_all().map_err(|e| io("file", &tmp, e))?;
    recycle(dir, &tmp)
}

/// Makes a finished log file (its frames safe in sled) the spare; answers its path.
pub(super) fn recycle(dir: &Path, file: &Path) -> Result<PathBuf, StoreError> {
    let spare = dir.join(SPARE);
    std::fs::rename(file, &spare).map_err(|e| io("file", file, e))?;
    sync_dir(dir)?;
    Ok(spare)
}

/// Makes sled's own files durable: its log (`db`), the large pages it writes as separate files
/// (`blobs/`), and the directories naming them. sled's flush alone does not (see the module doc).
pub(super) fn sync_sled(dir: &Path) -> Result<(), StoreError> {
    let db = dir.join("db");
    File::open(&db)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync of", &db, e))?;
    let blobs = dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            sync_blob(&entry.path())?;
        }
        sync_dir(&blobs)?;
    }
    sync_dir(dir)
}

/// Syncs one of sled's page files. One that is gone needs none: sled removes a page file it no
/// longer needs at any time, also between the listing of `blobs/` and the sync.
pub(super) fn sync_blob(path: &Path) -> Result<(), StoreError> {
    match File::open(path).and_then(|f| f.sync_all()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        done => done.map_err(|e| io("sync of", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LSNs of the frames the log under `dir` reads back.
    fn lsns(dir: &Path) -> Vec<u64> {
        recover(dir, 4).unwrap().iter().map(|f| f.lsn).collect()
    }

    fn ops(n: u8) -> Vec<Op> {
        vec![
            Op::set(0, vec![n], vec![n; 300]),
            Op::remove(2, b"gone".to_vec()),
        ]
    }

    #[test]
    fn frames_read_back_in_order_and_a_torn_tail_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 5, ROTATE_BYTES).unwrap();
        for lsn in 5..8 {
            wal.append(lsn, &ops(lsn as u8)).unwrap();
        }
        wal.file().sync_data().unwrap();
        assert_eq!(lsns(dir.path()), [5, 6, 7]);
        assert_eq!(recover(dir.path(), 4).unwrap()[1].ops, ops(6));

        // A crash in the middle of the last frame: the whole frames before it still read.
        let path = files(dir.path()).unwrap()[0].1.clone();
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert_eq!(lsns(dir.path()), [5, 6]);
    }

    #[test]
    fn a_damaged_frame_ends_the_log_and_damage_before_a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, ROTATE_BYTES).unwrap();
        wal.append(1, &ops(1)).unwrap();
        wal.append(2, &ops(2)).unwrap();
        let first = wal.rotate().unwrap();
        wal.append(3, &ops(3)).unwrap();
        assert_eq!(recover(dir.path(), 4).unwrap().len(), 3);

        let mut bytes = std::fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        assert!(matches!(
            recover(dir.path(), 4),
            Err(StoreError::Corrupt(m)) if m.contains("starts at write 3")
        ));
    }

    #[test]
    fn a_recycled_files_older_frames_are_not_read_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, ROTATE_BYTES).unwrap();
        for lsn in 1..4 {
            wal.append(lsn, &ops(lsn as u8)).unwrap();
        }
        let finished = wal.rotate().unwrap();
        wal.append(4, &ops(4)).unwrap();
        // The finished file becomes the next one: it still holds frames 1 to 3.
        wal.set_spare(Some(recycle(dir.path(), &finished).unwrap()));
        assert!(wal.has_spare());
        wal.rotate().unwrap();
        assert_eq!(
            lsns(dir.path()),
            [4],
            "a recycled file with nothing new in it adds nothing"
        );
        // Frame 5 overwrites frame 1 exactly; frames 2 and 3 still follow it, checksums intact.
        wal.append(5, &ops(5)).unwrap();
        assert_eq!(lsns(dir.path()), [4, 5]);
    }

    #[test]
    fn a_spare_is_asked_for_once_the_file_is_half_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, 1000).unwrap();
        assert!(!wal.wants_spare());
        wal.append(1, &ops(1)).unwrap();
        wal.append(2, &ops(2)).unwrap();
        assert!(wal.wants_spare());
        assert!(!wal.wants_spare(), "asked once");
        let spare = make_spare(dir.path(), wal.rotate_bytes()).unwrap();
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 1000);
        wal.set_spare(Some(spare));
        wal.rotate().unwrap();
        wal.append(3, &ops(3)).unwrap();
        let size = std::fs::metadata(dir.path().join(file_name(2)))
            .unwrap()
            .len();
        assert_eq!(size, 1000, "written in place, not grown");
        assert_eq!(lsns(dir.path()), [1, 2, 3]);
    }

    #[test]
    fn a_new_log_continues_after_the_files_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, 1).unwrap();
        wal.append(1, &ops(1)).unwrap();
        assert!(wal.full());
        drop(wal);
        let mut wal = Wal::create(dir.path(), 2, 1).unwrap();
        wal.append(2, &ops(2)).unwrap();
        assert_eq!(files(dir.path()).unwrap().len(), 2);
        assert_eq!(lsns(dir.path()), [1, 2]);
        remove_all(dir.path()).unwrap();
        assert!(recover(dir.path(), 4).unwrap().is_empty());
    }

    #[test]
    fn damage_before_frames_that_still_read_is_refused_and_in_the_last_frame_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, ROTATE_BYTES).unwrap();
        for lsn in 1..6 {
            wal.append(lsn, &ops(lsn as u8)).unwrap();
        }
        let path = files(dir.path()).unwrap()[0].1.clone();
        let clean = std::fs::read(&path).unwrap();
        let size = frame(1, &ops(1)).len();
        // A byte of frame 3's payload, then one of its LSN: frames 4 and 5 still read after it.
        for at in [2 * size + size / 2, 2 * size + 12] {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            match recover(dir.path(), 4) {
                Err(StoreError::Corrupt(m)) => assert!(
                    m.contains(&format!(
                        "{} is corrupt at byte {}, with 2 readable frames after it",
                        path.display(),
                        2 * size
                    )),
                    "{m}"
                ),
                other => panic!("not refused: {:?}", other.map(|f| f.len())),
            }
        }
        // The same damage in the last frame is the tail a crash leaves.
        let mut bytes = clean;
        bytes[4 * size + size / 2] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(lsns(dir.path()), [1, 2, 3, 4]);
    }

    #[test]
    fn a_torn_frame_before_a_recycled_files_older_frames_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1, ROTATE_BYTES).unwrap();
        for lsn in 1..5 {
            wal.append(lsn, &ops(lsn as u8)).unwrap();
        }
        let finished = wal.rotate().unwrap();
        wal.append(5, &ops(5)).unwrap();
        wal.set_spare(Some(recycle(dir.path(), &finished).unwrap()));
        wal.rotate().unwrap();
        wal.append(6, &ops(6)).unwrap();
        // Frame 7 half written over frame 2 the file held before: frames 3 and 4 still read.
        let torn = frame(7, &ops(7));
        wal.file
            .write_all_at(&torn[..torn.len() / 2], wal.len)
            .unwrap();
        assert_eq!(lsns(dir.path()), [5, 6]);
    }
}
