//! Cedar authorization (stub; being written).
