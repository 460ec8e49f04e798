//! `recurse`: recurses without bound until the stack runs out.
//!
//! Input: ignored. Output: none. A Rust guest's stack lives in linear
//! memory, so overflowing it arrives as a memory-out-of-bounds trap.

use std::hint::black_box;

use weft_sdk::{StepError, raw_step};

/// Not a tail call: the frame (with its buffer) stays live across the call.
fn deep(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 16]);
    deep(black_box(depth + 1)).wrapping_add(frame[depth as usize % 16])
}

fn run(_input: String) -> Result<String, StepError> {
    Ok(deep(0).to_string())
}

raw_step!(run);
