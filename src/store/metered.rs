//! A store wrapper that records every call's latency and failure kind in
//! the metrics registry. It sits under the cache, so it measures real
//! store calls only.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{PutOutcome, PutRequest, SecretMeta, Store, StoreError, StoredSecret};
use crate::metrics::{Metrics, StoreOp};
use crate::secret::{ScopePath, SecretPath};

/// Measures the calls to the inner store.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(&self, op: StoreOp, started: Instant, r: &Result<T, StoreError>) {
        let kind = r.as_ref().err().map(StoreError::kind);
        self.metrics.store_call(op, started.elapsed(), kind);
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(&self, path: &SecretPath, req: PutRequest) -> Result<PutOutcome, StoreError> {
        let t = Instant::now();
        let r = self.inner.put(path, req).await;
        self.record(StoreOp::Put, t, &r);
        r
    }

    async fn get(&self, path: &SecretPath) -> Result<StoredSecret, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(path).await;
        self.record(StoreOp::Get, t, &r);
        r
    }

    async fn list(&self, scope: &ScopePath) -> Result<Vec<SecretMeta>, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(scope).await;
        self.record(StoreOp::List, t, &r);
        r
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.delete(path).await;
        self.record(StoreOp::Delete, t, &r);
        r
    }

    async fn health(&self) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.health().await;
        self.record(StoreOp::Health, t, &r);
        r
    }
}
