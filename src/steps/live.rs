//! Live output: the lines a running shell step writes, as it writes them,
//! for `runs logs --follow`. Each run this node is running has a log of its
//! attempt's lines (stdout and stderr, each line cut at [`MAX_LINE`] bytes,
//! secrets redacted), the last [`MAX_LINES`] of them kept, so a follower
//! who comes in late sees what came before; the stored output (capped, and
//! redacted alike) is what stays once the attempt ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::api::{LogLine, LogStream};

/// Lines kept per running run.
pub const MAX_LINES: usize = 1000;

/// Bytes kept of one line; the rest is cut, said so at its end.
pub const MAX_LINE: usize = 4096;

/// The logs of the runs this node is running, by run id.
#[derive(Default)]
pub struct LiveLogs {
    runs: Mutex<HashMap<String, Arc<RunLog>>>,
    /// Wakes those waiting for a run's log to open.
    opened: Notify,
}

impl LiveLogs {
    /// Opens run `run_id`'s log for an attempt; it closes when the guard
    /// is dropped (the attempt ended).
    pub fn open(self: &Arc<Self>, run_id: &str) -> LogGuard {
        let log = Arc::new(RunLog::default());
        self.runs
            .lock()
            .unwrap()
            .insert(run_id.to_owned(), Arc::clone(&log));
        self.opened.notify_waiters();
        LogGuard {
            logs: Arc::clone(self),
            run_id: run_id.to_owned(),
            log,
        }
    }

    /// Run `run_id`'s log, while it runs here.
    pub fn get(&self, run_id: &str) -> Option<Arc<RunLog>> {
        self.runs.lock().unwrap().get(run_id).cloned()
    }

    /// A future that completes at the next log opened (create it before
    /// looking, so that none is missed).
    pub fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.opened.notified()
    }
}

/// An open log; closes it when dropped.
pub struct LogGuard {
    logs: Arc<LiveLogs>,
    run_id: String,
    pub log: Arc<RunLog>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut runs = self.logs.runs.lock().unwrap();
        if runs
            .get(&self.run_id)
            .is_some_and(|l| Arc::ptr_eq(l, &self.log))
        {
            runs.remove(&self.run_id);
        }
        drop(runs);
        self.log.close();
    }
}

/// One attempt's lines.
#[derive(Default)]
pub struct RunLog {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    lines: VecDeque<LogLine>,
    /// The number the next line gets (lines are numbered from 0).
    next: u64,
    closed: bool,
}

impl RunLog {
    pub fn push(&self, attempt: u32, step: &str, stream: LogStream, line: String) {
        {
            let mut s = self.state.lock().unwrap();
            let seq = s.next;
            s.next += 1;
            s.lines.push_back(LogLine {
                seq,
                attempt,
                step: step.to_owned(),
                stream,
                line,
                at: crate::store::timestamp(Some(crate::events::now_ms())).unwrap_or_default(),
            });
            if s.lines.len() > MAX_LINES {
                s.lines.pop_front();
            }
        }
        self.changed.notify_waiters();
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_waiters();
    }

    /// The lines from number `from` on that are still kept, how many
    /// before them are not, and whether the log is closed.
    pub fn since(&self, from: u64) -> (Vec<LogLine>, u64, bool) {
        let s = self.state.lock().unwrap();
        let first = s.lines.front().map_or(s.next, |l| l.seq);
        let skipped = first.saturating_sub(from);
        let lines = s.lines.iter().filter(|l| l.seq >= from).cloned().collect();
        (lines, skipped, s.closed)
    }

    /// Waits until a line numbered `from` or later is there, or the log closes.
    pub async fn wait(&self, from: u64) {
        loop {
            let changed = self.changed.notified();
            {
                let s = self.state.lock().unwrap();
                if s.next > from || s.closed {
                    return;
                }
            }
            changed.await;
        }
    }
}

/// Where a step's stream goes line by line as it is read.
pub struct LineSink {
    pub log: Arc<RunLog>,
    pub attempt: u32,
    pub step: String,
    pub stream: LogStream,
    /// What is replaced by `***` in each line ([`super::secret_patterns`]:
    /// a secret of several lines cannot be found whole in one line).
    redact: Arc<Vec<String>>,
    /// Bytes of a line kept to look for secrets in: [`MAX_LINE`] and the
    /// longest of them, so that one across the cut is found whole.
    pub keep: usize,
}

impl LineSink {
    pub fn new(
        log: Arc<RunLog>,
        attempt: u32,
        step: &str,
        stream: LogStream,
        redact: Arc<Vec<String>>,
    ) -> LineSink {
        let keep = MAX_LINE + redact.first().map_or(0, String::len);
        LineSink {
            log,
            attempt,
            step: step.to_owned(),
            stream,
            redact,
            keep,
        }
    }

    /// Hands over a line (without its newline) of which `over` more bytes
    /// were not kept: redacted, then cut at [`MAX_LINE`] bytes.
    pub fn line(&self, bytes: &[u8], over: usize) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let mut text = super::redact_with(&self.redact, &String::from_utf8_lossy(bytes));
        let mut cut = over;
        if text.len() > MAX_LINE {
            let mut at = MAX_LINE;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            cut += text.len() - at;
            text.truncate(at);
        }
        if cut > 0 {
            text.push_str(&format!(" [nexusd: {cut} more bytes of this line cut]"));
        }
        self.log.push(self.attempt, &self.step, self.stream, text);
    }
}
