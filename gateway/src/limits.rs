//! What the gateway lets one caller do: mutation rate limits, CORS, introspection, time limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The gateway's protective settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Mutations one identity (a person or an agent) may make per second, sustained; bursts of twice
    /// that are allowed. Beyond it, 429 with Retry-After. 0 turns the limit off.
    #[arg(long, env = "DEVART_MUTATIONS_PER_SECOND", default_value_t = 300, global = true)]
    pub mutations_per_second: u32,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mutations_per_second: 300,
            cors_origins: Vec::new(),
            introspection: true,
            request_timeout_secs: 30,
            websocket: crate::ws::WebSocketLimits::default(),
        }
    }
}

/// A token bucket per identity: `rate` tokens a second, holding at most `2 × rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// How many identities are remembered before idle ones (with full buckets) are forgotten.
const IDENTITIES_MAX: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(per_second), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `identity`; when there is none, how long until there is.
    pub fn check(&self, identity: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let capacity = self.rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= IDENTITIES_MAX {
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * self.rate < capacity);
        }
        let (tokens, at) = buckets.entry(identity.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_identity() {
        let limiter = RateLimiter::new(10);
        let passed = (0..100).filter(|_| limiter.check("ada").is_ok()).count();
        assert_eq!(passed, 20, "a burst of twice the rate");
        let wait = limiter.check("ada").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.check("bob").is_ok(), "others are not affected");
        assert!(RateLimiter::new(0).check("ada").is_ok(), "0 turns it off");
    }
}
