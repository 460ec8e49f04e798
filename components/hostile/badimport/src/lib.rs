//! `badimport`: a component that imports an interface the host does not
//! provide (`other:thing/kv`); publishing or instantiating it must fail.
//!
//! Built with wit-bindgen directly, against `wit/world.wit`, not the SDK.
//! `run` calls the import so that it is not dropped from the component.

wit_bindgen::generate!({
    path: "wit",
    world: "w",
});

struct BadImport;

impl Guest for BadImport {
    fn run(input: String) -> Result<String, String> {
        Ok(other::thing::kv::get(&input))
    }
}

export!(BadImport);
