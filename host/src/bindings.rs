//! The one place that runs `bindgen!` over `wit/`; the rest of the host uses what it re-exports.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
});

pub use self::weft::step::host::{Host, Invocation, Level};
