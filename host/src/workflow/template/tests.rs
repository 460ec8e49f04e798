//! Compiling and resolving templates.

use super::*;
use serde_json::json;

/// Steps "parse" (0) and "price" (1) exist.
fn compile(value: Value) -> (Template, Vec<Problem>) {
    let mut problems = Vec::new();
    let steps = |id: &str| ["parse", "price"].iter().position(|s| *s == id);
    let template = Template::compile(&value, "/t", &steps, &mut problems);
    (template, problems)
}

fn ok(value: Value) -> Template {
    let (template, problems) = compile(value);
    assert!(problems.is_empty(), "{problems:?}");
    template
}

fn run(template: &Template, input: &Value, parse: &Value) -> Result<Value, BadReference> {
    template.resolve(&|root| match root {
        Root::Input => Some(input),
        Root::Step(0) => Some(parse),
        Root::Step(_) | Root::Item | Root::Index => None,
    })
}

fn sample() -> (Value, Value) {
    let input = json!({
        "n": 42, "f": 1.5, "s": "text", "t": true, "z": null,
        "o": {"b": 1, "a": [1, "x"]}, "arr": [10, {"deep": ["first", "second"]}],
        "weird/key~": "w"
    });
    let parse = json!({"lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 3}], "count": 2});
    (input, parse)
}

#[test]
fn exact_reference_keeps_type() {
    let (input, parse) = sample();
    for (path, want) in [
        ("${input.n}", json!(42)),
        ("${input.f}", json!(1.5)),
        ("${input.s}", json!("text")),
        ("${input.t}", json!(true)),
        ("${input.z}", json!(null)),
        ("${input.o}", json!({"b": 1, "a": [1, "x"]})),
        ("${input.arr}", json!([10, {"deep": ["first", "second"]}])),
        ("${input}", input.clone()),
        ("${steps.parse.output}", parse.clone()),
    ] {
        assert_eq!(
            run(&ok(json!(path)), &input, &parse).unwrap(),
            want,
            "{path}"
        );
    }
}

#[test]
fn object_key_order_is_preserved() {
    let (input, parse) = sample();
    let out = run(&ok(json!("${input.o}")), &input, &parse).unwrap();
    assert_eq!(
        out.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!(
        run(&ok(json!("o=${input.o}")), &input, &parse).unwrap(),
        json!(r#"o={"b":1,"a":[1,"x"]}"#)
    );
}

#[test]
fn interpolation_of_each_type() {
    let (input, parse) = sample();
    for (template, want) in [
        ("n=${input.n}", "n=42"),
        ("f=${input.f}", "f=1.5"),
        ("s=${input.s}", "s=text"),
        ("t=${input.t}", "t=true"),
        ("z=${input.z}", "z=null"),
        ("o=${input.o.a}", r#"o=[1,"x"]"#),
        ("${input.s}${input.n}", "text42"),
        ("${input.s} ", "text "),
    ] {
        assert_eq!(
            run(&ok(json!(template)), &input, &parse).unwrap(),
            json!(want),
            "{template}"
        );
    }
}

#[test]
fn indexes_and_nested_paths() {
    let (input, parse) = sample();
    let template = ok(json!({
        "sku": "${steps.parse.output.lines[1].sku}",
        "qty": "${steps.parse.output.lines[0].qty}",
        "deep": "${input.arr[1].deep[0]}",
        "list": ["${input.arr[0]}", "literal", {"again": "${input.o.a[1]}"}],
    }));
    assert_eq!(
        run(&template, &input, &parse).unwrap(),
        json!({"sku": "B-2", "qty": 2, "deep": "first", "list": [10, "literal", {"again": "x"}]})
    );
    assert_eq!(
        template.roots().collect::<Vec<_>>(),
        vec![Root::Input, Root::Step(0)]
    );
    assert!(!template.is_literal());
}

#[test]
fn keys_are_not_templated() {
    let (input, parse) = sample();
    let out = run(&ok(json!({"${input.s}": "${input.s}"})), &input, &parse).unwrap();
    assert_eq!(out, json!({"${input.s}": "text"}));
}

#[test]
fn escape_gives_literal_dollar_brace() {
    let (input, parse) = sample();
    let template = ok(json!({"a": "$${input.n}", "b": "cost: $${x} and ${input.n}", "c": "$5"}));
    assert_eq!(
        run(&template, &input, &parse).unwrap(),
        json!({"a": "${input.n}", "b": "cost: ${x} and 42", "c": "$5"})
    );
    let literal = ok(json!(["$${input}", {"k": "$${steps.nope.output}"}]));
    assert!(literal.is_literal());
    assert_eq!(literal.roots().count(), 0);
    assert_eq!(
        run(&literal, &input, &parse).unwrap(),
        json!(["${input}", {"k": "${steps.nope.output}"}])
    );
}

#[test]
fn literals_resolve_to_themselves() {
    let value = json!({"a": [1, 2.5, null, true, "s"], "b": {}});
    let template = ok(value.clone());
    assert!(template.is_literal());
    assert_eq!(run(&template, &json!(null), &json!(null)).unwrap(), value);
}

#[test]
fn missing_path_names_the_path() {
    let (input, parse) = sample();
    for path in [
        "input.nope",
        "input.n.x",
        "input.arr[5]",
        "input.o[0]",
        "input.arr.x",
        "steps.parse.output.lines[3]",
        "steps.parse.output.lines[0].price",
        "steps.price.output",
    ] {
        for template in [
            format!("${{{path}}}"),
            format!("x ${{{path}}}"),
            format!("[${{{path}}}]"),
        ] {
            let err = run(&ok(json!({"k": [template]})), &input, &parse).unwrap_err();
            assert_eq!(err.path, path);
            assert_eq!(
                err.to_string(),
                format!("reference ${{{path}}} does not exist")
            );
        }
    }
}

#[test]
fn malformed_and_unknown_references_are_problems_at_the_string() {
    let (_, problems) = compile(json!({
        "a": "${foo}",
        "b": ["ok", "${steps.x}"],
        "c": "${input.}",
        "d": "open ${input.a",
        "e": "${steps.nope.output.x}",
        "f/g~h": {"i": "${}"},
    }));
    let at: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        at,
        ["/t/a", "/t/b/1", "/t/c", "/t/d", "/t/e", "/t/f~1g~0h/i"]
    );
    assert!(
        problems[0].message.contains("${foo}"),
        "{}",
        problems[0].message
    );
    assert!(
        problems[1].message.contains(".output"),
        "{}",
        problems[1].message
    );
    assert!(
        problems[3].message.starts_with("unclosed"),
        "{}",
        problems[3].message
    );
    assert_eq!(
        problems[4].message,
        "unknown step \"nope\" in reference ${steps.nope.output.x}"
    );
}

#[test]
fn roots_are_deduplicated_and_sorted() {
    let template = ok(json!([
        "${steps.price.output}",
        "${input.a}",
        "${steps.parse.output.x}",
        "${steps.price.output.y}"
    ]));
    assert_eq!(
        template.roots().collect::<Vec<_>>(),
        vec![Root::Input, Root::Step(0), Root::Step(1)]
    );
}

#[test]
fn unavailable_root_is_a_bad_reference() {
    let template = ok(json!("${steps.price.output.total}"));
    let err = run(&template, &json!({}), &json!({})).unwrap_err();
    assert_eq!(err.path, "steps.price.output.total");
}
