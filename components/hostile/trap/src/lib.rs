//! `trap`: stops with a WebAssembly trap of the chosen kind.
//!
//! Input: `{"kind": "panic"|"unreachable"|"abort"|"oob"}` (default `panic`).
//! - `panic`: a Rust panic; on wasm32-wasip2 it aborts, i.e. `unreachable`.
//! - `unreachable`: the `unreachable` instruction directly.
//! - `abort`: `std::process::abort()`.
//! - `oob`: a load far outside linear memory (memory out of bounds).
//!
//! Output: none; an unknown kind fails with `bad_input`.

use serde::Deserialize;
use serde_json::Value;
use weft_sdk::{StepError, step};

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Panic,
    Unreachable,
    Abort,
    Oob,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    kind: Kind,
}

fn run(input: Input) -> Result<Value, StepError> {
    match input.kind {
        Kind::Panic => panic!("trap component panicked on purpose"),
        Kind::Unreachable => unreachable_instruction(),
        Kind::Abort => std::process::abort(),
        Kind::Oob => {
            // The highest address of a 32-bit memory is never mapped in a
            // memory a guest could have been given.
            let far = std::hint::black_box(u32::MAX as usize & !0xf) as *const u64;
            // SAFETY: none; the point is that the host traps on this load.
            let value = unsafe { far.read_volatile() };
            Ok(Value::from(value))
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn unreachable_instruction() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn unreachable_instruction() -> ! {
    std::process::abort()
}

step!(run);
