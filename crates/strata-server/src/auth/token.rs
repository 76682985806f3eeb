//! etcd's simple tokens: `<16 random letters>.<log index>`, assigned when an `Authenticate`
//! entry is applied (so every member knows every token), kept in memory only (a restarted
//! member has none: its clients get "invalid auth token" and authenticate again, as with
//! etcd), each valid for `--auth-token-ttl` after its last use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

/// The random part's length (etcd's `defaultSimpleTokenLength`).
pub const PREFIX_LETTERS: usize = 16;

/// Live tokens at most per member: a client that authenticates in a loop cannot grow the
/// table without bound (about 100 bytes each). When full, the token closest to expiry goes.
pub const TOKENS_MAX: usize = 100_000;

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A new token's random part.
pub fn prefix() -> String {
    let mut rng = rand::rng();
    (0..PREFIX_LETTERS)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// The log index a token was assigned at (the part after the last `.`).
pub fn index_of(token: &str) -> Option<u64> {
    token.rsplit_once('.')?.1.parse().ok()
}

#[derive(Debug)]
struct Entry {
    user: String,
    expires: Instant,
}

/// This member's tokens.
#[derive(Debug)]
pub struct Tokens {
    ttl: Duration,
    map: Mutex<HashMap<String, Entry>>,
}

impl Tokens {
    /// No tokens; each will live `ttl` past its last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records `token` for `user`.
    pub fn assign(&self, token: String, user: &str) {
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= TOKENS_MAX {
            map.retain(|_, e| e.expires > now);
        }
        if map.len() >= TOKENS_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            token,
            Entry {
                user: user.to_owned(),
                expires: now + self.ttl,
            },
        );
    }

    /// The user of a live `token`, whose life starts over (etcd's TTL reset on use).
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let entry = map.get_mut(token)?;
        if entry.expires <= now {
            map.remove(token);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.user.clone())
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&self, user: &str) {
        self.map.lock().retain(|_, e| e.user != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.map.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_its_ttl_past_its_last_use_and_dies_with_its_user() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let t = format!("{}.42", prefix());
        assert_eq!(index_of(&t), Some(42));
        assert_eq!(t.len(), PREFIX_LETTERS + 3);
        tokens.assign(t.clone(), "alice");
        assert_eq!(tokens.user(&t).as_deref(), Some("alice"));
        assert_eq!(tokens.user("nope.1"), None);
        tokens.invalidate_user("alice");
        assert_eq!(tokens.user(&t), None);
        let expired = Tokens::new(Duration::ZERO);
        expired.assign(t.clone(), "bob");
        assert_eq!(expired.user(&t), None);
    }
}
