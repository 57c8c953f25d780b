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
    /// Splits what arrived into lines; a line longer than [`runlog::MAX_LINE`] is kept in
    /// pieces of at most that many bytes, cut between UTF-8 characters.
    fn take(&mut self, bytes: &[u8], log: &Writer) {
        let now = Utc::now();
        let mut rest = bytes;
        loop {
            let end = rest.iter().position(|&b| b == b'\n');
            self.partial
                .extend_from_slice(&rest[..end.unwrap_or(rest.len())]);
            // One byte of slack: a `\r` that ends the line is not kept, so it must not be what
            // makes the line long.
            self.cut_pieces(log, now, runlog::MAX_LINE + 1);
            let Some(end) = end else { break };
            self.line(log, now);
            rest = &rest[end + 1..];
        }
    }

    /// Keeps whole pieces of the line begun while it is longer than `longest` bytes.
    fn cut_pieces(&mut self, log: &Writer, now: chrono::DateTime<Utc>, longest: usize) {
        while self.partial.len() > longest {
            // Not inside a UTF-8 character: back to its first byte (at most 3 bytes back; bytes
            // that are not UTF-8 are cut where they stand). `partial[cut]` exists: the line is
            // longer than `cut`.
            let mut cut = runlog::MAX_LINE;
            while cut > runlog::MAX_LINE - 3 && self.partial[cut] & 0xc0 == 0x80 {
                cut -= 1;
            }
            let text = String::from_utf8_lossy(&self.partial[..cut]).into_owned();
            log.push(self.stream, None, &text, now);
            self.partial.drain(..cut);
        }
    }

    /// Keeps the line begun, which has ended (or will never end: the job is gone).
    fn line(&mut self, log: &Writer, now: chrono::DateTime<Utc>) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        self.cut_pieces(log, now, runlog::MAX_LINE);
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
pub struct Pipes {
    pipes: Mutex<[Pipe; 2]>,
    /// Cleared if keeping lines ever panics (a bug in lorch): the output is then only shown,
    /// and the run still ends with its own outcome.
    keeping: AtomicBool,
}

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
            [Some(stdout), Some(stderr)] => Ok(Pipes {
                pipes: Mutex::new([stdout, stderr]),
                keeping: AtomicBool::new(true),
            }),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Pipe; 2]> {
        self.pipes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what is waiting in the pipes now.
    pub fn catch_up(&self, log: &Writer) {
        let mut chunk = [0; 16 << 10];
        let keep = self.keeping.load(Ordering::SeqCst).then_some(log);
        for pipe in self.lock().iter_mut() {
            while pipe.read_once(&mut chunk, keep) {}
        }
    }

    /// Reads both pipes until they close, or until `give_up` is set and nothing more is
    /// waiting in them. Should keeping a line panic, the pipes are still read to their end (a
    /// job must never block on a full pipe), shown and no longer kept.
    pub fn capture(&self, log: &Writer, give_up: &AtomicBool) {
        let kept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.read_until_closed(Some(log), give_up);
        }));
        if kept.is_err() {
            self.keeping.store(false, Ordering::SeqCst);
            tracing::warn!(
                "lorch stopped keeping the job's output in its run log after an internal error; it is still shown here"
            );
            self.read_until_closed(None, give_up);
        }
    }

    fn read_until_closed(&self, log: Option<&Writer>, give_up: &AtomicBool) {
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
            if let Some(log) = log {
                log.flush();
            }
        }
        for pipe in self.lock().iter_mut() {
            pipe.close();
        }
        if let Some(log) = log {
            log.flush();
        }
    }

    /// Once the job is gone and the lines it logged are kept: a line it did not end (it
    /// crashed mid-line) is kept as it is. It was written last, so it is kept last.
    pub fn finish(&self, log: &Writer) {
        let keeping = self.keeping.load(Ordering::SeqCst);
        for pipe in self.lock().iter_mut() {
            if keeping && !pipe.partial.is_empty() {
                pipe.line(log, Utc::now());
                // Shown live without its end: ended here, so lorch's next line starts afresh.
                let _ = std::io::stderr().lock().write_all(b"\n");
            }
        }
        log.flush();
    }
}

impl Pipe {
    /// One read: shown, then split into lines when `log` keeps them. `true` when it read
    /// something.
    fn read_once(&mut self, chunk: &mut [u8], log: Option<&Writer>) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        match file.read(chunk) {
            Ok(0) => self.close(),
            Ok(n) => {
                // As when the job wrote to lorch's stderr itself: a closed or full stderr
                // loses only the text.
                let _ = std::io::stderr().lock().write_all(&chunk[..n]);
                if let Some(log) = log {
                    self.take(&chunk[..n], log);
                }
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces docs/logs.md promises for one line: the longest prefixes of at most
    /// `MAX_LINE` bytes that end between characters, and an empty line kept as one.
    fn pieces(line: &str) -> Vec<String> {
        let mut rest = line;
        let mut out = Vec::new();
        while rest.len() > runlog::MAX_LINE {
            let mut cut = runlog::MAX_LINE;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(rest[..cut].to_owned());
            rest = &rest[cut..];
        }
        out.push(rest.to_owned());
        out
    }

    fn random_line(rng: &mut fastrand::Rng, longest: usize) -> String {
        const CHARS: [char; 6] = ['a', 'Z', ' ', 'é', '漢', '🎉'];
        let len = rng.usize(..=longest);
        let mut line = String::with_capacity(len);
        while line.len() < len {
            line.push(CHARS[rng.usize(..CHARS.len())]);
        }
        line
    }

    /// Random lines (0 to 100 KiB, the last one with or without its newline) fed in random
    /// chunks: the kept log is the input's lines, each in its pieces, numbered without a gap,
    /// up to the cap (the newest blocks only), and nothing panics.
    #[test]
    fn any_chunking_of_any_lines_keeps_the_lines_up_to_the_cap() {
        for seed in 0..40 {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Some cases of many short lines, to pass the cap by lines; others long ones.
            let (count, longest) = match seed % 4 {
                0 => (rng.usize(10_000..14_000), 40),
                1 => (rng.usize(1..8), runlog::MAX_LINE * 2 + 5),
                _ => (rng.usize(1..80), 100 << 10),
            };
            let lines: Vec<String> = (0..count).map(|_| random_line(&mut rng, longest)).collect();
            let ended = rng.bool();
            let mut input = lines.join("\n").into_bytes();
            if ended {
                input.push(b'\n');
            }

            let home = tempfile::tempdir().unwrap();
            let run = "0192f0c2-0000-7000-8000-000000000001";
            let log = Writer::new(home.path(), run, 1);
            let mut pipe = Pipe {
                stream: Stream::Stdout,
                file: None,
                partial: Vec::new(),
            };
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                // Chunks of 1 byte to 70,000: inside characters, at and around the cut.
                let n = match rng.u8(..4) {
                    0 => rng.usize(1..8),
                    1 => runlog::MAX_LINE + rng.usize(..3) - 1,
                    _ => rng.usize(1..70_000),
                }
                .min(rest.len());
                pipe.take(&rest[..n], &log);
                rest = &rest[n..];
            }
            if !pipe.partial.is_empty() {
                pipe.line(&log, Utc::now());
            }
            let written = log.finish();

            let mut expected: Vec<String> = lines.iter().flat_map(|l| pieces(l)).collect();
            // A last line left unended is kept when the job is gone, unless it is empty.
            if !ended && lines.last().is_some_and(String::is_empty) {
                expected.pop();
            }
            assert_eq!(written.lines, expected.len() as u64, "seed {seed}");
            let kept = runlog::read(home.path(), run, 1, 0).unwrap();
            let dropped = kept.dropped as usize;
            assert!(
                kept.lines.len() as u64 >= runlog::BLOCK_LINES.min(expected.len() as u64)
                    || kept.lines.iter().map(|l| l.text.len() as u64).sum::<u64>()
                        >= runlog::BLOCK_BYTES / 2,
                "seed {seed}: kept too little: {} lines",
                kept.lines.len()
            );
            for (i, line) in kept.lines.iter().enumerate() {
                assert_eq!(line.n as usize, dropped + i, "seed {seed}: a gap");
                assert!(line.text.len() <= runlog::MAX_LINE, "seed {seed}");
                assert!(
                    line.text == expected[dropped + i],
                    "seed {seed}: line {} differs ({} bytes kept, {} expected)",
                    dropped + i,
                    line.text.len(),
                    expected[dropped + i].len()
                );
            }
            assert_eq!(dropped + kept.lines.len(), expected.len(), "seed {seed}");
        }
    }

    /// The lengths that crashed lorch (docs/faults.md): an unended line of exactly the cut's
    /// size, and around it.
    #[test]
    fn an_unended_line_at_the_cut_and_around_it_is_kept_whole() {
        for len in [16_383, 16_384, 16_385, 70_000] {
            let home = tempfile::tempdir().unwrap();
            let run = "0192f0c2-0000-7000-8000-000000000002";
            let log = Writer::new(home.path(), run, 1);
            let mut pipe = Pipe {
                stream: Stream::Stderr,
                file: None,
                partial: Vec::new(),
            };
            pipe.take(&vec![b'x'; len], &log);
            pipe.line(&log, Utc::now());
            log.finish();
            let kept = runlog::read(home.path(), run, 1, 0).unwrap();
            let total: usize = kept.lines.iter().map(|l| l.text.len()).sum();
            assert_eq!(total, len);
            assert_eq!(kept.lines.len(), len.div_ceil(runlog::MAX_LINE));
        }
    }
}
