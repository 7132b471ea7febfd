//! The read-through cache (stub; being written).
