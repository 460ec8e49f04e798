//! The fixed budgets of a node (ARCHITECTURE.md section 11) and the checks
//! that enforce them where the cost would be paid. The per-tenant budgets are
//! fields of [`crate::backend::Limits`].

/// Deepest nesting of arrays and objects in any JSON the API reads or a step returns.
pub const MAX_JSON_DEPTH: usize = 64;

/// Most validation problems reported for one document; the rest are counted, not listed.
pub const MAX_PROBLEMS: usize = 100;

/// Inputs up to this size are parsed, validated and resolved in place; larger
/// ones go to the blocking pool (see [`offload`]).
pub const SMALL_WORK_BYTES: usize = 64 << 10;

/// Runs CPU-heavy work (parsing, validating or resolving a large document) on
/// the blocking pool, at most one job per core at once, so that the async
/// executor keeps serving every other request meanwhile.
pub async fn offload<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(cores.max(2))
    });
    let _slot = SLOTS.acquire().await.expect("never closed");
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `work` in place when `size` is small, else through [`offload`].
pub async fn offload_if_large<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if size <= SMALL_WORK_BYTES {
        work()
    } else {
        offload(work).await
    }
}

/// The length of `value` as compact JSON, counted as it is written out:
/// nothing is allocated.
pub fn serialized_len(value: &impl serde::Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that does not serialise counts nothing.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Whether `bytes`, read as JSON text, nests arrays and objects deeper than `max`.
///
/// One pass over the bytes, no allocation: this runs before the text is
/// parsed, so that no parser recursion or later serialisation ever meets a
/// document deeper than the budget. Malformed text is left to the parser.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(!json_too_deep(nested(64).as_bytes(), 64));
        assert!(json_too_deep(nested(65).as_bytes(), 64));
        let mixed = format!("{}{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert!(json_too_deep(mixed.as_bytes(), 64));
        // Brackets inside strings, and escaped quotes, do not count.
        let quoted = format!(r#"{{"s": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!json_too_deep(quoted.as_bytes(), 64));
        // Siblings do not add up.
        let wide = format!("[{}]", vec![nested(60); 1000].join(","));
        assert!(!json_too_deep(wide.as_bytes(), 64));
    }
}
