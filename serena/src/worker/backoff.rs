//! Restart delays: exponential backoff with jitter, bounded.

use std::time::Duration;

/// How long the supervisor waits before restarting the tree: `initial`, doubled (times
/// `multiplier`) after each failure up to `max`, each delay spread by ±`jitter` so a fleet of
/// workers does not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay (100 ms).
    pub initial: Duration,
    /// Longest delay (30 s).
    pub max: Duration,
    /// Growth per failure (2.0).
    pub multiplier: f64,
    /// Spread as a fraction of the delay, 0.0 to 1.0 (0.2).
    pub jitter: f64,
    /// Give up after this many restarts in a row; `None` never gives up.
    pub max_restarts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_restarts: None,
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0 for the first), with `unit` in [0, 1)
    /// choosing the point in the jitter band.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base =
            self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * factor).min(self.max.as_secs_f64()))
    }
}

/// A random number in [0, 1) for jitter (`fastrand`).
pub(crate) fn jitter_unit() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            jitter: 0.0,
            ..Default::default()
        };
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(20, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_its_band_and_under_the_cap() {
        let b = Backoff::default();
        let lo = b.delay(2, 0.0);
        let hi = b.delay(2, 0.999);
        assert!(
            lo >= Duration::from_millis(320) && lo <= Duration::from_millis(400),
            "{lo:?}"
        );
        assert!(
            hi >= Duration::from_millis(400) && hi <= Duration::from_millis(480),
            "{hi:?}"
        );
        assert!(b.delay(30, 0.999) <= b.max);
        for _ in 0..100 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
