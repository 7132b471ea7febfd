//! The embedded encrypted store (stub; being written).
