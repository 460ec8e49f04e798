//! The instance pool resets linear memory between steps: whatever one
//! instance wrote, the next one starts from the component's image.

use wasmtime::{Linker, Module, Store};

use super::{Engine, EngineConfig};

/// One page of data at 1 MiB, and a function that grows memory then writes a
/// byte into each of the first `pages` 4 KiB pages.
const WAT: &str = r#"
(module
  (memory (export "memory") 17)
  (data (i32.const 1048576) "\05\06\07")
  (func (export "dirty") (param $pages i32)
    (local $i i32)
    (drop (memory.grow (i32.const 16)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $pages)))
        (i32.store8 (i32.add (i32.mul (local.get $i) (i32.const 4096)) (i32.const 7)) (i32.const 255))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
"#;

#[test]
fn memory_starts_from_the_image_whatever_the_last_instance_wrote() {
    let engine = Engine::new(&EngineConfig {
        max_concurrency: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let wasm = engine.wasmtime();
    let module = Module::new(wasm, WAT).unwrap();
    let pre = Linker::<()>::new(wasm).instantiate_pre(&module).unwrap();
    // Few pages (reset by hand) and many (past what is kept resident), in turn.
    for pages in [1u32, 40, 528, 3, 300, 528, 0, 17] {
        let mut store = Store::new(wasm, ());
        store.set_fuel(1 << 30).unwrap();
        store.set_epoch_deadline(1 << 20);
        let instance = pre.instantiate(&mut store).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let data = memory.data(&store);
        assert_eq!(data.len(), 17 << 16, "memory is back to its initial size");
        assert_eq!(&data[1 << 20..(1 << 20) + 3], &[5, 6, 7]);
        let stray = data
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b != 0 && !((1 << 20)..(1 << 20) + 3).contains(&i))
            .count();
        assert_eq!(stray, 0, "bytes left by an earlier instance");
        let dirty = instance
            .get_typed_func::<u32, ()>(&mut store, "dirty")
            .unwrap();
        dirty.call(&mut store, pages).unwrap();
    }
}
