//! Hostile components end with their host error code, within their limits, and
//! see nothing of the host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft::bundled::paths;
use weft::cache::ComponentCache;
use weft::engine::{Engine, EngineConfig, Grants, Invocation, StepLimits};

use crate::common::{data_dir, exec, millis};

/// Runs one step and returns (exit code, the step as recorded).
fn one_step(component: &str, input: Value, extra: Value) -> (i32, Value) {
    let mut step = json!({ "id": "s", "component": format!("{component}@1.0.0"), "input": input });
    for (k, v) in extra.as_object().unwrap() {
        step[k] = v.clone();
    }
    let out = exec(&json!({ "steps": [step] }), &json!({}));
    let run = out.run();
    (out.code, run["steps"]["s"].clone())
}

fn assert_fails_with(step: &Value, code: &str) {
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["error"]["code"], code, "{step}");
}

fn step_ms(step: &Value) -> u128 {
    millis(&step["finished_at"]) - millis(&step["started_at"])
}

#[test]
fn an_infinite_loop_times_out_at_its_deadline() {
    // Fuel for far longer than the deadline, so that only the deadline can
    // stop it even on a machine too busy to tick epochs on time.
    let (code, step) = one_step(
        "spin",
        json!({}),
        json!({ "timeout_ms": 500, "limits": { "fuel": 1_000_000_000_000u64 } }),
    );
    assert_eq!(code, 1);
    assert_fails_with(&step, "timeout");
    assert!(
        step_ms(&step) < 5_000,
        "stopped after {} ms",
        step_ms(&step)
    );
}

#[test]
fn a_step_blocked_in_a_host_call_still_times_out() {
    let (code, step) = one_step(
        "sleep",
        json!({ "ms": 30_000 }),
        json!({ "timeout_ms": 300 }),
    );
    assert_eq!(code, 1);
    assert_fails_with(&step, "timeout");
    assert!(
        step_ms(&step) < 5_000,
        "stopped after {} ms",
        step_ms(&step)
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let (code, step) = one_step(
        "spin",
        json!({}),
        json!({ "limits": { "fuel": 2_000_000 } }),
    );
    assert_eq!(code, 1);
    assert_fails_with(&step, "out_of_fuel");
}

#[test]
fn a_memory_hog_hits_its_memory_limit() {
    let (code, step) = one_step("hog", json!({}), json!({ "limits": { "memory_mb": 16 } }));
    assert_eq!(code, 1);
    assert_fails_with(&step, "memory_limit");
    assert!(
        step["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16 MiB"),
        "{step}"
    );
}

#[test]
fn a_panic_is_a_trap() {
    let (code, step) = one_step("trap", json!({}), json!({}));
    assert_eq!(code, 1);
    assert_fails_with(&step, "trap");
}

#[test]
fn deep_recursion_is_a_trap() {
    let (code, step) = one_step("recurse", json!({}), json!({}));
    assert_eq!(code, 1);
    assert_fails_with(&step, "trap");
}

#[test]
fn output_that_is_not_json_is_invalid_output() {
    let (code, step) = one_step("badjson", json!({}), json!({}));
    assert_eq!(code, 1);
    assert_fails_with(&step, "invalid_output");
}

#[test]
fn output_over_the_cap_is_output_too_large() {
    let (code, step) = one_step("huge", json!({ "size_kb": 2048 }), json!({}));
    assert_eq!(code, 1);
    assert_fails_with(&step, "output_too_large");
}

#[test]
fn host_error_codes_are_retried_when_the_step_asks() {
    let (code, step) = one_step(
        "trap",
        json!({}),
        json!({ "retry": { "max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 5 } }),
    );
    assert_eq!(code, 1);
    assert_fails_with(&step, "trap");
    assert_eq!(step["attempts"], 3);
}

#[test]
fn the_sandbox_grants_no_env_files_or_sockets() {
    // A live listener: were sockets granted, the probe would reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (code, step) = one_step("probe", json!({ "tcp": [addr] }), json!({}));
    assert_eq!(code, 0, "{step}");
    let seen = &step["output"];
    assert_eq!(seen["env"], json!([]), "{seen}");
    assert_eq!(seen["args"], json!([]), "{seen}");
    let mut probes = 0;
    for group in ["files", "tcp", "udp", "dns"] {
        let entries = seen[group]
            .as_object()
            .unwrap_or_else(|| panic!("no {group} in {seen}"));
        for (what, result) in entries {
            probes += 1;
            assert_eq!(
                result["ok"],
                json!(false),
                "{group} {what} was allowed: {result}"
            );
        }
    }
    assert!(
        seen["tcp"].as_object().unwrap().contains_key(&addr),
        "{seen}"
    );
    assert!(probes >= 6, "too few probes ran: {seen}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host's listener: {other:?}"),
    }
}

/// Every hostile component in turn on one engine, then a normal step on the
/// same engine: the host is unharmed and each stop came within its limit.
#[test]
fn one_engine_survives_every_hostile_component() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let cache = ComponentCache::new(engine.clone(), Some(&data_dir()), 64);
        let limits = |timeout_ms| StepLimits {
            fuel: 50_000_000_000,
            memory_bytes: 32 << 20,
            timeout: Duration::from_millis(timeout_ms),
            output_bytes: 1 << 20,
        };
        // Only the loop is meant to time out; the others get time to fail their own way
        // even on a loaded machine.
        let cases = [
            (paths::SPIN, "timeout", 400),
            (paths::HOG, "memory_limit", 30_000),
            (paths::TRAP, "trap", 30_000),
            (paths::RECURSE, "trap", 30_000),
            (paths::BADJSON, "invalid_output", 30_000),
            (paths::HUGE, "output_too_large", 30_000),
        ];
        for (path, expected, timeout_ms) in cases {
            let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
            let digest = cache.add(bytes).await.unwrap();
            let linked = cache.get(&digest, async { Ok(None) }).await.unwrap();
            let started = Instant::now();
            let execution = engine
                .run(
                    &linked,
                    invocation(),
                    "{}",
                    &limits(timeout_ms),
                    Grants::default(),
                    &CancellationToken::new(),
                )
                .await;
            let failure = execution.result.expect_err(path);
            assert_eq!(failure.code, expected, "{path}: {failure:?}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{path} took {:?}",
                started.elapsed()
            );
        }
        let echo = Arc::new(cache);
        let digest = echo
            .add(bytes::Bytes::from(std::fs::read(paths::ECHO).unwrap()))
            .await
            .unwrap();
        let linked = echo.get(&digest, async { Ok(None) }).await.unwrap();
        let execution = engine
            .run(
                &linked,
                invocation(),
                r#"{"still":"fine"}"#,
                &limits(30_000),
                Grants::default(),
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(execution.result.unwrap(), json!({ "still": "fine" }));
    });
}

#[test]
fn cancellation_stops_a_running_step() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let cache = ComponentCache::new(engine.clone(), Some(&data_dir()), 8);
        let digest = cache
            .add(bytes::Bytes::from(std::fs::read(paths::SPIN).unwrap()))
            .await
            .unwrap();
        let linked = cache.get(&digest, async { Ok(None) }).await.unwrap();
        let limits = StepLimits {
            fuel: u64::MAX / 2,
            memory_bytes: 32 << 20,
            timeout: Duration::from_secs(60),
            output_bytes: 1 << 20,
        };
        let token = CancellationToken::new();
        let stopper = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        let execution = engine
            .run(
                &linked,
                invocation(),
                "{}",
                &limits,
                Grants::default(),
                &token,
            )
            .await;
        assert_eq!(execution.result.unwrap_err().code, "cancelled");
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

fn invocation() -> Invocation {
    Invocation {
        tenant: "t".into(),
        run_id: "run_test".into(),
        step_id: "s".into(),
        attempt: 1,
    }
}
