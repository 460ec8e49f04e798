//! Validation: the document schema, then the DAG rules, then component resolution.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::{Map, Value};

use super::condition::Condition;
use super::document::{
    Action, Compensation, ComponentRef, Concurrency, DEFAULT_MAX_CONCURRENCY, ForEach,
    MAX_TIMEOUT_MS, OnError, RetryPolicy, Sleep, Step, StepLimits, Workflow,
};
use super::template::{Root, Template};
use super::{ComponentResolver, Problem, Validated, cut, dag, quoted, schema, sort_problems};
use super::{is_valid_name, parse_requirement};
use crate::capability::hosts::HostPattern;

/// Parse and validate a workflow document and pin every step's component through `resolver`.
///
/// Every problem is reported at once, sorted by path (array indexes numerically). When the
/// document's shape is broken, the later checks still run on whatever parts can be read, so
/// one submission shows as much as possible; no input makes this panic.
pub fn validate(doc: &Value, resolver: &dyn ComponentResolver) -> Result<Validated, Vec<Problem>> {
    let mut problems = schema::check(doc);
    let top = doc.as_object();
    let field = |key: &str| top.and_then(|o| o.get(key));
    let raw_steps: &[Value] = field("steps")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);

    let ids: Vec<Option<&str>> = raw_steps
        .iter()
        .map(|s| s.get("id").and_then(Value::as_str))
        .collect();
    let first_by_id = index_ids(&ids, &mut problems);
    let step_index = |id: &str| first_by_id.get(id).copied();

    let drafts: Vec<Draft> = raw_steps
        .iter()
        .enumerate()
        .map(|(i, raw)| draft_step(i, raw, &step_index, &mut problems))
        .collect();
    let output =
        field("output").map(|v| Template::compile(v, "/output", &step_index, &mut problems));

    report_cycles(&drafts, &ids, &mut problems);

    // A schema of the wrong type is a shape problem already reported; only compile real schemas.
    let input_schema = field("input_schema").filter(|s| s.is_object() || s.is_boolean());
    let input_validator = input_schema.and_then(|s| match schema::compile_input_schema(s) {
        Ok(validator) => Some(validator),
        Err(message) => {
            problems.push(Problem::new("/input_schema", message));
            None
        }
    });

    let wanted: Vec<(String, Option<&ComponentRef>)> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("/steps/{i}/component"), d.component.as_ref()))
        .collect();
    let pins = resolve_components(&wanted, resolver, &mut problems);
    let compensations: Vec<(String, Option<&ComponentRef>)> = drafts
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let c = d.compensate.as_ref()?;
            Some((
                format!("/steps/{i}/compensate/component"),
                c.component.as_ref(),
            ))
        })
        .collect();
    let mut compensation_pins = resolve_components(&compensations, resolver, &mut problems)
        .into_iter()
        .map(Option::unwrap_or_default);
    let any_compensation = drafts.iter().any(|d| d.compensate.is_some());
    let compensation_pins: Vec<String> = if any_compensation {
        drafts
            .iter()
            .map(|d| match d.compensate {
                Some(_) => compensation_pins.next().unwrap_or_default(),
                None => String::new(),
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut steps = Vec::with_capacity(drafts.len());
    for (i, (draft, pin)) in drafts.into_iter().zip(&pins).enumerate() {
        let compensate = draft.compensate.and_then(|c| {
            Some(Compensation {
                component: c.component?,
                input: c.input,
                retry: c.retry,
                timeout_ms: c.timeout_ms,
                limits: c.limits,
            })
        });
        let action = match (draft.component, draft.wait, pin) {
            (Some(component), None, Some(_)) => Some(Action::Run(component)),
            (None, Some(wait), None) => Some(wait),
            _ => None,
        };
        match (draft.id, action) {
            (Some(id), Some(action)) => steps.push(Step {
                for_each: draft.for_each,
                when: draft.when,
                on_error: draft.on_error,
                compensate,
                id: id.to_owned(),
                action,
                input: draft.input,
                needs: draft.needs,
                deps: draft.deps,
                retry: draft.retry,
                timeout_ms: draft.timeout_ms,
                limits: draft.limits,
                http_allow: draft.http_allow,
                secrets: draft.secrets,
                queue: draft.queue,
                rate_limit: draft.rate_limit,
                concurrency: draft.concurrency,
            }),
            // Only reachable together with a problem already reported for this step.
            _ if !problems.is_empty() => {}
            _ => problems.push(Problem::new(
                format!("/steps/{i}"),
                "step could not be read",
            )),
        }
    }
    if !problems.is_empty() {
        sort_problems(&mut problems);
        return Err(problems);
    }

    let dependents = dependents_of(&steps);
    let workflow = Workflow {
        name: field("name")
            .and_then(Value::as_str)
            .unwrap_or("workflow")
            .to_owned(),
        description: field("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_schema: input_schema.cloned(),
        steps,
        output,
        dependents,
        input_validator,
    };
    // A step that waits runs no component: its pin is empty.
    let mut pins: Vec<String> = pins.into_iter().map(Option::unwrap_or_default).collect();
    pins.extend(compensation_pins);
    Ok(Validated { workflow, pins })
}

/// Map each id to the first step that has it, reporting every later duplicate.
///
/// References to a duplicated id bind to its first step, so that the graph can still be checked.
fn index_ids<'d>(ids: &[Option<&'d str>], problems: &mut Vec<Problem>) -> HashMap<&'d str, usize> {
    let mut first_by_id = HashMap::new();
    for (j, id) in ids.iter().enumerate() {
        let Some(id) = *id else { continue };
        match first_by_id.entry(id) {
            Entry::Occupied(first) => problems.push(Problem::new(
                format!("/steps/{j}/id"),
                format!(
                    "duplicate step id {}: already used by /steps/{}",
                    quoted(id),
                    first.get()
                ),
            )),
            Entry::Vacant(slot) => {
                slot.insert(j);
            }
        }
    }
    first_by_id
}

/// One problem per cycle, at its first step, naming the steps in dependency order.
fn report_cycles(drafts: &[Draft<'_>], ids: &[Option<&str>], problems: &mut Vec<Problem>) {
    let deps: Vec<Vec<usize>> = drafts.iter().map(|d| d.deps.clone()).collect();
    for cycle in dag::cycles(&deps) {
        let Some(&first) = cycle.first() else {
            continue;
        };
        // A long cycle is named by its first steps and its length: the message stays short.
        const NAMED: usize = 10;
        let name = |i: usize| cut(ids.get(i).copied().flatten().unwrap_or("?")).into_owned();
        let mut names: Vec<String> = cycle.iter().take(NAMED).map(|&i| name(i)).collect();
        if cycle.len() > NAMED {
            names.push(format!("… ({} steps in all)", cycle.len()));
        }
        names.push(name(first));
        problems.push(Problem::new(
            format!("/steps/{first}"),
            format!("cycle: {}", names.join(" -> ")),
        ));
    }
}

/// `dependents[i]`: the steps whose `deps` hold `i`, ascending.
fn dependents_of(steps: &[Step]) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for &d in &step.deps {
            if let Some(list) = dependents.get_mut(d) {
                list.push(i);
            }
        }
    }
    dependents
}

/// What could be read of one step, whatever state the document is in.
struct Draft<'d> {
    id: Option<&'d str>,
    component: Option<ComponentRef>,
    /// A sleep or a signal, for a step that waits instead of running a component.
    wait: Option<Action>,
    input: Template,
    needs: Vec<String>,
    deps: Vec<usize>,
    retry: RetryPolicy,
    timeout_ms: Option<u64>,
    limits: StepLimits,
    for_each: Option<ForEach>,
    when: Option<Condition>,
    on_error: OnError,
    compensate: Option<CompensationDraft>,
    http_allow: Vec<HostPattern>,
    secrets: Vec<String>,
    queue: Option<String>,
    rate_limit: Option<String>,
    concurrency: Option<Concurrency>,
}

/// What could be read of a step's `compensate`.
struct CompensationDraft {
    component: Option<ComponentRef>,
    input: Template,
    retry: RetryPolicy,
    timeout_ms: Option<u64>,
    limits: StepLimits,
}

fn draft_step<'d>(
    i: usize,
    raw: &'d Value,
    step_index: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Vec<Problem>,
) -> Draft<'d> {
    let base = format!("/steps/{i}");
    let get = |key: &str| raw.as_object().and_then(|o| o.get(key));

    let component = component_ref(get("component"), &format!("{base}/component"), problems);
    let wait = wait_action(raw, &base, step_index, problems);

    let mut needs = Vec::new();
    let mut deps = Vec::new();
    for (k, item) in get("needs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = item.as_str() else { continue };
        needs.push(name.to_owned());
        match step_index(name) {
            Some(j) => deps.push(j),
            None => problems.push(Problem::new(
                format!("{base}/needs/{k}"),
                format!("unknown step {}", quoted(name)),
            )),
        }
    }

    let for_each = for_each(raw, &base, step_index, problems);
    let empty = Value::Object(Map::new());
    let input = Template::compile_in(
        get("input").unwrap_or(&empty),
        &format!("{base}/input"),
        step_index,
        for_each.is_some() || get("for_each").is_some(),
        problems,
    );
    let when = get("when").and_then(Value::as_str).and_then(|source| {
        Condition::compile(source, &format!("{base}/when"), step_index, problems)
    });
    let step_roots = |t: &Template| -> Vec<usize> {
        t.roots()
            .filter_map(|root| match root {
                Root::Step(j) => Some(j),
                _ => None,
            })
            .collect()
    };
    deps.extend(step_roots(&input));
    if let Some(f) = &for_each {
        deps.extend(step_roots(&f.list));
    }
    if let Some(w) = &when {
        deps.extend(w.steps().iter().copied());
    }
    if let Some(Action::Sleep(Sleep::Until(until))) = &wait {
        deps.extend(step_roots(until));
    }
    deps.sort_unstable();
    deps.dedup();

    let on_error = match get("on_error").and_then(Value::as_str) {
        Some("continue") => OnError::Continue,
        _ => OnError::Fail,
    };
    let compensate = get("compensate")
        .and_then(Value::as_object)
        .map(|c| CompensationDraft {
            component: component_ref(
                c.get("component"),
                &format!("{base}/compensate/component"),
                problems,
            ),
            input: Template::compile(
                c.get("input").unwrap_or(&empty),
                &format!("{base}/compensate/input"),
                step_index,
                problems,
            ),
            retry: retry_policy_or(
                c.get("retry"),
                &format!("{base}/compensate"),
                Compensation::DEFAULT_MAX_ATTEMPTS,
                problems,
            ),
            timeout_ms: uint(c.get("timeout_ms")),
            limits: step_limits(c.get("limits"), &format!("{base}/compensate"), problems),
        });
    let timeout_ms = uint(get("timeout_ms"));
    if component.is_some()
        && let Some(t) = timeout_ms.filter(|t| *t > MAX_TIMEOUT_MS)
    {
        problems.push(Problem::new(
            format!("{base}/timeout_ms"),
            format!("{t} is more than a step that runs a component may take ({MAX_TIMEOUT_MS} ms, a day)"),
        ));
    }
    let http_allow = http_allow(get("http"), &base, problems);
    let secrets = secret_names(get("secrets"), &base, problems);
    let queue = queue_name(get("queue"), &base, problems);
    let rate_limit = rate_limit_name(get("rate_limit"), &base, problems);
    let concurrency = concurrency(get("concurrency"), &base, step_index, problems);
    Draft {
        concurrency,
        rate_limit,
        http_allow,
        secrets,
        queue,
        id: get("id").and_then(Value::as_str),
        component,
        wait,
        input,
        needs,
        deps,
        retry: retry_policy(get("retry"), &base, problems),
        timeout_ms,
        limits: step_limits(get("limits"), &base, problems),
        for_each,
        when,
        on_error,
        compensate,
    }
}

/// Most hosts one step may list under `http.allow`, and most secrets.
pub const MAX_STEP_HOSTS: usize = 100;
pub const MAX_STEP_SECRETS: usize = 100;

/// `"http": {"allow": [...]}`: each entry a host pattern.
fn http_allow(raw: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> Vec<HostPattern> {
    let entries = raw
        .and_then(|h| h.get("allow"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .take(MAX_STEP_HOSTS);
    let mut allow = Vec::new();
    for (k, entry) in entries {
        let Some(text) = entry.as_str() else { continue };
        match HostPattern::parse(text) {
            Ok(p) => allow.push(p),
            Err(why) => problems.push(Problem::new(format!("{base}/http/allow/{k}"), why)),
        }
    }
    allow
}

/// `"secrets": [...]`: names of the tenant's secrets (whether they exist is
/// checked at submission, against the tenant's secrets).
fn secret_names(raw: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut names = Vec::new();
    for (k, name) in raw
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .take(MAX_STEP_SECRETS)
    {
        let Some(name) = name.as_str() else { continue };
        if !super::is_valid_name(name) {
            problems.push(Problem::new(
                format!("{base}/secrets/{k}"),
                format!("{} is not a secret name: lowercase letters, digits, `_` and `-`, starting with a letter", quoted(name)),
            ));
        } else if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// `"queue"`: a queue name (whether it is declared is checked at
/// submission, against the declared queues).
fn queue_name(raw: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let name = raw?.as_str()?;
    if crate::scheduler::flow::valid_queue(name) {
        return Some(name.to_string());
    }
    problems.push(Problem::new(
        format!("{base}/queue"),
        format!(
            "{} is not a queue name: lowercase letters, digits, `_` and `-`, starting with a letter",
            quoted(name)
        ),
    ));
    None
}

/// `"concurrency": {"key", "limit"}`: the key may refer to the run's input
/// only, since it is resolved when the run is submitted.
fn concurrency(
    raw: Option<&Value>,
    base: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Vec<Problem>,
) -> Option<Concurrency> {
    let raw = raw?.as_object()?;
    let pointer = format!("{base}/concurrency/key");
    let key = raw.get("key")?;
    let before = problems.len();
    let key = Template::compile(key, &pointer, step_index, problems);
    if problems.len() > before {
        return None;
    }
    if key.roots().any(|r| r != Root::Input) {
        problems.push(Problem::new(
            pointer,
            "a concurrency key may refer to the run's input only (`${input...}`): it is resolved when the run is submitted",
        ));
        return None;
    }
    let limit = uint(raw.get("limit"))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1);
    Some(Concurrency { key, limit })
}

/// `"rate_limit"`: a name (whether the tenant declared it is checked at
/// submission).
fn rate_limit_name(raw: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let name = raw?.as_str()?;
    if super::is_valid_name(name) {
        return Some(name.to_string());
    }
    problems.push(Problem::new(
        format!("{base}/rate_limit"),
        format!(
            "{} is not a rate limit name: lowercase letters, digits, `_` and `-`, starting with a letter",
            quoted(name)
        ),
    ));
    None
}

/// The fields that say what a step does: exactly one of them.
const ACTIONS: [&str; 5] = ["component", "sleep_ms", "sleep_until", "signal", "workflow"];

/// Fields only a step that runs a component may have.
const COMPONENT_ONLY: [&str; 11] = [
    "concurrency",
    "rate_limit",
    "input",
    "retry",
    "limits",
    "for_each",
    "max_concurrency",
    "compensate",
    "http",
    "secrets",
    "queue",
];

/// What a step that waits does (`sleep_ms`, `sleep_until` or `signal`);
/// None for a step that runs a component, or one whose action is wrong
/// (reported here, or by the schema for a wrong type).
fn wait_action(
    raw: &Value,
    base: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Vec<Problem>,
) -> Option<Action> {
    let fields = raw.as_object()?;
    let present: Vec<&str> = ACTIONS
        .into_iter()
        .filter(|k| fields.contains_key(*k))
        .collect();
    let kind = match present.as_slice() {
        [] => {
            problems.push(Problem::new(
                base,
                "a step needs one of component, workflow, sleep_ms, sleep_until and signal",
            ));
            return None;
        }
        [one] => *one,
        [first, second, ..] => {
            problems.push(Problem::new(
                format!("{base}/{second}"),
                format!("a step has one of component, workflow, sleep_ms, sleep_until and signal; this one has {first} too"),
            ));
            return None;
        }
    };
    if kind == "component" {
        return None;
    }
    for field in COMPONENT_ONLY
        .into_iter()
        .filter(|f| fields.contains_key(*f))
        .filter(|f| !(kind == "workflow" && *f == "input"))
    {
        problems.push(Problem::new(
            format!("{base}/{field}"),
            format!("a {kind} step runs no component and takes no {field}"),
        ));
    }
    if kind == "workflow" {
        if fields.contains_key("timeout_ms") {
            problems.push(Problem::new(
                format!("{base}/timeout_ms"),
                "a workflow step takes no timeout_ms: it ends when its child run ends",
            ));
        }
        let pointer = format!("{base}/workflow");
        let text = fields[kind].as_str()?;
        let Some((name, requirement)) = text.split_once('@').filter(|(n, _)| is_valid_name(n))
        else {
            problems.push(Problem::new(
                pointer,
                format!(
                    "{} is not a template reference such as \"shipping@1\"",
                    quoted(text)
                ),
            ));
            return None;
        };
        return match parse_requirement(requirement) {
            Ok(requirement) => Some(Action::Workflow(crate::workflow::TemplateCall {
                name: name.to_owned(),
                requirement,
            })),
            Err(message) => {
                problems.push(Problem::new(pointer, message));
                None
            }
        };
    }
    if kind != "signal" && fields.contains_key("timeout_ms") {
        problems.push(Problem::new(
            format!("{base}/timeout_ms"),
            "a sleep step takes no timeout_ms: it ends when it is due",
        ));
    }
    let value = &fields[kind];
    match kind {
        "sleep_ms" => uint(Some(value)).map(|ms| Action::Sleep(Sleep::For(ms))),
        "signal" => value.as_str().map(|name| Action::Signal(name.to_owned())),
        _ => {
            let pointer = format!("{base}/sleep_until");
            let until = Template::compile(value, &pointer, step_index, problems);
            if until.is_literal()
                && let Ok(Value::String(text)) = until.resolve_within(&|_| None, usize::MAX)
                && crate::scheduler::clock::parse_rfc3339(&text).is_none()
            {
                problems.push(Problem::new(
                    pointer,
                    format!(
                        "{} is not an RFC 3339 time such as 2026-12-24T18:00:00Z",
                        quoted(&text)
                    ),
                ));
            }
            Some(Action::Sleep(Sleep::Until(until)))
        }
    }
}

/// A `name@requirement` field; None when it is absent or wrong (a wrong
/// shape is the schema's to report, a bad requirement is reported here).
fn component_ref(
    value: Option<&Value>,
    pointer: &str,
    problems: &mut Vec<Problem>,
) -> Option<ComponentRef> {
    match value.and_then(Value::as_str).and_then(ComponentRef::parse) {
        Some(Ok(component)) => Some(component),
        Some(Err(message)) => {
            problems.push(Problem::new(pointer, message));
            None
        }
        None => None,
    }
}

/// The `limits` object under `base`.
fn step_limits(value: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> StepLimits {
    let limits = value.and_then(Value::as_object);
    StepLimits {
        fuel: limits.and_then(|l| {
            unbounded_uint(l.get("fuel"), || format!("{base}/limits/fuel"), problems)
        }),
        memory_mb: limits
            .and_then(|l| uint(l.get("memory_mb")))
            .and_then(|n| u32::try_from(n).ok()),
    }
}

/// The step's `for_each` and `max_concurrency`: the list must be exactly one
/// reference (`"${steps.list.output.items}"`), read when the step starts.
fn for_each(
    raw: &Value,
    base: &str,
    step_index: &dyn Fn(&str) -> Option<usize>,
    problems: &mut Vec<Problem>,
) -> Option<ForEach> {
    let get = |key: &str| raw.as_object().and_then(|o| o.get(key));
    let max_concurrency = uint(get("max_concurrency")).and_then(|n| u32::try_from(n).ok());
    let Some(list) = get("for_each") else {
        if get("max_concurrency").is_some() {
            problems.push(Problem::new(
                format!("{base}/max_concurrency"),
                "max_concurrency needs for_each",
            ));
        }
        return None;
    };
    let pointer = format!("{base}/for_each");
    let text = list.as_str()?;
    let before = problems.len();
    let list = Template::compile(list, &pointer, step_index, problems);
    if problems.len() > before {
        return None;
    }
    if !list.is_reference() {
        problems.push(Problem::new(
            pointer,
            format!(
                "for_each must be one reference to an array, like \"${{steps.list.output.items}}\" or \"${{input.items}}\"; got {}",
                quoted(text)
            ),
        ));
        return None;
    }
    Some(ForEach {
        list,
        max_concurrency: max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
    })
}

/// The step's retry policy. A bound the document leaves out is kept consistent with the one it
/// gives (`initial_backoff_ms` alone above 10 000 raises the maximum to match), so that only a
/// contradiction actually written down is a problem.
fn retry_policy(value: Option<&Value>, base: &str, problems: &mut Vec<Problem>) -> RetryPolicy {
    retry_policy_or(value, base, RetryPolicy::DEFAULT_MAX_ATTEMPTS, problems)
}

/// [`retry_policy`] with `attempts` when `max_attempts` is not given.
fn retry_policy_or(
    value: Option<&Value>,
    base: &str,
    attempts: u32,
    problems: &mut Vec<Problem>,
) -> RetryPolicy {
    let Some(retry) = value.and_then(Value::as_object) else {
        return RetryPolicy {
            max_attempts: attempts,
            ..RetryPolicy::default()
        };
    };
    let at = |key: &str| format!("{base}/retry/{key}");
    let max_attempts = uint(retry.get("max_attempts")).and_then(|n| u32::try_from(n).ok());
    let initial = unbounded_uint(
        retry.get("initial_backoff_ms"),
        || at("initial_backoff_ms"),
        problems,
    );
    let max = unbounded_uint(
        retry.get("max_backoff_ms"),
        || at("max_backoff_ms"),
        problems,
    );
    if let (Some(initial), Some(max)) = (initial, max)
        && max < initial
    {
        problems.push(Problem::new(
            at("max_backoff_ms"),
            format!("max_backoff_ms ({max}) is less than initial_backoff_ms ({initial})"),
        ));
    }
    let initial_backoff_ms =
        initial.unwrap_or(RetryPolicy::DEFAULT_INITIAL_BACKOFF_MS.min(max.unwrap_or(u64::MAX)));
    RetryPolicy {
        max_attempts: max_attempts.unwrap_or(attempts),
        initial_backoff_ms,
        max_backoff_ms: max.unwrap_or(RetryPolicy::DEFAULT_MAX_BACKOFF_MS.max(initial_backoff_ms)),
    }
}

/// A non-negative integer that fits in u64. Integral floats such as `5.0` count, as they do for
/// JSON Schema's `integer`; anything else is None and left to the schema to report.
fn uint(value: Option<&Value>) -> Option<u64> {
    let n = value?.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    // 2^64 is exact in f64; below it the cast is exact for integral values.
    (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
}

/// [`uint`] for a field whose schema has no maximum: an integer beyond u64 is a problem here,
/// because the schema cannot see it.
fn unbounded_uint(
    value: Option<&Value>,
    path: impl FnOnce() -> String,
    problems: &mut Vec<Problem>,
) -> Option<u64> {
    let parsed = uint(value);
    if parsed.is_none()
        && let Some(f) = value.and_then(Value::as_f64)
        && f.fract() == 0.0
        && f >= 18_446_744_073_709_551_616.0
    {
        problems.push(Problem::new(
            path(),
            format!("{f} is too large (at most {})", u64::MAX),
        ));
    }
    parsed
}

/// Resolve every well-formed component reference, once per distinct
/// reference; each is given with the pointer a problem with it names.
fn resolve_components<'r>(
    wanted: &[(String, Option<&'r ComponentRef>)],
    resolver: &dyn ComponentResolver,
    problems: &mut Vec<Problem>,
) -> Vec<Option<String>> {
    let mut seen: HashMap<&'r str, Result<String, String>> = HashMap::new();
    wanted
        .iter()
        .map(|(pointer, component)| {
            let component = (*component)?;
            let outcome = seen
                .entry(&component.raw)
                .or_insert_with(|| resolver.resolve(&component.name, &component.requirement));
            match outcome {
                Ok(pin) => Some(pin.clone()),
                Err(message) => {
                    problems.push(Problem::new(pointer.clone(), message.clone()));
                    None
                }
            }
        })
        .collect()
}
