//! What the host tells a step about the call it is running.

/// Which call of a step this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The tenant that owns the run.
    pub tenant: String,
    /// The run this step belongs to.
    pub run_id: String,
    /// The step's `id` in the workflow document.
    pub step_id: String,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
}

/// Asks the host which tenant, run, step and attempt is running.
///
/// Outside a component (native unit tests of a step function) there is no
/// host: this returns tenant, run and step `"local"` and attempt 1.
pub fn invocation() -> Invocation {
    #[cfg(target_arch = "wasm32")]
    {
        let call = crate::__bindings::weft::step::host::current_invocation();
        Invocation {
            tenant: call.tenant,
            run_id: call.run_id,
            step_id: call.step_id,
            attempt: call.attempt,
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Invocation {
            tenant: "local".into(),
            run_id: "local".into(),
            step_id: "local".into(),
            attempt: 1,
        }
    }
}
