//! Open connections per peer uid, capped at `[limits]
//! max_connections_per_uid`, so one caller cannot hold every connection
//! slot and lock the others out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections, by peer uid.
#[derive(Debug)]
pub(crate) struct UidConnections {
    open: Mutex<HashMap<u32, usize>>,
    max: usize,
}

/// One connection's place under its uid's cap, given back on drop.
#[derive(Debug)]
pub(crate) struct UidSlot {
    owner: Arc<UidConnections>,
    uid: u32,
}

impl UidConnections {
    /// A counter allowing `max` connections per uid.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// A slot for one more connection of `uid`, or `None` at the cap.
    pub(crate) fn try_enter(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(uid).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            owner: Arc::clone(self),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            // INVARIANT: no entry stays at zero, so the map holds only uids
            // with open connections (it cannot grow with every uid seen).
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_per_uid_and_slots_come_back() {
        let c = UidConnections::new(2);
        let a = c.try_enter(7).unwrap();
        let b = c.try_enter(7).unwrap();
        assert!(c.try_enter(7).is_none());
        let other = c.try_enter(8).unwrap();
        drop(a);
        let a2 = c.try_enter(7).unwrap();
        drop((a2, b, other));
        assert!(c.open.lock().unwrap().is_empty());
    }
}
