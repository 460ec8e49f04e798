//! Weft: run workflows of sandboxed WebAssembly components.
//!
//! The modules follow the data path: a component is checked and compiled by
//! `engine`, kept by `cache` and named in `registry`; a `workflow` document is
//! validated, its run is driven by the `scheduler` over a `backend`, and the
//! `worker` runs each ready step in a fresh instance.

pub mod api;
pub mod backend;
pub mod bindings;
pub mod budget;
pub mod bundled;
pub mod cache;
pub mod capability;
pub mod cli;
pub mod engine;
pub mod registry;
pub mod scheduler;
pub mod telemetry;
pub mod testing;
pub mod worker;
pub mod workflow;
