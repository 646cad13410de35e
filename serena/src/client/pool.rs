//! A pool of open channels for short calls (a publish, a declare) from many tasks.
//!
//! A channel the server closed (a 404 on a declare, say) is not put back: a replacement is
//! opened in the background by a task the pool owns, so one bad call does not cost the other
//! callers their channel, and nothing outlives the pool.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{Channel, Connection};
use crate::driver::shared::lock;
use crate::error::{Error, Result};

struct PoolInner {
    conn: Connection,
    idle: Mutex<Vec<Channel>>,
    permits: Arc<Semaphore>,
    refills: Mutex<JoinSet<()>>,
}

/// A fixed number of channels shared by many tasks. Cheap to clone.
///
/// ```no_run
/// # async fn demo(conn: &serena::Connection) -> serena::Result<()> {
/// let pool = conn.channel_pool(8).await?;
/// pool.with(async |ch| ch.basic_publish("", "jobs", b"work", Default::default()).await)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChannelPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool")
            .field("idle", &lock(&self.inner.idle).len())
            .finish_non_exhaustive()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        lock(&self.refills).abort_all();
    }
}

impl ChannelPool {
    /// Opens `size` channels on `conn`.
    pub async fn new(conn: &Connection, size: usize) -> Result<ChannelPool> {
        if size == 0 {
            return Err(Error::Config(
                "a channel pool needs at least one channel".into(),
            ));
        }
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            idle.push(conn.channel().await?);
        }
        Ok(ChannelPool {
            inner: Arc::new(PoolInner {
                conn: conn.clone(),
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(size)),
                refills: Mutex::new(JoinSet::new()),
            }),
        })
    }

    /// Number of open channels waiting in the pool.
    pub fn idle(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// Checks a channel out, waiting while all are in use. It goes back when the guard drops.
    pub async fn acquire(&self) -> Result<PooledChannel> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("channel pool"))?;
        loop {
            let next = lock(&self.inner.idle).pop();
            match next {
                Some(ch) if ch.is_open() => {
                    return Ok(PooledChannel {
                        channel: Some(ch),
                        pool: self.inner.clone(),
                        permit: Some(permit),
                    });
                }
                Some(_closed) => continue,
                None => {
                    // Every idle slot is being refilled: open one directly.
                    let ch = self.inner.conn.channel().await?;
                    return Ok(PooledChannel {
                        channel: Some(ch),
                        pool: self.inner.clone(),
                        permit: Some(permit),
                    });
                }
            }
        }
    }

    /// Runs `body` with a pooled channel. Like the other scopes, `body` returns
    /// `Result<T, E>` for any `E: From<serena::Error>`, and so does `with`.
    pub async fn with<T, E: From<Error>>(
        &self,
        body: impl AsyncFnOnce(&Channel) -> Result<T, E>,
    ) -> Result<T, E> {
        let ch = self.acquire().await?;
        body(&ch).await
    }
}

/// A channel checked out of a [`ChannelPool`]; derefs to [`Channel`].
pub struct PooledChannel {
    channel: Option<Channel>,
    pool: Arc<PoolInner>,
    /// Held until the channel is back in the pool (or its replacement is).
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for PooledChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PooledChannel").field(&self.channel).finish()
    }
}

impl Deref for PooledChannel {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        self.channel.as_ref().expect("present until drop")
    }
}

impl Drop for PooledChannel {
    fn drop(&mut self) {
        let Some(ch) = self.channel.take() else {
            return;
        };
        if ch.is_open() {
            lock(&self.pool.idle).push(ch);
            return;
        }
        // The server closed it: replace it in the background. The permit travels with the
        // refill, so the pool never holds more channels than its size.
        let pool = Arc::downgrade(&self.pool);
        let conn = self.pool.conn.clone();
        let permit = self.permit.take();
        let mut refills = lock(&self.pool.refills);
        // A JoinSet keeps a finished task until it is joined: reap those first, so the set
        // holds only running refills (at most one per permit) however long the pool lives.
        while refills.try_join_next().is_some() {}
        refills.spawn(async move {
            match conn.channel().await {
                Ok(fresh) => {
                    if let Some(pool) = pool.upgrade() {
                        lock(&pool.idle).push(fresh);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not replace a pooled channel"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
impl ChannelPool {
    /// Refill tasks the pool still tracks, finished or not.
    fn refills_tracked(&self) -> usize {
        lock(&self.inner.refills).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ConnectionConfig, QueueDeclareOptions};

    /// Every server-closed channel spawns a refill; once a refill has finished, the pool must
    /// not keep it, or a long-lived pool grows by one task per replaced channel.
    /// Needs the broker on 127.0.0.1:5672.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_refills_are_not_kept() {
        const SIZE: usize = 2;
        const ROUNDS: usize = 200;
        let conn = Connection::open(&ConnectionConfig::default())
            .await
            .expect("the broker on 127.0.0.1:5672");
        let pool = conn.channel_pool(SIZE).await.expect("a pool");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let missing = format!("serena.pool-test.missing.{}", std::process::id());
        for round in 0..ROUNDS {
            let err = pool
                .with(async |ch| ch.queue_declare(&missing, passive.clone()).await)
                .await
                .expect_err("the queue does not exist");
            assert!(err.unexpected_close().is_some(), "round {round}: {err:?}");
        }
        // Let the last refills finish, then one more replacement.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool.idle() != SIZE {
            assert!(tokio::time::Instant::now() < deadline, "{pool:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = pool
            .with(async |ch| ch.queue_declare(&missing, passive.clone()).await)
            .await;
        // At most one refill per permit can be running; finished ones are gone.
        let tracked = pool.refills_tracked();
        assert!(
            tracked <= SIZE,
            "{tracked} refills tracked after {ROUNDS} replacements"
        );
        drop(pool);
        conn.close().await.expect("a clean close");
    }
}
