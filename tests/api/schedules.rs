//! Schedules over HTTP: one run per tick carrying the schedule's name and
//! tick, pause, resume and delete, what overlap does beside a run that has
//! not ended, what catch_up gives the ticks missed while the only node was
//! stopped, and what bad schedules get.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::millis;
use crate::http::{get, post_json, request};
use crate::language::run;
use crate::server::Server;

/// Publishes template `name` 1.0.0: one step that sleeps `ms`, then echoes.
fn publish(server: &Server, key: &str, name: &str, ms: u64) {
    let template = json!({
        "input_schema": { "type": "object", "required": ["who"] },
        "steps": [
            { "id": "wait", "component": "sleep@1", "input": { "ms": ms } },
            { "id": "say", "component": "echo@1", "needs": ["wait"],
              "input": { "who": "${input.who}" } }
        ],
        "output": "${steps.say.output.who}"
    });
    crate::subworkflows::publish(server, key, name, &template);
}

fn create(server: &Server, key: &str, body: Value) -> crate::http::Answer {
    post_json(server.addr(), "/v1/schedules", key, &body)
}

/// A schedule of `name` ticking every second, of template `workflow`; a
/// tick starts its run even while the one before has not ended (a node's
/// first runs wait for their components to compile), unless `extra` says.
fn every_second(name: &str, workflow: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name, "cron": "* * * * * *", "workflow": format!("{workflow}@^1"),
        "input": { "who": name }, "overlap": "allow"
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// The runs schedule `name` (of template `workflow`) started, by tick.
fn runs_of(server: &Server, key: &str, workflow: &str, name: &str) -> Vec<Value> {
    let page = get(
        server.addr(),
        &format!("/v1/runs?workflow={workflow}&limit=500"),
        key,
    );
    assert_eq!(page.status, 200, "{:?}", page.body);
    let mut runs: Vec<Value> = page.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| run(server, key, r["id"].as_str().unwrap()))
        .filter(|r| r["schedule"] == name)
        .collect();
    runs.sort_by_key(|r| millis(&r["scheduled_for"]));
    runs
}

fn schedule_action(server: &Server, key: &str, name: &str, action: &str) -> Value {
    let answer = post_json(
        server.addr(),
        &format!("/v1/schedules/{name}/{action}"),
        key,
        &json!({}),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

/// Waits until `enough` holds of schedule `name`'s runs, for at most 30 s.
fn wait_runs(
    server: &Server,
    key: &str,
    workflow: &str,
    name: &str,
    enough: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = runs_of(server, key, workflow, name);
        if enough(&runs) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "schedule {name}: {runs:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ticks(runs: &[Value]) -> Vec<u128> {
    runs.iter().map(|r| millis(&r["scheduled_for"])).collect()
}

#[test]
fn a_schedule_starts_one_run_a_tick_and_pauses_resumes_and_deletes() {
    let server = Server::start();
    let key = server.default_key();
    publish(&server, &key, "tick", 0);
    let created = create(&server, &key, every_second("each", "tick", json!({})));
    assert_eq!(created.status, 201, "{:?}", created.body);
    let view = &created.body;
    assert_eq!(view["timezone"], "UTC");
    assert_eq!(view["catch_up"], "latest");
    assert_eq!(view["paused"], false);
    let first_tick = millis(&view["next_tick"]);
    assert!(first_tick > millis(&view["created_at"]) && first_tick.is_multiple_of(1_000));

    let runs = wait_runs(&server, &key, "tick", "each", |r| r.len() >= 3);
    let at = ticks(&runs);
    assert_eq!(at[0], first_tick, "{runs:?}");
    for pair in at.windows(2) {
        assert_eq!(pair[1] - pair[0], 1_000, "one run a tick: {at:?}");
    }
    for r in &runs {
        assert_eq!(r["workflow"], "tick");
        assert_eq!(r["input"], json!({ "who": "each" }));
        let late = millis(&r["created_at"]) - millis(&r["scheduled_for"]);
        assert!(late < 1_000, "started {late} ms after its tick: {r}");
    }
    let shown = get(server.addr(), "/v1/schedules/each", &key).body;
    assert!(
        shown["last_run"].is_string() && shown["last_tick"].is_string(),
        "{shown}"
    );

    // Paused: its ticks start nothing; resumed: from its next tick on.
    let paused = schedule_action(&server, &key, "each", "pause");
    assert_eq!(paused["paused"], true);
    assert!(paused.get("next_tick").is_none(), "{paused}");
    let before = runs_of(&server, &key, "tick", "each").len();
    std::thread::sleep(Duration::from_millis(2_500));
    let while_paused = runs_of(&server, &key, "tick", "each");
    assert!(
        while_paused.len() <= before + 1,
        "{before} runs before the pause, then {while_paused:?}"
    );
    let resumed = schedule_action(&server, &key, "each", "resume");
    assert_eq!(resumed["paused"], false);
    let resumed_at = millis(&resumed["next_tick"]);
    let runs = wait_runs(&server, &key, "tick", "each", |r| {
        ticks(r).contains(&resumed_at)
    });
    let paused_at = millis(&paused["last_tick"]);
    let skipped: Vec<u128> = ticks(&runs)
        .into_iter()
        .filter(|t| *t > paused_at + 1_000 && *t < resumed_at - 1_000)
        .collect();
    assert!(skipped.is_empty(), "ticks fired while paused: {skipped:?}");
    let listed = get(server.addr(), "/v1/schedules", &key).body;
    assert_eq!(listed["schedules"][0]["name"], "each", "{listed}");

    // Deleted: gone, and its runs stay.
    let deleted = request(server.addr(), "DELETE", "/v1/schedules/each", &key, None);
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    let count = runs_of(&server, &key, "tick", "each").len();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(runs_of(&server, &key, "tick", "each").len() <= count + 1);
    assert_eq!(get(server.addr(), "/v1/schedules/each", &key).status, 404);
    let again = request(server.addr(), "DELETE", "/v1/schedules/each", &key, None);
    assert_eq!(again.status, 404);
}

#[test]
fn overlap_skips_allows_or_cancels_a_run_that_has_not_ended() {
    let server = Server::start();
    let key = server.default_key();
    // Each run takes 2.5 s; the schedules tick every second.
    publish(&server, &key, "slow", 2_500);
    for overlap in ["skip", "allow", "cancel_previous"] {
        let name = overlap.replace('_', "-");
        let body = every_second(&name, "slow", json!({ "overlap": overlap }));
        let created = create(&server, &key, body);
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    std::thread::sleep(Duration::from_millis(6_500));
    for name in ["skip", "allow", "cancel-previous"] {
        schedule_action(&server, &key, name, "pause");
    }
    let ended = |runs: &[Value]| {
        runs.iter()
            .all(|r| ["succeeded", "cancelled"].contains(&r["status"].as_str().unwrap()))
    };
    let skip = wait_runs(&server, &key, "slow", "skip", ended);
    let allow = wait_runs(&server, &key, "slow", "allow", ended);
    let cancel = wait_runs(&server, &key, "slow", "cancel-previous", ended);

    // skip: one run at a time; the ticks meanwhile start nothing.
    assert!((2..=3).contains(&skip.len()), "{skip:?}");
    for pair in skip.windows(2) {
        assert!(
            millis(&pair[1]["created_at"]) >= millis(&pair[0]["finished_at"]),
            "overlapping runs: {pair:?}"
        );
    }
    // allow: a run a tick, side by side.
    assert!(allow.len() >= 5, "{allow:?}");
    assert!(
        millis(&allow[1]["created_at"]) < millis(&allow[0]["finished_at"]),
        "{allow:?}"
    );
    // cancel_previous: each tick cancels the run before it.
    assert!(cancel.len() >= 5, "{cancel:?}");
    let (last, earlier) = cancel.split_last().unwrap();
    assert!(
        earlier.iter().all(|r| r["status"] == "cancelled"),
        "{cancel:?}"
    );
    assert_eq!(last["status"], "succeeded", "{last}");
}

/// Runs before the stop, and after it, of one schedule.
fn split_at(runs: &[Value], stopped: u128) -> (Vec<u128>, Vec<u128>, u128) {
    let at = ticks(runs);
    let (before, after): (Vec<u128>, Vec<u128>) = at.iter().partition(|t| **t < stopped);
    let first_look = runs
        .iter()
        .map(|r| millis(&r["created_at"]))
        .filter(|c| *c > stopped)
        .min()
        .unwrap();
    (before, after, first_look)
}

#[test]
fn catch_up_gives_the_ticks_missed_while_the_only_node_was_stopped_what_it_says() {
    let mut server = Server::start();
    let key = server.default_key();
    publish(&server, &key, "clock", 0);
    for policy in ["none", "latest", "all"] {
        let body = every_second(policy, "clock", json!({ "catch_up": policy }));
        let created = create(&server, &key, body);
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    for policy in ["none", "latest", "all"] {
        wait_runs(&server, &key, "clock", policy, |r| r.len() >= 2);
    }
    server.stop();
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_secs(10));
    server.start_again();
    let restarted = |r: &[Value]| {
        r.iter()
            .filter(|r| millis(&r["created_at"]) > stopped)
            .count()
            >= 3
    };
    let mut seen = Vec::new();
    for policy in ["none", "latest", "all"] {
        let runs = wait_runs(&server, &key, "clock", policy, restarted);
        let (before, after, look) = split_at(&runs, stopped);
        let mut all = before.clone();
        all.extend(&after);
        let gaps: Vec<u128> = all
            .windows(2)
            .map(|p| p[1] - p[0])
            .filter(|d| *d != 1_000)
            .collect();
        eprintln!(
            "catch_up {policy}: {} runs after the restart, the first for {} ms before the node's first look; gaps {gaps:?}",
            after.len(),
            look as i128 - after[0] as i128
        );
        seen.push((policy, gaps, after[0], look));
    }
    for (policy, gaps, first, look) in seen {
        match policy {
            // Every missed tick fired: no second is missing.
            "all" => assert!(gaps.is_empty(), "all: {gaps:?}"),
            // The newest missed tick fired, then the ticks on time.
            "latest" => {
                assert_eq!(gaps.len(), 1, "latest: {gaps:?}");
                assert!(
                    first < look - 2_000,
                    "latest: {first} is not a missed tick ({look})"
                );
            }
            // The missed ticks did not fire; the first after is on time.
            _ => {
                assert_eq!(gaps.len(), 1, "none: {gaps:?}");
                assert!(gaps[0] >= 7_000, "none: {gaps:?}");
                assert!(first + 2_200 >= look, "none: {first} was missed ({look})");
            }
        }
    }
}

#[test]
fn bad_schedules_get_clear_errors_and_the_node_goes_on() {
    let server = Server::start();
    let key = server.default_key();
    publish(&server, &key, "report", 0);
    let good = json!({ "name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
        "workflow": "report@^1", "input": { "who": "ops" } });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let big = "x".repeat(300 << 10);
    for (body, code) in [
        (with("name", json!("Not A Name")), "invalid_schedule"),
        (with("cron", json!("61 * * * *")), "invalid_schedule"),
        (with("cron", json!("0 0 30 2 *")), "invalid_schedule"),
        (with("cron", json!("* ".repeat(200))), "invalid_schedule"),
        (with("timezone", json!("Mars/Olympus")), "invalid_schedule"),
        (with("workflow", json!("report")), "invalid_schedule"),
        (with("workflow", json!("missing@^1")), "invalid_workflow"),
        (with("workflow", json!("report@^2")), "invalid_workflow"),
        (with("input", json!({ "nobody": 1 })), "invalid_input"),
        (with("input", json!({ "who": big })), "invalid_schedule"),
        (with("overlap", json!("sometimes")), "invalid_request"),
        (with("catch_up", json!("never")), "invalid_request"),
        (with("extra", json!(1)), "invalid_request"),
    ] {
        let answer = create(&server, &key, body.clone());
        assert_eq!(answer.status, 422, "{body:.200}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{:?}", answer.body);
    }
    assert!(
        get(server.addr(), "/v1/schedules", &key).body["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let created = create(&server, &key, good.clone());
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["overlap"], "skip");
    assert_eq!(created.body["catch_up"], "latest");
    // 03:00 in Berlin is 01:00 or 02:00 UTC, by the season.
    let next = created.body["next_tick"].as_str().unwrap().to_string();
    assert!(
        next.ends_with("T02:00:00.000Z") || next.ends_with("T01:00:00.000Z"),
        "{next}"
    );
    let again = create(&server, &key, good.clone());
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "schedule_exists");
    for name in 1..100 {
        let answer = create(&server, &key, with("name", json!(format!("s{name}"))));
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    let one_more = create(&server, &key, with("name", json!("s100")));
    assert_eq!(one_more.status, 409, "{:?}", one_more.body);
    assert_eq!(one_more.body["error"]["code"], "too_many_schedules");
    for missing in ["/v1/schedules/none", "/v1/schedules/none/pause"] {
        let method = if missing.ends_with("pause") {
            "POST"
        } else {
            "GET"
        };
        assert_eq!(
            request(server.addr(), method, missing, &key, None).status,
            404
        );
    }

    // Another tenant sees none of them.
    let other = server.create_tenant("other");
    assert!(
        get(server.addr(), "/v1/schedules", &other).body["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        get(server.addr(), "/v1/schedules/nightly", &other).status,
        404
    );
    assert_eq!(get(server.addr(), "/healthz", "").status, 200);
}

#[test]
fn the_command_line_creates_lists_pauses_resumes_and_deletes_schedules() {
    use crate::cli::{run as weft_run, weft};
    let server = Server::start();
    let key = server.default_key();
    publish(&server, &key, "report", 0);
    let data = server.data_dir();
    let cmd = || weft(&server.url, &data);
    let created = weft_run(cmd().args([
        "schedule",
        "create",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--workflow",
        "report@^1",
        "--input",
        r#"{"who": "ops"}"#,
        "--catch-up",
        "all",
    ]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created
            .stderr
            .contains("schedule nightly created; next tick"),
        "{}",
        created.stderr
    );
    let view: Value = serde_json::from_str(&created.stdout).unwrap();
    assert_eq!(view["catch_up"], "all");
    assert_eq!(view["input"], json!({ "who": "ops" }));

    let listed = weft_run(cmd().args(["schedule", "list"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("NEXT TICK") && listed.stdout.contains("30 2 * * * (Europe/Berlin)"),
        "{}",
        listed.stdout
    );
    let paused = weft_run(cmd().args(["schedule", "pause", "nightly"]));
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    let listed = weft_run(cmd().args(["schedule", "list"]));
    assert!(listed.stdout.contains("paused"), "{}", listed.stdout);
    let resumed = weft_run(cmd().args(["schedule", "resume", "nightly"]));
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let view: Value = serde_json::from_str(&resumed.stdout).unwrap();
    assert_eq!(view["paused"], false);

    let bad = weft_run(cmd().args([
        "schedule",
        "create",
        "bad",
        "--cron",
        "every day",
        "--workflow",
        "report@^1",
    ]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("invalid_schedule"), "{}", bad.stderr);
    let deleted = weft_run(cmd().args(["schedule", "delete", "nightly"]));
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let again = weft_run(cmd().args(["schedule", "delete", "nightly"]));
    assert_eq!(again.code, 2, "{}", again.stderr);
    let help = weft_run(cmd().args(["schedule", "create", "--help"]));
    assert!(help.stdout.contains("--catch-up") && help.stdout.contains("cancel_previous"));
}
