//! A global allocator that zeroes every block before freeing it.
//!
//! Zeroizing types cover the secret bytes we own, but hyper's read buffers,
//! serde's scratch space and reallocations also briefly hold secret bytes.
//! Zeroing every block on free closes those gaps wholesale, so a deleted or
//! evicted secret is not found in the process's memory once its connection
//! closed. Cost is a `memset` per free (measured in `benches/`).
#![allow(unsafe_code)]
// SECURITY: this is the crate's one unsafe module. A global allocator cannot
// be written without `unsafe`; it only forwards to the system allocator and
// clears the block it is handed before freeing it.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, zeroing every block on free.
#[derive(Debug, Default, Clone, Copy)]
pub struct ZeroizingAlloc;

// SAFETY: every method forwards to `System` with the same layout; `dealloc`
// writes only within the block it is about to free.
unsafe impl GlobalAlloc for ZeroizingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `System.alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `System.alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` points to a live block of `layout.size()` bytes that
        // the caller is giving up; writing zeros within it is sound.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            // Keep the compiler from eliding the stores as dead before free.
            std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags));
            System.dealloc(ptr, layout);
        }
    }

    // `realloc` keeps the default (alloc, copy, dealloc) so that the old
    // block also passes through the zeroing `dealloc`.
}
