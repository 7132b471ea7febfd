//! Appending a whole line to the audit file with one system call.
//!
//! `write(2)` on a regular file takes the open file's position lock (a
//! mutex) on every call, though an `O_APPEND` write never uses the
//! position. `pwritev2` with `RWF_APPEND` at an explicit offset appends
//! all the same (the offset is ignored) without that lock, and without
//! libc's cancellation-point wrapper. Anything else (a pipe, a terminal,
//! a device such as `/dev/null`, or a kernel before 4.16 that does not
//! know the flag) gets `write(2)`, as before.

use std::fs::File;
use std::io::{self, IoSlice, Write as _};

use rustix::io::{Errno, ReadWriteFlags, pwritev2};

/// The audit file, opened for appending, and how lines reach it.
#[derive(Debug)]
pub(super) struct Appender {
    file: File,
    /// A regular file, where `pwritev2(RWF_APPEND)` is tried first.
    regular: bool,
}

impl Appender {
    pub(super) fn new(file: File) -> Self {
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        Self { file, regular }
    }

    /// Appends `line` at the end of the file. A write cut short (a full
    /// disk, a signal) goes on from where it stopped, as `write_all` does.
    pub(super) fn append(&self, mut line: &[u8]) -> io::Result<()> {
        if self.regular {
            while !line.is_empty() {
                match pwritev2(&self.file, &[IoSlice::new(line)], 0, ReadWriteFlags::APPEND) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => line = &line[n..],
                    Err(Errno::INTR) => {}
                    // The kernel does not know the call or the flag.
                    Err(Errno::NOSYS | Errno::OPNOTSUPP) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        (&self.file).write_all(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn lines_land_after_each_other_even_without_o_append() {
        // Opened without O_APPEND, so only the flag can make the second
        // line go after the first rather than over it at offset 0.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"before\n").unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let out = Appender::new(file);
        assert!(out.regular);
        out.append(b"first\n").unwrap();
        out.append(b"second\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"before\nfirst\nsecond\n");
    }

    #[test]
    fn a_pipe_gets_plain_writes() {
        let (reader, writer) = std::io::pipe().unwrap();
        let out = Appender::new(File::from(std::os::fd::OwnedFd::from(writer)));
        assert!(!out.regular);
        out.append(b"one line\n").unwrap();
        drop(out);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut { reader }, &mut got).unwrap();
        assert_eq!(got, "one line\n");
    }

    #[test]
    fn dev_null_takes_lines() {
        let file = OpenOptions::new().append(true).open("/dev/null").unwrap();
        let out = Appender::new(file);
        assert!(!out.regular);
        out.append(b"gone\n").unwrap();
    }
}
