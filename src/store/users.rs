//! Users and API keys.

use sqlx::Row;

use super::{Store, StoreError};

/// A user as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub name: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub role: String,
    pub created_ms: i64,
}

/// The owner of a key, as looked up to authenticate a request.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub user: String,
    pub role: String,
    pub secret_hash: String,
    pub revoked: bool,
    pub last_used_ms: Option<i64>,
}

impl Store {
    /// Adds a user; `Ok(false)` when the name is taken.
    pub async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (name, display_name, email, role, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&user.name)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(&user.role)
        .bind(user.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, display_name, email, role, created_ms FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| User {
                name: r.get("name"),
                display_name: r.get("display_name"),
                email: r.get("email"),
                role: r.get("role"),
                created_ms: r.get("created_ms"),
            })
            .collect())
    }

    pub async fn create_key(
        &self,
        id: &str,
        user: &str,
        secret_hash: &str,
        description: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_name, secret_hash, description, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user)
        .bind(secret_hash)
        .bind(description)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The key with this id and its user, revoked or not.
    pub async fn key_owner(&self, id: &str) -> Result<Option<KeyOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT k.user_name, u.role, k.secret_hash, k.revoked_ms, k.last_used_ms \
             FROM api_keys k JOIN users u ON u.name = k.user_name WHERE k.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| KeyOwner {
            user: r.get("user_name"),
            role: r.get("role"),
            secret_hash: r.get("secret_hash"),
            revoked: r.get::<Option<i64>, _>("revoked_ms").is_some(),
            last_used_ms: r.get("last_used_ms"),
        }))
    }

    /// Records a dashboard session (its token's hash) for key `key_id`.
    pub async fn create_session(
        &self,
        token_hash: &str,
        key_id: &str,
        csrf: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, key_id, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(key_id)
        .bind(csrf)
        .bind(created_ms)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session whose token hashes to `token_hash`, while it lasts:
    /// its key's id, its CSRF token, its end.
    pub async fn session(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, csrf, expires_ms FROM sessions WHERE token_hash = $1 AND expires_ms > $2",
        )
        .bind(token_hash)
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get("key_id"), r.get("csrf"), r.get("expires_ms"))))
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a key; `Ok(false)` when there is no such key.
    pub async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, $1) WHERE id = $2")
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
