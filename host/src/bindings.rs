//! The one place that runs `bindgen!` over `wit/`; the rest of the host uses
//! what it re-exports. The host serves both versions of the step world: 0.2.0
//! (`wit/step.wit`) and 0.1.0 (`wit/0.1.0/`), whose components keep running
//! unchanged.

/// `weft:step@0.2.0`: 0.1.0 plus secrets and outgoing HTTP.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "step",
        exports: { default: async },
        with: { "wasi": wasmtime_wasi_http::p2::bindings },
    });
}

/// `weft:step@0.1.0`, the first version of the world.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "step",
        exports: { default: async },
    });
}

pub use v2::weft::step::host::{Host, Invocation, Level};
