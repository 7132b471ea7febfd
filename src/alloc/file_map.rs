//! A shared, writable mapping of part of a file: stores into it land in the
//! kernel's page cache directly, so they outlive a crash of this process
//! (as bytes handed to `write(2)` do) without a system call per store. The
//! audit spool keeps each line here before its answer leaves.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::ptr::NonNull;

use rustix::mm::{MapFlags, ProtFlags};

/// `len` bytes of a file at `offset`, mapped shared and read-write, and
/// unmapped on drop. Only `&mut self` hands out the bytes mutably, so the
/// borrow checker keeps every access exclusive within this process.
pub struct SharedFileMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl std::fmt::Debug for SharedFileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFileMap")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

// SAFETY: the mapping is owned memory like a `Box<[u8]>`: nothing else in
// this process aliases it, and every access goes through `&self`/`&mut self`.
unsafe impl Send for SharedFileMap {}
// SAFETY: as above; `&self` only reads.
unsafe impl Sync for SharedFileMap {}

impl SharedFileMap {
    /// Maps `len` bytes of `file` at `offset` (a multiple of the page size).
    /// The file must already be at least `offset + len` bytes long.
    ///
    /// The caller owns `file` for the broker's purposes: it was created by
    /// the broker, mode 0600, and is held under an exclusive `flock` (see
    /// `audit::spool`), so no cooperating process truncates it while mapped.
    pub fn new(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        let size = file.metadata()?.len();
        if offset.saturating_add(len as u64) > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping would reach past the end of the file",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so it
        // overlaps no memory this process uses; the range lies within the
        // file (checked above), so no access faults with SIGBUS unless the
        // file is truncated behind our back, which its owner rules out.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                offset,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by
        // `self`; the shared borrow of `self` excludes writers here.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and the mapping is writable; the unique borrow
        // of `self` makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedFileMap {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping made in `new`, and no
        // reference into it outlives `self`. What was stored stays in the
        // page cache, to be written back to the file.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stores_reach_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        file.set_len(8192).unwrap();
        {
            let mut map = SharedFileMap::new(&file, 4096, 4096).unwrap();
            map.bytes_mut()[..5].copy_from_slice(b"hello");
            assert_eq!(&map.bytes()[..5], b"hello");
        }
        let mut all = Vec::new();
        file.read_to_end(&mut all).unwrap();
        assert_eq!(&all[4096..4101], b"hello");
        assert!(all[..4096].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_ranges_past_the_end() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        assert!(SharedFileMap::new(&file, 4096, 4096).is_err());
        assert!(SharedFileMap::new(&file, 0, 0).is_err());
    }
}
