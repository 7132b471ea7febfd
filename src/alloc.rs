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

/// Drops this process's page-table entries for its own executable code
/// (the `r-xp` mappings of the running binary). The code stays in the page
/// cache; whatever runs next is mapped back in on its first use. Called once
/// start-up is done, so the resident set holds the code the broker runs
/// while serving, not the start-up code (config and policy parsing, schema
/// validation, store open) that will not run again. Takes no range: it only
/// ever touches mappings it found itself.
pub fn release_startup_code() -> std::io::Result<()> {
    for (start, len) in own_code_mappings()? {
        // SAFETY: the range is a read-only, executable, private file
        // mapping of our own binary, just read from /proc/self/maps, never
        // written: `MADV_DONTNEED` drops its page-table entries and the next
        // access faults the same file contents back in, so no byte any
        // thread can observe changes, whatever runs concurrently.
        unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                len,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }?;
    }
    Ok(())
}

/// The executable code mappings of this process (`r-xp` lines of
/// `/proc/self/maps` backed by the running binary), as `(start, len)`.
fn own_code_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(code_mappings(&maps, &exe.to_string_lossy()))
}

/// Parses `maps` (the format of `/proc/PID/maps`) for `r-xp` mappings of `exe`.
fn code_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || path != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then(|| (start, end - start))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_only_the_executables_code() {
        let maps = "\
55e0a000-55e0b000 r--p 00000000 fd:01 42 /usr/bin/secret-broker
55e0b000-55e2b000 r-xp 00001000 fd:01 42 /usr/bin/secret-broker
55e2b000-55e2c000 rw-p 00021000 fd:01 42 /usr/bin/secret-broker
7f00000000-7f00001000 r-xp 00000000 fd:01 7 /usr/lib/libc.so.6
7f00002000-7f00003000 rw-p 00000000 00:00 0
7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            super::code_mappings(maps, "/usr/bin/secret-broker"),
            vec![(0x55e0_b000, 0x2_0000)]
        );
        assert!(super::code_mappings(maps, "/other").is_empty());
    }

    #[test]
    fn finds_our_own_code() {
        assert!(!super::own_code_mappings().unwrap().is_empty());
    }
}
