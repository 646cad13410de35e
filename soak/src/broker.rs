//! The broker's operator tool, `rabbitmqctl`, and the guard that puts the broker back as the
//! soak found it.
//!
//! ```text
//! rabbitmqctl -q -s list_connections pid client_properties
//!   <rabbit@host.1.2.0>   [{"product","serena"},...,{"connection_name","<name>"},...]
//! rabbitmqctl -q close_connection '<rabbit@host.1.2.0>' '<reason>'
//! ```
//!
//! Every call runs in its own process group, so a Ctrl-C in the terminal reaches the soak
//! (which restores the broker) but never kills a `start_app` half-way.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

/// `rabbitmqctl`, or the program `SERENA_SOAK_RABBITMQCTL` names.
#[derive(Debug, Clone)]
pub(crate) struct Ctl {
    program: String,
}

impl Ctl {
    pub(crate) fn new() -> Self {
        Ctl {
            program: std::env::var("SERENA_SOAK_RABBITMQCTL")
                .unwrap_or_else(|_| "rabbitmqctl".to_owned()),
        }
    }

    /// Runs `rabbitmqctl args` and returns its standard output; a non-zero exit is an error
    /// with its standard error. Blocking.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.program)
            .args(args)
            .process_group(0)
            .output()
            .map_err(|e| format!("{} {args:?}: {e}", self.program))?;
        if !out.status.success() {
            return Err(format!(
                "{} {args:?} failed ({}): {}",
                self.program,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`run`](Self::run) on tokio's blocking pool.
    pub(crate) async fn call(&self, args: &[&str]) -> Result<String, String> {
        let ctl = self.clone();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl.run(&args)
        })
        .await
    }

    /// The pids of the connections whose client named itself `name`.
    pub(crate) async fn connection_pids(&self, name: &str) -> Result<Vec<String>, String> {
        let listing = self
            .call(&["-q", "-s", "list_connections", "pid", "client_properties"])
            .await?;
        let needle = format!("{{\"connection_name\",\"{name}\"}}");
        Ok(listing
            .lines()
            .filter(|line| line.contains(&needle))
            .filter_map(|line| line.split('\t').next())
            .map(|pid| pid.trim().to_owned())
            .collect())
    }

    /// The memory high watermark as the broker reports it: `0.4`, or `{absolute,N}`.
    /// Blocking.
    pub(crate) fn watermark(&self) -> Result<String, String> {
        Ok(self
            .run(&[
                "-q",
                "eval",
                "vm_memory_monitor:get_vm_memory_high_watermark().",
            ])?
            .trim()
            .to_owned())
    }

    /// Sets the watermark to a value as [`watermark`](Self::watermark) reports it. Blocking.
    fn set_watermark(&self, value: &str) -> Result<(), String> {
        match value
            .strip_prefix("{absolute,")
            .and_then(|s| s.strip_suffix('}'))
        {
            Some(bytes) => self.run(&["-q", "set_vm_memory_high_watermark", "absolute", bytes])?,
            None => self.run(&["-q", "set_vm_memory_high_watermark", value])?,
        };
        Ok(())
    }
}

/// Runs blocking `f` on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task: {e}"))?
}

/// True for a watermark that raises the alarm by itself (a relative or absolute 0).
pub(crate) fn watermark_is_zero(value: &str) -> bool {
    let number = value
        .strip_prefix("{absolute,")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(value);
    number.parse::<f64>().is_ok_and(|v| v == 0.0)
}

/// What a fault has changed on the broker. A flag is set before the change is made and
/// cleared only once the change is undone, so every exit path knows what to put back.
#[derive(Debug, Default)]
struct Disturbed {
    app_stopped: bool,
    alarm_raised: bool,
}

/// Disturbs the broker for the faults and puts it back: on the fault's own schedule, and on
/// every way out of the soak (normal end, error, panic, signal).
#[derive(Debug)]
pub(crate) struct BrokerGuard {
    pub(crate) ctl: Ctl,
    /// The watermark to restore, read before the first alarm.
    watermark: String,
    disturbed: Mutex<Disturbed>,
    /// Held while a disturbing command or a restore runs, so a restore never overlaps a
    /// `stop_app` still under way (it waits for it, then starts the app).
    busy: Mutex<()>,
}

impl BrokerGuard {
    pub(crate) fn new(ctl: Ctl, watermark: String) -> Self {
        BrokerGuard {
            ctl,
            watermark,
            disturbed: Mutex::default(),
            busy: Mutex::default(),
        }
    }

    pub(crate) fn watermark(&self) -> &str {
        &self.watermark
    }

    fn disturbed(&self) -> MutexGuard<'_, Disturbed> {
        self.disturbed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rabbitmqctl stop_app`. Blocking.
    pub(crate) fn stop_app(&self) -> Result<(), String> {
        let _busy = self.busy();
        self.disturbed().app_stopped = true;
        self.ctl.run(&["-q", "stop_app"]).map(drop)
    }

    /// Sets the watermark to 0: the broker blocks every publishing connection. Blocking.
    pub(crate) fn raise_alarm(&self) -> Result<(), String> {
        let _busy = self.busy();
        self.disturbed().alarm_raised = true;
        self.ctl.set_watermark("0")
    }

    /// Undoes whatever is disturbed: starts the app (and waits for it to be up), puts the
    /// watermark back. Blocking.
    pub(crate) fn restore(&self) -> Result<(), String> {
        let _busy = self.busy();
        let (app_stopped, alarm_raised) = {
            let d = self.disturbed();
            (d.app_stopped, d.alarm_raised)
        };
        if app_stopped {
            self.ctl.run(&["-q", "start_app"])?;
            self.ctl.run(&["-q", "await_startup"])?;
            self.disturbed().app_stopped = false;
        }
        if alarm_raised {
            self.ctl.set_watermark(&self.watermark)?;
            self.disturbed().alarm_raised = false;
        }
        Ok(())
    }

    fn is_disturbed(&self) -> bool {
        let d = self.disturbed();
        d.app_stopped || d.alarm_raised
    }
}

/// Restores the broker when it is dropped with something still disturbed: when `main`
/// unwinds from a panic, or returns early.
pub(crate) struct RestoreOnDrop(pub(crate) Arc<BrokerGuard>);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        if self.0.is_disturbed() {
            eprintln!("soak: restoring the broker on the way out");
            if let Err(e) = self.0.restore() {
                eprintln!("soak: COULD NOT RESTORE THE BROKER: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::watermark_is_zero;

    #[test]
    fn a_zero_watermark_is_recognised_in_both_forms() {
        assert!(watermark_is_zero("0"));
        assert!(watermark_is_zero("0.0"));
        assert!(watermark_is_zero("{absolute,0}"));
        assert!(!watermark_is_zero("0.4"));
        assert!(!watermark_is_zero("{absolute,1073741824}"));
    }
}
