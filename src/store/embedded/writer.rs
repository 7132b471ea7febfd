//! The embedded store's single writer thread, which group-commits: every
//! write waiting when a commit starts shares that commit's one fsync.
//!
//! redb runs one write transaction at a time, and each durable commit costs
//! an fsync. Writers queue their operation here; the thread takes everything
//! queued, applies it in order in one transaction, commits once with
//! immediate durability, and only then answers each writer. While it waits
//! on the disk, new writes queue up for the next batch, so throughput grows
//! with the number of concurrent writers instead of being capped by fsync.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use redb::{Database, Durability, ReadableTable, Table};
use tokio::sync::oneshot;

use super::crypto::StoreKey;
use super::{META, MetaRecord, STORE, VERSIONS, backend, db_err, unavailable};
use crate::secret::SecretPath;
use crate::store::{PutOutcome, PutRequest, StoreError, Timestamp};

/// Most operations applied in one transaction, to bound its size.
const MAX_BATCH: usize = 256;

/// A write to apply.
pub(super) enum Op {
    /// Create the secret or add a version.
    Put {
        /// Where.
        path: SecretPath,
        /// What (holds the value; zeroized when the op is dropped).
        req: PutRequest,
    },
    /// Delete the secret and all its versions.
    Delete {
        /// Where.
        path: SecretPath,
    },
}

/// What a committed operation did.
pub(super) enum Done {
    /// A put's outcome.
    Put(PutOutcome),
    /// A delete removed the secret.
    Deleted,
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

struct Job {
    op: Op,
    reply: Reply,
}

/// Handle to the writer thread. Dropping it lets the thread finish the
/// queued writes and waits for it, so the database file is released.
pub(super) struct Writer {
    // INVARIANT: `Some` until drop; taking it closes the queue.
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread.
    pub(super) fn spawn(db: Arc<Database>, key: Arc<StoreKey>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || run(&db, &key, &rx))
            .map_err(|e| backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `op` and waits until its transaction has durably committed
    /// (or failed).
    pub(super) async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let stopped = || unavailable("the writer thread has stopped");
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(Job { op, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Writer {
    /// Whether the thread is still taking writes (it ends only on drop, or
    /// if redb panicked inside it).
    pub(super) fn is_running(&self) -> bool {
        self.tx.is_some() && self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once it drained the queue;
        // joining waits at most for the batch in flight.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, key: &StoreKey, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, key, batch);
    }
}

fn commit_batch(db: &Database, key: &StoreKey, batch: Vec<Job>) {
    let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
    match apply(db, key, ops) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A writer that gave up waiting is no reason to stop.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            // INVARIANT: nothing of the batch was committed, so every writer
            // in it hears the failure; none is acknowledged.
            for reply in replies {
                let _ = reply.send(Err(same_error(&e)));
            }
        }
    }
}

/// Applies `ops` in order in one transaction and commits durably. The outer
/// error fails the whole batch (nothing committed); inner errors are the
/// per-operation answers (`Exists`, `NotFound`) of operations that changed
/// nothing.
fn apply(
    db: &Database,
    key: &StoreKey,
    ops: Vec<Op>,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| db_err("cannot begin a write", e))?;
    // SECURITY: a write is acknowledged only after an fsync'd commit.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| db_err("cannot set durability", e))?;
    let mut results = Vec::with_capacity(ops.len());
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| db_err("cannot open the metadata table", e))?;
        let mut versions = txn
            .open_table(VERSIONS)
            .map_err(|e| db_err("cannot open the versions table", e))?;
        for op in ops {
            let result = match op {
                Op::Put { path, req } => put(&mut meta, &mut versions, key, &path, req)?,
                Op::Delete { path } => delete(&mut meta, &mut versions, &path)?,
            };
            results.push(result);
        }
    }
    txn.commit()
        .map_err(|e| db_err("cannot commit a write", e))?;
    Ok(results)
}

type MetaTable<'t> = Table<'t, &'static str, &'static [u8]>;
type VersionsTable<'t> = Table<'t, (&'static str, u64), &'static [u8]>;

fn put(
    meta: &mut MetaTable<'_>,
    versions: &mut VersionsTable<'_>,
    key: &StoreKey,
    path: &SecretPath,
    req: PutRequest,
) -> Result<Result<Done, StoreError>, StoreError> {
    let p = path.as_str();
    // INVARIANT: the current version is read inside the write transaction,
    // which redb runs one at a time, so concurrent puts get distinct,
    // consecutive versions.
    let previous = meta
        .get(p)
        .map_err(|e| db_err("cannot read metadata", e))?
        .map(|guard| MetaRecord::decode(p, guard.value()))
        .transpose()?;
    if req.create_only && previous.is_some() {
        return Ok(Err(StoreError::Exists {
            store: STORE,
            path: p.to_owned(),
        }));
    }
    let now = Timestamp::now();
    let record = match &previous {
        Some(prev) => MetaRecord {
            version: prev
                .version
                .checked_add(1)
                .ok_or_else(|| backend(format!("secret `{p}` has run out of versions")))?,
            created_at: prev.created_at,
            updated_at: now.0,
            labels: req.labels,
        },
        None => MetaRecord {
            version: 1,
            created_at: now.0,
            updated_at: now.0,
            labels: req.labels,
        },
    };
    let sealed = match key.seal(p, record.version, req.value.expose_secret()) {
        Ok(sealed) => sealed,
        Err(e) => return Ok(Err(e)),
    };
    versions
        .insert((p, record.version), sealed.as_slice())
        .map_err(|e| db_err("cannot write a version", e))?;
    meta.insert(p, record.encode()?.as_slice())
        .map_err(|e| db_err("cannot write metadata", e))?;
    Ok(Ok(Done::Put(PutOutcome {
        version: record.version,
        created: previous.is_none(),
        created_at: now,
    })))
}

fn delete(
    meta: &mut MetaTable<'_>,
    versions: &mut VersionsTable<'_>,
    path: &SecretPath,
) -> Result<Result<Done, StoreError>, StoreError> {
    let p = path.as_str();
    let existed = meta
        .remove(p)
        .map_err(|e| db_err("cannot delete metadata", e))?
        .is_some();
    if !existed {
        return Ok(Err(StoreError::NotFound {
            store: STORE,
            path: p.to_owned(),
        }));
    }
    // Every version, not just 1..=current: a range leaves no orphan behind
    // whatever the history.
    versions
        .retain_in((p, 0u64)..=(p, u64::MAX), |_, _| false)
        .map_err(|e| db_err("cannot delete versions", e))?;
    Ok(Ok(Done::Deleted))
}

/// A copy of a batch failure for each writer in the batch (errors carry only
/// names and messages, never values).
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound { store, path } => StoreError::NotFound {
            store,
            path: path.clone(),
        },
        StoreError::Exists { store, path } => StoreError::Exists {
            store,
            path: path.clone(),
        },
        StoreError::Denied { store, detail } => StoreError::Denied {
            store,
            detail: detail.clone(),
        },
        StoreError::Unavailable { store, detail } => StoreError::Unavailable {
            store,
            detail: detail.clone(),
        },
        StoreError::Timeout { store, after } => StoreError::Timeout {
            store,
            after: *after,
        },
        StoreError::Invalid { store, detail } => StoreError::Invalid {
            store,
            detail: detail.clone(),
        },
        StoreError::Backend { store, detail } => StoreError::Backend {
            store,
            detail: detail.clone(),
        },
    }
}
