//! The embedded backend's file store: one SQLite database in WAL mode in the
//! data directory (`weft.db`), holding runs, steps, idempotency keys, tenants
//! and registry records. The backend keeps its working state in memory and
//! writes every change here in grouped transactions (see `journal`); at start
//! it reads everything back.
//!
//! The ready queue and the delayed retries are not tables of their own: they
//! follow from the stored steps (a queued step with no attempt yet is ready, a
//! queued step that has run waits for its `retry_due`, a running one is
//! delivered again), so they cannot disagree with them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, SealedSecret, TenantRecord, VersionRecord};
use crate::engine::{Failure, LogLine};
use crate::scheduler::clock::Millis;
use crate::scheduler::model::{RunError, RunSpec, RunStatus, StepRecord, StepStatus};

/// The schema this version of Weft writes. A file with a higher version was
/// written by a newer Weft and is refused.
pub const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a Weft store ("WEFT"), so that another
/// program's SQLite file in the data directory is not taken for one.
const APPLICATION_ID: i64 = 0x5745_4654;

/// The name of the store in the data directory.
pub const FILE_NAME: &str = "weft.db";

/// The name of the lock file that keeps a second process out.
const LOCK_NAME: &str = "weft.lock";

/// Migrations from each schema version to the next: `MIGRATIONS[v]` takes a
/// store from version `v` to `v + 1`, in the transaction that records it.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        output TEXT,
        error TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        bytes INTEGER NOT NULL,
        idem_key TEXT,
        idem_fingerprint TEXT
    ) WITHOUT ROWID;
    -- Apart from `runs`, whose rows change at every transition: a spec is
    -- written once, and rewriting it with each change would cost its size.
    CREATE TABLE specs (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL
    );
    CREATE TABLE steps (
        run TEXT NOT NULL,
        idx INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        lease INTEGER NOT NULL,
        deliveries INTEGER NOT NULL,
        retry_due INTEGER,
        output TEXT,
        error TEXT,
        logs TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        PRIMARY KEY (run, idx)
    ) WITHOUT ROWID;
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    CREATE TABLE versions (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        record TEXT NOT NULL,
        UNIQUE (tenant, name, version)
    );",
    // 1 -> 2: the workflow language, version 2. Rows of `steps` also hold
    // for_each items, their lists and compensations (`RowKey`); a skipped
    // step keeps why, and a finished one when it ended among the run's steps.
    "ALTER TABLE steps ADD COLUMN reason TEXT;
    ALTER TABLE steps ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
    // 2 -> 3: secrets, sealed (`capability::secrets`); no plaintext is stored.
    "CREATE TABLE secrets (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;",
    // 3 -> 4: flow control's declarations, each a JSON record: `queue` the
    // declared queues (tenant ''), `rate_limit` the tenants' rate limits,
    // `schedule` their schedules.
    "CREATE TABLE flow (
        kind TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (kind, tenant, name)
    ) WITHOUT ROWID;",
];

/// What a row of `steps` holds, as its `idx` encodes it: a step's own
/// record, one item of a for_each step, the list a for_each step expanded
/// (in `output`), or a step's compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum RowKey {
    Step(u32),
    // Before the items, so that a load sorted by key reads a list first.
    List(u32),
    Item(u32, u32),
    Compensation(u32),
    /// The run's kept signals, as an object of arrays (in `output`).
    Signals,
}

impl RowKey {
    const KIND: u32 = 56;
    const STEP: u32 = 28;

    pub fn code(self) -> i64 {
        let (kind, step, item) = match self {
            // As schema 1 stored a step's index.
            Self::Step(i) => return i64::from(i),
            Self::List(i) => (1i64, i, 0),
            Self::Item(i, k) => (2, i, k),
            Self::Compensation(i) => (3, i, 0),
            Self::Signals => (4, 0, 0),
        };
        (kind << Self::KIND) | (i64::from(step) << Self::STEP) | i64::from(item)
    }

    pub fn from_code(code: i64) -> Option<Self> {
        let step =
            u32::try_from((code >> Self::STEP) & ((1 << (Self::KIND - Self::STEP)) - 1)).ok()?;
        let item = u32::try_from(code & ((1 << Self::STEP) - 1)).ok()?;
        Some(match code >> Self::KIND {
            // Schema 1 stored a step's index as it is.
            0 => Self::Step(u32::try_from(code).ok()?),
            1 => Self::List(step),
            2 => Self::Item(step, item),
            3 => Self::Compensation(step),
            4 => Self::Signals,
            _ => return None,
        })
    }
}

/// How hard a commit is pushed to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Written to the operating system at every commit: survives the process
    /// being killed, not the machine losing power (SQLite `synchronous=NORMAL`).
    #[default]
    Normal,
    /// Also flushed to the disk at every commit: survives power loss
    /// (SQLite `synchronous=FULL`).
    Always,
}

/// The open store, with the lock that keeps other processes out.
pub(super) struct Store {
    conn: Connection,
    path: PathBuf,
    /// Held while the store is open; the lock ends with the file.
    _lock: File,
}

/// A run as stored.
pub(super) struct RunRow {
    pub id: Arc<str>,
    /// Set when the run is new: the spec is written once.
    pub spec: Option<Arc<RunSpec>>,
    pub status: RunStatus,
    pub output: Option<serde_json::Value>,
    pub error: Option<RunError>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub bytes: u64,
    pub idempotency: Option<(String, String)>,
}

/// A step as stored.
pub(super) struct StepRow {
    pub run: Arc<str>,
    pub key: RowKey,
    pub rec: StepRecord,
    pub lease: u64,
    pub deliveries: u32,
    pub retry_due: Option<Millis>,
    /// When a step ended among the run's steps (1, 2, ...); 0 while it has not.
    pub seq: u64,
}

/// One group commit: every change made since the last one.
#[derive(Default)]
pub(super) struct Batch {
    pub runs: Vec<RunRow>,
    pub steps: Vec<StepRow>,
    /// Runs past their retention, to delete with their steps.
    pub gone: Vec<Arc<str>>,
}

/// Everything read back at start.
#[derive(Default)]
pub(super) struct Loaded {
    pub runs: Vec<(RunRow, Vec<StepRow>)>,
    pub tenants: Vec<TenantRecord>,
    /// `(tenant, record)`, oldest first.
    pub versions: Vec<(String, VersionRecord)>,
    /// (tenant, name) and the sealed secret.
    pub secrets: Vec<((String, String), SealedSecret)>,
    /// Flow control's declarations: (kind, tenant, name) and the record.
    pub flow: Vec<((String, String, String), String)>,
}

/// An error of the store, as a backend error naming the file.
fn failed(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens (or creates) the store of the data directory `dir`. Refuses,
    /// changing nothing, when another process has it open, when the file was
    /// written by a newer Weft, or when it is not a Weft store.
    pub fn open(dir: &Path, fsync: Fsync) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let lock = lock(dir)?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open(&path).map_err(|e| failed(&path, e))?;
        let not_ours = |e: rusqlite::Error| {
            BackendError::Corrupt(format!(
                "{} is not a Weft store or is damaged ({e}); it was left as it is: \
                 move it away, or start with another --data-dir",
                path.display()
            ))
        };
        let pragma = |name: &str| -> Result<i64, BackendError> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(not_ours)
        };
        let version = pragma("user_version")?;
        let application = pragma("application_id")?;
        if application != 0 && application != APPLICATION_ID {
            return Err(BackendError::Corrupt(format!(
                "{} is an SQLite file of another program (application id {application:#x}); \
                 it was left as it is: start with another --data-dir",
                path.display()
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(BackendError::Corrupt(format!(
                "{} has schema version {version}, written by a newer Weft; this Weft \
                 reads schema versions up to {SCHEMA_VERSION}. It was left as it is: run \
                 the newer Weft, or start with another --data-dir",
                path.display()
            )));
        }
        let synchronous = match fsync {
            Fsync::Normal => "NORMAL",
            Fsync::Always => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = OFF; PRAGMA cache_size = -65536; \
             PRAGMA mmap_size = 268435456;"
        ))
        .map_err(not_ours)?;
        let mut store = Self {
            conn,
            path,
            _lock: lock,
        };
        store.migrate(version, dir)?;
        Ok(store)
    }

    /// Brings the schema from `from` to [`SCHEMA_VERSION`], one transaction
    /// per step. A new store also takes in the tenants and registry records
    /// an earlier Weft kept in `state/registry.json`.
    fn migrate(&mut self, from: i64, dir: &Path) -> Result<(), BackendError> {
        let path = self.path.clone();
        for version in from..SCHEMA_VERSION {
            let tx = self.conn.transaction().map_err(|e| failed(&path, e))?;
            tx.execute_batch(MIGRATIONS[version as usize])
                .map_err(|e| failed(&path, e))?;
            if version == 0 {
                import_registry_json(&tx, dir)?;
                tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
                    .map_err(|e| failed(&path, e))?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))
                .map_err(|e| failed(&path, e))?;
            tx.commit().map_err(|e| failed(&path, e))?;
        }
        Ok(())
    }

    /// Writes one batch in one transaction.
    pub fn write(&mut self, batch: &Batch) -> Result<(), BackendError> {
        let Self { conn, path, .. } = self;
        let e = |e: rusqlite::Error| failed(path, e);
        let tx = conn.transaction().map_err(e)?;
        {
            let mut insert_run = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO runs (id, tenant, status, output, error, \
                     started_at, finished_at, bytes, idem_key, idem_fingerprint) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(e)?;
            let mut insert_spec = tx
                .prepare_cached("INSERT OR REPLACE INTO specs (id, spec) VALUES (?1, ?2)")
                .map_err(e)?;
            let mut update_run = tx
                .prepare_cached(
                    "UPDATE runs SET status = ?2, output = ?3, error = ?4, started_at = ?5, \
                     finished_at = ?6, bytes = ?7 WHERE id = ?1",
                )
                .map_err(e)?;
            for run in &batch.runs {
                let output = run.output.as_ref().map(json);
                let error = run.error.as_ref().map(json);
                match &run.spec {
                    Some(spec) => {
                        let (key, fingerprint) = run.idempotency.clone().unzip();
                        insert_spec
                            .execute(params![&*run.id, super::super::spec::store_spec(spec)])
                            .map_err(e)?;
                        insert_run
                            .execute(params![
                                &*run.id,
                                spec.tenant,
                                run.status.as_str(),
                                output,
                                error,
                                run.started_at.map(to_sql),
                                run.finished_at.map(to_sql),
                                to_sql(run.bytes),
                                key,
                                fingerprint,
                            ])
                            .map_err(e)?;
                    }
                    None => {
                        update_run
                            .execute(params![
                                &*run.id,
                                run.status.as_str(),
                                output,
                                error,
                                run.started_at.map(to_sql),
                                run.finished_at.map(to_sql),
                                to_sql(run.bytes),
                            ])
                            .map_err(e)?;
                    }
                }
            }
            let mut put_step = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO steps (run, idx, status, attempts, lease, \
                     deliveries, retry_due, output, error, logs, started_at, finished_at, \
                     reason, seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(e)?;
            for step in &batch.steps {
                let rec = &step.rec;
                put_step
                    .execute(params![
                        &*step.run,
                        step.key.code(),
                        rec.status.unwrap_or(StepStatus::Pending).as_str(),
                        rec.attempts,
                        to_sql(step.lease),
                        step.deliveries,
                        step.retry_due.map(to_sql),
                        rec.output.as_deref().map(json),
                        rec.error.as_ref().map(json),
                        (!rec.logs.is_empty()).then(|| json(&rec.logs)),
                        rec.started_at.map(to_sql),
                        rec.finished_at.map(to_sql),
                        rec.reason,
                        to_sql(step.seq),
                    ])
                    .map_err(e)?;
            }
            let mut delete_run = tx
                .prepare_cached("DELETE FROM runs WHERE id = ?1")
                .map_err(e)?;
            let mut delete_spec = tx
                .prepare_cached("DELETE FROM specs WHERE id = ?1")
                .map_err(e)?;
            let mut delete_steps = tx
                .prepare_cached("DELETE FROM steps WHERE run = ?1")
                .map_err(e)?;
            for id in &batch.gone {
                delete_run.execute([&**id]).map_err(e)?;
                delete_spec.execute([&**id]).map_err(e)?;
                delete_steps.execute([&**id]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Stores a new tenant; false when the name is taken.
    pub fn insert_tenant(&mut self, tenant: &TenantRecord) -> Result<bool, BackendError> {
        insert_tenant(&self.conn, tenant).map_err(|e| failed(&self.path, e))
    }

    /// Replaces a stored tenant.
    pub fn update_tenant(&mut self, tenant: &TenantRecord) -> Result<(), BackendError> {
        self.conn
            .execute(
                "UPDATE tenants SET record = ?2 WHERE name = ?1",
                params![tenant.name, json(tenant)],
            )
            .map_err(|e| failed(&self.path, e))?;
        Ok(())
    }

    /// Stores a new component version; false when the version exists.
    pub fn insert_version(
        &mut self,
        tenant: &str,
        record: &VersionRecord,
    ) -> Result<bool, BackendError> {
        insert_version(&self.conn, tenant, record).map_err(|e| failed(&self.path, e))
    }

    /// Sets a sealed secret.
    pub fn put_secret(
        &mut self,
        tenant: &str,
        name: &str,
        secret: &SealedSecret,
    ) -> Result<(), BackendError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO secrets (tenant, name, sealed, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, name, secret.sealed, secret.updated_at],
            )
            .map_err(|e| failed(&self.path, e))?;
        Ok(())
    }

    /// Sets a declaration of flow control (a queue: kind `queue`, tenant '').
    pub fn put_flow(
        &mut self,
        kind: &str,
        tenant: &str,
        name: &str,
        record: &str,
    ) -> Result<(), BackendError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO flow (kind, tenant, name, record) VALUES (?1, ?2, ?3, ?4)",
                params![kind, tenant, name, record],
            )
            .map_err(|e| failed(&self.path, e))?;
        Ok(())
    }

    /// Deletes a declaration of flow control.
    pub fn delete_flow(
        &mut self,
        kind: &str,
        tenant: &str,
        name: &str,
    ) -> Result<(), BackendError> {
        self.conn
            .execute(
                "DELETE FROM flow WHERE kind = ?1 AND tenant = ?2 AND name = ?3",
                params![kind, tenant, name],
            )
            .map_err(|e| failed(&self.path, e))?;
        Ok(())
    }

    /// Deletes a secret.
    pub fn delete_secret(&mut self, tenant: &str, name: &str) -> Result<(), BackendError> {
        self.conn
            .execute(
                "DELETE FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(|e| failed(&self.path, e))?;
        Ok(())
    }

    /// Reads back everything the store holds.
    pub fn load(&self) -> Result<Loaded, BackendError> {
        let path = &self.path;
        let e = |e: rusqlite::Error| failed(path, e);
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            BackendError::Corrupt(format!("{}: {what}: {e}", path.display()))
        };
        let mut loaded = Loaded::default();

        let mut tenants = self
            .conn
            .prepare("SELECT record FROM tenants ORDER BY name")
            .map_err(e)?;
        for record in tenants
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(e)?
        {
            let record = record.map_err(e)?;
            loaded
                .tenants
                .push(serde_json::from_str(&record).map_err(|x| bad("tenant", &x))?);
        }
        let mut versions = self
            .conn
            .prepare("SELECT tenant, record FROM versions ORDER BY rowid")
            .map_err(e)?;
        for row in versions
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(e)?
        {
            let (tenant, record) = row.map_err(e)?;
            let record = serde_json::from_str(&record).map_err(|x| bad("version", &x))?;
            loaded.versions.push((tenant, record));
        }

        let mut secrets = self
            .conn
            .prepare("SELECT tenant, name, sealed, updated_at FROM secrets")
            .map_err(e)?;
        for row in secrets
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    SealedSecret {
                        sealed: r.get(2)?,
                        updated_at: r.get(3)?,
                    },
                ))
            })
            .map_err(e)?
        {
            loaded.secrets.push(row.map_err(e)?);
        }

        let mut flow = self
            .conn
            .prepare("SELECT kind, tenant, name, record FROM flow")
            .map_err(e)?;
        for row in flow
            .query_map([], |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ),
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(e)?
        {
            loaded.flow.push(row.map_err(e)?);
        }

        let mut steps: HashMap<String, Vec<StepRow>> = HashMap::new();
        let mut query = self
            .conn
            .prepare(
                "SELECT run, idx, status, attempts, lease, deliveries, retry_due, output, \
                 error, logs, started_at, finished_at, reason, seq FROM steps",
            )
            .map_err(e)?;
        let mut rows = query.query([]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let run: String = r.get(0).map_err(e)?;
            let output: Option<String> = r.get(7).map_err(e)?;
            let error: Option<String> = r.get(8).map_err(e)?;
            let logs: Option<String> = r.get(9).map_err(e)?;
            let rec = StepRecord {
                status: Some(
                    parse_status(&r.get::<_, String>(2).map_err(e)?)
                        .map_err(|x| bad("step status", &x))?,
                ),
                attempts: r.get(3).map_err(e)?,
                output: output
                    .map(|o| serde_json::from_str(&o).map(Arc::new))
                    .transpose()
                    .map_err(|x| bad("step output", &x))?,
                error: error
                    .map(|x| serde_json::from_str::<Failure>(&x))
                    .transpose()
                    .map_err(|x| bad("step error", &x))?,
                logs: logs
                    .map(|x| serde_json::from_str::<Vec<LogLine>>(&x))
                    .transpose()
                    .map_err(|x| bad("step logs", &x))?
                    .unwrap_or_default(),
                started_at: r.get::<_, Option<i64>>(10).map_err(e)?.map(from_sql),
                finished_at: r.get::<_, Option<i64>>(11).map_err(e)?.map(from_sql),
                reason: r.get(12).map_err(e)?,
            };
            let code: i64 = r.get(1).map_err(e)?;
            let row = StepRow {
                run: Arc::from(run.as_str()),
                key: RowKey::from_code(code).ok_or_else(|| bad("step row", &code))?,
                seq: from_sql(r.get(13).map_err(e)?),
                rec,
                lease: from_sql(r.get(4).map_err(e)?),
                deliveries: r.get(5).map_err(e)?,
                retry_due: r.get::<_, Option<i64>>(6).map_err(e)?.map(from_sql),
            };
            steps.entry(run).or_default().push(row);
        }

        let mut query = self
            .conn
            .prepare(
                "SELECT runs.id, specs.spec, status, output, error, started_at, finished_at, \
                 bytes, idem_key, idem_fingerprint FROM runs JOIN specs ON specs.id = runs.id",
            )
            .map_err(e)?;
        let mut rows = query.query([]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let id: String = r.get(0).map_err(e)?;
            let spec = super::super::spec::parse_spec(&r.get::<_, String>(1).map_err(e)?)?;
            let output: Option<String> = r.get(3).map_err(e)?;
            let error: Option<String> = r.get(4).map_err(e)?;
            let key: Option<String> = r.get(8).map_err(e)?;
            let fingerprint: Option<String> = r.get(9).map_err(e)?;
            let run = RunRow {
                id: Arc::from(id.as_str()),
                spec: Some(Arc::new(spec)),
                status: parse_status(&r.get::<_, String>(2).map_err(e)?)
                    .map_err(|x| bad("run status", &x))?,
                output: output
                    .map(|o| serde_json::from_str(&o))
                    .transpose()
                    .map_err(|x| bad("run output", &x))?,
                error: error
                    .map(|x| serde_json::from_str(&x))
                    .transpose()
                    .map_err(|x| bad("run error", &x))?,
                started_at: r.get::<_, Option<i64>>(5).map_err(e)?.map(from_sql),
                finished_at: r.get::<_, Option<i64>>(6).map_err(e)?.map(from_sql),
                bytes: from_sql(r.get(7).map_err(e)?),
                idempotency: key.zip(fingerprint),
            };
            let mut run_steps = steps.remove(&id).unwrap_or_default();
            run_steps.sort_by_key(|s| s.key);
            loaded.runs.push((run, run_steps));
        }
        Ok(loaded)
    }

    /// The size of the store's files (database and write-ahead log), in bytes.
    pub fn size(&self) -> u64 {
        let wal = self.path.with_extension("db-wal");
        [&self.path, &wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Takes the data directory's lock file, or says which process holds it.
fn lock(dir: &Path) -> Result<File, BackendError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_NAME);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| failed(&path, e))?;
    if let Err(e) = file.try_lock() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() {
            "another process".to_string()
        } else {
            format!("process {holder}")
        };
        return Err(BackendError::Unavailable(format!(
            "the data directory {} is in use by {who} ({e}); stop it, or start this one \
             with another --data-dir",
            dir.display()
        )));
    }
    file.set_len(0).map_err(|e| failed(&path, e))?;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| failed(&path, e))?;
    write!(file, "{}", std::process::id()).map_err(|e| failed(&path, e))?;
    Ok(file)
}

/// What an earlier Weft kept of tenants and registry records.
#[derive(Deserialize)]
struct RegistryJson {
    tenants: Vec<TenantRecord>,
    /// tenant -> name -> versions
    components:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<VersionRecord>>>,
}

fn import_registry_json(tx: &rusqlite::Transaction<'_>, dir: &Path) -> Result<(), BackendError> {
    let path = dir.join("state").join("registry.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(&path, e)),
    };
    let saved: RegistryJson = serde_json::from_slice(&bytes)
        .map_err(|e| BackendError::Corrupt(format!("{}: {e}", path.display())))?;
    let e = |e: rusqlite::Error| failed(&path, e);
    for tenant in &saved.tenants {
        insert_tenant(tx, tenant).map_err(e)?;
    }
    for (tenant, names) in &saved.components {
        for record in names.values().flatten() {
            insert_version(tx, tenant, record).map_err(e)?;
        }
    }
    Ok(())
}

/// Stores a new tenant; false when the name is taken.
fn insert_tenant(conn: &Connection, tenant: &TenantRecord) -> rusqlite::Result<bool> {
    conn.execute(
        "INSERT OR IGNORE INTO tenants (name, record) VALUES (?1, ?2)",
        params![tenant.name, json(tenant)],
    )
    .map(|n| n == 1)
}

/// Stores a new component version; false when the version exists.
fn insert_version(
    conn: &Connection,
    tenant: &str,
    record: &VersionRecord,
) -> rusqlite::Result<bool> {
    conn.execute(
        "INSERT OR IGNORE INTO versions (tenant, name, version, record) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, record.name, record.version, json(record)],
    )
    .map(|n| n == 1)
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored records serialise")
}

fn parse_status<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}

/// SQLite integers are signed; every stored count and time fits.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// Opening `dir` must fail: the error.
    fn refused(dir: &Path, what: &str) -> BackendError {
        match Store::open(dir, Fsync::Normal) {
            Ok(_) => panic!("{what} was opened"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_second_open_of_one_directory_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), Fsync::Normal).unwrap();
        let message = refused(dir.path(), "a directory open already").to_string();
        assert!(message.contains("in use by process"), "{message}");
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        drop(first);
        Store::open(dir.path(), Fsync::Normal).expect("the lock ends with the store");
    }

    #[test]
    fn row_keys_read_back_as_written_and_steps_as_schema_1_wrote_them() {
        let keys = [
            RowKey::Step(0),
            RowKey::Step(7),
            RowKey::Step(9_999),
            RowKey::List(3),
            RowKey::Item(3, 0),
            RowKey::Item(3, 9_999),
            RowKey::Item(1_000, (1 << 28) - 1),
            RowKey::Compensation(4),
            RowKey::Signals,
        ];
        for key in keys {
            assert_eq!(RowKey::from_code(key.code()), Some(key), "{key:?}");
        }
        assert_eq!(RowKey::Step(12).code(), 12);
        // Sorted by code, a step's list comes before its items.
        assert!(RowKey::List(3).code() < RowKey::Item(3, 0).code());
        assert!(RowKey::List(3) < RowKey::Item(3, 0));
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), Fsync::Normal).unwrap());
        let path = dir.path().join(FILE_NAME);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA user_version = 7; PRAGMA journal_mode = DELETE;")
                .unwrap();
        }
        let before = digest(&path);
        let message = refused(dir.path(), "a newer schema").to_string();
        assert!(message.contains("schema version 7"), "{message}");
        assert!(
            message.contains(&format!("up to {SCHEMA_VERSION}")),
            "{message}"
        );
        assert_eq!(digest(&path), before, "the file was changed");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let e = refused(dir.path(), "garbage");
        assert!(matches!(e, BackendError::Corrupt(_)), "{e}");
        assert!(e.to_string().contains("is not a Weft store"), "{e}");
        assert_eq!(digest(&path), garbage, "the file was changed");

        // Another program's SQLite file is not taken either.
        std::fs::remove_file(&path).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA application_id = 42; CREATE TABLE t (x);")
                .unwrap();
        }
        let before = digest(&path);
        let e = refused(dir.path(), "another program's file");
        assert!(e.to_string().contains("another program"), "{e}");
        assert_eq!(digest(&path), before);
    }

    #[test]
    fn tenants_and_versions_of_an_earlier_state_file_are_taken_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let tenant = TenantRecord {
            name: "acme".into(),
            key_hashes: vec!["abc".into()],
            limits: crate::backend::Limits::default(),
            created_at: 1,
        };
        let record = VersionRecord {
            name: "echo".into(),
            version: "1.0.0".into(),
            digest: "sha256:00".into(),
            size: 1,
            published_at: 1,
        };
        let saved = serde_json::json!({
            "tenants": [tenant],
            "components": { "acme": { "echo": [record] } }
        });
        std::fs::write(
            dir.path().join("state/registry.json"),
            serde_json::to_vec(&saved).unwrap(),
        )
        .unwrap();
        let loaded = Store::open(dir.path(), Fsync::Normal)
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(loaded.tenants, vec![tenant]);
        assert_eq!(loaded.versions, vec![("acme".to_string(), record)]);
    }
}
