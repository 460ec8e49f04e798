//! The per-step store data: the WASI context that grants nothing, the `weft:step/host`
//! imports, the memory limiter and the step's log.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::output::CappedPipe;
use crate::bindings::{self, Level};

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

/// Store data of one step attempt; lives exactly as long as its instance.
pub struct StepHost {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    invocation: bindings::Invocation,
    pub(super) logs: Vec<LogLine>,
    pub(super) dropped_logs: usize,
    pub(super) stdout: CappedPipe,
    pub(super) stderr: CappedPipe,
}

impl StepHost {
    pub(super) fn new(
        invocation: bindings::Invocation,
        memory_bytes: usize,
        output_cap: usize,
    ) -> Self {
        let stdout = CappedPipe::new(output_cap);
        let stderr = CappedPipe::new(output_cap);
        // A bare builder grants no env, args, preopens or network; the explicit
        // denials keep it that way should wasmtime's defaults ever change.
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
        Self {
            wasi,
            table,
            limiter: MemoryLimiter::new(memory_bytes),
            invocation,
            logs: Vec::new(),
            dropped_logs: 0,
            stdout,
            stderr,
        }
    }

    pub(super) fn push_log(&mut self, level: &str, message: &str) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.dropped_logs += 1;
            return;
        }
        let mut message = message.to_string();
        if message.len() > MAX_LOG_LINE_BYTES {
            message = super::run::truncate(message, MAX_LOG_LINE_BYTES);
            message.push('…');
        }
        self.logs.push(LogLine {
            level: level.to_string(),
            message,
        });
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

impl bindings::Host for StepHost {
    fn current_invocation(&mut self) -> bindings::Invocation {
        self.invocation.clone()
    }

    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        tracing::debug!(
            target: "weft::guest",
            run = %self.invocation.run_id,
            step = %self.invocation.step_id,
            level,
            "{message}"
        );
        self.push_log(level, &message);
    }
}

impl bindings::weft::step::types::Host for StepHost {}

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
