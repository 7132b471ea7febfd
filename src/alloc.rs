//! A global allocator that zeroes every block before freeing it, and the
//! release of start-up code pages once the broker is serving.
//!
//! Zeroizing types cover the secret bytes we own, but hyper's read buffers,
//! serde's scratch space and reallocations also briefly hold secret bytes.
//! Zeroing every block on free closes those gaps wholesale, so a deleted or
//! evicted secret is not found in the process's memory once its connection
//! closed. Cost is a `memset` per free (measured in `benches/`).
#![allow(unsafe_code)]
// SECURITY: this is the crate's one unsafe module. A global allocator cannot
// be written without `unsafe`; it only forwards to the system allocator and
// clears the block it is handed before freeing it. `madvise` is `unsafe`
// because it can discard memory; it is used here only on the read-only code
// mapping of our own binary, whose pages come back unchanged from the file.

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

/// Drops this process's page-table entries for the executable code at
/// `start..start + len`. The code stays in the page cache; whatever runs
/// next is mapped back in on its first use. Called once start-up is done, so
/// the resident set holds the code the broker runs while serving, not the
/// start-up code (config and policy parsing, schema validation, store open)
/// that will not run again.
pub fn release_code_pages(start: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: the range is a read-only, executable, private file mapping
    // of our own binary (found in /proc/self/maps by the caller), never
    // written: `MADV_DONTNEED` drops its page-table entries and the next
    // access faults the same file contents back in, so no byte any thread
    // can observe changes, whatever runs concurrently.
    unsafe {
        rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            len,
            rustix::mm::Advice::LinuxDontNeed,
        )
    }
    .map_err(Into::into)
}
