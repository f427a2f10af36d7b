//! Password and API-key hashing (argon2id) on a small pool of threads of its own.
//!
//! One argon2id computation holds about 19 MiB for tens of milliseconds. Run on the async
//! runtime's blocking threads, a burst of sign-ins or of agents starting at once computes hundreds
//! at the same time: memory grows by gigabytes (and the allocator keeps much of it), and requests
//! wait behind them. Here at most [`threads`] computations run at once, on threads that do nothing
//! else; the rest wait their turn without holding memory.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::oneshot;

/// Hashing failed: an infrastructure failure, never a verdict on the secret.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    /// A stored hash that is not a PHC string: the stored data is damaged.
    #[error("a stored hash cannot be read: {0}")]
    StoredHash(String),
    #[error("a hashing thread panicked")]
    Panicked,
}

type Job = Box<dyn FnOnce() + Send>;

/// How many hashes may be computed at once: the machine's cores, at most four.
pub fn threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

fn pool() -> &'static Mutex<Sender<Job>> {
    static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads() {
            let queue: Arc<Mutex<Receiver<Job>>> = queue.clone();
            thread::Builder::new()
                .name(format!("devart-hash-{i}"))
                .spawn(move || loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("starting a hashing thread");
        }
        Mutex::new(jobs)
    })
}

/// Runs `work` on the hashing threads and waits for it without blocking the runtime.
async fn run<T: Send + 'static>(work: impl FnOnce() -> Result<T, HashError> + Send + 'static) -> Result<T, HashError> {
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(Err(HashError::Panicked));
        let _ = reply.send(outcome);
    });
    pool().lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|_| HashError::Panicked)?;
    answer.await.map_err(|_| HashError::Panicked)?
}

/// An argon2id PHC string for `secret`, with a fresh salt.
pub async fn hash(secret: String) -> Result<String, HashError> {
    run(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Argon2(e.to_string()))
    })
    .await
}

/// Whether `secret` matches the PHC string `phc`.
pub async fn verify(secret: String, phc: String) -> Result<bool, HashError> {
    run(move || {
        let parsed = PasswordHash::new(&phc).map_err(|e| HashError::StoredHash(e.to_string()))?;
        match Argon2::default().verify_password(secret.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(HashError::Argon2(e.to_string())),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_a_damaged_hash_is_an_error_not_a_mismatch() {
        let phc = hash("s3cret".into()).await.unwrap();
        assert!(verify("s3cret".into(), phc.clone()).await.unwrap());
        assert!(!verify("other".into(), phc).await.unwrap());
        assert!(matches!(verify("s3cret".into(), "not a hash".into()).await, Err(HashError::StoredHash(_))));
    }

    #[tokio::test]
    async fn no_more_than_the_pool_s_threads_hash_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static MOST: AtomicUsize = AtomicUsize::new(0);
        let jobs = (0..threads() * 4).map(|_| {
            run(|| {
                let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                MOST.fetch_max(now, Ordering::SeqCst);
                thread::sleep(std::time::Duration::from_millis(20));
                RUNNING.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        });
        futures::future::try_join_all(jobs).await.unwrap();
        assert!(MOST.load(Ordering::SeqCst) <= threads(), "{} at once", MOST.load(Ordering::SeqCst));
        let panicked = run::<()>(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(HashError::Panicked)));
        assert!(run(|| Ok(1)).await.is_ok(), "a panic does not take a thread away");
    }
}
