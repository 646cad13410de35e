//! Wall time, CPU time and memory of this process, read around the measured part of a run.
//!
//! Every run happens in a fresh child process (see `runner`), so `getrusage(RUSAGE_SELF)` sees
//! exactly one client: its runtime's worker threads, any thread of its own (lapin's I/O loop)
//! and nothing of the other clients. `ru_maxrss` is the peak resident set of that process; the
//! setup before the measured part (a connection, a declare) is small next to it.
//!
//! The broker's CPU is read around the same part: user + system time of the RabbitMQ process
//! (the `beam.smp` started with `-s rabbit boot`) from `/proc/<pid>/stat`, in clock ticks
//! (`sysconf(_SC_CLK_TCK)`, 100 per second on Linux, so 10 ms steps). It is the whole broker:
//! anything else using it at the same time is counted too. When the process cannot be found or
//! read, the broker's CPU is absent, never guessed.

use std::sync::OnceLock;
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

/// CPU cores of this machine (`available_parallelism`), shared by the client and the broker.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The broker's process id, looked up once per process: the `beam.smp` whose command line
/// carries `-s rabbit boot` (`rabbitmqctl` runs a `beam.smp` too, without it).
pub fn broker_pid() -> Option<u32> {
    static PID: OnceLock<Option<u32>> = OnceLock::new();
    *PID.get_or_init(find_broker)
}

fn find_broker() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_beam = args.first()?.ends_with(b"beam.smp");
            let boots_rabbit = args
                .windows(3)
                .any(|w| w == [&b"-s"[..], &b"rabbit"[..], &b"boot"[..]]);
            (is_beam && boots_rabbit).then_some(pid)
        })
}

/// User + system CPU time `pid` has used, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, `ticks` per second.
fn parse_stat_cpu(stat: &str, ticks: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let micros = (utime + stime).checked_mul(1_000_000)? / ticks;
    Some(Duration::from_micros(micros))
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
    })
}

/// The broker's CPU time so far, if its process is known and readable.
fn broker_cpu() -> Option<Duration> {
    process_cpu(broker_pid()?)
}

/// Started just before the measured part; [`stop`](Self::stop) reads the deltas.
#[derive(Debug)]
pub struct Meter {
    wall: Instant,
    usage: Usage,
    broker: Option<Duration>,
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
    /// User + system CPU time of the broker process; `None` if it could not be read.
    pub broker_cpu: Option<Duration>,
}

impl Meter {
    /// Reads the clocks now.
    pub fn start() -> Meter {
        let broker = broker_cpu();
        let usage = usage();
        Meter {
            wall: Instant::now(),
            usage,
            broker,
        }
    }

    /// Wall time since [`start`](Self::start).
    pub fn elapsed(&self) -> Duration {
        self.wall.elapsed()
    }

    /// Reads them again and returns the differences.
    pub fn stop(self) -> Span {
        let wall = self.wall.elapsed();
        let now = usage();
        let broker_now = broker_cpu();
        Span {
            wall,
            cpu: now.cpu.saturating_sub(self.usage.cpu),
            peak_rss_kb: now.maxrss_kb,
            broker_cpu: self
                .broker
                .zip(broker_now)
                .and_then(|(before, after)| after.checked_sub(before)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime() {
        // A command name with a space and a parenthesis, utime 1520 and stime 1096 ticks.
        let stat = "2983 (beam (x).smp) S 1 2982 2982 0 -1 4194304 570113 0 1 0 1520 1096 0 0 20 0";
        assert_eq!(
            parse_stat_cpu(stat, 100),
            Some(Duration::from_millis(26_160))
        );
        assert_eq!(parse_stat_cpu("2983 (beam.smp) S 1", 100), None);
    }

    #[test]
    fn own_process_cpu_is_readable() {
        assert!(process_cpu(std::process::id()).is_some());
    }
}
