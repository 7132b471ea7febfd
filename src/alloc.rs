//! A global allocator that zeroes every block before freeing it, the
//! release of start-up code pages once the broker is serving, and shared
//! file mappings ([`SharedFileMap`], for the audit spool).
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
// `mmap` is `unsafe` because a mapping aliases memory; `file_map` owns each
// mapping it makes and hands it out only through `&`/`&mut` borrows.

mod file_map;

pub use file_map::SharedFileMap;

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

/// Drops this process's page-table entries for its own code and the
/// read-only data before it (the running binary's `r-xp` mappings, and its
/// `r--p` mappings below the code: ELF headers, symbol and relocation
/// tables, constants, unwind tables). Those pages stay in the page cache;
/// whatever runs or is read next is mapped back in on its first use. Called
/// once start-up is done, so the resident set holds what the broker uses
/// while serving, not the start-up code (config and policy parsing, schema
/// validation, store open) and the dynamic loader's relocation tables,
/// which will not be used again. Takes no range: it only ever touches
/// mappings it found itself.
pub fn release_startup_code() -> std::io::Result<()> {
    for (start, len) in own_read_only_mappings()? {
        // SAFETY: the range is a private file mapping of our own binary,
        // just read from /proc/self/smaps, read-only (executable code, or
        // the read-only segment before it) and holding no anonymous page,
        // so no byte of it was ever written: `MADV_DONTNEED` drops its
        // page-table entries and the next access faults the same file
        // contents back in, so no byte any thread can observe changes,
        // whatever runs concurrently. The RELRO segment (relocated, so its
        // pages are anonymous, and after the code) is never among them.
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

/// The mappings [`release_startup_code`] may release, as `(start, len)`.
fn own_read_only_mappings() -> std::io::Result<Vec<(usize, usize)>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    Ok(read_only_mappings(&smaps, &exe.to_string_lossy()))
}

/// One mapping of `/proc/PID/smaps`: its header line's fields, and its
/// `Anonymous:` size.
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    anonymous_kib: Option<u64>,
}

fn parse_header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let path = fields.nth(3).unwrap_or("");
    (end > start && perms.len() == 4).then_some(Mapping {
        start,
        end,
        perms,
        path,
        anonymous_kib: None,
    })
}

/// Parses `smaps` (the format of `/proc/PID/smaps`) for the mappings of
/// `exe` that may be released: its `r-xp` mappings, and its `r--p`
/// mappings that lie below its first `r-xp` one; each only if it holds no
/// anonymous (written) page. Anything unparsable is left alone.
fn read_only_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            if let Some(last) = mappings.last_mut() {
                last.anonymous_kib = kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        } else if let Some(m) = parse_header(line) {
            mappings.push(m);
        }
    }
    let ours = || mappings.iter().filter(|m| m.path == exe);
    let Some(code_start) = ours().filter(|m| m.perms == "r-xp").map(|m| m.start).min() else {
        return Vec::new();
    };
    ours()
        .filter(|m| m.perms == "r-xp" || (m.perms == "r--p" && m.end <= code_start))
        .filter(|m| m.anonymous_kib == Some(0))
        .map(|m| (m.start, m.end - m.start))
        .collect()
}

#[cfg(test)]
mod tests {
    fn block(range: &str, perms: &str, path: &str, anon_kib: u64) -> String {
        format!(
            "{range} {perms} 00000000 fd:01 42 {path}\nSize:  4 kB\nRss:  4 kB\nAnonymous:  {anon_kib} kB\nVmFlags: rd mr mw me\n"
        )
    }

    #[test]
    fn finds_only_the_binarys_unwritten_code_and_read_only_data_before_it() {
        let exe = "/usr/bin/secret-broker";
        let smaps = [
            block("55e0a000-55e0b000", "r--p", exe, 0),
            block("55e0b000-55e2b000", "r-xp", exe, 0),
            // RELRO after the code: relocated (anonymous), never released.
            block("55e2b000-55e2c000", "r--p", exe, 4),
            // Read-only data after the code is left alone too.
            block("55e2c000-55e2d000", "r--p", exe, 0),
            block("55e2d000-55e2e000", "rw-p", exe, 0),
            block("7f00000000-7f00001000", "r-xp", "/usr/lib/libc.so.6", 0),
            block("7f00001000-7f00002000", "r--p", "/usr/lib/libc.so.6", 0),
            block("7f00002000-7f00003000", "rw-p", "", 4),
            block("7ffd0000-7ffd1000", "r-xp", "[vdso]", 0),
        ]
        .concat();
        assert_eq!(
            super::read_only_mappings(&smaps, exe),
            vec![(0x55e0_a000, 0x1000), (0x55e0_b000, 0x2_0000)]
        );
        assert!(super::read_only_mappings(&smaps, "/other").is_empty());
    }

    #[test]
    fn a_written_or_unreadable_mapping_is_never_released() {
        let exe = "/usr/bin/secret-broker";
        // Code with a written page (a debugger's breakpoint, text
        // relocations): left alone.
        let written = [
            block("1000-2000", "r--p", exe, 0),
            block("2000-3000", "r-xp", exe, 4),
        ]
        .concat();
        assert_eq!(
            super::read_only_mappings(&written, exe),
            vec![(0x1000, 0x1000)]
        );
        // No `Anonymous:` line: unknown, so left alone.
        let unknown = "1000-2000 r-xp 00000000 fd:01 42 /usr/bin/secret-broker\n";
        assert!(super::read_only_mappings(unknown, exe).is_empty());
    }

    #[test]
    fn finds_our_own_code() {
        let found = super::own_read_only_mappings().unwrap();
        assert!(!found.is_empty());
    }

    #[test]
    fn releasing_leaves_the_process_working() {
        super::release_startup_code().unwrap();
        // Code, constants and formatting still work after the release.
        assert_eq!(format!("{:?}", [1, 2, 3]), "[1, 2, 3]");
        assert!(std::hint::black_box("abc").contains('b'));
    }
}
