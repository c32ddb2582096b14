//! The live definitions' one way in: `apply`. The API's `POST /v1/apply`,
//! `nexusd apply` and the `--config-dir` reconciler all come here. A set is
//! compiled and checked whole together with what stays live; it is recorded
//! (one revision per changed definition) and swapped in only when all of it
//! is good, so a rejected apply changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::live::{Live, LiveHandle};
use crate::definitions::load::SourceDocument;
use crate::definitions::model::Workflow;
use crate::definitions::{Diagnostics, Limits, Loaded, load_text};
use crate::events::now_ms;
use crate::store::{DefinitionWrite, Store, StoreError, StoredDefinition};

pub use crate::api::{Action, Applied};

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Valid alone, but not together with what is live, or not runnable here.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Where the set comes from; `prune` removes only this source's definitions.
    pub source: String,
    /// Who applies (a user name, or `config-dir`).
    pub who: String,
    pub prune: bool,
    pub dry_run: bool,
}

/// The applied definitions, the live set built from them, and pauses.
pub struct Registry {
    store: Store,
    live: LiveHandle,
    secrets_dir: Option<PathBuf>,
    paused: RwLock<BTreeSet<String>>,
    /// One apply at a time in this process; the database orders nodes.
    lock: tokio::sync::Mutex<()>,
    /// Orders pause changes with refreshes, so a refresh that read the
    /// store before a pause cannot undo it in memory.
    pause_lock: tokio::sync::Mutex<()>,
    /// Compiled workflows by document hash: an apply compiles only what changed.
    compiled: std::sync::Mutex<HashMap<String, Vec<Workflow>>>,
    /// The store's definitions version the live set was built from.
    version: std::sync::atomic::AtomicI64,
    /// The workflows this node cannot run, as last logged.
    told_lacking: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Registry {
    /// Builds the live set from what the store holds.
    pub async fn open(store: Store, secrets_dir: Option<PathBuf>) -> anyhow::Result<Registry> {
        let version = store.definitions_version().await?;
        let defs = store.definitions().await?;
        let compiled = std::sync::Mutex::new(HashMap::new());
        let live = build_live(&defs, HashMap::new(), &compiled, secrets_dir.as_deref())
            .map_err(|e| anyhow::anyhow!("the stored definitions cannot be loaded: {e}"))?;
        let paused = store.paused().await?.into_iter().collect();
        let registry = Registry {
            store,
            live: LiveHandle::new(live),
            secrets_dir,
            paused: RwLock::new(paused),
            lock: tokio::sync::Mutex::new(()),
            pause_lock: tokio::sync::Mutex::new(()),
            compiled,
            version: std::sync::atomic::AtomicI64::new(version),
            told_lacking: Default::default(),
        };
        registry.tell_lacking(&registry.live.current());
        Ok(registry)
    }

    /// The data dir of the agent this registry serves.
    pub fn origin(&self) -> &str {
        self.store.origin()
    }

    /// Picks up what other nodes (or `nexusd admin`) changed in the store:
    /// definitions applied elsewhere, pauses. Cheap when nothing changed.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        {
            let _guard = self.pause_lock.lock().await;
            let paused: BTreeSet<String> = self.store.paused().await?.into_iter().collect();
            *self.paused.write().unwrap_or_else(|p| p.into_inner()) = paused;
        }
        let version = self.store.definitions_version().await?;
        if version == self.version.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        let version = self.store.definitions_version().await?;
        let defs = self.store.definitions().await?;
        match build_live(
            &defs,
            HashMap::new(),
            &self.compiled,
            self.secrets_dir.as_deref(),
        ) {
            Ok(live) => {
                self.tell_lacking(&live);
                self.live.swap(live);
                tracing::info!(
                    definitions = defs.len(),
                    "definitions changed in the store: reloaded"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "definitions changed in the store cannot be loaded; the last good set stays live")
            }
        }
        self.version.store(version, Ordering::SeqCst);
        Ok(())
    }

    pub fn live(&self) -> &LiveHandle {
        &self.live
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies a set of documents all or nothing.
    pub async fn apply(
        &self,
        docs: Vec<SourceDocument>,
        opts: &ApplyOptions,
    ) -> Result<Vec<Applied>, ApplyError> {
        let _guard = self.lock.lock().await;
        let current = self.stored_by_name().await?;
        let now = now_ms();
        let mut report = Vec::new();
        let mut writes = Vec::new();
        let mut next: BTreeMap<String, StoredDefinition> = current.clone();
        let mut named = BTreeSet::new();
        let mut fresh: HashMap<String, Vec<Workflow>> = HashMap::new();
        for doc in docs {
            named.insert(doc.name.clone());
            let document = doc.json.to_string();
            let hash = content_hash(&document);
            let action = match current.get(&doc.name) {
                None => Action::Created,
                Some(old) if old.hash == hash && old.kind == doc.kind => Action::Unchanged,
                Some(_) => Action::Configured,
            };
            report.push(Applied {
                kind: doc.kind,
                name: doc.name.clone(),
                action,
            });
            if action == Action::Unchanged {
                let old = &current[&doc.name];
                if old.source != opts.source {
                    writes.push(DefinitionWrite::Adopt {
                        name: doc.name.clone(),
                        source: opts.source.clone(),
                    });
                }
                continue;
            }
            fresh.insert(hash.clone(), doc.workflows);
            let def = StoredDefinition {
                name: doc.name.clone(),
                kind: doc.kind,
                document,
                hash,
                revision: 0,
                source: opts.source.clone(),
                applied_by: opts.who.clone(),
                applied_ms: now,
            };
            next.insert(doc.name, def.clone());
            writes.push(DefinitionWrite::Put {
                def,
                action: action.as_str(),
            });
        }
        if opts.prune {
            for old in current.values() {
                if old.source == opts.source && !named.contains(&old.name) {
                    next.remove(&old.name);
                    report.push(Applied {
                        kind: old.kind,
                        name: old.name.clone(),
                        action: Action::Pruned,
                    });
                    writes.push(DefinitionWrite::Remove {
                        name: old.name.clone(),
                        kind: old.kind,
                        action: "pruned",
                        source: opts.source.clone(),
                        applied_by: opts.who.clone(),
                        applied_ms: now,
                    });
                }
            }
        }
        self.commit(next, writes, fresh, opts.dry_run).await?;
        Ok(report)
    }

    /// Removes one definition; `Ok(None)` when there is no such one.
    pub async fn delete(&self, name: &str, who: &str) -> Result<Option<Applied>, ApplyError> {
        let _guard = self.lock.lock().await;
        let mut next = self.stored_by_name().await?;
        let Some(old) = next.remove(name) else {
            return Ok(None);
        };
        let write = DefinitionWrite::Remove {
            name: old.name.clone(),
            kind: old.kind,
            action: "deleted",
            source: old.source.clone(),
            applied_by: who.to_owned(),
            applied_ms: now_ms(),
        };
        self.commit(next, vec![write], HashMap::new(), false)
            .await?;
        Ok(Some(Applied {
            kind: old.kind,
            name: old.name,
            action: Action::Deleted,
        }))
    }

    /// The stored definitions by name.
    async fn stored_by_name(&self) -> Result<BTreeMap<String, StoredDefinition>, StoreError> {
        Ok(self
            .store
            .definitions()
            .await?
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect())
    }

    /// Checks the next set whole, then records the writes and swaps it in.
    async fn commit(
        &self,
        next: BTreeMap<String, StoredDefinition>,
        mut writes: Vec<DefinitionWrite>,
        fresh: HashMap<String, Vec<Workflow>>,
        dry_run: bool,
    ) -> Result<(), ApplyError> {
        let defs: Vec<StoredDefinition> = next.into_values().collect();
        // What this apply changes must run here; what this node lacked
        // before it may go on lacking (another node runs it).
        let changed: Vec<String> = fresh.values().flatten().map(|w| w.name.clone()).collect();
        let live = build_live(&defs, fresh, &self.compiled, self.secrets_dir.as_deref())
            .map_err(ApplyError::Rejected)?;
        if let Some(why) = changed.iter().find_map(|name| live.lacks(name)) {
            return Err(ApplyError::Rejected(why.to_owned()));
        }
        if dry_run || writes.is_empty() {
            return Ok(());
        }
        self.tell_lacking(&live);
        let last = self.store.last_revisions().await?;
        for w in &mut writes {
            if let DefinitionWrite::Put { def, .. } = w {
                def.revision = last.get(&def.name).copied().unwrap_or(0) + 1;
            }
        }
        self.store.write_definitions(&writes).await?;
        self.live.swap(live);
        let version = self.store.definitions_version().await?;
        self.version
            .store(version, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Logs the workflows of `live` this node cannot run, when that changed.
    fn tell_lacking(&self, live: &Live) {
        let mut told = self.told_lacking.lock().unwrap_or_else(|p| p.into_inner());
        if *told == live.lacking {
            return;
        }
        for (workflow, why) in &live.lacking {
            if told.get(workflow) != Some(why) {
                tracing::error!(%workflow, reason = %why, "this node cannot run a workflow that is applied: its runs are left to the nodes that can");
            }
        }
        for workflow in told.keys().filter(|w| !live.lacking.contains_key(*w)) {
            tracing::info!(%workflow, "this node can run the workflow again");
        }
        told.clone_from(&live.lacking);
    }

    /// True when a run of this workflow must not start: it, or its pipeline, is paused.
    pub fn is_paused(&self, w: &Workflow) -> bool {
        let paused = self.paused.read().unwrap_or_else(|p| p.into_inner());
        !paused.is_empty()
            && (paused.contains(&w.name) || w.pipeline.as_ref().is_some_and(|p| paused.contains(p)))
    }

    pub fn paused_names(&self) -> BTreeSet<String> {
        self.paused
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pauses or resumes a definition; persisted first, so it survives restarts.
    pub async fn set_paused(&self, name: &str, paused: bool, who: &str) -> Result<(), StoreError> {
        let _guard = self.pause_lock.lock().await;
        self.store.set_paused(name, paused, who, now_ms()).await?;
        let mut set = self.paused.write().unwrap_or_else(|p| p.into_inner());
        if paused {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
        Ok(())
    }
}

/// Loads definition files (the config dir, `apply -f`) into documents, or
/// the diagnostics that refuse them.
pub fn documents_of(loaded: Loaded) -> Result<Vec<SourceDocument>, Diagnostics> {
    if loaded.diagnostics.has_errors() {
        Err(loaded.diagnostics)
    } else {
        Ok(loaded.documents)
    }
}

/// Builds the runnable set of `defs`: each document's workflows from
/// `fresh` (just compiled by an apply), else from the cache, else compiled
/// from its stored JSON (JSON is YAML). The cache keeps what the set uses.
fn build_live(
    defs: &[StoredDefinition],
    mut fresh: HashMap<String, Vec<Workflow>>,
    cache: &std::sync::Mutex<HashMap<String, Vec<Workflow>>>,
    secrets_dir: Option<&Path>,
) -> Result<Live, String> {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    let missing: Vec<&StoredDefinition> = defs
        .iter()
        .filter(|d| !fresh.contains_key(&d.hash) && !cache.contains_key(&d.hash))
        .collect();
    let mut compiled: HashMap<String, Vec<Workflow>> = HashMap::new();
    if !missing.is_empty() {
        let mut text = String::new();
        for d in &missing {
            text.push_str("---\n");
            text.push_str(&d.document);
            text.push('\n');
        }
        let limits = Limits {
            max_file_bytes: usize::MAX,
            max_documents: usize::MAX,
            ..Limits::default()
        };
        let loaded = load_text(Path::new("<live definitions>"), text.as_bytes(), &limits);
        if loaded.diagnostics.has_errors() {
            let errors: Vec<String> = loaded.diagnostics.errors().map(|d| d.to_string()).collect();
            return Err(format!(
                "the stored definitions do not compile: {}",
                errors.join("; ")
            ));
        }
        for doc in loaded.documents {
            if let Some(d) = missing.iter().find(|d| d.name == doc.name) {
                compiled.insert(d.hash.clone(), doc.workflows);
            }
        }
    }
    // Each document's workflows move into the new cache; the set gets one copy.
    let mut old = std::mem::take(&mut *cache);
    let mut set = crate::definitions::DefinitionSet::default();
    for d in defs {
        let workflows = fresh
            .remove(&d.hash)
            .or_else(|| compiled.remove(&d.hash))
            .or_else(|| old.remove(&d.hash))
            .or_else(|| cache.get(&d.hash).cloned())
            .unwrap_or_default();
        set.workflows.extend(workflows.iter().cloned());
        cache.insert(d.hash.clone(), workflows);
    }
    Ok(Live::new(set, secrets_dir))
}

/// A stored document (an old revision's JSON) compiled again, for rollback.
pub fn document_of_json(name: &str, text: &str) -> Result<SourceDocument, String> {
    let loaded = load_text(Path::new(name), text.as_bytes(), &Limits::default());
    if loaded.diagnostics.has_errors() {
        let errors: Vec<String> = loaded.diagnostics.errors().map(|d| d.to_string()).collect();
        return Err(errors.join("; "));
    }
    loaded
        .documents
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{name}` holds no definition"))
}

/// Workflow `name` (a stage: `PIPELINE/STAGE`) as revision `revision` of
/// its definition had it: what a re-run on its original's revision runs.
/// The inner error: there is no such revision or workflow, or it no
/// longer compiles (the outer: the store could not be read).
pub async fn workflow_at(
    store: &crate::store::Store,
    name: &str,
    revision: i64,
) -> Result<Result<Workflow, String>, StoreError> {
    let definition = name.split('/').next().unwrap_or(name);
    let revisions = store.revisions(definition).await?;
    let Some(text) = revisions
        .iter()
        .find(|r| r.revision == revision)
        .and_then(|r| r.document.as_deref())
    else {
        return Ok(Err(format!(
            "`{definition}` has no revision {revision} to run on"
        )));
    };
    let doc = match document_of_json(&format!("<revision {revision} of {definition}>"), text) {
        Ok(doc) => doc,
        Err(e) => {
            return Ok(Err(format!(
                "revision {revision} of `{definition}` no longer compiles: {e}"
            )));
        }
    };
    Ok(doc
        .workflows
        .into_iter()
        .find(|w| w.name == name)
        .ok_or_else(|| format!("revision {revision} of `{definition}` has no workflow `{name}`")))
}

/// The SHA-256 of a document's canonical JSON, in hex.
pub fn content_hash(document: &str) -> String {
    Sha256::digest(document.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Shared by the engine and the API.
pub type SharedRegistry = Arc<Registry>;
