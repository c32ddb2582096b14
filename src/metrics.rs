//! Process-wide counters for `GET /metrics`, in Prometheus' text format.
//! Counters are atomics (or a map under a lock held for one increment);
//! gauges that the database knows better (queue depth) are read at scrape
//! time by the server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::api::RunStatus;
use crate::events::EventType;

/// Upper bounds of the run duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

pub struct Metrics {
    events: [AtomicU64; 5],
    /// Runs that reached a state, by (workflow, status).
    runs: Mutex<BTreeMap<(String, RunStatus), u64>>,
    durations: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_ms: AtomicU64,
    retries: AtomicU64,
    gaps: AtomicU64,
    gap_changes: AtomicU64,
    watcher_errors: AtomicU64,
    /// Some directory has no watch (the inotify watch limit): polled instead.
    watch_degraded: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static METRICS: Metrics = Metrics {
    events: [ZERO; 5],
    runs: Mutex::new(BTreeMap::new()),
    durations: [ZERO; BUCKETS.len() + 1],
    duration_sum_ms: ZERO,
    retries: ZERO,
    gaps: ZERO,
    gap_changes: ZERO,
    watcher_errors: ZERO,
    watch_degraded: AtomicBool::new(false),
};

impl Metrics {
    pub fn event(&self, kind: EventType) {
        self.events[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A run entered `status`; a finished one adds its duration.
    pub fn run(&self, workflow: &str, status: RunStatus, duration_ms: Option<i64>) {
        {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            match runs.get_mut(&(workflow.to_owned(), status)) {
                Some(n) => *n += 1,
                None => {
                    runs.insert((workflow.to_owned(), status), 1);
                }
            }
        }
        if status == RunStatus::Retrying {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ms) = duration_ms {
            let ms = ms.max(0) as u64;
            let secs = ms as f64 / 1000.0;
            let i = BUCKETS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(BUCKETS.len());
            self.durations[i].fetch_add(1, Ordering::Relaxed);
            self.duration_sum_ms.fetch_add(ms, Ordering::Relaxed);
        }
    }

    pub fn gap(&self, changes: usize) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_changes
            .fetch_add(changes as u64, Ordering::Relaxed);
    }

    pub fn watcher_error(&self) {
        self.watcher_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_watch_degraded(&self, degraded: bool) {
        self.watch_degraded.store(degraded, Ordering::Relaxed);
    }

    /// Whether some directory of the data dir has no watch.
    pub fn watch_degraded(&self) -> bool {
        self.watch_degraded.load(Ordering::Relaxed)
    }

    /// The exposition text; `queue` holds the current (status, count) of
    /// unfinished runs and `workflows` the live count.
    pub fn render(&self, queue: &[(RunStatus, i64)], workflows: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP nexus_build_info The running nexusd.\n# TYPE nexus_build_info gauge"
        );
        let _ = writeln!(
            out,
            "nexus_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP nexus_workflows Live workflows (pipeline stages count one each).\n# TYPE nexus_workflows gauge\nnexus_workflows {workflows}"
        );
        let _ = writeln!(
            out,
            "# HELP nexus_events_total File events recorded, by type.\n# TYPE nexus_events_total counter"
        );
        for kind in EventType::ALL {
            let n = self.events[kind as usize].load(Ordering::Relaxed);
            let _ = writeln!(out, "nexus_events_total{{type=\"{}\"}} {n}", kind.as_str());
        }
        let _ = writeln!(
            out,
            "# HELP nexus_runs_total Runs that entered a state, by workflow and state.\n# TYPE nexus_runs_total counter"
        );
        for ((workflow, status), n) in self.runs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "nexus_runs_total{{workflow=\"{}\",status=\"{status}\"}} {n}",
                escape(workflow)
            );
        }
        let _ = writeln!(
            out,
            "# HELP nexus_run_duration_seconds Time from a run's first start to its end.\n# TYPE nexus_run_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.durations[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "nexus_run_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.durations[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "nexus_run_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.duration_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "nexus_run_duration_seconds_sum {sum}\nnexus_run_duration_seconds_count {cumulative}"
        );
        let _ = writeln!(
            out,
            "# HELP nexus_queue_depth Runs not finished, by state.\n# TYPE nexus_queue_depth gauge"
        );
        for status in RunStatus::UNFINISHED {
            let n = queue
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "nexus_queue_depth{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP nexus_watch_degraded 1 while some directory has no watch (the inotify watch limit) and the data dir is polled.\n# TYPE nexus_watch_degraded gauge\nnexus_watch_degraded {}",
            u8::from(self.watch_degraded())
        );
        let counters = [
            (
                "nexus_retries_total",
                "Attempts that failed and will be retried.",
                &self.retries,
            ),
            (
                "nexus_gaps_total",
                "Whole-tree rescans (start, overflow, watcher error).",
                &self.gaps,
            ),
            (
                "nexus_gap_changes_total",
                "Changes found by rescans.",
                &self.gap_changes,
            ),
            (
                "nexus_watcher_errors_total",
                "Watcher errors and queue overflows.",
                &self.watcher_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
