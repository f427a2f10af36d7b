//! Agents' API keys and the commands that change them.
//!
//! A key reads `dva_<key id>_<secret>`. The key id is public (it is in the events and the read
//! model) and finds the key's row directly; the secret is stored only as an argon2id hash, and is
//! shown once, when the key is made.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use devart_domain::agent::{Agent, AgentCommand, AgentEvent, AgentName, AgentState};
use devart_domain::task::Capabilities;
use devart_domain::Event;
use futures::FutureExt;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::{Alongside, CommandError};
use crate::hashing;
use crate::store::{Beside, CommandContext, Folded, StoreError, Stored};

const PREFIX: &str = "dva_";

/// An agent's key row is written beside its events by the command that changes it (see
/// `write_key`), not from its state, so [`Stored::beside`] keeps none.
impl Stored for Agent {
    fn wrap(event: AgentEvent) -> Event {
        Event::Agent(event)
    }
    fn unwrap(event: &Event) -> Option<&AgentEvent> {
        match event {
            Event::Agent(e) => Some(e),
            _ => None,
        }
    }

    /// The agent's daily spending cap, or none.
    fn beside(state: &AgentState, _now: DateTime<Utc>) -> Option<Beside> {
        Some(crate::spending::agent_cap(state.id, state.daily_spending_cap))
    }
}

/// A full API key. Printed nowhere: its `Debug` hides it; `expose` is for the one response that
/// hands it to the agent's owner.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

struct NewKey {
    key_id: String,
    key: ApiKey,
    secret_hash: String,
}

/// Makes a key and hashes its secret (argon2id, on the hashing pool).
async fn new_key() -> Result<NewKey, StoreError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key_id = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let key = ApiKey(format!("{PREFIX}{key_id}_{secret}"));
    let secret_hash = hashing::hash(secret).await?;
    Ok(NewKey { key_id, key, secret_hash })
}

/// Splits a presented key into its id and secret.
fn split(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    (key_id.len() == 16 && key_id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty() && secret.len() <= 128)
        .then_some((key_id, secret))
}

/// Writes an agent's key row (`$1` key id, `$2` secret hash, `$3` agent id, `$4` capabilities)
/// beside its events.
fn write_key(
    sql: &'static str,
    key_id: String,
    secret_hash: String,
    agent_id: Uuid,
    capabilities: Vec<String>,
) -> Box<Alongside<Agent>> {
    Box::new(move |conn, _| {
        let (key_id, secret_hash, capabilities) = (key_id.clone(), secret_hash.clone(), capabilities.clone());
        async move {
            sqlx::query(sql)
                .bind(key_id)
                .bind(secret_hash)
                .bind(agent_id)
                .bind(capabilities)
                .execute(conn)
                .await
                .map(drop)
        }
        .boxed()
    })
}

/// The agents' commands: `commands.agents()`.
#[derive(Clone, Copy)]
pub struct Agents<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The agents' commands: registering them, rotating their keys, activating them.
    pub fn agents(&self) -> Agents<'_> {
        Agents { commands: self }
    }
}

impl Agents<'_> {
    /// Registers an agent with a new key; the key is returned once and stored only hashed.
    pub async fn register(
        self,
        name: AgentName,
        capabilities: Capabilities,
        context: &CommandContext,
    ) -> Result<(Folded<AgentState>, ApiKey), CommandError> {
        let id = Uuid::now_v7();
        let NewKey { key_id, key, secret_hash } = new_key().await?;
        let alongside = write_key(
            "insert into agent_keys (key_id, secret_hash, agent_id, capabilities) values ($1, $2, $3, $4)",
            key_id.clone(),
            secret_hash,
            id,
            capabilities.to_strings(),
        );
        let command = AgentCommand::Register { id, name, capabilities, key_id };
        let folded = self.commands.execute_with::<Agent>(id, command, context, None, Some(&*alongside)).await?;
        Ok((folded, key))
    }

    /// Replaces an agent's key; the old one stops working at once.
    pub async fn rotate_key(
        self,
        id: Uuid,
        context: &CommandContext,
    ) -> Result<(Folded<AgentState>, ApiKey), CommandError> {
        let NewKey { key_id, key, secret_hash } = new_key().await?;
        let command = AgentCommand::RotateKey { key_id: key_id.clone() };
        let alongside = write_key(
            "update agent_keys set key_id = $1, secret_hash = $2, created_at = now() where agent_id = $3 \
             and $4::text[] is not null",
            key_id.clone(),
            secret_hash,
            id,
            Vec::new(),
        );
        let folded = self.commands.execute_with::<Agent>(id, command, context, None, Some(&*alongside)).await?;
        Ok((folded, key))
    }

    /// Activates or deactivates an agent; a deactivated agent's key is refused from now on, and
    /// what it holds goes back to the queue. Activating a quarantined agent lifts the quarantine.
    pub async fn set_active(
        self,
        id: Uuid,
        active: bool,
        context: &CommandContext,
    ) -> Result<Folded<AgentState>, CommandError> {
        self.switch(id, active, AgentCommand::SetActive(active), "agent deactivated", context).await
    }

    /// Deactivates an agent that failed `failures` attempts in a row, as [`Agents::set_active`]
    /// does, with the reason kept (`AgentQuarantined`); nothing if it is inactive already.
    pub async fn quarantine(
        self,
        id: Uuid,
        failures: u32,
        reason: String,
        context: &CommandContext,
    ) -> Result<Folded<AgentState>, CommandError> {
        self.switch(id, false, AgentCommand::Quarantine { failures, reason }, "agent quarantined", context).await
    }

    async fn switch(
        self,
        id: Uuid,
        active: bool,
        command: AgentCommand,
        released_because: &str,
        context: &CommandContext,
    ) -> Result<Folded<AgentState>, CommandError> {
        let alongside: Box<Alongside<Agent>> = Box::new(move |conn, _| {
            async move {
                sqlx::query("update agent_keys set active = $1 where agent_id = $2")
                    .bind(active)
                    .bind(id)
                    .execute(conn)
                    .await
                    .map(drop)
            }
            .boxed()
        });
        let folded = self.commands.execute_with::<Agent>(id, command, context, None, Some(&*alongside)).await?;
        if !active {
            // Claims check the key row under a share lock, so none can still be on its way: what
            // the agent holds now is all it will hold.
            let released = self.commands.tasks().release_of(id, released_because, context).await?;
            if released > 0 {
                tracing::info!(agent = %id, released, "deactivated agent's tasks queued again");
            }
        }
        Ok(folded)
    }
}

/// The agent a key belongs to, as its key row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAgent {
    pub id: Uuid,
    /// What it registered to be able to do; its claims may narrow it, never widen it.
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid API key")]
    Invalid,
    #[error("the agent is deactivated")]
    Inactive,
    /// The key could not be checked (the database or hashing failed; the cause is logged): no
    /// verdict, try again.
    #[error("the key cannot be checked now; try again")]
    Unavailable,
}

/// What a presented key is before anything is read: the first, cheap step of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Not a key at all.
    Malformed,
    /// This very secret was verified moments ago for this agent: checking it again costs one read
    /// of the key's row and no hashing.
    Remembered { key_id: String, agent: Uuid },
    /// Not verified lately: checking it costs a read and an argon2 verification.
    Cold { key_id: String },
}

impl Recall {
    /// The key's public id, when the key is well formed.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Recall::Malformed => None,
            Recall::Remembered { key_id, .. } | Recall::Cold { key_id } => Some(key_id),
        }
    }
}

/// A secret verified lately: a digest of the secret and of the hash it was verified against.
struct Verified {
    secret: [u8; 32],
    hash: [u8; 32],
    agent: Uuid,
    at: Instant,
}

/// Verifies presented keys. A verified secret is remembered (as a SHA-256 digest) for a short
/// while, so argon2 runs once per key and minute rather than once per request; the key's row is
/// read on every request, so rotation and deactivation take effect at once.
///
/// A verification is two steps, so that a caller can decide what to allow in between, before any
/// work: [`recall`](KeyVerifier::recall) (no IO), then [`verify`](KeyVerifier::verify).
pub struct KeyVerifier {
    pool: PgPool,
    verified: Mutex<HashMap<String, Verified>>,
}

/// How long a verified secret is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// At most this many remembered keys; past it the memory is cleared.
const VERIFIED_MAX: usize = 10_000;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl KeyVerifier {
    pub fn new(pool: PgPool) -> KeyVerifier {
        KeyVerifier { pool, verified: Mutex::new(HashMap::new()) }
    }

    /// What `presented` is, from memory alone.
    pub fn recall(&self, presented: &str) -> Recall {
        let Some((key_id, secret)) = split(presented) else { return Recall::Malformed };
        let verified = self.verified.lock().expect("not poisoned");
        match verified.get(key_id) {
            Some(v) if v.secret == digest(secret.as_bytes()) && v.at.elapsed() < VERIFIED_TTL => {
                Recall::Remembered { key_id: key_id.to_owned(), agent: v.agent }
            }
            _ => Recall::Cold { key_id: key_id.to_owned() },
        }
    }

    /// The agent a presented key belongs to. `recall` is what [`recall`](KeyVerifier::recall) said
    /// of it.
    pub async fn verify(&self, presented: &str, recall: &Recall) -> Result<VerifiedAgent, KeyError> {
        let (key_id, secret) = split(presented).ok_or(KeyError::Invalid)?;
        let row: Option<(Uuid, String, bool, Vec<String>)> =
            sqlx::query_as("select agent_id, secret_hash, active, capabilities from agent_keys where key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|error| {
                    tracing::error!(%error, "reading an agent key");
                    KeyError::Unavailable
                })?;
        let (agent_id, secret_hash, active, capabilities) = row.ok_or(KeyError::Invalid)?;
        let hash_digest = digest(secret_hash.as_bytes());
        let remembered = matches!(recall, Recall::Remembered { key_id: k, agent } if k == key_id && *agent == agent_id)
            && self.verified.lock().expect("not poisoned").get(key_id).is_some_and(|v| {
                v.hash == hash_digest && v.secret == digest(secret.as_bytes()) && v.at.elapsed() < VERIFIED_TTL
            });
        if !remembered {
            let ok = hashing::verify(secret.to_owned(), secret_hash).await.map_err(|error| {
                tracing::error!(%error, key_id, "verifying an agent key");
                KeyError::Unavailable
            })?;
            if !ok {
                return Err(KeyError::Invalid);
            }
            let mut verified = self.verified.lock().expect("not poisoned");
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            let entry =
                Verified { secret: digest(secret.as_bytes()), hash: hash_digest, agent: agent_id, at: Instant::now() };
            verified.insert(key_id.to_owned(), entry);
        }
        if active {
            Ok(VerifiedAgent { id: agent_id, capabilities })
        } else {
            Err(KeyError::Inactive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_id_and_secret() {
        assert_eq!(split("dva_0123456789abcdef_secret"), Some(("0123456789abcdef", "secret")));
        assert_eq!(split("dva_0123456789abcdef_"), None);
        assert_eq!(split("dva_short_secret"), None);
        assert_eq!(split("Bearer dva_0123456789abcdef_secret"), None);
        assert_eq!(format!("{:?}", ApiKey("dva_x_y".into())), "ApiKey(…)");
    }
}
