//! API keys and roles. A key is `nxk_<id>_<secret>`: the id finds the row,
//! the secret (192 random bits) is checked against its stored SHA-256 in
//! constant time. The secret is shown once, when the key is made.

use sha2::{Digest, Sha256};

const PREFIX: &str = "nxk_";

/// What a user may do (SPEC section 7): each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Read workflows, runs, events and files.
    Reader,
    /// Also write files, trigger, pause and resume.
    Writer,
    /// Also apply, delete and manage users.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: expected admin, writer or reader"
            )),
        }
    }
}

/// A freshly made key: the full text (shown once) and what is stored.
pub struct NewKey {
    pub id: String,
    pub text: String,
    pub secret_hash: String,
}

/// Makes a key from the operating system's random source.
pub fn new_key() -> Result<NewKey, String> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 24];
    getrandom::fill(&mut id).map_err(|e| format!("no random source: {e}"))?;
    getrandom::fill(&mut secret).map_err(|e| format!("no random source: {e}"))?;
    let id = hex(&id);
    let secret = hex(&secret);
    Ok(NewKey {
        text: format!("{PREFIX}{id}_{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    })
}

/// A session token or CSRF token: 256 random bits, in hex.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    Ok(hex(&bytes))
}

/// `a == b` in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits a presented key into its id and secret; `None` when it is not
/// shaped like a key.
pub fn parse_key(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexy(id, 16) && hexy(secret, 48)).then_some((id, secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in time independent of
/// where they differ.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    same(&hash_secret(secret), stored_hash)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_matches_only_its_own_hash() {
        let key = new_key().unwrap();
        let (id, secret) = parse_key(&key.text).unwrap();
        assert_eq!(id, key.id);
        assert!(secret_matches(secret, &key.secret_hash));
        let other = new_key().unwrap();
        assert!(!secret_matches(secret, &other.secret_hash));
        assert_ne!(key.text, other.text);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for text in [
            "",
            "nxk_",
            "nxk__",
            "Bearer nxk_x_y",
            "nxk_0123456789abcdef",
            "nxk_0123456789abcdef_short",
            "nxk_0123456789abcdeg_000000000000000000000000000000000000000000000000",
        ] {
            assert!(parse_key(text).is_none(), "{text}");
        }
    }
}
