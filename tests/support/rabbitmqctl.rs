//! The broker's operator tool, `rabbitmqctl`, driven from tests: find a connection by the
//! name its client gave it (`connection_name` in the client properties) and close it the way
//! an operator would, which makes the broker send `connection.close` 320 (connection-forced).
//!
//! Tests run in parallel with other tests against the same broker, so a connection is only
//! ever found by a name unique to the test ([`unique_name`](crate::unique_name)); nothing else
//! is listed for closing. `rabbitmqctl` starts an Erlang VM per call, so each call takes a
//! second or two: the async wrappers run it on tokio's blocking pool.
//!
//! ```text
//! rabbitmqctl -s list_connections pid client_properties
//!   <rabbit@host.1.2.0>   [{"product","serena"},...,{"connection_name","<name>"},...]
//!                  |
//! rabbitmqctl close_connection '<rabbit@host.1.2.0>' '<reason>'
//! ```

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `rabbitmqctl` executable: `SERENA_TEST_RABBITMQCTL`, or `rabbitmqctl` on the `PATH`.
pub fn program() -> String {
    std::env::var("SERENA_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".to_owned())
}

/// Runs `rabbitmqctl` with `args` and returns its standard output; a non-zero exit is an
/// error carrying its standard error.
pub fn run(args: &[&str]) -> io::Result<String> {
    let out = Command::new(program()).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "rabbitmqctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Erlang pid of the connection whose client named itself `name`, if the broker lists
/// one. More than one connection with that name is an error: the name is not unique.
pub fn connection_pid(name: &str) -> io::Result<Option<String>> {
    let listing = run(&["-q", "-s", "list_connections", "pid", "client_properties"])?;
    Ok(find_pid(&listing, name)?.map(str::to_owned))
}

/// Picks the pid out of `list_connections pid client_properties` output (one connection per
/// line, tab-separated) for the connection named `name`.
fn find_pid<'a>(listing: &'a str, name: &str) -> io::Result<Option<&'a str>> {
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut found = listing
        .lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.split('\t').next())
        .map(str::trim);
    let first = found.next();
    if found.next().is_some() {
        return Err(io::Error::other(format!(
            "more than one connection is named {name:?}"
        )));
    }
    Ok(first)
}

/// Closes the connection named `name` with `reason`, as an operator would. A connection that
/// is not listed yet is looked for again until `wait` has passed.
pub fn close_connection(name: &str, reason: &str, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(pid) = connection_pid(name)? {
            run(&["-q", "close_connection", &pid, reason])?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no connection named {name:?} within {wait:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`close_connection`] on tokio's blocking pool, for async tests.
pub async fn close_connection_async(name: &str, reason: &str, wait: Duration) -> io::Result<()> {
    let (name, reason) = (name.to_owned(), reason.to_owned());
    tokio::task::spawn_blocking(move || close_connection(&name, &reason, wait))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::find_pid;

    #[test]
    fn finds_only_the_named_connection() {
        let listing = "<rabbit@h.1.10.0>\t[{\"product\",\"x\"},{\"connection_name\",\"a-1\"}]\n\
                       <rabbit@h.1.11.0>\t[{\"connection_name\",\"a-10\"}]\n\
                       <rabbit@h.1.12.0>\t[{\"product\",\"y\"}]\n";
        assert_eq!(find_pid(listing, "a-1").unwrap(), Some("<rabbit@h.1.10.0>"));
        assert_eq!(
            find_pid(listing, "a-10").unwrap(),
            Some("<rabbit@h.1.11.0>")
        );
        assert_eq!(find_pid(listing, "a-2").unwrap(), None);
        let twice = format!("{listing}<rabbit@h.1.13.0>\t[{{\"connection_name\",\"a-1\"}}]\n");
        assert!(find_pid(&twice, "a-1").is_err());
    }
}

/// The broker's memory alarm, raised for a test: `set_vm_memory_high_watermark 0` makes
/// RabbitMQ block every publishing connection (`connection.blocked`). Dropping the guard puts
/// the watermark back as it was, also when the test fails.
#[derive(Debug)]
pub struct MemoryAlarm {
    previous: String,
}

impl MemoryAlarm {
    /// Reads the current watermark and sets it to 0.
    pub fn raise() -> io::Result<MemoryAlarm> {
        let previous = run(&[
            "-q",
            "eval",
            "vm_memory_monitor:get_vm_memory_high_watermark().",
        ])?
        .trim()
        .to_owned();
        let alarm = MemoryAlarm { previous };
        run(&["-q", "set_vm_memory_high_watermark", "0"])?;
        Ok(alarm)
    }

    /// Puts the watermark back now.
    pub fn clear(&self) -> io::Result<()> {
        // `{absolute,N}` for an absolute limit, a fraction otherwise.
        match self
            .previous
            .strip_prefix("{absolute,")
            .and_then(|s| s.strip_suffix('}'))
        {
            Some(bytes) => run(&["-q", "set_vm_memory_high_watermark", "absolute", bytes])?,
            None => run(&["-q", "set_vm_memory_high_watermark", &self.previous])?,
        };
        Ok(())
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!(
                "could not restore the memory watermark {}: {e}",
                self.previous
            );
        }
    }
}
