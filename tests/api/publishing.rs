//! Publishing answers before the component is compiled; the compile happens
//! once, in the background, however many first runs wait for it; and what
//! a refused publish says, over HTTP and from `weft publish`.

use serde_json::{Value, json};

use crate::capabilities::publish;
use crate::common::polyglot;
use crate::common::target::Target;
use crate::http::{self, get};
use crate::language::{ended, wait};
use crate::server::Server;

fn compiles(server: &Server) -> f64 {
    let text = get(server.addr(), "/metrics", "").body;
    http::metric(
        text.as_str().unwrap_or(""),
        "weft_component_cache_compiles_total",
    )
    .unwrap_or(0.0)
}

#[test]
fn publishing_answers_before_compiling_and_twenty_first_runs_share_one_compile() {
    let scratch = tempfile::tempdir().unwrap();
    let target = Target::start(scratch.path());
    // A cache of its own, so that nothing is compiled already.
    let cache = scratch.path().join("cache");
    let server = Server::start_with_args(&["--cache-dir", cache.to_str().unwrap()]);
    let key = server.default_key();
    let plain = format!("127.0.0.1:{}", target.port);
    server.set_limits("default", json!({"allowed_hosts": [plain]}));
    // The bundled examples compile in the background after the first start.
    let examples = weft::bundled::EXAMPLES.len() as f64;
    crate::resilience::eventually("the bundled examples to compile", || {
        compiles(&server) == examples
    });

    let published = publish(&server, &key, "summarize", &polyglot("summarize"));
    assert_eq!(published.status, 201, "{:?}", published.body);
    // Answered before its code was compiled: that takes seconds.
    assert_eq!(
        compiles(&server),
        examples,
        "publish compiled the component"
    );

    let doc = json!({ "steps": [
        {"id": "s", "component": "summarize@1", "input": {"url": target.url("/text"), "max_words": 2},
         "http": {"allow": [plain]}},
    ]});
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| server.submit(&key, &doc, json!({}))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for id in &ids {
        let run = wait(&server, &key, id, "a first run to end", ended);
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"]["s"]["output"]["summary"], "the quick");
    }
    assert_eq!(
        compiles(&server),
        examples + 1.0,
        "twenty first runs, one compile"
    );

    // Imports the host does not link are named, each with what to do.
    let refused = publish(
        &server,
        &key,
        "badimport",
        std::path::Path::new(weft::bundled::paths::BADIMPORT),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`other:thing/kv` not linked"), "{message}");
    assert!(
        message.contains("build the component against world weft:step/step@0.2.0"),
        "{message}"
    );

    // `weft publish` shows the server's refusal, not a broken pipe, also
    // when the server refuses a large upload before reading it.
    server.set_limits("default", json!({"component_bytes": 100_000}));
    let python = polyglot("fetch-json");
    let out = crate::cli::run(crate::cli::weft(&server.url, &server.data_dir()).args([
        "publish",
        python.to_str().unwrap(),
        "--name",
        "fetch-json",
        "--version",
        "1.0.0",
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let refusal: Value = serde_json::from_str(&out.stderr).expect("the server's error document");
    assert_eq!(refusal["error"]["code"], "too_large", "{}", out.stderr);
}
