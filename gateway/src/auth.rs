//! Who is calling: JWT bearer tokens for people, with roles; the key that signs them also signs
//! session cookies ([`SigningKey::tag`]).

use std::fmt;

use chrono::Utc;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Runs the work: tasks, agents' activation, budgets, settings.
    Supervisor,
    /// Everything, including people.
    Admin,
}

impl Role {
    pub fn of(role: devart_domain::user::UserRole) -> Role {
        match role {
            devart_domain::user::UserRole::Viewer => Role::Viewer,
            devart_domain::user::UserRole::Supervisor => Role::Supervisor,
            devart_domain::user::UserRole::Admin => Role::Admin,
        }
    }

    pub fn domain(self) -> devart_domain::user::UserRole {
        match self {
            Role::Viewer => devart_domain::user::UserRole::Viewer,
            Role::Supervisor => devart_domain::user::UserRole::Supervisor,
            Role::Admin => devart_domain::user::UserRole::Admin,
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims devart signs and accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// Set in a signed-in user's token: their role and activation are checked on every request.
    /// Tokens made with `devart token` name a subject only and carry their role as signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<uuid::Uuid>,
}

const ISSUER: &str = "devart";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A person's subject, or an agent's id.
    pub subject: String,
    /// Agents read as viewers; what they may change is checked against `agent`.
    pub role: Role,
    /// Set when the caller is an agent, authenticated by its API key.
    pub agent: Option<uuid::Uuid>,
    /// An agent's registered capabilities; empty for people.
    pub capabilities: Vec<String>,
    /// Set when the caller is a signed-in user.
    pub user: Option<uuid::Uuid>,
}

impl Caller {
    pub fn agent(id: uuid::Uuid, capabilities: Vec<String>) -> Caller {
        Caller { subject: id.to_string(), role: Role::Viewer, agent: Some(id), capabilities, user: None }
    }

    pub fn person(subject: impl Into<String>, role: Role) -> Caller {
        Caller { subject: subject.into(), role, agent: None, capabilities: Vec::new(), user: None }
    }

    /// A signed-in user, with the role their account has now.
    pub fn user(id: uuid::Uuid, role: Role) -> Caller {
        Caller { user: Some(id), ..Caller::person(id.to_string(), role) }
    }

    /// The database role this caller's reads run under.
    pub fn database_role(&self) -> &'static str {
        match (self.agent, self.role) {
            (Some(_), _) => "devart_agent",
            (None, Role::Viewer) => "devart_viewer",
            (None, Role::Supervisor) => "devart_supervisor",
            (None, Role::Admin) => "devart_admin",
        }
    }

    /// The actor events record for this caller.
    pub fn actor(&self) -> devart_domain::Actor {
        match self.agent {
            Some(id) => devart_domain::Actor::agent(id.to_string()),
            None => devart_domain::Actor::user(self.subject.clone()),
        }
    }
}

/// The HMAC key tokens are signed with. Never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn new(bytes: Vec<u8>) -> SigningKey {
        assert!(bytes.len() >= 32, "a signing key has at least 32 bytes");
        SigningKey(bytes)
    }

    pub fn issue(&self, subject: &str, role: Role, ttl: chrono::Duration) -> String {
        self.sign(subject, role, ttl, None)
    }

    /// A signed-in user's token.
    pub fn issue_for_user(&self, id: uuid::Uuid, role: Role, ttl: chrono::Duration) -> String {
        self.sign(&id.to_string(), role, ttl, Some(id))
    }

    fn sign(&self, subject: &str, role: Role, ttl: chrono::Duration, uid: Option<uuid::Uuid>) -> String {
        let now = Utc::now().timestamp();
        let claims =
            Claims { sub: subject.to_owned(), role, iat: now, exp: now + ttl.num_seconds(), iss: ISSUER.into(), uid };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.0))
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.0), &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            },
        )?;
        Ok(match data.claims.uid {
            Some(id) => Caller::user(id, data.claims.role),
            None => Caller::person(data.claims.sub, data.claims.role),
        })
    }
}

impl SigningKey {
    /// An HMAC-SHA256 tag of `message` for `purpose`, which keeps tags made for one use from
    /// passing for another (or for a token).
    pub fn tag(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        self.mac(purpose, message).finalize().into_bytes().into()
    }

    /// Whether `tag` is [`SigningKey::tag`] of `message` for `purpose`, compared in constant time.
    pub fn verify_tag(&self, purpose: &str, message: &[u8], tag: &[u8]) -> bool {
        self.mac(purpose, message).verify_slice(tag).is_ok()
    }

    fn mac(&self, purpose: &str, message: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(message);
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("the agent is deactivated")]
    Deactivated,
    #[error("the user is deactivated")]
    UserDeactivated,
    /// A session cookie whose session was signed out of, expired, or is unknown.
    #[error("the session has ended")]
    SessionEnded,
}

/// Extracts the token from an `Authorization: Bearer …` value.
pub fn bearer(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Ok(token.trim())
    } else {
        Err(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_refused() {
        let key = SigningKey::new(vec![7; 32]);
        let token = key.issue("ada", Role::Supervisor, chrono::Duration::hours(1));
        assert_eq!(key.verify(&token).unwrap(), Caller::person("ada", Role::Supervisor));
        let other = SigningKey::new(vec![8; 32]);
        assert_eq!(other.verify(&token), Err(AuthError::Invalid));
        let expired = key.issue("ada", Role::Admin, chrono::Duration::hours(-1));
        assert_eq!(key.verify(&expired), Err(AuthError::Expired));
        assert_eq!(bearer("Bearer abc"), Ok("abc"));
        assert_eq!(bearer("Basic abc"), Err(AuthError::Invalid));
    }

    #[test]
    fn tags_hold_for_their_key_purpose_and_message_only() {
        let key = SigningKey::new(vec![7; 32]);
        let tag = key.tag("session", b"a");
        assert!(key.verify_tag("session", b"a", &tag));
        assert!(!key.verify_tag("session", b"b", &tag));
        assert!(!key.verify_tag("other", b"a", &tag));
        assert!(!SigningKey::new(vec![8; 32]).verify_tag("session", b"a", &tag));
        assert!(!key.verify_tag("session", b"a", &tag[..31]));
    }
}
