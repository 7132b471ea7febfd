//! Atomic file writes: a reader of DEST sees the old file or the new one,
//! never a part, and no temp file outlives a failure.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// The directory a DEST lives in (`.` for a bare file name).
pub fn parent_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether DEST's directory exists (checked before any read, so a typo
/// fails before the broker is asked).
pub fn dest_dir_exists(dest: &Path) -> bool {
    parent_of(dest).is_dir()
}

/// Writes `bytes` to `dest` with `mode`: a temp file in DEST's directory
/// (so the rename cannot cross filesystems), mode set before any byte is
/// written, fsync, rename over DEST, fsync the directory (so the rename
/// itself survives a crash). On any error the temp file is removed (the
/// `NamedTempFile` guard deletes it on drop).
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_of(dest);
    let mut tmp = tempfile::Builder::new()
        .prefix(".secret-broker.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // SECURITY: the temp file is created 0600 by `tempfile`; narrow it to
    // the wanted mode before the value is in it.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".secret-broker."))
            .collect()
    }

    #[test]
    fn writes_exact_bytes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("v");
        write_atomic(&dest, b"\x00\xffbinary", 0o400).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"\x00\xffbinary");
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o400);
        assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
        // A 0400 file is replaced by rename, not rewritten in place.
        write_atomic(&dest, b"second", 0o440).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o440);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // DEST is a non-empty directory: the rename fails after the temp
        // file was written.
        let dest = dir.path().join("taken");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("x"), b"").unwrap();
        assert!(write_atomic(&dest, b"value", 0o400).is_err());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_seen() {
        assert!(!dest_dir_exists(Path::new("/nonexistent-sb/x")));
        assert!(dest_dir_exists(Path::new("relative-file")));
    }
}
