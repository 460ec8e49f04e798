//! The ready work of the embedded backend and, when it has a file store, what
//! changed since the last write and the thread that writes it.
//!
//! Group commit: every transition marks what it changed; one writer thread
//! takes all the marks at once, writes them in one transaction (one sync),
//! and only then lets the tasks those transitions made ready reach the queue
//! and the callers waiting on them return. So a `202` means the run is
//! stored, and a step's output is stored before any step it made ready starts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::MemoryBackend;
use super::store::{RowKey, Store};
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{Task, TaskKind};

/// A retry waiting for its due time; ordered by time, then by insertion.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Delayed {
    pub due: Millis,
    seq: u64,
    run: Arc<str>,
    kind: TaskKind,
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Ready steps and retries waiting for their time.
#[derive(Default)]
pub(super) struct Work {
    pub ready: super::ready::Ready,
    pub delayed: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    /// Present when the backend has a file store.
    pub journal: Option<Journal>,
}

/// What changed since the last write to the file store.
pub(super) struct Journal {
    /// Runs changed, with which of their steps.
    pub touched: HashMap<Arc<str>, Touched>,
    /// Runs forgotten (past their retention).
    pub gone: Vec<Arc<str>>,
    /// Work made ready by the changes not yet written.
    pub held: Held,
    /// The number of the write that will carry the changes made now; the
    /// writes before it are stored or being stored.
    pub generation: u64,
}

/// What changed in one run.
#[derive(Default)]
pub(super) struct Touched {
    /// The run is new: its spec and every step are written.
    pub created: bool,
    /// The rows changed: steps, items, lists, compensations.
    pub rows: Vec<RowKey>,
}

/// Work waiting for the write that makes it safe to start.
#[derive(Default)]
pub(super) struct Held {
    tasks: Vec<Task>,
    delayed: Vec<Delayed>,
}

impl Journal {
    pub fn new() -> Self {
        Self {
            touched: HashMap::new(),
            gone: Vec::new(),
            held: Held::default(),
            generation: 1,
        }
    }

    fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.gone.is_empty()
    }
}

impl Work {
    /// Queues a task, or holds it until the change that made it ready is stored.
    pub fn enqueue(&mut self, task: Task) {
        match &mut self.journal {
            Some(journal) => journal.held.tasks.push(task),
            None => self.ready.push(task),
        }
    }

    /// Schedules the task `kind` of `run` for `due`.
    pub fn delay(&mut self, due: Millis, run: Arc<str>, kind: TaskKind) {
        self.seq += 1;
        let delayed = Delayed {
            due,
            seq: self.seq,
            run,
            kind,
        };
        match &mut self.journal {
            Some(journal) => journal.held.delayed.push(delayed),
            None => self.delayed.push(Reverse(delayed)),
        }
    }

    /// Moves the retries that are due to the queue.
    pub fn promote_due(&mut self, now: Millis) {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.due > now {
                break;
            }
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.ready.push(Task {
                run: d.run,
                kind: d.kind,
            });
        }
    }

    /// Lets held work go once the write carrying its changes is stored.
    pub fn release(&mut self, held: Held) {
        for task in held.tasks {
            self.ready.push(task);
        }
        self.delayed.extend(held.delayed.into_iter().map(Reverse));
    }

    fn touched(&mut self, run: &Arc<str>) -> Option<&mut Touched> {
        let journal = self.journal.as_mut()?;
        Some(journal.touched.entry(run.clone()).or_default())
    }

    /// Marks the run's own record as changed.
    pub fn touch_run(&mut self, run: &Arc<str>) {
        self.touched(run);
    }

    /// Marks one row of the run (and the run) as changed.
    pub fn touch_row(&mut self, run: &Arc<str>, key: RowKey) {
        if let Some(t) = self.touched(run) {
            t.rows.push(key);
        }
    }

    /// Marks the run as new.
    pub fn created(&mut self, run: &Arc<str>) {
        if let Some(t) = self.touched(run) {
            t.created = true;
        }
    }

    /// Marks the run as forgotten.
    pub fn forget(&mut self, run: Arc<str>) {
        if let Some(journal) = &mut self.journal {
            journal.touched.remove(&run);
            journal.gone.push(run);
        }
    }

    /// The write a caller must wait for to see its changes stored: `None`
    /// without a file store.
    pub fn wait_point(&self) -> Option<u64> {
        let journal = self.journal.as_ref()?;
        Some(if journal.is_empty() {
            journal.generation - 1
        } else {
            journal.generation
        })
    }
}

/// Wakes the writer thread, and tells it to stop.
#[derive(Default)]
pub(super) struct Signal {
    state: Mutex<Wanted>,
    cv: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Wanted {
    /// Someone waits for the next write.
    now: bool,
    /// Changes nobody waits for (claims) are to be written within [`SOON`].
    soon: bool,
}

/// How long a change nobody waits for may stay unwritten; it usually goes
/// with the next write somebody waits for, sooner.
const SOON: Duration = Duration::from_millis(2);

impl Signal {
    /// Somebody waits for the changes to be written.
    pub fn want(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.now {
            state.now = true;
            self.cv.notify_one();
        }
    }

    /// There are changes to write, and nobody waits for them.
    pub fn want_soon(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.now && !state.soon {
            state.soon = true;
            self.cv.notify_one();
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.want();
    }

    /// Waits until there is something to write; false when the writer is to stop.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.now {
                break;
            }
            if state.soon {
                let (next, timeout) = self
                    .cv
                    .wait_timeout(state, SOON)
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                if timeout.timed_out() {
                    break;
                }
            } else {
                state = self.cv.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        *state = Wanted::default();
        !self.stop.load(Ordering::SeqCst)
    }
}

/// Starts the thread that writes the backend's changes to `store`, as long as
/// the backend lives.
pub(super) fn spawn_writer(
    backend: Weak<MemoryBackend>,
    signal: Arc<Signal>,
    store: Arc<Mutex<Store>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("weft-store".into())
        .spawn(move || {
            while signal.wait() {
                let Some(backend) = backend.upgrade() else {
                    return;
                };
                let Some((generation, batch, held)) = backend.lock().take_batch() else {
                    continue;
                };
                let mut backoff = Duration::from_millis(10);
                loop {
                    let written = store
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write(&batch);
                    match written {
                        Ok(()) => break,
                        Err(e) => {
                            // Nothing waiting on this write goes on until it
                            // is stored; it is tried again as it is.
                            tracing::error!(error = %e, "cannot write to the store; retrying");
                            if signal.stop.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
                backend.lock().work.release(held);
                backend.ready.notify_one();
                backend.written.send_replace(generation);
            }
        })
        .expect("the store writer thread starts")
}

/// What one write carries, as taken from the journal.
pub(super) type TakenBatch = (u64, super::store::Batch, Held);
