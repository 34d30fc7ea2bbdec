//! Progress on stderr: a bar redrawn in place on a terminal, otherwise a
//! line at every tenth of the work. With `--progress-fd N`, also
//! machine-readable lines `STAGE DONE TOTAL` on that descriptor (the C
//! API reads them through a pipe): one when a stage starts, at most one
//! per [`MACHINE_EVERY`] while it runs, and `STAGE TOTAL TOTAL` when it ends.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The least time between two machine lines of one stage.
const MACHINE_EVERY: Duration = Duration::from_millis(50);

static MACHINE: OnceLock<Mutex<File>> = OnceLock::new();

/// Sends the machine-readable lines to descriptor `fd` (checked open).
pub fn machine_fd(fd: i32) -> Result<()> {
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::Usage(format!(
            "--progress-fd {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: an open descriptor the caller handed us for this use only;
    // owned from now on.
    let file = unsafe { File::from_raw_fd(fd) };
    let _ = MACHINE.set(Mutex::new(file));
    Ok(())
}

/// One machine line; errors (a reader that went away) are ignored.
fn machine_line(stage: &str, done: usize, total: usize) {
    if let Some(m) = MACHINE.get() {
        let mut f = m.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(format!("{stage} {done} {total}\n").as_bytes());
    }
}

pub struct Progress {
    label: &'static str,
    unit: &'static str,
    total: usize,
    start: Instant,
    last: Option<Instant>,
    tenth: usize,
    tty: bool,
    quiet: bool,
    /// The total as given (the bar's is at least 1).
    units: usize,
    /// The last machine line: when, and how far.
    machine_at: Instant,
    machine_done: usize,
}

impl Progress {
    pub fn new(label: &'static str, unit: &'static str, total: usize, quiet: bool) -> Progress {
        if total > 0 {
            machine_line(label, 0, total);
        }
        Progress {
            label,
            unit,
            total: total.max(1),
            start: Instant::now(),
            last: None,
            tenth: 0,
            tty: std::io::stderr().is_terminal(),
            quiet,
            units: total,
            machine_at: Instant::now(),
            machine_done: 0,
        }
    }

    /// Reports `done` units of the total.
    pub fn update(&mut self, done: usize) {
        let now = Instant::now();
        let done_units = done.min(self.units);
        if done_units > self.machine_done && now - self.machine_at >= MACHINE_EVERY {
            machine_line(self.label, done_units, self.units);
            self.machine_at = now;
            self.machine_done = done_units;
        }
        if self.quiet {
            return;
        }
        let tenth = (done.min(self.total) * 10) / self.total;
        let due = if self.tty {
            self.last
                .map_or(true, |t| now - t >= Duration::from_millis(200))
                || done >= self.total
        } else {
            tenth > self.tenth
        };
        if !due {
            return;
        }
        self.last = Some(now);
        self.tenth = tenth;
        let secs = (now - self.start).as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let filled = done.min(self.total) * 30 / self.total;
        let bar: String = (0..30)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let line = format!(
            "{}: [{bar}] {done}/{} {} ({rate:.1} {}/s, {secs:.1} s)",
            self.label, self.total, self.unit, self.unit
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }

    /// Ends the bar's line; the elapsed seconds.
    pub fn finish(&mut self) -> f64 {
        if self.units > 0 && self.machine_done < self.units {
            machine_line(self.label, self.units, self.units);
            self.machine_done = self.units;
        }
        if self.tty && !self.quiet && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
        self.start.elapsed().as_secs_f64()
    }
}
