//! argon2id verification on a fixed set of long-lived threads, behind a bounded queue.
//!
//! SECURITY:
//! - Exactly `threads` verifications run at once, each on its own thread that lives as
//!   long as the server. Each thread keeps one argon2 working memory (the largest `m`
//!   it has met, bounded by the keys file's parameter limits) and reuses it, so the
//!   process's memory is `threads × m` however many failed logins arrive: nothing is
//!   allocated per verification, and no short-lived thread leaves an allocator arena
//!   behind (issue 16: RSS grew by 400 MB under a slow stream of wrong secrets when
//!   argon2 ran on tokio's blocking pool).
//! - At most `max_queued` more may wait for a thread. Beyond that a request is refused at
//!   once (`Busy`, a 429 for the client) and costs no hashing, so a flood cannot build a
//!   queue that a valid key then waits behind.
//! - A verification, once admitted, runs to the end even if its request goes away (a
//!   client that resets the stream); its queue place is held until then, and what its
//!   outcome means (refund the address's failure, cache the verified key) is done by the
//!   `settle` callback on the argon2 thread, so cancelling cannot skip it.
//! - The secret is wiped after hashing; the computed output is compared with the stored
//!   one in constant time (`password_hash::Output`'s `PartialEq`).
//! - Threads are started on first use, which is after the sandbox lock-down (the process
//!   is single-threaded until then) and inherits it.

use argon2::password_hash::{Output, PasswordHash, PasswordHashString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroize;

/// Why a verification did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every thread is busy and the queue is full.
    Busy,
    /// A verifier thread could not be started or went away.
    Internal,
}

/// What to do with a verification's outcome, whoever is still waiting for it.
pub type Settle = Box<dyn FnOnce(bool) + Send>;

struct Job {
    hash: PasswordHashString,
    secret: Vec<u8>,
    settle: Settle,
    reply: oneshot::Sender<bool>,
    /// The job's place (running or queued), released when it is done.
    _admitted: OwnedSemaphorePermit,
}

pub struct Argon2Pool {
    threads: usize,
    /// Permits for running plus queued verifications.
    admitted: Arc<Semaphore>,
    /// Started on first use (after lock-down).
    sender: OnceLock<Result<SyncSender<Job>, String>>,
    runs: AtomicU64,
}

impl Argon2Pool {
    pub fn new(threads: u32, max_queued: u32) -> Self {
        let threads = threads.max(1) as usize;
        Self {
            threads,
            admitted: Arc::new(Semaphore::new(threads + max_queued as usize)),
            sender: OnceLock::new(),
            runs: AtomicU64::new(0),
        }
    }

    /// Verifications run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Check `secret` against `hash`; `settle` gets the outcome on the argon2 thread, even
    /// if the caller stopped waiting. `Busy` at once (and `settle` never called) when the
    /// queue is full.
    pub async fn verify(
        &self,
        hash: PasswordHashString,
        secret: Vec<u8>,
        settle: Settle,
    ) -> Result<bool, PoolError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Busy)?;
        let sender = self
            .sender
            .get_or_init(|| start(self.threads))
            .as_ref()
            .map_err(|e| {
                tracing::error!(error = %e, "argon2 verifier threads could not start");
                PoolError::Internal
            })?;
        let (reply, answer) = oneshot::channel();
        self.runs.fetch_add(1, Ordering::Relaxed);
        // Never blocks: the channel holds as many jobs as there are permits.
        sender
            .try_send(Job {
                hash,
                secret,
                settle,
                reply,
                _admitted: admitted,
            })
            .map_err(|_| PoolError::Internal)?;
        answer.await.map_err(|_| PoolError::Internal)
    }
}

fn start(threads: usize) -> Result<SyncSender<Job>, String> {
    // Room for every admitted job (threads + queue), so `try_send` never finds it full.
    let (tx, rx) = sync_channel::<Job>(4096);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || worker(&rx))
            .map_err(|e| format!("cannot start argon2 thread {i}: {e}"))?;
    }
    Ok(tx)
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    // SECURITY: one working memory per thread, grown to the largest `m` met and reused.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return, // the pool is gone
            }
        };
        let Job {
            hash,
            mut secret,
            settle,
            reply,
            _admitted,
        } = job;
        let ok = verify_with(&hash.password_hash(), &secret, &mut memory);
        secret.zeroize();
        settle(ok);
        let _ = reply.send(ok);
    }
}

/// Recompute `hash` for `secret` in `memory` and compare in constant time. Any hash this
/// cannot read (never the case for the keys file, which is checked at load) is `false`.
pub fn verify_with(hash: &PasswordHash<'_>, secret: &[u8], memory: &mut Vec<Block>) -> bool {
    let (Ok(params), Ok(algorithm), Some(expected), Some(salt)) = (
        Params::try_from(hash),
        Algorithm::try_from(hash.algorithm),
        hash.hash,
        hash.salt,
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let Some(work) = memory.get_mut(..blocks) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(secret, salt, &mut *out, work)
        .ok()
        .and_then(|()| Output::new(out).ok());
    // SECURITY: constant-time comparison (Output's PartialEq).
    computed.is_some_and(|c| c == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_secret;

    fn cheap(secret: &str, m: u32) -> PasswordHashString {
        let h = hash_secret(secret.as_bytes(), Params::new(m, 1, 1, None).unwrap()).unwrap();
        PasswordHashString::new(&h).unwrap()
    }

    #[test]
    fn agrees_with_the_argon2_crate_and_reuses_one_memory() {
        let mut memory = Vec::new();
        let small = cheap("right", 7 * 1024);
        let big = cheap("right", 9 * 1024);
        assert!(verify_with(&small.password_hash(), b"right", &mut memory));
        assert_eq!(memory.len(), 7 * 1024);
        assert!(!verify_with(&small.password_hash(), b"wrong", &mut memory));
        assert!(verify_with(&big.password_hash(), b"right", &mut memory));
        assert_eq!(memory.len(), 9 * 1024, "grown to the largest m");
        // A smaller hash after a bigger one reuses the same memory (no shrink, no grow).
        assert!(verify_with(&small.password_hash(), b"right", &mut memory));
        assert_eq!(memory.len(), 9 * 1024);
        // The argon2 crate's own verifier agrees on both.
        use argon2::PasswordVerifier;
        assert!(Argon2::default()
            .verify_password(b"right", &big.password_hash())
            .is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_without_hashing() {
        let pool = Arc::new(Argon2Pool::new(1, 1));
        let h = cheap("right", 7 * 1024);
        // Hold the only thread and the only queue place with two slow jobs at once.
        let slow = Params::new(64 * 1024, 3, 1, None).unwrap();
        let slow = PasswordHashString::new(&hash_secret(b"x", slow).unwrap()).unwrap();
        let a = tokio::spawn({
            let (p, h) = (pool.clone(), slow.clone());
            async move { p.verify(h, b"x".to_vec(), Box::new(|_| {})).await }
        });
        let b = tokio::spawn({
            let (p, h) = (pool.clone(), slow.clone());
            async move { p.verify(h, b"x".to_vec(), Box::new(|_| {})).await }
        });
        // Wait until both are admitted (the semaphore is empty), then a third is Busy.
        while pool.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.verify(h.clone(), b"right".to_vec(), Box::new(|_| {}))
                .await,
            Err(PoolError::Busy)
        );
        assert_eq!(pool.runs(), 2, "the refused one did not hash");
        assert_eq!(a.await.unwrap(), Ok(true));
        assert_eq!(b.await.unwrap(), Ok(true));
        // A caller that stops waiting still has its outcome settled.
        let (tx, rx) = std::sync::mpsc::channel();
        let gone = pool.verify(
            h.clone(),
            b"right".to_vec(),
            Box::new(move |ok| tx.send(ok).unwrap()),
        );
        drop(tokio::time::timeout(std::time::Duration::ZERO, gone).await);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)),
            Ok(true)
        );
        assert_eq!(
            pool.verify(h, b"right".to_vec(), Box::new(|_| {})).await,
            Ok(true)
        );
    }
}
