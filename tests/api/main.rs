//! The HTTP API end to end: real `weft serve` processes on free ports, real HTTP.

#[path = "../common/mod.rs"]
mod common;

mod capabilities;
mod cli;
mod console;
mod durable;
mod flow;
mod hostile;
mod hostile_http;
mod http;
mod language;
mod publishing;
mod resilience;
mod schedules;
mod server;
mod signals;
mod subworkflows;
mod templates;
mod traces;
mod walkthrough;
