//! How a client waits before trying the server again after a transient failure: 1 s,
//! doubling up to 60 s, each wait moved by up to ±20 % so that a fleet that lost its
//! server does not come back in step. The agent (`watchpost-fleet`) and the load
//! simulator (`watchpost-loadgen`) both wait so.

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MOST: Duration = Duration::from_secs(60);

/// The wait after `d`: doubled, at most [`MOST`].
pub fn next(d: Duration) -> Duration {
    (d * 2).min(MOST)
}

/// `d` moved by up to ±20 % (from the clock's nanoseconds: no random source needed).
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.8 + f64::from(nanos % 1000) / 2500.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_a_minute_and_move_by_a_fifth_at_most() {
        let mut d = FIRST;
        let mut seen = vec![d];
        while d < MOST {
            d = next(d);
            seen.push(d);
        }
        assert_eq!(seen.last(), Some(&MOST));
        assert_eq!(seen.len(), 7, "{seen:?}");
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}
