//! The embedded store: a local redb file whose values are sealed with
//! AES-256-GCM under a key from a 32-byte key file.
//!
//! Layout (table names carry a format version):
//!
//! - `secrets_meta_v1`: path → JSON `{version, created_at, updated_at,
//!   labels}` (timestamps in ms; labels are metadata, never secret).
//! - `secret_versions_v1`: (path, version) → `nonce(12) || ciphertext || tag`,
//!   with associated data `secret-broker/v1\0 || path || \0 || version_be`,
//!   so a record copied under another path or version fails to decrypt.
//! - `store_info_v1`: `key_check` → a sealed constant, so a wrong key file is
//!   refused at open rather than at the first read.
//!
//! Writes go through one writer thread that group-commits with immediate
//! (fsync) durability and answers only after the commit; reads run on
//! tokio's blocking pool in their own MVCC snapshots.

mod crypto;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use self::crypto::StoreKey;
use self::writer::{Done, Op, Writer};
use crate::secret::{ScopePath, SecretPath};
use crate::store::{
    Labels, PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoredSecret, Timestamp,
};

/// The backend name, as in config and errors.
const STORE: &str = "embedded";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets_meta_v1");
const VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("secret_versions_v1");
const INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("store_info_v1");
const KEY_CHECK: &str = "key_check";

/// The embedded encrypted store (backend `embedded`).
pub struct EmbeddedStore {
    // Field order matters for drop: the writer joins its thread (releasing
    // its handle on the database) before our own handle goes.
    writer: Writer,
    db: Arc<Database>,
    key: Arc<StoreKey>,
    path: PathBuf,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: never the key; the path is not secret.
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `path` (created if missing; its directory must
    /// exist) with the key in `key_file` (exactly 32 raw bytes).
    pub fn open(path: &Path, key_file: &Path) -> Result<Self, StoreError> {
        let key = Arc::new(StoreKey::load(key_file)?);
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(invalid(format!(
                    "directory `{}` for store file `{shown}` does not exist; create it first",
                    dir.display()
                )));
            }
        }
        let db = Database::builder()
            .create(path)
            .map_err(|e| open_err(path, e))?;
        init_tables(&db, &key, path, key_file)?;
        let db = Arc::new(db);
        let writer = Writer::spawn(Arc::clone(&db), Arc::clone(&key))?;
        Ok(Self {
            writer,
            db,
            key,
            path: path.to_owned(),
        })
    }

    /// Writes a fresh random 32-byte key file at `path`, with mode 0600;
    /// fails if the file exists.
    pub fn generate_key_file(path: &Path) -> io::Result<()> {
        crypto::generate_key_file(path)
    }

    /// Runs `f` with the database on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| backend(format!("a store task failed: {e}")))?
    }
}

/// Creates the tables if needed and checks (or, for a new store, records)
/// that the key file matches the store. A store that has its tables and
/// its key check is only read: a write transaction's durable commit would
/// cost every start-up its fsyncs.
fn init_tables(
    db: &Database,
    key: &StoreKey,
    path: &Path,
    key_file: &Path,
) -> Result<(), StoreError> {
    if let Some(matches) = key_check_of_ready_store(db, key) {
        return if matches {
            Ok(())
        } else {
            Err(wrong_key(path, key_file))
        };
    }
    let txn = db
        .begin_write()
        .map_err(|e| db_err("cannot begin a write", e))?;
    {
        txn.open_table(META)
            .map_err(|e| db_err("cannot create the metadata table", e))?;
        txn.open_table(VERSIONS)
            .map_err(|e| db_err("cannot create the versions table", e))?;
        let mut info = txn
            .open_table(INFO)
            .map_err(|e| db_err("cannot create the info table", e))?;
        let existing = info
            .get(KEY_CHECK)
            .map_err(|e| db_err("cannot read the key check", e))?
            .map(|guard| key.verifies_key_check(guard.value()));
        match existing {
            Some(true) => {}
            Some(false) => return Err(wrong_key(path, key_file)),
            None => {
                let record = key.key_check_record()?;
                info.insert(KEY_CHECK, record.as_slice())
                    .map_err(|e| db_err("cannot write the key check", e))?;
            }
        }
    }
    txn.commit()
        .map_err(|e| db_err("cannot commit the store's tables", e))
}

/// Whether `key` opens a store that already has all its tables and a key
/// check, read without writing; `None` if anything is missing (or cannot
/// be read), which the write transaction then creates or reports.
fn key_check_of_ready_store(db: &Database, key: &StoreKey) -> Option<bool> {
    let txn = db.begin_read().ok()?;
    txn.open_table(META).ok()?;
    txn.open_table(VERSIONS).ok()?;
    let info = txn.open_table(INFO).ok()?;
    let check = info.get(KEY_CHECK).ok()??;
    Some(key.verifies_key_check(check.value()))
}

/// The store was created with another key.
fn wrong_key(path: &Path, key_file: &Path) -> StoreError {
    backend(format!(
        "failed to decrypt store file `{}` with key file `{}`: it is not the key this store was created with",
        path.display(),
        key_file.display()
    ))
}

/// A secret's metadata row.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaRecord {
    version: u64,
    created_at: u64,
    updated_at: u64,
    labels: Labels,
}

impl MetaRecord {
    fn decode(path: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| backend(format!("corrupt metadata for secret `{path}`: {e}")))
    }

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| backend(format!("cannot encode metadata: {e}")))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        STORE
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let op = Op::Put {
            path: path.clone(),
            req,
        };
        match self.writer.submit(op).await? {
            Done::Put(outcome) => Ok(outcome),
            Done::Deleted => Err(backend("the writer answered a put with a delete")),
        }
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let path = path.clone();
        let key = Arc::clone(&self.key);
        self.blocking(move |db| {
            let p = path.as_str();
            let txn = db
                .begin_read()
                .map_err(|e| db_err("cannot begin a read", e))?;
            let meta = txn
                .open_table(META)
                .map_err(|e| db_err("cannot open the metadata table", e))?;
            let record = meta
                .get(p)
                .map_err(|e| db_err("cannot read metadata", e))?
                .map(|guard| MetaRecord::decode(p, guard.value()))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound {
                    store: STORE,
                    path: p.to_owned(),
                })?;
            let versions = txn
                .open_table(VERSIONS)
                .map_err(|e| db_err("cannot open the versions table", e))?;
            let sealed = versions
                .get((p, record.version))
                .map_err(|e| db_err("cannot read a version", e))?
                .ok_or_else(|| {
                    backend(format!(
                        "secret `{p}` version {} is missing from the store file",
                        record.version
                    ))
                })?;
            let value = key.open(p, record.version, sealed.value())?;
            Ok(StoredSecret {
                version: record.version,
                value,
                labels: record.labels,
            })
        })
        .await
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let scope = scope.clone();
        self.blocking(move |db| {
            let txn = db
                .begin_read()
                .map_err(|e| db_err("cannot begin a read", e))?;
            let meta = txn
                .open_table(META)
                .map_err(|e| db_err("cannot open the metadata table", e))?;
            let prefix = scope.key_prefix();
            let rows = if prefix.is_empty() {
                meta.iter()
            } else {
                // `scope/` up to `scope0` (`0` follows `/` in ASCII): exactly
                // the keys that start with `scope/`, so `acme/t-4` never
                // reaches `acme/t-42/x`.
                let end = format!("{}0", scope.as_str());
                meta.range(prefix.as_str()..end.as_str())
            }
            .map_err(|e| db_err("cannot list metadata", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (k, v) = row.map_err(|e| db_err("cannot list metadata", e))?;
                let raw = k.value();
                let path = SecretPath::parse(raw)
                    .map_err(|e| backend(format!("corrupt key `{raw}` in the store file: {e}")))?;
                // Belt and braces over the range bounds.
                if !path.is_within(&scope) {
                    continue;
                }
                let record = MetaRecord::decode(raw, v.value())?;
                out.push(SecretMeta {
                    path,
                    version: record.version,
                    updated_at: Timestamp(record.updated_at),
                    labels: record.labels,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        match self
            .writer
            .submit(Op::Delete { path: path.clone() })
            .await?
        {
            Done::Deleted => Ok(()),
            Done::Put(_) => Err(backend("the writer answered a delete with a put")),
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(unavailable("the writer thread has stopped"));
        }
        self.blocking(|db| {
            let txn = db
                .begin_read()
                .map_err(|e| db_err("cannot begin a read", e))?;
            txn.open_table(META)
                .map_err(|e| db_err("cannot open the metadata table", e))?;
            Ok(())
        })
        .await
    }
}

fn backend(detail: impl Into<String>) -> StoreError {
    StoreError::Backend {
        store: STORE,
        detail: detail.into(),
    }
}

fn invalid(detail: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        store: STORE,
        detail: detail.into(),
    }
}

fn unavailable(detail: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        store: STORE,
        detail: detail.into(),
    }
}

/// Maps a redb failure to a store error kind. redb's messages name pages,
/// tables and I/O causes, never record contents.
fn db_err(context: &str, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => {
            unavailable(format!("{context}: another process holds the store file"))
        }
        redb::Error::DatabaseClosed | redb::Error::PreviousIo => unavailable(format!(
            "{context}: the store file is closed after an earlier i/o error"
        )),
        redb::Error::ValueTooLarge(n) => {
            invalid(format!("{context}: a record of {n} bytes is too large"))
        }
        other => backend(format!("{context}: {other}")),
    }
}

fn open_err(path: &Path, e: redb::DatabaseError) -> StoreError {
    let shown = path.display();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => unavailable(format!(
            "another process holds the store file `{shown}` (or it is already open in this one)"
        )),
        other => backend(format!("cannot open store file `{shown}`: {other}")),
    }
}

#[cfg(test)]
mod tests;
