//! `spin`: never returns; a deadline or fuel limit must stop it.
//!
//! Input: ignored. Output: none, ever.

use std::hint::black_box;

use weft_sdk::{StepError, raw_step};

fn run(_input: String) -> Result<String, StepError> {
    // black_box keeps the optimiser from proving the loop does nothing.
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

raw_step!(run);
