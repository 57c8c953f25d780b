//! How long to wait before trying again, for the runner's retries and BigQuery delivery alike.

use std::time::Duration;

/// Exponential back-off with jitter: `base * 2^(attempt-1)`, capped at 10 minutes, then a random
/// 50-100% of that so retries of many jobs do not arrive together.
pub fn delay(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << (attempt - 1).min(20));
    exponential
        .min(Duration::from_secs(600))
        .mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::delay as backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(2);
        for _ in 0..100 {
            let first = backoff(base, 1);
            assert!(
                first >= Duration::from_secs(1) && first <= base,
                "{first:?}"
            );
            let third = backoff(base, 3);
            assert!(
                third >= Duration::from_secs(4) && third <= Duration::from_secs(8),
                "{third:?}"
            );
            assert!(backoff(base, 40) <= Duration::from_secs(600));
        }
    }
}
