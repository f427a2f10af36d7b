//! What the gateway lets one caller do, decided before any work: request and mutation rates per
//! identity and per client address, failed authentications per address and per account, CORS,
//! introspection, time limits.
//!
//! The order matters more than the numbers. A request is counted against its client address
//! first; a bearer token is then identified as cheaply as it can be (a token's signature, or a
//! key secret remembered from an earlier verification) and counted against that identity before
//! its account or key row is read. A key that must be hashed, or a token that fails, is only
//! checked while the address (and the key) has failures to spare; past them the answer is 429,
//! whatever was wrong, and nothing is read or written.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// The gateway's protective settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Requests one identity (a person or an agent) may make per second, sustained; bursts of twice
    /// that are allowed. Counted before the identity's account or key is read. Beyond it, 429 with
    /// Retry-After. 0 turns the limit off.
    #[arg(long, env = "DEVART_REQUESTS_PER_SECOND", default_value_t = 200, global = true)]
    pub requests_per_second: u32,
    /// Mutations one identity may make per second, sustained; bursts of twice that. 0: no limit.
    #[arg(long, env = "DEVART_MUTATIONS_PER_SECOND", default_value_t = 300, global = true)]
    pub mutations_per_second: u32,
    /// Requests one client address may make per second, whoever makes them; bursts of twice that.
    /// The address is the connection's peer. 0: no limit.
    #[arg(long, env = "DEVART_REQUESTS_PER_ADDRESS", default_value_t = 2_000, global = true)]
    pub requests_per_address: u32,
    /// Refused tokens, keys and sign-ins one client address may present per minute (all at once,
    /// if it likes); past them, 429 until the minute's allowance comes back. 0: no limit.
    #[arg(long, env = "DEVART_AUTH_FAILURES_PER_MINUTE", default_value_t = 30, global = true)]
    pub auth_failures_per_minute: u32,
    /// Failed sign-ins per person's account, and wrong secrets per agent key, per minute, from
    /// anywhere; past them, 429. A key whose secret was verified lately is not held back. 0: no
    /// limit.
    #[arg(long, env = "DEVART_ACCOUNT_FAILURES_PER_MINUTE", default_value_t = 10, global = true)]
    pub account_failures_per_minute: u32,
    /// Origins browsers may call the API from (comma-separated, e.g. https://ops.example.com); none
    /// by default.
    #[arg(long, env = "DEVART_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,
    /// Whether the schema may be introspected (and GraphiQL served).
    #[arg(long, env = "DEVART_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,
    /// How long a request over HTTP may take before it is answered with 408, in seconds.
    #[arg(long, env = "DEVART_REQUEST_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub request_timeout_secs: u64,
    /// GraphQL over WebSocket: initialisation timeout, keep-alive and caps.
    #[command(flatten)]
    pub websocket: crate::ws::WebSocketLimits,
    /// Where the dashboard is served from.
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: 200,
            mutations_per_second: 300,
            requests_per_address: 2_000,
            auth_failures_per_minute: 30,
            account_failures_per_minute: 10,
            cors_origins: Vec::new(),
            introspection: true,
            request_timeout_secs: 30,
            websocket: crate::ws::WebSocketLimits::default(),
            dashboard: crate::dashboard::DashboardSettings::default(),
        }
    }
}

/// Which limit refused a request: the label of its counter on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Address,
    Identity,
    Mutations,
    AuthFailures,
    AccountFailures,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Address => "address",
            Limit::Identity => "identity",
            Limit::Mutations => "mutations",
            Limit::AuthFailures => "auth_failures",
            Limit::AccountFailures => "account_failures",
        }
    }
}

/// A request held back: by which limit, and how long until it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: Limit,
    pub wait: Duration,
}

/// How many checks pass between two sweeps of idle keys out of a limiter's memory.
const SWEEP_EVERY: u64 = 10_000;

/// A rate per key (GCRA, `governor`), or none.
struct Rate<K: Hash + Eq + Clone> {
    limit: Limit,
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Rate<K> {
    fn new(limit: Limit, quota: Option<Quota>) -> Rate<K> {
        Rate { limit, limiter: quota.map(DefaultKeyedRateLimiter::keyed), checks: AtomicU64::new(0) }
    }

    fn check(&self, key: &K) -> Result<(), Refused> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| Refused { limit: self.limit, wait: not_until.wait_time_from(limiter.clock().now()) })
    }
}

/// Failures per key: each failure takes from an allowance; once it is spent, the key is held back
/// until the allowance has room again, and [`blocked`](Strikes::blocked) says so before any work.
struct Strikes<K: Hash + Eq + Clone> {
    rate: Rate<K>,
    until: Mutex<HashMap<K, Instant>>,
}

/// At most this many held-back keys are remembered; past it, the ones whose time is up go.
const HELD_MAX: usize = 100_000;

impl<K: Hash + Eq + Clone> Strikes<K> {
    fn new(limit: Limit, quota: Option<Quota>) -> Strikes<K> {
        Strikes { rate: Rate::new(limit, quota), until: Mutex::new(HashMap::new()) }
    }

    fn blocked(&self, key: &K) -> Result<(), Refused> {
        let until = self.until.lock().expect("not poisoned");
        match until.get(key) {
            Some(at) if *at > Instant::now() => Err(Refused { limit: self.rate.limit, wait: *at - Instant::now() }),
            _ => Ok(()),
        }
    }

    /// Counts a failure; `Err` once the allowance is spent (the key is held back from now on).
    fn strike(&self, key: &K) -> Result<(), Refused> {
        self.rate.check(key)
    }

    fn hold(&self, key: &K, refused: Refused) {
        let mut until = self.until.lock().expect("not poisoned");
        if until.len() >= HELD_MAX {
            let now = Instant::now();
            until.retain(|_, at| *at > now);
        }
        until.insert(key.clone(), Instant::now() + refused.wait);
    }
}

fn per_second(rate: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"))))
}

fn per_minute(count: u32) -> Option<Quota> {
    NonZeroU32::new(count).map(Quota::per_minute)
}

/// The limiters in force in one gateway process.
pub struct Guards {
    addresses: Rate<IpAddr>,
    identities: Rate<String>,
    mutations: Rate<String>,
    address_failures: Strikes<IpAddr>,
    account_failures: Strikes<String>,
}

impl Guards {
    pub fn new(limits: &Limits) -> Guards {
        Guards {
            addresses: Rate::new(Limit::Address, per_second(limits.requests_per_address)),
            identities: Rate::new(Limit::Identity, per_second(limits.requests_per_second)),
            mutations: Rate::new(Limit::Mutations, per_second(limits.mutations_per_second)),
            address_failures: Strikes::new(Limit::AuthFailures, per_minute(limits.auth_failures_per_minute)),
            account_failures: Strikes::new(Limit::AccountFailures, per_minute(limits.account_failures_per_minute)),
        }
    }

    /// Any request, from `address`.
    pub fn request(&self, address: IpAddr) -> Result<(), Refused> {
        self.addresses.check(&address)
    }

    /// A request by an identified caller (`identity`: a person's subject or an agent's id).
    pub fn identity(&self, identity: &str) -> Result<(), Refused> {
        self.identities.check(&identity.to_owned())
    }

    /// A mutation by `identity`.
    pub fn mutation(&self, identity: &str) -> Result<(), Refused> {
        self.mutations.check(&identity.to_owned())
    }

    /// Whether credentials from `address` for `account` (a key's id or a person's address, when
    /// known) may still be checked at all.
    pub fn may_try(&self, address: IpAddr, account: Option<&str>) -> Result<(), Refused> {
        self.address_failures.blocked(&address)?;
        match account {
            Some(account) => self.account_failures.blocked(&account.to_owned()),
            None => Ok(()),
        }
    }

    /// Counts refused credentials from `address` for `account`; `Err` when that was one too many,
    /// and both are held back from now on. The refusal is then answered as 429, and not logged.
    pub fn failed(&self, address: IpAddr, account: Option<&str>) -> Result<(), Refused> {
        let mut outcome = Ok(());
        if let Err(refused) = self.address_failures.strike(&address) {
            self.address_failures.hold(&address, refused);
            outcome = Err(refused);
        }
        if let Some(account) = account {
            let account = account.to_owned();
            if let Err(refused) = self.account_failures.strike(&account) {
                self.account_failures.hold(&account, refused);
                outcome = outcome.and(Err(refused));
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, failures: u32) -> Limits {
        Limits {
            requests_per_second: per_second,
            mutations_per_second: per_second,
            requests_per_address: per_second,
            auth_failures_per_minute: failures,
            account_failures_per_minute: failures,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_identity() {
        let guards = Guards::new(&limits(10, 5));
        let passed = (0..100).filter(|_| guards.identity("ada").is_ok()).count();
        assert_eq!(passed, 20, "a burst of twice the rate");
        let refused = guards.identity("ada").unwrap_err();
        assert_eq!(refused.limit, Limit::Identity);
        assert!(refused.wait <= Duration::from_millis(100), "{refused:?}");
        assert!(guards.identity("bob").is_ok(), "others are not affected");
        assert!(Guards::new(&limits(0, 0)).identity("ada").is_ok(), "0 turns it off");
    }

    #[test]
    fn failures_spend_an_allowance_and_then_hold_back_the_address_and_the_account() {
        let guards = Guards::new(&limits(10, 3));
        let (here, there) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..3 {
            assert!(guards.may_try(here, Some("key a")).is_ok());
            assert!(guards.failed(here, Some("key a")).is_ok());
        }
        assert_eq!(guards.failed(here, Some("key a")).unwrap_err().limit, Limit::AuthFailures);
        assert!(guards.may_try(here, None).is_err(), "the address is held back");
        assert_eq!(guards.may_try(there, Some("key a")).unwrap_err().limit, Limit::AccountFailures);
        assert!(guards.may_try(there, Some("key b")).is_ok(), "another account from elsewhere may try");
        let wait = guards.may_try(here, None).unwrap_err().wait;
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20), "{wait:?}");
    }
}
