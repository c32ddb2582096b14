//! Hints in, changes out: the reconciler.
//!
//! Watcher notifications are only hints that a path may have changed; the
//! truth is the file on disk compared with the index (what nexusd last saw).
//! The same comparison serves live events, the catch-up scan at start and the
//! rescan after a kernel queue overflow, so all three agree.
//!
//! Timing: a close after writing or a rename into place is final, so it is
//! reconciled at once (the latency path). A file modified but not closed is
//! reconciled after `settle` of quiet, or `max_wait` under continuous writes;
//! a *new* file still open for writing is held (up to `write_hold`) so no
//! handler sees half of it. A rename whose other half is missing is settled
//! after `vanish_grace`. The clock is passed in, so all of this is tested
//! without sleeping.

use crate::datadir::STATE_DIR;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::EventType;
use super::ignore::Ignore;
use super::index::{FileMeta, HASH_LIMIT, classify, content_hash};
use super::now_ns;

/// What the watcher saw, per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Created, maybe a directory (walked if it is one).
    Created(PathBuf),
    /// A file (never a directory) was created or written: it waits for its
    /// close or for quiet. inotify says which; no `stat` is needed.
    Written(PathBuf),
    Closed(PathBuf),
    Attrib(PathBuf),
    Removed(PathBuf),
    RenameFrom(PathBuf, usize),
    RenameTo(PathBuf, usize),
    /// Both halves of a rename, after its `RenameTo` (same cookie).
    RenameBoth(PathBuf, PathBuf, usize),
}

/// A derived change, with the file's state after it (for the index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: EventType,
    pub path: String,
    pub old_path: Option<String>,
    pub meta: Option<FileMeta>,
    /// The exact on-disk path when the name is not UTF-8 (`path` escapes it).
    pub raw: Option<PathBuf>,
}

impl Change {
    fn new(
        kind: EventType,
        path: String,
        old_path: Option<String>,
        meta: Option<FileMeta>,
    ) -> Change {
        // `raw` is filled for names that are not UTF-8 by `fill_raw`.
        Change {
            kind,
            path,
            old_path,
            meta,
            raw: None,
        }
    }
}

/// The reconciler's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub settle: Duration,
    pub max_wait: Duration,
    pub write_hold: Duration,
    pub vanish_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            settle: Duration::from_millis(300),
            max_wait: Duration::from_secs(5),
            write_hold: Duration::from_secs(60),
            vanish_grace: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
    /// The quiet time for this path (a trigger's `settle:`, or the default).
    settle: Duration,
    /// Reconcile at `first` regardless of quiet: a path that may have left.
    vanish: bool,
}

/// Derives changes from hints against the index.
pub struct Reconciler {
    root: PathBuf,
    index: BTreeMap<String, FileMeta>,
    pending: HashMap<String, Pending>,
    /// Unpaired rename sources by inotify cookie, and when to give up on a pair.
    from: HashMap<usize, (String, Instant)>,
    ignore: Ignore,
    timing: Timing,
    /// On-disk paths of names that are not UTF-8, by their escaped virtual path.
    raw: HashMap<String, PathBuf>,
    /// Per-pattern quiet times (triggers' `settle:`); the shortest match wins.
    settle_rules: Vec<(crate::pattern::Pattern, Duration)>,
    /// New directories to walk again, and when (see [`RESCAN_AFTER`]).
    dir_rescans: Vec<(String, Instant)>,
    /// The cookie of the `RenameTo` just applied, if it compared its path.
    arrived_by: Option<usize>,
    /// Racy entries found unchanged, to store (see [`Reconciler::take_settled`]).
    settled: Vec<(String, FileMeta)>,
}

/// When to walk a new directory again. notify adds the watches of a new
/// directory's subdirectories only after reporting it, so a file written in
/// between has no event; a second and a third walk find it.
const RESCAN_AFTER: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(3)];

impl Reconciler {
    pub fn new(
        root: PathBuf,
        index: BTreeMap<String, FileMeta>,
        ignore: Ignore,
        timing: Timing,
    ) -> Reconciler {
        Reconciler {
            root,
            index,
            pending: HashMap::new(),
            from: HashMap::new(),
            ignore,
            timing,
            raw: HashMap::new(),
            settle_rules: Vec::new(),
            dir_rescans: Vec::new(),
            arrived_by: None,
            settled: Vec::new(),
        }
    }

    /// Sets the triggers' own settle times (when the definitions change).
    pub fn set_settle_rules(&mut self, rules: Vec<(crate::pattern::Pattern, Duration)>) {
        self.settle_rules = rules;
    }

    fn settle_for(&self, path: &str) -> Duration {
        self.settle_rules
            .iter()
            .filter(|(p, _)| p.is_match(path))
            .map(|(_, d)| *d)
            .min()
            .unwrap_or(self.timing.settle)
    }

    /// Sets the index back to `index` (the stored one), after a batch of
    /// changes derived from it could not be recorded.
    pub fn replace_index(&mut self, index: BTreeMap<String, FileMeta>) {
        self.index = index;
        self.settled.clear();
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// The virtual path of an absolute one, if it is ours to watch.
    pub fn virtual_path(&mut self, abs: &Path) -> Option<String> {
        let rel = abs.strip_prefix(&self.root).ok()?;
        let (rel_text, exact) = super::encode_path(rel.as_os_str());
        if rel_text.is_empty() {
            return None;
        }
        let path = format!("/{rel_text}");
        if crate::datadir::is_state_path(&path) || self.ignore.is_ignored(&path) {
            return None;
        }
        if !exact {
            self.raw.insert(path.clone(), abs.to_path_buf());
        }
        Some(path)
    }

    fn abs(&self, path: &str) -> PathBuf {
        match self.raw.get(path) {
            Some(raw) => raw.clone(),
            None => super::abs_path(&self.root, path),
        }
    }

    /// Applies one hint; changes that are final now go to `out`.
    pub fn hint(&mut self, hint: Hint, now: Instant, out: &mut Vec<Change>) {
        let start = out.len();
        self.apply(hint, now, out);
        self.fill_raw(&mut out[start..]);
    }

    /// Gives changes on names that are not UTF-8 their exact on-disk path.
    fn fill_raw(&self, changes: &mut [Change]) {
        for c in changes.iter_mut().filter(|c| c.raw.is_none()) {
            c.raw = self.raw.get(&c.path).cloned();
        }
    }

    fn apply(&mut self, hint: Hint, now: Instant, out: &mut Vec<Change>) {
        let arrived_by = self.arrived_by.take();
        match hint {
            Hint::Written(p) => {
                if let Some(vp) = self.virtual_path(&p) {
                    self.touch(vp, now);
                }
            }
            Hint::Created(p) | Hint::Attrib(p) => {
                let Some(vp) = self.virtual_path(&p) else {
                    return;
                };
                if is_dir(&p) {
                    self.scan_dir(&vp, now, true, out);
                } else {
                    self.touch(vp, now);
                }
            }
            Hint::Closed(p) => {
                if let Some(vp) = self.virtual_path(&p) {
                    self.pending.remove(&vp);
                    self.reconcile(&vp, out);
                }
            }
            Hint::Removed(p) => {
                if let Some(vp) = self.virtual_path(&p) {
                    self.pending.remove(&vp);
                    self.vanished(&vp, out);
                }
            }
            Hint::RenameFrom(p, cookie) => {
                if let Some(vp) = self.virtual_path(&p) {
                    self.from
                        .insert(cookie, (vp, now + self.timing.vanish_grace));
                }
            }
            Hint::RenameTo(p, cookie) => {
                // With a known source the paired `RenameBoth` follows.
                if !self.from.contains_key(&cookie) {
                    self.arrived(&p, now, out);
                    self.arrived_by = Some(cookie);
                }
            }
            Hint::RenameBoth(from, to, cookie) => {
                // From an ignored name (an atomic write's temporary file) the
                // `RenameTo` just before has already compared the target.
                let to_done = arrived_by == Some(cookie);
                self.renamed(&from, &to, to_done, now, out);
            }
        }
    }

    /// Reconciles what is due at `now`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Change>) {
        let start = out.len();
        self.tick_inner(now, out);
        self.fill_raw(&mut out[start..]);
    }

    fn tick_inner(&mut self, now: Instant, out: &mut Vec<Change>) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dir_rescans)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.dir_rescans = later;
        for (dir, _) in due {
            self.walk_new_files(&dir, now);
        }
        let expired: Vec<usize> = self
            .from
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for cookie in expired {
            if let Some((vp, _)) = self.from.remove(&cookie) {
                self.vanished(&vp, out);
            }
        }
        let mut due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| self.is_due(p, now))
            .map(|(path, _)| path.clone())
            .collect();
        due.sort();
        // Files held open for writing, read from /proc once for all the due
        // new files (a burst can bring thousands), only if one needs it.
        let mut writers: Option<std::collections::HashSet<PathBuf>> = None;
        for path in due {
            let Some(p) = self.pending.get(&path).copied() else {
                continue;
            };
            let new_file = !self.index.contains_key(&path);
            if !p.vanish
                && new_file
                && now.duration_since(p.first) < self.timing.write_hold
                && writers
                    .get_or_insert_with(|| super::openfiles::open_for_write_under(&self.root))
                    .contains(&self.abs(&path))
            {
                self.pending.insert(path, Pending { last: now, ..p });
                continue;
            }
            self.pending.remove(&path);
            self.reconcile(&path, out);
        }
    }

    /// When the next pending decision falls due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| {
            if p.vanish {
                p.first
            } else {
                (p.last + p.settle).min(p.first + self.timing.max_wait)
            }
        });
        let froms = self.from.values().map(|(_, d)| *d);
        let rescans = self.dir_rescans.iter().map(|(_, d)| *d);
        pending.chain(froms).chain(rescans).min()
    }

    fn is_due(&self, p: &Pending, now: Instant) -> bool {
        if p.vanish {
            return p.first <= now;
        }
        now.duration_since(p.last) >= p.settle
            || now.duration_since(p.first) >= self.timing.max_wait
    }

    fn touch(&mut self, vp: String, now: Instant) {
        let settle = self.settle_for(&vp);
        self.pending
            .entry(vp)
            .and_modify(|p| p.last = now)
            .or_insert(Pending {
                first: now,
                last: now,
                settle,
                vanish: false,
            });
    }

    /// Compares one path with the index and records the difference.
    fn reconcile(&mut self, vp: &str, out: &mut Vec<Change>) {
        let abs = self.abs(vp);
        let mut hash = LazyHash::new(&abs);
        let now_meta = regular_file_meta(&abs);
        let Some(kind) = classify(self.index.get(vp), now_meta.as_ref(), || hash.get()) else {
            if let Some(m) = now_meta {
                self.settle_racy(vp, m, &mut hash);
            }
            return;
        };
        let now_meta = now_meta.map(|m| hash.fill(m));
        match now_meta {
            Some(m) => {
                self.index.insert(vp.to_owned(), m);
            }
            None => {
                self.index.remove(vp);
            }
        }
        let mut change = Change::new(kind, vp.to_owned(), None, now_meta);
        if kind == EventType::Deleted {
            // The name is gone: hand its raw path over and forget it.
            change.raw = self.raw.remove(vp);
        }
        out.push(change);
    }

    /// An entry seen racily and found unchanged (same stat, same content)
    /// by a look far enough from its mtime is no longer racy: stored so,
    /// quietly (no event), so later comparisons trust its `stat`.
    fn settle_racy(&mut self, vp: &str, now_meta: FileMeta, hash: &mut LazyHash) {
        if self.index.get(vp).is_some_and(|m| m.racy) && !now_meta.racy {
            let settled = hash.fill(now_meta);
            self.index.insert(vp.to_owned(), settled);
            self.settled.push((vp.to_owned(), settled));
        }
    }

    /// Index entries settled without an event since the last call, for the
    /// store.
    pub fn take_settled(&mut self) -> Vec<(String, FileMeta)> {
        std::mem::take(&mut self.settled)
    }

    /// A path is gone (removed, or moved out): the file, or every file of
    /// the directory it was.
    fn vanished(&mut self, vp: &str, out: &mut Vec<Change>) {
        if self.index.contains_key(vp) {
            self.reconcile(vp, out);
            return;
        }
        let prefix = format!("{vp}/");
        let under: Vec<String> = self
            .index
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for path in under {
            self.pending.remove(&path);
            self.reconcile(&path, out);
        }
    }

    /// A path appeared by rename from outside the tree (or from an ignored
    /// name): complete at once.
    fn arrived(&mut self, abs: &Path, now: Instant, out: &mut Vec<Change>) {
        let Some(vp) = self.virtual_path(abs) else {
            return;
        };
        if is_dir(abs) {
            self.scan_dir(&vp, now, false, out);
        } else {
            self.pending.remove(&vp);
            self.reconcile(&vp, out);
        }
    }

    fn renamed(
        &mut self,
        from: &Path,
        to: &Path,
        to_done: bool,
        now: Instant,
        out: &mut Vec<Change>,
    ) {
        let vf = self.virtual_path(from);
        let vt = self.virtual_path(to);
        if let Some(vf) = &vf {
            self.from.retain(|_, (p, _)| p != vf);
        }
        match (vf, vt) {
            (None, Some(_)) if !to_done => self.arrived(to, now, out),
            (Some(vf), None) => {
                // Renamed to an ignored name (an editor's backup) or out:
                // decide after the grace time, when a replacement may exist.
                self.pending.insert(
                    vf,
                    Pending {
                        first: now + self.timing.vanish_grace,
                        last: now,
                        settle: self.timing.settle,
                        vanish: true,
                    },
                );
            }
            (Some(vf), Some(vt)) => self.moved(&vf, &vt, now, out),
            (None, _) => {}
        }
    }

    fn moved(&mut self, vf: &str, vt: &str, now: Instant, out: &mut Vec<Change>) {
        if let Some(old) = self.index.remove(vf) {
            self.pending.remove(vf);
            // A rename keeps the content: the stored hash still holds.
            let meta = regular_file_meta(&self.abs(vt)).map_or(old, |m| FileMeta {
                hash: old.hash,
                ..m
            });
            self.index.insert(vt.to_owned(), meta);
            out.push(Change::new(
                EventType::Moved,
                vt.to_owned(),
                Some(vf.to_owned()),
                Some(meta),
            ));
            return;
        }
        let prefix = format!("{vf}/");
        let under: Vec<(String, FileMeta)> = self
            .index
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        if under.is_empty() {
            self.arrived(&self.abs(vt), now, out);
            return;
        }
        for (old_path, meta) in under {
            let new_path = format!("{vt}/{}", &old_path[prefix.len()..]);
            self.index.remove(&old_path);
            self.pending.remove(&old_path);
            self.index.insert(new_path.clone(), meta);
            out.push(Change::new(
                EventType::Moved,
                new_path,
                Some(old_path),
                Some(meta),
            ));
        }
        // Files written into the directory while it moved.
        self.scan_dir(vt, now, true, out);
    }

    /// Walks a directory that appeared. Files written before its watch was in
    /// place get no events of their own: they are found here. With `settle`,
    /// new files wait for their close (or quiet), as they may still be written.
    fn scan_dir(&mut self, vp: &str, now: Instant, settle: bool, out: &mut Vec<Change>) {
        for after in RESCAN_AFTER {
            self.dir_rescans.push((vp.to_owned(), now + after));
        }
        let mut found = Vec::new();
        walk_names(&self.root, &self.abs(vp), &mut found);
        for abs in found {
            let Some(path) = self.virtual_path(&abs) else {
                continue;
            };
            if settle {
                if !self.index.contains_key(&path) {
                    self.touch(path, now);
                }
            } else {
                self.reconcile(&path, out);
            }
        }
    }

    /// Pends the files under `vp` that are neither indexed nor pending.
    fn walk_new_files(&mut self, vp: &str, now: Instant) {
        let mut found = Vec::new();
        walk_names(&self.root, &self.abs(vp), &mut found);
        for abs in found {
            if let Some(path) = self.virtual_path(&abs)
                && !self.index.contains_key(&path)
                && !self.pending.contains_key(&path)
            {
                self.touch(path, now);
            }
        }
    }

    /// Compares the whole tree with the index: at start (changes made while
    /// nexusd was down) and after lost events. Vanished and appeared files
    /// with the same inode, size and mtime are paired as moves. Returns how
    /// many changes it found: those in `out`, and new files written moments
    /// ago, held until quiet (they come out of [`Reconciler::tick`]).
    pub fn scan_all(&mut self, now: Instant, out: &mut Vec<Change>) -> usize {
        let start = out.len();
        let held = self.scan_all_inner(now, out);
        self.fill_raw(&mut out[start..]);
        out.len() - start + held
    }

    fn scan_all_inner(&mut self, now: Instant, out: &mut Vec<Change>) -> usize {
        let mut held = 0;
        let scan_start = now_ns();
        let found = walk_parallel(&self.root, scan_start);
        let mut seen: BTreeMap<String, FileMeta> = BTreeMap::new();
        for (abs, meta) in found {
            if let Some(path) = self.virtual_path(&abs) {
                seen.insert(path, meta);
            }
        }
        let gone: Vec<(String, FileMeta)> = self
            .index
            .iter()
            .filter(|(p, _)| !seen.contains_key(*p))
            .map(|(p, m)| (p.clone(), *m))
            .collect();
        let mut appeared: Vec<(String, FileMeta)> = seen
            .iter()
            .filter(|(p, _)| !self.index.contains_key(*p))
            .map(|(p, m)| (p.clone(), *m))
            .collect();
        for (old_path, old) in gone {
            let pair = appeared.iter().position(|(_, m)| {
                m.ino == old.ino
                    && m.dev == old.dev
                    && m.size == old.size
                    && m.mtime_ns == old.mtime_ns
            });
            self.index.remove(&old_path);
            match pair {
                Some(i) => {
                    let (new_path, meta) = appeared.remove(i);
                    let meta = FileMeta {
                        hash: old.hash,
                        ..meta
                    };
                    self.index.insert(new_path.clone(), meta);
                    out.push(Change::new(
                        EventType::Moved,
                        new_path,
                        Some(old_path),
                        Some(meta),
                    ));
                }
                None => out.push(Change::new(EventType::Deleted, old_path, None, None)),
            }
        }
        let recent = scan_start - 2_000_000_000;
        for (path, meta) in appeared {
            if meta.mtime_ns >= recent {
                // Possibly still being written: let the settle path decide.
                self.touch(path, now);
                held += 1;
            } else {
                let abs = self.abs(&path);
                let meta = LazyHash::new(&abs).fill(meta);
                self.index.insert(path.clone(), meta);
                out.push(Change::new(EventType::Created, path, None, Some(meta)));
            }
        }
        let known: Vec<String> = seen
            .keys()
            .filter(|p| self.index.contains_key(*p))
            .cloned()
            .collect();
        for path in known {
            let abs = self.abs(&path);
            let mut hash = LazyHash::new(&abs);
            let after = seen[&path];
            match classify(self.index.get(&path), Some(&after), || hash.get()) {
                Some(kind) => {
                    let after = hash.fill(after);
                    self.index.insert(path.clone(), after);
                    out.push(Change::new(kind, path, None, Some(after)));
                }
                None => self.settle_racy(&path, after, &mut hash),
            }
        }
        held
    }
}

fn is_dir(abs: &Path) -> bool {
    std::fs::symlink_metadata(abs).is_ok_and(|m| m.is_dir())
}

/// The index state of a regular file, or `None` for anything else (absent,
/// a directory, a symlink: symlinks are never followed).
fn regular_file_meta(abs: &Path) -> Option<FileMeta> {
    let seen = now_ns();
    std::fs::symlink_metadata(abs)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| FileMeta::read(abs, &m, seen))
}

/// A file's content hash, read at most once and only when asked.
struct LazyHash<'a> {
    abs: &'a Path,
    value: Option<Option<i64>>,
}

impl<'a> LazyHash<'a> {
    fn new(abs: &'a Path) -> LazyHash<'a> {
        LazyHash { abs, value: None }
    }

    fn get(&mut self) -> Option<i64> {
        *self.value.get_or_insert_with(|| content_hash(self.abs))
    }

    /// `m` with its hash, for the index.
    fn fill(&mut self, m: FileMeta) -> FileMeta {
        FileMeta {
            hash: if m.size <= HASH_LIMIT {
                self.get()
            } else {
                None
            },
            ..m
        }
    }
}

/// The paths of the regular files under `dir`, from directory entries
/// alone (no `stat`), without following symlinks or entering nexusd's
/// state directory: enough to find what the index lacks.
fn walk_names(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if dir == root && entry.file_name() == STATE_DIR {
                continue;
            }
            walk_names(root, &entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// [`walk`] of the whole tree, its top-level directories shared out among
/// the cores (a walk is a `stat` and an `llistxattr` per file).
fn walk_parallel(root: &Path, seen_ns: i64) -> Vec<(PathBuf, FileMeta)> {
    let mut found = Vec::new();
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if entry.file_name() != STATE_DIR {
                    dirs.push(path);
                }
            } else if let (true, Ok(m)) = (kind.is_file(), entry.metadata()) {
                let meta = FileMeta::read(&path, &m, seen_ns);
                found.push((path, meta));
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(dirs.len());
    if threads <= 1 {
        for dir in dirs {
            walk(root, &dir, seen_ns, &mut found);
        }
        return found;
    }
    let queue = std::sync::Mutex::new(dirs.into_iter());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some(dir) = next else { break };
                        walk(root, &dir, seen_ns, &mut mine);
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            if let Ok(mine) = h.join() {
                found.extend(mine);
            }
        }
    });
    found
}

/// Every regular file under `dir` with its metadata, without following
/// symlinks, skipping nexusd's own state directory.
fn walk(root: &Path, dir: &Path, seen_ns: i64, out: &mut Vec<(PathBuf, FileMeta)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            if dir == root && entry.file_name() == STATE_DIR {
                continue;
            }
            walk(root, &path, seen_ns, out);
        } else if let (true, Ok(m)) = (kind.is_file(), entry.metadata()) {
            let meta = FileMeta::read(&path, &m, seen_ns);
            out.push((path, meta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        rec: Reconciler,
        now: Instant,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let rec = Reconciler::new(
                dir.path().to_path_buf(),
                BTreeMap::new(),
                Ignore::defaults(),
                Timing::default(),
            );
            Fixture {
                dir,
                rec,
                now: Instant::now(),
            }
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn hint(&mut self, h: Hint) -> Vec<(EventType, String)> {
            let mut out = Vec::new();
            self.rec.hint(h, self.now, &mut out);
            out.into_iter().map(|c| (c.kind, c.path)).collect()
        }
        fn advance(&mut self, d: Duration) -> Vec<(EventType, String)> {
            self.now += d;
            let mut out = Vec::new();
            self.rec.tick(self.now, &mut out);
            out.into_iter().map(|c| (c.kind, c.path)).collect()
        }
    }

    #[test]
    fn close_after_write_is_final_at_once() {
        let mut f = Fixture::new();
        std::fs::write(f.p("a.txt"), "x").unwrap();
        assert!(f.hint(Hint::Created(f.p("a.txt"))).is_empty());
        assert_eq!(
            f.hint(Hint::Closed(f.p("a.txt"))),
            vec![(EventType::Created, "/a.txt".into())]
        );
        assert!(
            f.advance(Duration::from_secs(1)).is_empty(),
            "no second event after settle"
        );
        std::fs::write(f.p("a.txt"), "xy").unwrap();
        assert_eq!(
            f.hint(Hint::Closed(f.p("a.txt"))),
            vec![(EventType::Updated, "/a.txt".into())]
        );
    }

    #[test]
    fn a_file_not_closed_settles() {
        let mut f = Fixture::new();
        std::fs::write(f.p("b"), "x").unwrap();
        f.hint(Hint::Created(f.p("b")));
        assert!(f.advance(Duration::from_millis(200)).is_empty());
        assert_eq!(
            f.advance(Duration::from_millis(150)),
            vec![(EventType::Created, "/b".into())]
        );
    }

    #[test]
    fn a_trigger_settle_time_applies_to_its_paths() {
        let mut f = Fixture::new();
        let rule = (
            crate::pattern::Pattern::new("/slow/*").unwrap(),
            Duration::from_secs(2),
        );
        f.rec.set_settle_rules(vec![rule]);
        std::fs::create_dir(f.p("slow")).unwrap();
        std::fs::write(f.p("slow/a"), "x").unwrap();
        std::fs::write(f.p("fast"), "x").unwrap();
        f.hint(Hint::Written(f.p("slow/a")));
        f.hint(Hint::Written(f.p("fast")));
        assert_eq!(
            f.advance(Duration::from_millis(350)),
            vec![(EventType::Created, "/fast".into())]
        );
        assert!(f.advance(Duration::from_millis(1000)).is_empty());
        assert_eq!(
            f.advance(Duration::from_millis(700)),
            vec![(EventType::Created, "/slow/a".into())]
        );
    }

    #[test]
    fn a_new_directory_is_walked_again_for_files_that_beat_its_watch() {
        // Regression: under load, files written into a new subdirectory
        // before notify watched it were never reported.
        let mut f = Fixture::new();
        std::fs::create_dir(f.p("d")).unwrap();
        assert!(f.hint(Hint::Created(f.p("d"))).is_empty());
        std::fs::create_dir(f.p("d/e")).unwrap();
        std::fs::write(f.p("d/e/late.txt"), "x").unwrap();
        assert!(
            f.advance(Duration::from_millis(500)).is_empty(),
            "found, now settling"
        );
        assert_eq!(
            f.advance(Duration::from_millis(300)),
            vec![(EventType::Created, "/d/e/late.txt".into())]
        );
        assert!(
            f.advance(Duration::from_secs(3)).is_empty(),
            "the third walk finds it indexed"
        );
    }

    #[test]
    fn atomic_save_is_one_update() {
        let mut f = Fixture::new();
        std::fs::write(f.p("t.txt"), "old").unwrap();
        f.hint(Hint::Closed(f.p("t.txt")));
        std::fs::write(f.p(".t.tmp"), "new!").unwrap();
        assert!(f.hint(Hint::Closed(f.p(".t.tmp"))).is_empty());
        std::fs::rename(f.p(".t.tmp"), f.p("t.txt")).unwrap();
        assert_eq!(
            f.hint(Hint::RenameBoth(f.p(".t.tmp"), f.p("t.txt"), 5)),
            vec![(EventType::Updated, "/t.txt".into())]
        );
    }

    #[test]
    fn renames_inside_pair_and_outside_settle() {
        let mut f = Fixture::new();
        std::fs::write(f.p("a"), "1").unwrap();
        f.hint(Hint::Closed(f.p("a")));
        std::fs::rename(f.p("a"), f.p("b")).unwrap();
        assert!(f.hint(Hint::RenameFrom(f.p("a"), 7)).is_empty());
        assert!(f.hint(Hint::RenameTo(f.p("b"), 7)).is_empty());
        let out = f.hint(Hint::RenameBoth(f.p("a"), f.p("b"), 7));
        assert_eq!(out, vec![(EventType::Moved, "/b".into())]);
        std::fs::remove_file(f.p("b")).unwrap();
        assert!(f.hint(Hint::RenameFrom(f.p("b"), 8)).is_empty());
        assert_eq!(
            f.advance(Duration::from_secs(1)),
            vec![(EventType::Deleted, "/b".into())]
        );
    }

    #[test]
    fn directories_appear_and_vanish_file_by_file() {
        let mut f = Fixture::new();
        std::fs::create_dir_all(f.p("d/e")).unwrap();
        std::fs::write(f.p("d/e/1"), "1").unwrap();
        std::fs::write(f.p("d/e/2"), "2").unwrap();
        let mut out = f.hint(Hint::RenameTo(f.p("d"), 3));
        out.sort();
        assert_eq!(
            out,
            vec![
                (EventType::Created, "/d/e/1".into()),
                (EventType::Created, "/d/e/2".into())
            ]
        );
        std::fs::rename(f.p("d"), f.p("z")).unwrap();
        let mut out = f.hint(Hint::RenameBoth(f.p("d"), f.p("z"), 4));
        out.sort();
        assert_eq!(
            out,
            vec![
                (EventType::Moved, "/z/e/1".into()),
                (EventType::Moved, "/z/e/2".into())
            ]
        );
        std::fs::remove_dir_all(f.p("z")).unwrap();
        assert_eq!(f.hint(Hint::Removed(f.p("z"))).len(), 2);
    }

    #[test]
    fn a_scan_finds_what_happened_while_down() {
        let mut f = Fixture::new();
        for n in ["a", "b", "c", "d"] {
            std::fs::write(f.p(n), n).unwrap();
        }
        let mut out = Vec::new();
        f.rec.scan_all(f.now, &mut out);
        // Files this fresh may still be written: they settle first.
        let settled = f.advance(Duration::from_secs(1)).len();
        assert_eq!(out.len() + settled, 4, "each file created once");
        assert!(f.advance(Duration::from_secs(1)).is_empty());
        std::fs::remove_file(f.p("a")).unwrap();
        std::fs::rename(f.p("b"), f.p("b2")).unwrap();
        let mut out = Vec::new();
        f.rec.scan_all(f.now, &mut out);
        let mut got: Vec<_> = out
            .into_iter()
            .map(|c| (c.kind, c.path, c.old_path))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (EventType::Deleted, "/a".into(), None),
                (EventType::Moved, "/b2".into(), Some("/b".into()))
            ]
        );
    }

    /// Writes `content` to `path` and gives it the mtime `at`, as a write
    /// within one tick of the kernel's clock would.
    fn write_at(path: &Path, content: &str, at: std::time::SystemTime) {
        let f = std::fs::File::create(path).unwrap();
        std::io::Write::write_all(&mut &f, content.as_bytes()).unwrap();
        f.set_modified(at).unwrap();
    }

    #[test]
    fn a_rewrite_within_the_tick_of_the_last_look_is_an_update() {
        let mut f = Fixture::new();
        // An mtime ahead of the clock: every look at it is within its tick.
        let tick = std::time::SystemTime::now() + Duration::from_secs(3600);
        write_at(&f.p("r.txt"), "aaaa", tick);
        assert_eq!(
            f.hint(Hint::Closed(f.p("r.txt"))),
            vec![(EventType::Created, "/r.txt".into())]
        );
        write_at(&f.p("r.txt"), "bbbb", tick);
        assert_eq!(
            f.hint(Hint::Closed(f.p("r.txt"))),
            vec![(EventType::Updated, "/r.txt".into())],
            "same size, same mtime, other bytes"
        );
        write_at(&f.p("r.txt"), "bbbb", tick);
        assert!(f.hint(Hint::Closed(f.p("r.txt"))).is_empty());
    }

    #[test]
    fn a_racy_entry_found_unchanged_later_is_settled_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.txt");
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        write_at(&path, "aaaa", long_ago);
        let m = std::fs::symlink_metadata(&path).unwrap();
        // As stored by a look within the tick of its mtime.
        let stored = FileMeta {
            racy: true,
            hash: content_hash(&path),
            ..FileMeta::read(&path, &m, super::now_ns())
        };
        let index = BTreeMap::from([("/s.txt".to_owned(), stored)]);
        let mut rec = Reconciler::new(
            dir.path().to_path_buf(),
            index.clone(),
            Ignore::defaults(),
            Timing::default(),
        );
        let mut out = Vec::new();
        rec.scan_all(Instant::now(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let settled = rec.take_settled();
        assert_eq!(settled.len(), 1);
        assert!(!settled[0].1.racy);
        assert_eq!(settled[0].1.hash, stored.hash);
        rec.scan_all(Instant::now(), &mut out);
        assert!(out.is_empty() && rec.take_settled().is_empty());

        // The same stored entry, but the bytes changed within that tick.
        write_at(&path, "bbbb", long_ago);
        let mut rec = Reconciler::new(
            dir.path().to_path_buf(),
            index,
            Ignore::defaults(),
            Timing::default(),
        );
        rec.scan_all(Instant::now(), &mut out);
        let got: Vec<_> = out.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert_eq!(got, vec![(EventType::Updated, "/s.txt")]);
        assert!(rec.take_settled().is_empty());
    }

    #[test]
    fn nexus_state_and_ignored_names_are_invisible() {
        let mut f = Fixture::new();
        assert_eq!(
            f.rec.virtual_path(&f.p(&format!("{STATE_DIR}/nexus.db"))),
            None
        );
        assert_eq!(f.rec.virtual_path(&f.p("x/.a.swp")), None);
        assert_eq!(f.rec.virtual_path(&f.p("x/a.txt")), Some("/x/a.txt".into()));
    }
}
