//! `hog`: allocates memory until the host denies it (or up to a cap).
//!
//! Input: `{"mb": N}` (optional). Without `mb` it allocates 1 MiB chunks
//! forever, so the memory limit must stop it (the denied `memory.grow` makes
//! the guest abort). With `mb` it stops after N MiB and returns
//! `{"allocated_mb": N}`, which tests that a limit above N is honoured.

use std::hint::black_box;

use serde::{Deserialize, Serialize};
use weft_sdk::{StepError, step};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    mb: Option<u64>,
}

#[derive(Serialize)]
struct Output {
    allocated_mb: u64,
}

fn run(input: Input) -> Result<Output, StepError> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut allocated_mb = 0;
    while input.mb.is_none_or(|cap| allocated_mb < cap) {
        let mut chunk = vec![0u8; CHUNK];
        // Write every page so the memory is really used, not just reserved.
        for at in (0..CHUNK).step_by(PAGE) {
            chunk[at] = allocated_mb as u8 | 1;
        }
        chunks.push(black_box(chunk));
        allocated_mb += 1;
    }
    black_box(&chunks);
    Ok(Output { allocated_mb })
}

step!(run);
