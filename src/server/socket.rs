//! Creating the listening socket so that nobody else can touch it: the
//! socket directory must be writable by the broker's uid and root alone,
//! every step works on that directory's descriptor (never on a path that
//! could be swapped meanwhile), and the socket gets its mode and group in a
//! fresh private directory before it is renamed into place.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::process::{Gid, Uid, geteuid};
use tokio::net::UnixListener;

use crate::config::ListenConfig;

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process is serving the socket path.
    #[error("another broker is already serving `{0}`; stop it or choose another listen.socket")]
    AlreadyServing(PathBuf),
    /// Something that is not a socket is at the path.
    #[error("`{0}` exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A socket owned by someone else is at the path.
    #[error(
        "`{path}` is a socket owned by uid {owner}, not by this broker (uid {us}); refusing to replace it: remove it, or choose another listen.socket"
    )]
    NotOurs {
        /// The socket path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The broker's effective uid.
        us: u32,
    },
    /// A socket is at the path and whether anyone serves it is unknown.
    #[error(
        "`{path}` exists and cannot be probed ({source}); refusing to remove a socket that may be in use: remove it by hand if no broker serves it"
    )]
    CannotProbe {
        /// The socket path.
        path: PathBuf,
        /// Why the probe failed.
        source: io::Error,
    },
    /// Someone other than the broker's uid or root can write the directory.
    #[error(
        "the socket directory `{dir}` is writable by others (owner uid {owner}, mode {mode:04o}): whoever can write it can replace the socket and capture what callers send; give the broker a directory that only its uid (or root) can write (e.g. `install -d -m 0755 -o <broker uid> {dir}`; in Kubernetes, mount the volume read-only in every other container and point listen.socket at a subdirectory, which the broker creates)"
    )]
    InsecureDir {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Any other step failed.
    #[error("cannot create socket `{path}`: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Removes the socket file when the server stops, if it is still ours.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    dir: OwnedFd,
    name: PathBuf,
    inode: u64,
}

impl SocketGuard {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // Only remove the file we created: a successor broker may have
        // replaced it after we stopped listening.
        if rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_ino == self.inode)
        {
            let _ = rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
    }
}

/// Creates the listening socket at `cfg.socket`: checks that only the
/// broker's uid and root can write its directory, refuses a path that a
/// live broker serves or that is not our socket, removes our own stale
/// socket, and gives the new socket its mode and group before it appears
/// under its final name.
pub fn bind(cfg: &ListenConfig) -> Result<(UnixListener, SocketGuard), SocketError> {
    let path = &cfg.socket;
    let io_err = |source: io::Error| SocketError::Io {
        path: path.clone(),
        source,
    };
    let name = path
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| io_err(io::Error::other("listen.socket has no file name")))?;
    let dir_path = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A directory we make is ours and 0755 whatever the umask allows more.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir_path)
        .map_err(io_err)?;
    // SECURITY: from here on every step names entries relative to this
    // descriptor, so renaming or replacing the directory path meanwhile
    // changes nothing we touch.
    let dir = rustix::fs::open(
        &dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(e.into()))?;
    let us = geteuid();
    check_dir(&rustix::fs::fstat(&dir).map_err(|e| io_err(e.into()))?, us).map_err(
        |(owner, mode)| SocketError::InsecureDir {
            dir: dir_path.clone(),
            owner,
            mode,
        },
    )?;
    remove_stale(&dir, &name, path, us)?;

    // SECURITY: bind in a fresh directory only we can enter, set mode and
    // group there, then rename into place: at no moment can another user
    // reach the socket, or have a chmod/chown land on a file of their
    // choosing, and a failed step leaves nothing under the final name.
    let private = private_dir(&dir).map_err(io_err)?;
    let result = (|| {
        let pdir = rustix::fs::openat(
            &dir,
            &private,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let listener = std::os::unix::net::UnixListener::bind(fd_path(&pdir, Path::new("s")))?;
        rustix::fs::chmodat(
            &pdir,
            "s",
            Mode::from_raw_mode(cfg.mode & 0o7777),
            AtFlags::empty(),
        )?;
        if let Some(gid) = cfg.group {
            rustix::fs::chownat(
                &pdir,
                "s",
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        rustix::fs::renameat_with(&pdir, "s", &dir, &name, RenameFlags::NOREPLACE)?;
        let inode = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?.st_ino;
        listener.set_nonblocking(true)?;
        Ok::<_, io::Error>((UnixListener::from_std(listener)?, inode))
    })();
    let _ = rustix::fs::unlinkat(&dir, private.join("s"), AtFlags::empty());
    let _ = rustix::fs::unlinkat(&dir, &private, AtFlags::REMOVEDIR);
    let (listener, inode) = result.map_err(io_err)?;
    Ok((
        listener,
        SocketGuard {
            path: path.clone(),
            dir,
            name,
            inode,
        },
    ))
}

/// Accepts a directory that only its owner can write, owned by `us` or
/// root; else returns its owner and mode.
fn check_dir(st: &Stat, us: Uid) -> Result<(), (u32, u32)> {
    let mode = st.st_mode & 0o7777;
    let owner_ok = st.st_uid == us.as_raw() || st.st_uid == 0;
    if owner_ok && mode & 0o022 == 0 {
        Ok(())
    } else {
        Err((st.st_uid, mode))
    }
}

/// Removes a stale socket at `name`: only a socket owned by `us` that
/// refuses connections. A live one, one of another user, anything that is
/// not a socket, or one that cannot be probed is refused.
fn remove_stale(dir: &OwnedFd, name: &Path, path: &Path, us: Uid) -> Result<(), SocketError> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => {
            return Err(SocketError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    if st.st_uid != us.as_raw() {
        return Err(SocketError::NotOurs {
            path: path.to_path_buf(),
            owner: st.st_uid,
            us: us.as_raw(),
        });
    }
    match std::os::unix::net::UnixStream::connect(fd_path(dir, name)) {
        Ok(_) => Err(SocketError::AlreadyServing(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing stale socket");
            // INVARIANT: only we and root can write the directory (checked),
            // so the entry we probed is the entry we remove.
            rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| SocketError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            })
        }
        Err(source) => Err(SocketError::CannotProbe {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes a fresh `0700` directory with an unpredictable name in `dir`.
fn private_dir(dir: &OwnedFd) -> io::Result<PathBuf> {
    for _ in 0..16 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
        let name = PathBuf::from(format!(".secret-broker.{}", hex::encode(b)));
        match rustix::fs::mkdirat(dir, &name, Mode::RWXU) {
            Ok(()) => return Ok(name),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "cannot make a private directory beside the socket",
    ))
}

/// A path that reaches `name` inside the directory open as `dir` whatever
/// its own path is now (`/proc/self/fd/N/name`); short enough for
/// `sun_path` whatever the configured path's length.
fn fd_path(dir: &impl AsFd, name: &Path) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(std::ffi::OsStr::from_bytes(name.as_os_str().as_bytes()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn cfg(socket: PathBuf) -> ListenConfig {
        ListenConfig {
            socket,
            mode: 0o660,
            group: None,
            tls: None,
        }
    }

    #[tokio::test]
    async fn binds_with_mode_and_leaves_no_temp_entries() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let (_l, guard) = bind(&cfg(sock.clone())).unwrap();
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the socket: {names:?}");
        drop(guard);
        assert!(!sock.exists());
    }

    #[tokio::test]
    async fn refuses_a_directory_others_can_write() {
        for mode in [0o777, 0o1777, 0o775, 0o2757] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = bind(&cfg(dir.path().join("api.sock"))).unwrap_err();
            assert!(
                matches!(err, SocketError::InsecureDir { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("writable by others"));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn refuses_what_is_not_our_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        // A live socket: refused, untouched.
        let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            bind(&cfg(sock.clone())),
            Err(SocketError::AlreadyServing(_))
        ));
        drop(live);
        // Our own stale socket: removed and replaced.
        let (_l, guard) = bind(&cfg(sock.clone())).unwrap();
        drop(guard);
        // A symlink or a file: refused.
        std::os::unix::fs::symlink("/etc/passwd", &sock).unwrap();
        assert!(matches!(
            bind(&cfg(sock.clone())),
            Err(SocketError::NotASocket(_))
        ));
        assert!(std::fs::symlink_metadata(&sock).unwrap().is_symlink());
    }

    #[tokio::test]
    async fn refuses_a_stale_socket_of_another_user() {
        if !geteuid().is_root() {
            return; // needs root to give the socket away
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        std::os::unix::fs::chown(&sock, Some(12345), None).unwrap();
        let err = bind(&cfg(sock.clone())).unwrap_err();
        assert!(
            matches!(err, SocketError::NotOurs { owner: 12345, .. }),
            "{err}"
        );
        assert!(std::fs::symlink_metadata(&sock).is_ok());
    }
}
