//! The job's stdout and stderr: read from the worker's pipes, shown on lorch's stderr as they
//! come (stdout too: lorch's stdout is for lorch's own results, e.g. `run-job --json`), and
//! kept in the run's log one line at a time (docs/logs.md).
//!
//! One thread reads both pipes with `poll`, so that it can stop waiting when told to: a process
//! that escaped the job's process group may hold the pipes open after the job is gone.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;

use crate::runlog::{self, Stream, Writer};

/// One pipe and the line it has begun.
pub struct Pipe {
    stream: Stream,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Pipe {
    /// Splits what arrived into lines; a line longer than [`runlog::MAX_LINE`] is kept in pieces.
    fn take(&mut self, bytes: &[u8], log: &Writer) {
        let now = Utc::now();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            self.line(log, now);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= runlog::MAX_LINE {
            let mut cut = runlog::MAX_LINE;
            // Not inside a UTF-8 character: back to its first byte.
            while cut > runlog::MAX_LINE - 4 && self.partial[cut] & 0xc0 == 0x80 {
                cut -= 1;
            }
            let text = String::from_utf8_lossy(&self.partial[..cut]).into_owned();
            log.push(self.stream, None, &text, now);
            self.partial.drain(..cut);
        }
    }

    fn line(&mut self, log: &Writer, now: chrono::DateTime<Utc>) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        log.push(
            self.stream,
            None,
            &String::from_utf8_lossy(&self.partial),
            now,
        );
        self.partial.clear();
    }

    fn close(&mut self) {
        self.file = None;
    }
}

/// The two pipes, shared by the thread that reads them and the storing thread, which empties
/// them before it keeps a logged line: what the job wrote before logging is kept before the
/// logged line, as it happened (the pipes and the ring are separate ways to lorch).
pub struct Pipes(Mutex<[Pipe; 2]>);

impl Pipes {
    pub fn new(stdout: OwnedFd, stderr: OwnedFd) -> std::io::Result<Pipes> {
        let pipes = [(Stream::Stdout, stdout), (Stream::Stderr, stderr)].map(|(stream, fd)| {
            // Non-blocking: either thread reads only what is there.
            // SAFETY: fcntl on a descriptor this function owns.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            let set =
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
            (flags >= 0 && set >= 0).then(|| Pipe {
                stream,
                file: Some(File::from(fd)),
                partial: Vec::new(),
            })
        });
        match pipes {
            [Some(stdout), Some(stderr)] => Ok(Pipes(Mutex::new([stdout, stderr]))),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Pipe; 2]> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what is waiting in the pipes now.
    pub fn catch_up(&self, log: &Writer) {
        let mut chunk = [0; 16 << 10];
        for pipe in self.lock().iter_mut() {
            while pipe.read_once(&mut chunk, log) {}
        }
    }

    /// Reads both pipes until they close, or until `give_up` is set and nothing more is
    /// waiting in them.
    pub fn capture(&self, log: &Writer, give_up: &AtomicBool) {
        let mut chunk = vec![0; 64 << 10];
        loop {
            let mut fds: Vec<libc::pollfd> = self
                .lock()
                .iter()
                .filter_map(|pipe| pipe.file.as_ref())
                .map(|file| libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if fds.is_empty() {
                break;
            }
            let leaving = give_up.load(Ordering::SeqCst);
            // 100 ms: how soon `give_up` is noticed.
            let wait = if leaving { 0 } else { 100 };
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if ready == 0 {
                if leaving {
                    break;
                }
                continue;
            }
            for pipe in self.lock().iter_mut() {
                let polled = pipe
                    .file
                    .as_ref()
                    .and_then(|f| fds.iter().find(|fd| fd.fd == f.as_raw_fd()));
                if polled.is_some_and(|fd| fd.revents != 0) {
                    pipe.read_once(&mut chunk, log);
                }
            }
            log.flush();
        }
        for pipe in self.lock().iter_mut() {
            pipe.close();
        }
        log.flush();
    }

    /// Once the job is gone and the lines it logged are kept: a line it did not end (it
    /// crashed mid-line) is kept as it is. It was written last, so it is kept last.
    pub fn finish(&self, log: &Writer) {
        for pipe in self.lock().iter_mut() {
            if !pipe.partial.is_empty() {
                pipe.line(log, Utc::now());
                // Shown live without its end: ended here, so lorch's next line starts afresh.
                let _ = std::io::stderr().lock().write_all(b"\n");
            }
        }
        log.flush();
    }
}

impl Pipe {
    /// One read: shown, then split into lines. `true` when it read something.
    fn read_once(&mut self, chunk: &mut [u8], log: &Writer) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        match file.read(chunk) {
            Ok(0) => self.close(),
            Ok(n) => {
                // As when the job wrote to lorch's stderr itself: a closed or full stderr
                // loses only the text.
                let _ = std::io::stderr().lock().write_all(&chunk[..n]);
                self.take(&chunk[..n], log);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(),
        }
        false
    }
}
