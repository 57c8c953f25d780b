//! SIGINT and SIGTERM, turned into flags the runner polls.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which termination signal lorch received, if any. Once installed, SIGINT and SIGTERM no longer
/// kill lorch: they cancel the run, which still gets its terminal event.
#[derive(Clone, Default)]
pub struct Signals {
    last: Arc<AtomicUsize>,
    cancelled: Arc<AtomicBool>,
}

impl Signals {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn install() -> io::Result<Signals> {
        let signals = Signals::default();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register_usize(signal, Arc::clone(&signals.last), signal as usize)?;
            signal_hook::flag::register(signal, Arc::clone(&signals.cancelled))?;
        }
        Ok(signals)
    }

    /// The last signal received.
    pub fn received(&self) -> Option<i32> {
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal as i32),
        }
    }

    /// The flag a job's cancellation check reads.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancelled
    }

    /// Sleeps for `duration` unless a signal arrives first; returns false if one did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        while self.received().is_none() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }
}
