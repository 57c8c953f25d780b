//! SIGINT, SIGTERM, SIGHUP and SIGQUIT, turned into flags the runner polls.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which termination signal lorch received, if any. Once installed, these signals no longer
/// kill lorch: they cancel the run, which still gets its terminal event. SIGHUP (the terminal
/// closed) and SIGQUIT (Ctrl-\\) are treated like SIGTERM: a run must not end unrecorded
/// because its terminal went away.
#[derive(Clone, Default)]
pub struct Signals {
    last: Arc<AtomicUsize>,
    cancelled: Arc<AtomicBool>,
}

impl Signals {
    /// The signals that cancel a run.
    pub const CAUGHT: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

    /// Catches [`CAUGHT`](Self::CAUGHT) from now on.
    pub fn install() -> io::Result<Signals> {
        let signals = Signals::default();
        for signal in Self::CAUGHT {
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

    /// The same flag, to share with what must give up once lorch is asked to stop.
    pub fn shared_cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    /// Sleeps for `duration` unless a signal arrives first; returns false if one did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = crate::timearg::after(duration);
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
