//! `weft exec` end to end: real processes, real components, the embedded backend.

#[path = "../common/mod.rs"]
mod common;

mod artifacts;
mod capabilities;
mod components;
mod examples;
mod language;
mod sandbox;
mod semantics;
mod traces;
mod validation;
