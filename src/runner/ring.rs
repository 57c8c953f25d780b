//! The channel from a worker to its supervisor: a byte ring in memory both processes map, with
//! a pipe to wake the supervisor and a pipe to wake the worker.
//!
//! A message the worker has published is in memory the supervisor owns too, so it survives the
//! worker crashing the next instant, like a pipe write would, but costs a copy instead of a
//! system call and a wake-up: the worker rings the supervisor's pipe only when the supervisor
//! said it is going to sleep, and the supervisor rings the worker's only when the worker waits
//! for room. The supervisor copies messages out before reading them and checks every length, so
//! a job scribbling over the ring can lose its own events but not crash lorch.
//!
//! Layout of the shared file: a header of cache-line-separated counters, then [`CAPACITY`] data
//! bytes. `head` and `tail` count bytes published and consumed since the start, so the ring holds
//! `head - tail` bytes and a position is `count % CAPACITY`. Messages are framed as a `u32`
//! header (the frame's length, and [`LAST`] on a message's last frame) and the bytes; a message
//! longer than [`MAX_FRAME`] spans several frames.

use std::fs::File;
use std::io::{self, ErrorKind, PipeReader, PipeWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::sys;

/// Data bytes in the ring: at about 150 bytes an event, a few thousand events.
const CAPACITY: usize = 1 << 20;
/// The largest frame; longer messages are split.
const MAX_FRAME: usize = CAPACITY / 4;
/// The flag in a frame header that ends a message.
const LAST: u32 = 1 << 31;

const HEAD: usize = 0;
const TAIL: usize = 64;
const READER_ASLEEP: usize = 128;
const WRITER_WAITING: usize = 192;
/// Set by the supervisor once it failed to store events: the worker refuses further events, so
/// the job's `emit` fails instead of reporting success for an event that will be lost.
const REFUSING: usize = 200;
/// Events the worker refused, for the supervisor's count of events not recorded.
const REFUSED: usize = 208;
const DATA: usize = 256;

/// The shared memory, as either side maps it.
struct Shared {
    map: MmapRaw,
}

impl Shared {
    fn map(file: &File) -> io::Result<Shared> {
        let map = MmapOptions::new().len(DATA + CAPACITY).map_raw(file)?;
        Ok(Shared { map })
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and DATA + CAPACITY bytes long, so the offset is
        // in bounds and 8-aligned; atomics are the one sound way to share the word.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    fn flag(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as in `counter`.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// Copies `bytes` into the ring at byte count `at`, wrapping around the end.
    fn write(&self, at: u64, bytes: &[u8]) {
        let start = (at % CAPACITY as u64) as usize;
        let first = bytes.len().min(CAPACITY - start);
        // SAFETY: both ranges lie in the data area; the writer owns [head, tail + CAPACITY),
        // which the reader does not touch.
        unsafe {
            let data = self.map.as_mut_ptr().add(DATA);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, bytes.len() - first);
        }
    }

    /// Appends `len` bytes from byte count `at` to `out`, wrapping around the end.
    fn read(&self, at: u64, len: usize, out: &mut Vec<u8>) {
        let start = (at % CAPACITY as u64) as usize;
        let first = len.min(CAPACITY - start);
        out.reserve(len);
        // SAFETY: both ranges lie in the data area and `out` has room for `len` more bytes.
        // The bytes are copied, never referenced: the other process may be writing nearby.
        unsafe {
            let data = self.map.as_ptr().add(DATA);
            let dst = out.as_mut_ptr().add(out.len());
            std::ptr::copy_nonoverlapping(data.add(start), dst, first);
            std::ptr::copy_nonoverlapping(data, dst.add(first), len - first);
            out.set_len(out.len() + len);
        }
    }
}

/// The worker's end.
pub struct Producer {
    shared: Arc<Shared>,
    head: u64,
    /// Written to wake the supervisor; non-blocking: a full pipe has wake-ups enough.
    wake_reader: File,
    /// Read to wait for room.
    room: File,
}

/// The supervisor's end.
pub struct Consumer {
    shared: Arc<Shared>,
    tail: u64,
    wake: PipeReader,
    /// Written to wake a worker waiting for room; non-blocking, like the worker's.
    wake_writer: PipeWriter,
    /// The frames of a message not complete yet.
    partial: Vec<u8>,
    scratch: Vec<u8>,
}

/// The files a worker needs to open its end, passed to it as inherited descriptors.
pub struct WorkerFiles {
    pub ring: File,
    pub wake_reader: PipeWriter,
    pub room: PipeReader,
}

/// Creates a ring: the supervisor keeps the [`Consumer`] and passes the files to the worker.
pub fn create() -> io::Result<(Consumer, WorkerFiles)> {
    let ring = sys::shared_memory_file(DATA + CAPACITY)?;
    let (wake, wake_reader) = std::io::pipe()?;
    let (room, wake_writer) = std::io::pipe()?;
    sys::set_nonblocking(&wake_writer)?;
    let consumer = Consumer {
        shared: Arc::new(Shared::map(&ring)?),
        tail: 0,
        wake,
        wake_writer,
        partial: Vec::new(),
        scratch: Vec::new(),
    };
    let files = WorkerFiles {
        ring,
        wake_reader,
        room,
    };
    Ok((consumer, files))
}

impl Producer {
    /// The worker's end, from the files [`create`] made.
    pub fn open(ring: File, wake_reader: File, room: File) -> io::Result<Producer> {
        sys::set_nonblocking(&wake_reader)?;
        let shared = Arc::new(Shared::map(&ring)?);
        let head = shared.counter(HEAD).load(Ordering::Acquire);
        Ok(Producer {
            shared,
            head,
            wake_reader,
            room,
        })
    }

    /// Publishes one message. Returns once it is in the shared memory, waiting while the ring
    /// is full; fails only when the supervisor is gone.
    pub fn send(&mut self, message: &[u8]) -> io::Result<()> {
        let mut rest = message;
        loop {
            let (frame, more) = rest.split_at(rest.len().min(MAX_FRAME));
            self.send_frame(frame, more.is_empty())?;
            if more.is_empty() {
                return Ok(());
            }
            rest = more;
        }
    }

    fn send_frame(&mut self, frame: &[u8], last: bool) -> io::Result<()> {
        let len = 4 + frame.len();
        self.wait_for_room(len)?;
        let header = frame.len() as u32 | if last { LAST } else { 0 };
        self.shared.write(self.head, &header.to_le_bytes());
        self.shared.write(self.head + 4, frame);
        self.head += len as u64;
        // SeqCst with the check of READER_ASLEEP: either the reader sees the new head before it
        // sleeps, or this sees that it sleeps and wakes it.
        self.shared.counter(HEAD).store(self.head, Ordering::SeqCst);
        if self.shared.flag(READER_ASLEEP).swap(0, Ordering::SeqCst) == 1 {
            ring_bell(&mut self.wake_reader)?;
        }
        Ok(())
    }

    /// Whether the supervisor asked to refuse events (it cannot store them); counts this one
    /// as refused when it did.
    pub fn refuse_event(&self) -> bool {
        let refusing = self.shared.flag(REFUSING).load(Ordering::Acquire) == 1;
        if refusing {
            self.shared.counter(REFUSED).fetch_add(1, Ordering::AcqRel);
        }
        refusing
    }

    fn free(&self, ordering: Ordering) -> usize {
        let tail = self.shared.counter(TAIL).load(ordering);
        CAPACITY.saturating_sub(self.head.wrapping_sub(tail) as usize)
    }

    fn wait_for_room(&mut self, len: usize) -> io::Result<()> {
        while self.free(Ordering::Acquire) < len {
            let waiting = self.shared.flag(WRITER_WAITING);
            waiting.store(1, Ordering::SeqCst);
            if self.free(Ordering::SeqCst) >= len {
                waiting.store(0, Ordering::Relaxed);
                break;
            }
            match wait_for_bell(&mut self.room) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::BrokenPipe,
                        "the supervisor is gone",
                    ));
                }
                Ok(_) => {}
                // The job closed descriptors it did not open: the supervisor reads on without
                // being woken (see `Consumer::poll`), so look for room now and then.
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Consumer {
    /// Waits for messages and passes each complete one to `each`. Returns `false` once the
    /// channel is closed (every process holding the worker's end is gone), or `stop` turned
    /// true, and everything published before has been passed on.
    ///
    /// A ring whose counters or frames make no sense (a job wrote over it) is an
    /// [`ErrorKind::InvalidData`] error; the messages before the damage were passed on.
    pub fn recv(&mut self, mut each: impl FnMut(&[u8]), stop: &AtomicBool) -> io::Result<bool> {
        loop {
            if self.take(&mut each)? {
                return Ok(true);
            }
            let asleep = self.shared.flag(READER_ASLEEP);
            asleep.store(1, Ordering::SeqCst);
            if self.shared.counter(HEAD).load(Ordering::SeqCst) != self.tail {
                asleep.store(0, Ordering::Relaxed);
                continue;
            }
            // Woken by the worker, or every 100 ms to look at `stop`.
            while !sys::wait_readable(&self.wake, 100)? {
                if stop.load(Ordering::SeqCst) {
                    asleep.store(0, Ordering::Relaxed);
                    self.take(&mut each)?;
                    return Ok(false);
                }
            }
            let rung = wait_for_bell(&mut self.wake)?;
            asleep.store(0, Ordering::Relaxed);
            if rung == 0 {
                // Closed: whatever was published before is still there.
                self.take(&mut each)?;
                return Ok(false);
            }
        }
    }

    /// Passes on whatever complete messages are published now, without waiting; for reading
    /// on after the wake-up pipe closed while the worker still runs (a job that closed every
    /// descriptor it inherited). Returns whether there was anything.
    pub fn poll(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<bool> {
        self.take(&mut each)
    }

    /// A message whose frames were only partly published when the channel closed.
    pub fn torn(&self) -> bool {
        !self.partial.is_empty()
    }

    /// The supervisor's controls over the worker's end, usable from another thread.
    pub fn control(&self) -> Control {
        Control(Arc::clone(&self.shared))
    }

    /// Copies out what is published, frees its room, and passes on the complete messages.
    /// Returns whether there was anything.
    fn take(&mut self, each: &mut impl FnMut(&[u8])) -> io::Result<bool> {
        let head = self.shared.counter(HEAD).load(Ordering::Acquire);
        let available = head.wrapping_sub(self.tail);
        if available == 0 {
            return Ok(false);
        }
        if available > CAPACITY as u64 {
            return Err(corrupt("the ring holds more than it can"));
        }
        self.scratch.clear();
        self.shared
            .read(self.tail, available as usize, &mut self.scratch);
        self.tail = head;
        self.shared.counter(TAIL).store(self.tail, Ordering::SeqCst);
        if self.shared.flag(WRITER_WAITING).swap(0, Ordering::SeqCst) == 1 {
            // A worker that is gone needs no wake-up; its end of the channel closes.
            let _ = ring_bell(&mut self.wake_writer);
        }

        let mut rest = self.scratch.as_slice();
        while !rest.is_empty() {
            let (header, after) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("a frame header is cut short"))?;
            let header = u32::from_le_bytes(*header);
            let len = (header & !LAST) as usize;
            let frame = after
                .get(..len)
                .ok_or_else(|| corrupt("a frame is longer than what was published"))?;
            rest = &after[len..];
            if header & LAST == 0 {
                self.partial.extend_from_slice(frame);
            } else if self.partial.is_empty() {
                each(frame);
            } else {
                self.partial.extend_from_slice(frame);
                each(&self.partial);
                self.partial.clear();
            }
        }
        Ok(true)
    }
}

/// What the supervisor tells the worker, and reads back, beside the messages.
pub struct Control(Arc<Shared>);

impl Control {
    /// From now on the worker refuses events (lorch cannot store them).
    pub fn refuse_events(&self) {
        self.0.flag(REFUSING).store(1, Ordering::Release);
    }

    /// How many events the worker refused.
    pub fn refused(&self) -> u64 {
        self.0.counter(REFUSED).load(Ordering::Acquire)
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("the job's process damaged the event channel: {what}"),
    )
}

/// Writes a wake-up byte; a full pipe holds wake-ups enough. A descriptor the job closed is no
/// failure either: the message is published, and the supervisor polls once its pipe closed.
fn ring_bell(pipe: &mut impl Write) -> io::Result<()> {
    match pipe.write(&[1]) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        other => other.map(drop),
    }
}

/// Blocks until a wake-up byte arrives; 0 when the other side has closed the pipe.
fn wait_for_bell(pipe: &mut impl Read) -> io::Result<usize> {
    let mut bells = [0u8; 64];
    loop {
        match pipe.read(&mut bells) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Producer, Consumer) {
        let (consumer, files) = create().unwrap();
        let producer = Producer::open(
            files.ring,
            File::from(std::os::fd::OwnedFd::from(files.wake_reader)),
            File::from(std::os::fd::OwnedFd::from(files.room)),
        )
        .unwrap();
        (producer, consumer)
    }

    fn received(consumer: &mut Consumer) -> (Vec<Vec<u8>>, bool) {
        let mut messages = Vec::new();
        let open = consumer
            .recv(|m| messages.push(m.to_vec()), &AtomicBool::new(false))
            .unwrap();
        (messages, open)
    }

    #[test]
    fn messages_arrive_whole_and_in_order_across_the_wrap_and_after_close() {
        let (mut producer, mut consumer) = pair();
        let big = (0..CAPACITY + 12345).map(|i| i as u8).collect::<Vec<_>>();
        let writer = std::thread::spawn(move || {
            for i in 0..20_000u32 {
                producer
                    .send(&i.to_le_bytes().repeat(i as usize % 40))
                    .unwrap();
            }
            producer.send(&big).unwrap();
            producer.send(b"").unwrap();
            // Dropped: the channel closes, and what was published is still read.
        });
        let mut all = Vec::new();
        loop {
            let (messages, open) = received(&mut consumer);
            all.extend(messages);
            if !open {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(all.len(), 20_002);
        for (i, message) in all[..20_000].iter().enumerate() {
            assert_eq!(
                *message,
                (i as u32).to_le_bytes().repeat(i % 40),
                "message {i}"
            );
        }
        assert_eq!(all[20_000].len(), CAPACITY + 12345);
        assert!(all[20_000].iter().enumerate().all(|(i, b)| *b == i as u8));
        assert!(all[20_001].is_empty());
        assert!(!consumer.torn());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_worker_cannot_resize_the_ring() {
        let (_consumer, files) = create().unwrap();
        assert!(files.ring.set_len(16).is_err());
        assert!(files.ring.set_len(4 * CAPACITY as u64).is_err());
    }

    #[test]
    fn a_damaged_ring_is_an_error_not_a_crash() {
        let (mut producer, mut consumer) = pair();
        producer.send(b"fine").unwrap();
        // A frame header claiming more than was published.
        producer.shared.write(producer.head, &1000u32.to_le_bytes());
        producer.head += 8;
        producer
            .shared
            .counter(HEAD)
            .store(producer.head, Ordering::SeqCst);
        let mut messages = Vec::new();
        let error = consumer
            .recv(|m| messages.push(m.to_vec()), &AtomicBool::new(false))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert_eq!(messages, [b"fine".to_vec()]);

        producer
            .shared
            .counter(HEAD)
            .store(u64::MAX, Ordering::SeqCst);
        let error = consumer.recv(|_| {}, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
    }
}
