//! The tenant's secrets that the step lists under `"secrets"`.

/// The value of the secret `name`, or None when the step does not list it
/// (or, outside a component, when the environment variable
/// `WEFT_SECRET_<NAME>` is not set, for native unit tests).
///
/// The host replaces the value by `***` wherever it would show up in the
/// step's logs, error or output, so logging it does not leak it; sending it
/// anywhere else (a request to an allowed host) is up to the step.
pub fn secret(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::weft::step::secrets::get(name)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::env::var(format!("WEFT_SECRET_{}", name.to_ascii_uppercase())).ok()
    }
}
