//! What a step may do beyond computing, each a WIT interface plus the policy
//! that grants it: outgoing HTTP (`wasi:http`, [`http`]) and the tenant's
//! secrets (`weft:step/secrets`, [`secrets`]). The engine links them; the
//! rest of the host never sees wasi:http types.

pub mod hosts;
pub mod http;
pub mod secrets;
