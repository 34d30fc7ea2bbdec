//! Progress on stderr: a bar redrawn in place on a terminal, otherwise a
//! line at every tenth of the work.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: &'static str,
    unit: &'static str,
    total: usize,
    start: Instant,
    last: Option<Instant>,
    tenth: usize,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(label: &'static str, unit: &'static str, total: usize, quiet: bool) -> Progress {
        Progress {
            label,
            unit,
            total: total.max(1),
            start: Instant::now(),
            last: None,
            tenth: 0,
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Reports `done` units of the total.
    pub fn update(&mut self, done: usize) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
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
        if self.tty && !self.quiet && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
        self.start.elapsed().as_secs_f64()
    }
}
