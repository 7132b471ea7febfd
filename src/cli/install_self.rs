//! `secret-broker install-self DEST` (hidden): copies the running binary to
//! DEST, mode 0555, atomically. Injection's init container runs it to put
//! the static binary into a memory volume the app containers run
//! `secret-broker run` from: the broker image has no `cp`, and needs none.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::Exit;

/// Arguments of `install-self`.
#[derive(Debug, Args)]
pub struct InstallSelfArgs {
    /// Where the copy goes (its directory must exist).
    #[arg(value_name = "DEST")]
    dest: PathBuf,
}

/// Runs `install-self`.
pub fn run(args: &InstallSelfArgs) -> Exit {
    match install(&args.dest) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!(
                "error: cannot install the secret-broker binary at `{}`: {e}",
                args.dest.display()
            );
            Exit::Io
        }
    }
}

/// Copies `/proc/self/exe` to a temp file beside `dest`, makes it 0555,
/// syncs it and renames it over `dest`: a reader (a starting app
/// container) sees no file or the whole one, never a part.
fn install(dest: &Path) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".secret-broker.")
        .tempfile_in(dir)?;
    let mut src = std::fs::File::open(exe)?;
    std::io::copy(&mut src, tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o555))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    // The rename itself, on disk (a no-op on the memory volume).
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
