//! The audit spool (`[audit] spool = true`): where a request's line waits,
//! crash-safe, between the moment its answer is ready and the moment the
//! line is appended to the audit file.
//!
//! Appending a line with `write(2)` before every answer puts a system call
//! (about a microsecond on ext4) on every request's critical path. With the
//! spool, lines are copied into a shared mapping of a spool file instead:
//! a store into a shared file mapping lands in the kernel's page cache
//! directly, so like a completed `write(2)` it survives a crash of the
//! broker, and no secret is ever handed out without its audit line
//! surviving one. The connection appends the waiting lines to the audit
//! file right after it has written the answer (`AuditLog::flush_local`), so
//! the line is in the file microseconds later, one `write(2)` as before,
//! just off the path the client waits on. The price: a client that reads
//! the audit file the instant it has its answer can find the line not
//! there yet (on a busy CPU the woken client may run before the broker's
//! thread gets back to it), which is why the spool is off by default. A
//! broker that stops without flushing (killed, crashed) leaves lines in
//! the spool; the next one to open the same audit file appends them before
//! serving.
//!
//! Layout: the spool is `.<audit file name>.spool` beside the audit file
//! (hidden, so `*.log` globs of log shippers and rotation do not take it),
//! mode 0600, one [`REGION`]-byte region per audit shard. A region starts
//! with [`MAGIC`] and the little-endian length of the lines waiting in it,
//! then the lines. The length is stored after the bytes it covers, so a
//! crash mid-copy leaves a line that is simply not counted (and whose
//! request was not answered). One broker holds the spool at a time (an
//! exclusive `flock`); a second broker on the same audit file writes each
//! line directly, as before.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use crate::alloc::SharedFileMap;

/// Marks an initialised region (and the format's version).
pub(super) const MAGIC: [u8; 8] = *b"sbspool1";
/// Magic, then the waiting length as a `u64`.
const HEADER: usize = 16;
/// Bytes per region: a multiple of the page size, room for dozens of lines
/// (usually one waits at a time: each answer flushes it).
pub(super) const REGION: usize = 16 * 1024;
/// How much of the audit file's end is searched, after a crash, for lines
/// that were written but not yet cleared from the spool.
const TAIL: u64 = 1 << 20;

/// The spool file of the audit file at `audit`.
pub(super) fn path_for(audit: &Path) -> Option<PathBuf> {
    let name = audit.file_name()?.to_str()?;
    Some(audit.with_file_name(format!(".{name}.spool")))
}

/// A held spool: its file (whose `flock` lasts as long as it is open) and
/// one region per shard.
#[derive(Debug)]
pub(super) struct Spool {
    /// Held for the `flock`; dropped after the regions.
    pub(super) lock: File,
    /// One per audit shard, in shard order.
    pub(super) regions: Vec<Region>,
}

/// Opens (creating it if missing) the spool of the audit file at `audit`
/// with `shards` regions, after appending to `out` (the audit file, opened
/// for appending) what a broker that stopped without flushing left there.
/// `Ok(None)`: another broker holds it.
pub(super) fn open(audit: &Path, out: &mut File, shards: usize) -> io::Result<Option<Spool>> {
    let path = path_for(audit).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "audit path has no file name")
    })?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let want = (shards * REGION) as u64;
    let found = lock.metadata()?.len();
    let left = left_behind(&lock, found)?;
    if !left.is_empty() {
        let appended = replay(audit, out, &left)?;
        tracing::warn!(
            lines = appended,
            spool = %path.display(),
            "appended audit lines left in the spool by a broker that stopped without flushing them"
        );
    }
    lock.set_len(0)?;
    lock.set_len(want)?;
    let regions = (0..shards)
        .map(|i| Region::new(SharedFileMap::new(&lock, (i * REGION) as u64, REGION)?))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(Spool { lock, regions }))
}

/// The whole lines waiting in the regions of a spool file `len` bytes long.
fn left_behind(mut file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.take(len).read_to_end(&mut all)?;
    let mut left = Vec::new();
    for region in all.chunks(REGION) {
        left.extend_from_slice(waiting(region));
    }
    Ok(left)
}

/// The whole lines a region holds, or nothing if it is not one.
fn waiting(region: &[u8]) -> &[u8] {
    if region.len() < HEADER || region[..8] != MAGIC {
        return &[];
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&region[8..HEADER]);
    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    let data = &region[HEADER..];
    let data = &data[..len.min(data.len())];
    // Only whole lines: a torn tail was never counted as waiting.
    match data.iter().rposition(|&b| b == b'\n') {
        Some(last) => &data[..=last],
        None => &[],
    }
}

/// Appends to `out` each line of `left` not already found near the end of
/// the audit file (a broker can stop after writing lines out but before
/// clearing them from the spool). Returns how many were appended.
fn replay(audit: &Path, out: &mut File, left: &[u8]) -> io::Result<usize> {
    let tail = file_tail(audit)?;
    let mut missing = Vec::with_capacity(left.len());
    let mut count = 0;
    for line in left.split_inclusive(|&b| b == b'\n') {
        if !contains(&tail, line) {
            missing.extend_from_slice(line);
            count += 1;
        }
    }
    out.write_all(&missing)?;
    Ok(count)
}

/// The last [`TAIL`] bytes of the file at `path`.
fn file_tail(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// One shard's region of the spool.
#[derive(Debug)]
pub(super) struct Region {
    map: SharedFileMap,
    /// The waiting length, as last stored in the header.
    len: usize,
}

impl Region {
    fn new(mut map: SharedFileMap) -> io::Result<Self> {
        let bytes = map.bytes_mut();
        if bytes.len() < HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "spool region too small",
            ));
        }
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..HEADER].fill(0);
        Ok(Self { map, len: 0 })
    }

    /// Keeps `line` (crash-safe once this returns). `false`: it does not
    /// fit beside what is waiting; flush, and try again or write it out.
    pub(super) fn push(&mut self, line: &[u8]) -> bool {
        let start = HEADER + self.len;
        let bytes = self.map.bytes_mut();
        let Some(room) = bytes.get_mut(start..start + line.len()) else {
            return false;
        };
        room.copy_from_slice(line);
        self.set_len(self.len + line.len());
        true
    }

    /// The lines waiting.
    pub(super) fn waiting(&self) -> &[u8] {
        &self.map.bytes()[HEADER..HEADER + self.len]
    }

    /// Drops the first `n` waiting bytes (they reached the audit file).
    pub(super) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n < self.len {
            let (start, end) = (HEADER + n, HEADER + self.len);
            self.map.bytes_mut().copy_within(start..end, HEADER);
        }
        self.set_len(self.len - n);
    }

    fn set_len(&mut self, len: usize) {
        // INVARIANT: the bytes a length covers are stored before the length
        // (the next broker reads only what the header counts).
        fence(Ordering::Release);
        self.map.bytes_mut()[8..HEADER].copy_from_slice(&(len as u64).to_le_bytes());
        self.len = len;
    }
}

/// One audit shard's descriptor of the audit file and its spool region.
#[derive(Debug)]
pub(super) struct SpooledFile {
    file: File,
    region: Region,
}

impl SpooledFile {
    pub(super) fn new(file: File, region: Region) -> Self {
        Self { file, region }
    }

    /// Appends the waiting lines to the file. Lines that could not be
    /// written stay waiting (and in the spool) for the next flush.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while !self.region.waiting().is_empty() {
            // INVARIANT: whole lines per `write(2)` on an O_APPEND file;
            // only a failing disk writes part of one.
            match self.file.write(self.region.waiting()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.region.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `line` now, after any that wait.
    pub(super) fn write_now(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_deferred(line)?;
        self.flush()
    }

    /// Keeps `line` crash-safe in the spool, to be written at the next
    /// flush; a line larger than a region is written now, after the ones
    /// waiting.
    pub(super) fn write_deferred(&mut self, line: &[u8]) -> io::Result<()> {
        if self.region.push(line) {
            return Ok(());
        }
        self.flush()?;
        if self.region.push(line) {
            Ok(())
        } else {
            self.file.write_all(line)
        }
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "cannot write audit records; they stay in the spool for the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&audit)
            .unwrap();
        (dir, audit, out)
    }

    #[test]
    fn spool_sits_hidden_beside_the_audit_file() {
        assert_eq!(
            path_for(Path::new("/var/log/sb/audit.log")).unwrap(),
            Path::new("/var/log/sb/.audit.log.spool")
        );
    }

    #[test]
    fn lines_left_by_a_stopped_broker_are_appended_once() {
        let (_dir, audit, mut out) = files();
        // A "crashed" broker: lines pushed into two regions, one of them
        // already written out but not cleared, never flushed otherwise.
        {
            let mut spool = open(&audit, &mut out, 4).unwrap().unwrap();
            assert!(spool.regions[0].push(b"{\"request_id\":\"a\"}\n"));
            assert!(spool.regions[0].push(b"{\"request_id\":\"b\"}\n"));
            assert!(spool.regions[2].push(b"{\"request_id\":\"c\"}\n"));
            out.write_all(b"{\"request_id\":\"c\"}\n").unwrap();
            // The lock goes with the spool, the bytes stay in the file.
        }
        let spool = open(&audit, &mut out, 4).unwrap().unwrap();
        assert!(spool.regions.iter().all(|r| r.waiting().is_empty()));
        let text = std::fs::read_to_string(&audit).unwrap();
        assert_eq!(
            text,
            "{\"request_id\":\"c\"}\n{\"request_id\":\"a\"}\n{\"request_id\":\"b\"}\n"
        );
        drop(spool);
        // Nothing is appended twice.
        drop(open(&audit, &mut out, 4).unwrap().unwrap());
        assert_eq!(std::fs::read_to_string(&audit).unwrap(), text);
    }

    #[test]
    fn a_torn_line_is_not_replayed() {
        let mut region = vec![0u8; 64];
        region[..8].copy_from_slice(&MAGIC);
        let lines = b"{\"a\":1}\n{\"b\":2}\n{\"torn\":tru";
        region[8..16].copy_from_slice(&(lines.len() as u64).to_le_bytes());
        region[16..16 + lines.len()].copy_from_slice(lines);
        assert_eq!(waiting(&region), b"{\"a\":1}\n{\"b\":2}\n");
        // A length past the region, or no magic: only what is there.
        region[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(waiting(&region), b"{\"a\":1}\n{\"b\":2}\n");
        region[0] = b'x';
        assert!(waiting(&region).is_empty());
    }

    #[test]
    fn a_second_broker_does_not_take_a_held_spool() {
        let (_dir, audit, mut out) = files();
        let held = open(&audit, &mut out, 2).unwrap().unwrap();
        assert!(open(&audit, &mut out, 2).unwrap().is_none());
        drop(held);
        assert!(open(&audit, &mut out, 2).unwrap().is_some());
    }

    #[test]
    fn regions_fill_and_drain() {
        let (_dir, audit, mut out) = files();
        let mut spool = open(&audit, &mut out, 1).unwrap().unwrap();
        let r = &mut spool.regions[0];
        let line = [b'x'; 1000];
        let mut pushed = 0;
        while r.push(&line) {
            pushed += 1;
        }
        assert_eq!(pushed, (REGION - HEADER) / line.len());
        r.consume(1500);
        assert_eq!(r.waiting().len(), pushed * 1000 - 1500);
        assert!(r.waiting().iter().all(|&b| b == b'x'));
        r.consume(usize::MAX);
        assert!(r.waiting().is_empty());
        assert!(r.push(&line));
    }
}
