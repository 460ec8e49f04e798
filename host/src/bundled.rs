//! The components built from `components/` by `build.rs`: the examples
//! embedded in the binary, and the paths of every built component.

include!(concat!(env!("OUT_DIR"), "/components.rs"));
