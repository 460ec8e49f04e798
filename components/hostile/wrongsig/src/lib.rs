//! `wrongsig`: a valid component whose `run` export has the wrong type
//! (`func(input: u32) -> u32`); publishing it must be refused.
//!
//! Built with wit-bindgen directly, against `wit/world.wit`, not the SDK.

wit_bindgen::generate!({
    path: "wit",
    world: "wrongsig",
});

struct WrongSig;

impl Guest for WrongSig {
    fn run(input: u32) -> u32 {
        input.wrapping_add(1)
    }
}

export!(WrongSig);
