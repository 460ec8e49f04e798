//! Time as the scheduler sees it, injected so that retries and backoff are
//! tested without sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A source of time that can also wait.
#[async_trait::async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
    /// Returns once `now() >= at`.
    async fn sleep_until(&self, at: Millis);
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    async fn sleep_until(&self, at: Millis) {
        let now = self.now();
        if at > now {
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
    }
}

/// Time that moves only when a test says so.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
    moved: Notify,
    waiters: Mutex<usize>,
}

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self {
            now: AtomicU64::new(start),
            moved: Notify::new(),
            waiters: Mutex::new(0),
        }
    }

    /// Moves time forward and wakes every sleeper that is now due.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// How many tasks are sleeping on this clock right now.
    pub fn sleepers(&self) -> usize {
        *self.waiters.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    async fn sleep_until(&self, at: Millis) {
        // Counted while the future lives, also when it is dropped unfinished.
        struct Sleeping<'a>(&'a Mutex<usize>);
        impl Drop for Sleeping<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap() -= 1;
            }
        }
        *self.waiters.lock().unwrap() += 1;
        let _sleeping = Sleeping(&self.waiters);
        loop {
            let moved = self.moved.notified();
            if self.now() >= at {
                break;
            }
            moved.await;
        }
    }
}

/// RFC 3339 text of a timestamp, as the API shows it.
pub fn rfc3339(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// A timestamp from RFC 3339 text (`2026-12-24T18:00:00Z`, with an optional
/// fraction, `Z` or a `±HH:MM` offset); None when it is not one or is
/// before 1970.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let text = text.trim();
    let (local, offset_ms) = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
        Some((local, offset))
            if offset.len() == 6
                && (offset.starts_with('+') || offset.starts_with('-'))
                && offset.as_bytes()[3] == b':' =>
        {
            let hours: i64 = offset[1..3].parse().ok()?;
            let minutes: i64 = offset[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            (
                local.to_string() + "Z",
                sign * (hours * 3_600_000 + minutes * 60_000),
            )
        }
        _ => (text.replace('z', "Z").replace('t', "T"), 0),
    };
    let at = humantime::parse_rfc3339(&local).ok()?;
    let utc = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_ms;
    Millis::try_from(utc).ok()
}
