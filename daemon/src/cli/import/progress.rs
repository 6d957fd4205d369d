//! Progress reporting for the CLI's long jobs (import, materialize, transform, stream), on
//! stderr only (stdout carries the summary).
//!
//! When stderr is a terminal an indicatif bar shows files done, files/s and the ETA;
//! otherwise (logs, CI, pipes) one plain line is written at most every two seconds, so
//! a long import stays visible without flooding the log. Counting is thread-safe: the
//! file readers running on the rayon pool report directly.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct Progress {
    label: &'static str,
    /// What is counted ("files", "rows", "links").
    unit: &'static str,
    total: u64,
    done: AtomicU64,
    start: Instant,
    sink: Sink,
}

enum Sink {
    Bar(ProgressBar),
    /// The time of the last line written.
    Log(Mutex<Instant>),
}

impl Progress {
    /// A progress report for `total` files; `label` names the phase ("checking",
    /// "importing").
    pub(crate) fn new(label: &'static str, total: u64) -> Progress {
        Progress::counting(label, "files", total)
    }

    /// A progress report for `total` things named `unit`.
    pub(crate) fn counting(label: &'static str, unit: &'static str, total: u64) -> Progress {
        let start = Instant::now();
        let sink = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(&format!(
                "{{prefix:>9}} [{{bar:32}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})"
            ))
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label);
            Sink::Bar(bar)
        } else {
            Sink::Log(Mutex::new(start))
        };
        Progress {
            label,
            unit,
            total,
            done: AtomicU64::new(0),
            start,
            sink,
        }
    }

    /// Records `n` more files done.
    pub(crate) fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        match &self.sink {
            Sink::Bar(bar) => bar.inc(n),
            Sink::Log(last) => {
                // A reader that finds the lock taken skips its line: another is writing one.
                let Ok(mut last) = last.try_lock() else {
                    return;
                };
                let now = Instant::now();
                if now.duration_since(*last) < LOG_EVERY {
                    return;
                }
                *last = now;
                let line = log_line(
                    self.label,
                    self.unit,
                    done,
                    self.total,
                    now.duration_since(self.start),
                );
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    /// Removes the bar (if any); the caller prints its own summary.
    pub(crate) fn finish(&self) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error return must not leave a half-drawn bar above the error message.
        self.finish();
    }
}

fn log_line(label: &str, unit: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 && total >= done {
        format!("{:.0} s", (total - done) as f64 / rate)
    } else {
        "unknown".to_owned()
    };
    format!("{label}: {done}/{total} {unit} ({rate:.1} {unit}/s, ETA {eta})")
}

/// Runs `work` (a resumable core job steered by `ctl`) on its own task: its progress
/// as counted by `ctl` is shown as `label` in rows, and the first Ctrl-C cancels it,
/// so it stops after the batch in flight and the same command resumes it.
pub(crate) async fn run_cancellable<T: Send + 'static>(
    ctl: std::sync::Arc<deeplake_core::runtime::Control>,
    label: &'static str,
    work: impl std::future::Future<Output = deeplake_core::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let work = tokio::spawn(work);
    tokio::pin!(work);
    let mut progress: Option<Progress> = None;
    let mut shown = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            r = &mut work => break r.map_err(|e| anyhow::anyhow!("the {label} task failed: {e}"))??,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                ctl.cancel();
                let _ = writeln!(std::io::stderr(), "stopping after the batch in flight (run the same command again to resume)");
            }
            _ = tick.tick() => {
                let (done, total) = ctl.progress();
                if total == 0 {
                    continue;
                }
                let p = progress.get_or_insert_with(|| Progress::counting(label, "rows", total));
                if done > shown {
                    p.inc(done - shown);
                    shown = done;
                }
            }
        }
    };
    if let Some(p) = progress {
        p.finish();
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_rate_and_eta() {
        assert_eq!(
            log_line("importing", "files", 50, 150, Duration::from_secs(10)),
            "importing: 50/150 files (5.0 files/s, ETA 20 s)"
        );
        assert_eq!(
            log_line("checking", "files", 0, 10, Duration::ZERO),
            "checking: 0/10 files (0.0 files/s, ETA unknown)"
        );
    }
}
