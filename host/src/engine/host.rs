//! The per-step store data: the WASI context that grants nothing, the
//! `weft:step` imports of both world versions, outgoing HTTP under the step's
//! policy, the memory limiter, and the attempt's log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::output::CappedPipe;
use super::run::Failure;
use crate::bindings::{self, v1, v2};
use crate::capability::http::{HttpPolicy, Outbound, StepHttp};
use crate::capability::secrets::Redactor;

/// Most log lines kept per attempt, and most bytes of each line.
const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE_BYTES: usize = 4096;
/// Most host resources (streams, pollables, sockets) a step may hold at once.
const MAX_HOST_RESOURCES: usize = 10_000;

/// One line a step logged, through the host `log` import or on stdout/stderr.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// What the parts of one attempt share: its log (secrets already hidden)
/// and the host's reason to stop it, if a capability's budget ran out.
pub(crate) struct Attempt {
    run_id: String,
    step_id: String,
    redactor: Redactor,
    log: Mutex<Log>,
    stop: Mutex<Option<Failure>>,
    stopped: CancellationToken,
}

#[derive(Default)]
struct Log {
    lines: Vec<LogLine>,
    dropped: usize,
}

impl Attempt {
    pub(super) fn new(invocation: &bindings::Invocation, redactor: Redactor) -> Self {
        Self {
            run_id: invocation.run_id.clone(),
            step_id: invocation.step_id.clone(),
            redactor,
            log: Mutex::default(),
            stop: Mutex::default(),
            stopped: CancellationToken::new(),
        }
    }

    /// Adds a line to the step's log, secrets replaced by `***`.
    pub(crate) fn log(&self, level: &str, message: &str) {
        let mut message = self.redact(message);
        tracing::debug!(
            target: "weft::guest",
            run = %self.run_id,
            step = %self.step_id,
            level,
            "{message}"
        );
        let mut log = self.log.lock().unwrap();
        if log.lines.len() >= MAX_LOG_LINES {
            log.dropped += 1;
            return;
        }
        if message.len() > MAX_LOG_LINE_BYTES {
            message = super::run::truncate(message, MAX_LOG_LINE_BYTES);
            message.push('…');
        }
        log.lines.push(LogLine {
            level: level.to_string(),
            message,
        });
    }

    /// Stops the attempt with `code`: the first reason given is the one kept.
    pub(crate) fn stop(&self, code: &str, message: String) {
        let mut stop = self.stop.lock().unwrap();
        if stop.is_none() {
            *stop = Some(Failure {
                code: code.to_string(),
                message,
                retryable: false,
            });
        }
        self.stopped.cancel();
    }

    pub(super) fn stopped(&self) -> &CancellationToken {
        &self.stopped
    }

    pub(super) fn stop_reason(&self) -> Option<Failure> {
        self.stop.lock().unwrap().clone()
    }

    /// Has the step secrets to hide?
    pub(super) fn redacts(&self) -> bool {
        !self.redactor.is_empty()
    }

    pub(super) fn redact(&self, text: &str) -> String {
        if self.redactor.is_empty() {
            text.to_string()
        } else {
            self.redactor.redact(text)
        }
    }

    /// The lines logged, and how many were dropped over the cap.
    pub(super) fn take_log(&self) -> (Vec<LogLine>, usize) {
        let mut log = self.log.lock().unwrap();
        (std::mem::take(&mut log.lines), log.dropped)
    }
}

/// What a step is granted beyond computing: the hosts it may call and the
/// secrets it may read.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub http: HttpPolicy,
    /// Secret name -> value.
    pub secrets: BTreeMap<String, String>,
}

impl Grants {
    /// What hides the granted secrets.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.values().map(String::as_str))
    }
}

/// Store data of one step attempt; lives exactly as long as its instance.
pub struct StepHost {
    wasi: WasiCtx,
    table: ResourceTable,
    http: StepHttp,
    pub(super) limiter: MemoryLimiter,
    invocation: bindings::Invocation,
    secrets: BTreeMap<String, String>,
    pub(super) attempt: Arc<Attempt>,
    pub(super) stdout: CappedPipe,
    pub(super) stderr: CappedPipe,
}

impl StepHost {
    pub(super) fn new(
        invocation: bindings::Invocation,
        grants: Grants,
        outbound: Outbound,
        memory_bytes: usize,
        output_cap: usize,
    ) -> Self {
        let stdout = CappedPipe::new(output_cap);
        let stderr = CappedPipe::new(output_cap);
        // A bare builder grants no env, args, preopens or network; the explicit
        // denials keep it that way should wasmtime's defaults ever change.
        // Outgoing HTTP goes through `wasi:http` alone, under the step's policy.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let mut table = ResourceTable::new();
        // Streams and pollables are host memory the memory limiter does not see.
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let attempt = Arc::new(Attempt::new(&invocation, grants.redactor()));
        Self {
            wasi,
            table,
            http: StepHttp::new(grants.http, outbound, attempt.clone()),
            limiter: MemoryLimiter::new(memory_bytes),
            invocation,
            secrets: grants.secrets,
            attempt,
            stdout,
            stderr,
        }
    }
}

impl WasiView for StepHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

fn level_name(level: bindings::Level) -> &'static str {
    use bindings::Level;
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl bindings::Host for StepHost {
    fn current_invocation(&mut self) -> bindings::Invocation {
        self.invocation.clone()
    }

    fn log(&mut self, level: bindings::Level, message: String) {
        self.attempt.log(level_name(level), &message);
    }
}

impl v2::weft::step::secrets::Host for StepHost {
    fn get(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).cloned()
    }
}

impl v2::weft::step::types::Host for StepHost {}

impl v1::weft::step::host::Host for StepHost {
    fn current_invocation(&mut self) -> v1::weft::step::host::Invocation {
        let i = &self.invocation;
        v1::weft::step::host::Invocation {
            tenant: i.tenant.clone(),
            run_id: i.run_id.clone(),
            step_id: i.step_id.clone(),
            attempt: i.attempt,
        }
    }

    fn log(&mut self, level: v1::weft::step::host::Level, message: String) {
        use v1::weft::step::host::Level as L;
        let level = match level {
            L::Trace => bindings::Level::Trace,
            L::Debug => bindings::Level::Debug,
            L::Info => bindings::Level::Info,
            L::Warn => bindings::Level::Warn,
            L::Error => bindings::Level::Error,
        };
        self.attempt.log(level_name(level), &message);
    }
}

impl v1::weft::step::types::Host for StepHost {}

/// Caps the sum of a step's linear memories and remembers whether it tried to
/// exceed the cap, because a guest that is denied memory usually aborts with a
/// plain trap.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    used: usize,
    pub(super) denied: bool,
}

impl MemoryLimiter {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            used: 0,
            denied: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Every memory of the component counts against one budget.
        let used = self.used - current.min(self.used) + desired;
        if used > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
