//! Tests of the router, driven with `oneshot`.
