//! Compiled artifacts survive a process restart and are never shared between
//! engine configurations.

use bytes::Bytes;
use serde_json::json;
use weft::bundled::paths;
use weft::cache::ComponentCache;
use weft::engine::{Engine, EngineConfig};

use crate::common::{components_dir, exec_with};

fn stat(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("components ready"))
        .unwrap_or_else(|| panic!("no cache summary in:\n{stderr}"));
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_second_process_loads_artifacts_instead_of_compiling() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let workflow = json!({ "steps": [
        { "id": "a", "component": "echo@1", "input": {} },
        { "id": "b", "component": "text@1", "input": { "op": "upper", "text": "x" } }
    ] });
    let env = [("WEFT_DATA_DIR", data_dir), ("WEFT_LOG", "weft=info")];
    let first = exec_with(&workflow, &json!({}), &components_dir(), &env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(stat(&first.stderr, "compiles"), 2);
    assert_eq!(stat(&first.stderr, "loads"), 0);

    let second = exec_with(&workflow, &json!({}), &components_dir(), &env);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(stat(&second.stderr, "compiles"), 0, "recompiled on restart");
    assert_eq!(stat(&second.stderr, "loads"), 2);
}

#[test]
fn another_engine_configuration_never_loads_a_stale_artifact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let bytes = Bytes::from(std::fs::read(paths::ECHO).unwrap());

        let fast = Engine::new(&EngineConfig::default()).unwrap();
        let first = ComponentCache::new(fast.clone(), Some(data.path()), 4);
        first.add(bytes.clone()).await.unwrap();
        assert_eq!(first.stats().compiles, 1);

        // Same configuration, new cache (a restart): loaded, not compiled.
        let again = ComponentCache::new(fast.clone(), Some(data.path()), 4);
        again.add(bytes.clone()).await.unwrap();
        assert_eq!((again.stats().compiles, again.stats().loads), (0, 1));

        let other = Engine::new(&EngineConfig {
            optimize: false,
            ..EngineConfig::default()
        })
        .unwrap();
        assert_ne!(fast.fingerprint(), other.fingerprint());
        // An artifact of this digest exists, but for another configuration: compiled.
        let second = ComponentCache::new(other.clone(), Some(data.path()), 4);
        second.add(bytes.clone()).await.unwrap();
        assert_eq!((second.stats().compiles, second.stats().loads), (1, 0));

        // An unusable artifact where this engine looks is refused, compiled
        // again and replaced, so the next start loads it.
        let digest = weft::cache::digest(&bytes);
        let file = data
            .path()
            .join("artifacts")
            .join(other.fingerprint())
            .join(format!("{}.cwasm", digest.trim_start_matches("sha256:")));
        std::fs::write(&file, b"\x7fELF truncated").unwrap();
        let third = ComponentCache::new(other.clone(), Some(data.path()), 4);
        third.add(bytes.clone()).await.unwrap();
        assert_eq!((third.stats().compiles, third.stats().loads), (1, 0));
        let fourth = ComponentCache::new(other, Some(data.path()), 4);
        fourth.add(bytes).await.unwrap();
        assert_eq!((fourth.stats().compiles, fourth.stats().loads), (0, 1));
    });
}
