//! Wall time, CPU time and memory of this process, read around the measured part of a run.
//!
//! Every run happens in a fresh child process (see `runner`), so `getrusage(RUSAGE_SELF)` sees
//! exactly one client: its runtime's worker threads, any thread of its own (lapin's I/O loop)
//! and nothing of the other clients. `ru_maxrss` is the peak resident set of that process; the
//! setup before the measured part (a connection, a declare) is small next to it.

use std::time::{Duration, Instant};

/// User + system CPU time of the whole process and its peak resident set so far.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    maxrss_kb: u64,
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

fn usage() -> Usage {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to writable memory the size of a `rusage`; getrusage fills it and
    // only fails for an invalid `who`, which RUSAGE_SELF is not.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    // SAFETY: getrusage returned 0, so every field is written (and zeroed() covered padding).
    let ru = unsafe { ru.assume_init() };
    Usage {
        cpu: timeval(ru.ru_utime) + timeval(ru.ru_stime),
        // Linux reports ru_maxrss in kilobytes.
        maxrss_kb: ru.ru_maxrss as u64,
    }
}

/// The resident set of this process right now, in bytes (from `/proc/self/statm`).
pub fn current_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    resident_pages * u64::try_from(page).expect("positive page size")
}

/// Started just before the measured part; [`stop`](Self::stop) reads the deltas.
#[derive(Debug)]
pub struct Meter {
    wall: Instant,
    usage: Usage,
}

/// What one measured part cost.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Wall-clock time.
    pub wall: Duration,
    /// User + system CPU time of the whole process (all threads).
    pub cpu: Duration,
    /// Peak resident set of the process at the end of the measured part.
    pub peak_rss_kb: u64,
}

impl Meter {
    /// Reads the clocks now.
    pub fn start() -> Meter {
        let usage = usage();
        Meter {
            wall: Instant::now(),
            usage,
        }
    }

    /// Reads them again and returns the differences.
    pub fn stop(self) -> Span {
        let wall = self.wall.elapsed();
        let now = usage();
        Span {
            wall,
            cpu: now.cpu.saturating_sub(self.usage.cpu),
            peak_rss_kb: now.maxrss_kb,
        }
    }
}
