//! The applied definitions, their revisions, and pauses.

use crate::api::DefinitionKind;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};

/// A definition document as live in the store.
#[derive(Debug, Clone)]
pub struct StoredDefinition {
    pub name: String,
    pub kind: DefinitionKind,
    /// Canonical JSON text of the document.
    pub document: String,
    pub hash: String,
    pub revision: i64,
    pub source: String,
    pub applied_by: String,
    pub applied_ms: i64,
}

/// One entry of a definition's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revision {
    pub name: String,
    pub revision: i64,
    pub kind: DefinitionKind,
    /// `created`, `configured`, `pruned`, `deleted` or `rolled-back`.
    pub action: String,
    #[serde(skip)]
    pub document: Option<String>,
    pub hash: Option<String>,
    pub source: String,
    pub applied_by: String,
    pub applied_ms: i64,
}

/// A change `apply` writes: the new state of one definition.
#[derive(Debug, Clone)]
pub enum DefinitionWrite {
    /// Insert or replace the live row, recording a revision with `action`.
    Put {
        def: StoredDefinition,
        action: &'static str,
    },
    /// Only take ownership (the content is unchanged, the source is new).
    Adopt { name: String, source: String },
    /// Remove the live row, recording a revision with `action`.
    Remove {
        name: String,
        kind: DefinitionKind,
        action: &'static str,
        source: String,
        applied_by: String,
        applied_ms: i64,
    },
}

const DEF_COLUMNS: &str = "name, kind, document, hash, revision, source, applied_by, applied_ms";

fn definition_of(r: &sqlx::any::AnyRow) -> StoredDefinition {
    StoredDefinition {
        name: r.get("name"),
        kind: DefinitionKind::parse(&r.get::<String, _>("kind")),
        document: r.get("document"),
        hash: r.get("hash"),
        revision: r.get("revision"),
        source: r.get("source"),
        applied_by: r.get("applied_by"),
        applied_ms: r.get("applied_ms"),
    }
}

impl Store {
    /// Every live definition, by name.
    pub async fn definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        let sql = format!("SELECT {DEF_COLUMNS} FROM definitions ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(definition_of).collect())
    }

    /// One live definition.
    pub async fn definition(&self, name: &str) -> Result<Option<StoredDefinition>, StoreError> {
        let sql = format!("SELECT {DEF_COLUMNS} FROM definitions WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(definition_of))
    }

    /// The last revision number of every name ever applied.
    pub async fn last_revisions(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, MAX(revision) AS last FROM definition_revisions GROUP BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("name"), r.get("last")))
            .collect())
    }

    /// Writes the changes of one apply in one transaction.
    pub async fn write_definitions(&self, writes: &[DefinitionWrite]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            write_one(&mut tx, w).await?;
        }
        super::notify::notify_in(self.backend, &mut *tx, super::notify::DEFINITIONS).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A definition's history, newest first.
    pub async fn revisions(&self, name: &str) -> Result<Vec<Revision>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, revision, kind, action, document, hash, source, applied_by, applied_ms \
             FROM definition_revisions WHERE name = $1 ORDER BY revision DESC",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Revision {
                name: r.get("name"),
                revision: r.get("revision"),
                kind: DefinitionKind::parse(&r.get::<String, _>("kind")),
                action: r.get("action"),
                document: r.get("document"),
                hash: r.get("hash"),
                source: r.get("source"),
                applied_by: r.get("applied_by"),
                applied_ms: r.get("applied_ms"),
            })
            .collect())
    }

    /// The revision of definition `name` that was live when run `run_id`
    /// was queued (none: it was applied later, or removed then).
    pub async fn revision_when_queued(
        &self,
        name: &str,
        run_id: &str,
    ) -> Result<Option<Revision>, StoreError> {
        let revisions = self.revisions(name).await?;
        let queued: Option<i64> = sqlx::query_scalar("SELECT queued_ms FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(queued) = queued else {
            return Ok(None);
        };
        Ok(revisions
            .into_iter()
            .find(|r| r.applied_ms <= queued)
            .filter(|r| r.document.is_some()))
    }

    /// A number that changes whenever any definition does (revisions are
    /// only ever added): how a node notices another node's apply.
    pub async fn definitions_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM definition_revisions")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("n"))
    }

    /// The names paused now.
    pub async fn paused(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM paused ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }

    /// Pauses or resumes `name`; `Ok(false)` when it already was so.
    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
        who: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = if paused {
            sqlx::query(
                "INSERT INTO paused (name, paused_by, paused_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(who)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query("DELETE FROM paused WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
        };
        let changed = done.rows_affected() == 1;
        if changed {
            super::notify::notify_in(self.backend, &mut *tx, super::notify::DEFINITIONS).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}

async fn write_one(tx: &mut Transaction<'_, Any>, w: &DefinitionWrite) -> Result<(), StoreError> {
    match w {
        DefinitionWrite::Put { def, action } => {
            let sql = format!(
                "INSERT INTO definitions ({DEF_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, document = excluded.document, \
                 hash = excluded.hash, revision = excluded.revision, source = excluded.source, \
                 applied_by = excluded.applied_by, applied_ms = excluded.applied_ms"
            );
            sqlx::query(&sql)
                .bind(&def.name)
                .bind(def.kind.as_str())
                .bind(&def.document)
                .bind(&def.hash)
                .bind(def.revision)
                .bind(&def.source)
                .bind(&def.applied_by)
                .bind(def.applied_ms)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO definition_revisions (name, revision, kind, action, document, hash, source, applied_by, applied_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&def.name)
            .bind(def.revision)
            .bind(def.kind.as_str())
            .bind(*action)
            .bind(&def.document)
            .bind(&def.hash)
            .bind(&def.source)
            .bind(&def.applied_by)
            .bind(def.applied_ms)
            .execute(&mut **tx)
            .await?;
        }
        DefinitionWrite::Adopt { name, source } => {
            sqlx::query("UPDATE definitions SET source = $1 WHERE name = $2")
                .bind(source)
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        DefinitionWrite::Remove {
            name,
            kind,
            action,
            source,
            applied_by,
            applied_ms,
        } => {
            sqlx::query("DELETE FROM definitions WHERE name = $1")
                .bind(name)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO definition_revisions (name, revision, kind, action, source, applied_by, applied_ms) \
                 SELECT $1, COALESCE(MAX(revision), 0) + 1, $2, $3, $4, $5, $6 FROM definition_revisions WHERE name = $1",
            )
            .bind(name)
            .bind(kind.as_str())
            .bind(*action)
            .bind(source)
            .bind(applied_by)
            .bind(applied_ms)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}
