//! Every sample function and every bad guest, as real components through the
//! real engine (wasmtime, pooling allocator, epoch deadlines).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_host_api::{
    BatchContext, Engine, EngineConfig, ErrorKind, Function, FunctionKind, FunctionSpec,
    InMemoryServices, Level, LoadError, Outcome, Services,
};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::transform_output::OutputEntry;
use sluice_sample_components as components;

/// A record to put in a test batch.
#[derive(Default, Clone)]
struct Rec {
    key: Option<&'static str>,
    value: String,
    tags: Vec<&'static str>,
}

fn rec(value: impl Into<String>) -> Rec {
    Rec {
        value: value.into(),
        ..Rec::default()
    }
}

fn tagged(value: &str, tags: &[&'static str]) -> Rec {
    Rec {
        value: value.into(),
        tags: tags.to_vec(),
        ..Rec::default()
    }
}

/// One record batch, based at offset 0 — the bytes the log would store.
fn batch(recs: &[Rec]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for r in recs {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .tags
            .iter()
            .map(|t| ("sluice.tag", Some(t.as_bytes())))
            .collect();
        b.push(
            1_700_000_000_000,
            r.key.map(str::as_bytes),
            Some(r.value.as_bytes()),
            &headers,
        );
    }
    b.finish().to_vec()
}

fn ctx() -> BatchContext {
    BatchContext {
        topic: "in".into(),
        partition: 0,
        group: Some("g".into()),
    }
}

struct Fixture {
    engine: Engine,
}

/// An engine whose compiled-component cache is shared by the tests of this
/// binary, so each component is compiled once.
fn engine() -> Fixture {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    })
    .unwrap();
    Fixture { engine }
}

fn spec(name: &str, config: &[(&str, &str)]) -> (FunctionSpec, Arc<InMemoryServices>) {
    let (services, memory) = Services::in_memory();
    let mut spec = FunctionSpec::new(name, services);
    spec.config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    (spec, memory)
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(
    f: &Fixture,
    path: &str,
    name: &str,
    config: &[(&str, &str)],
) -> (Function, Arc<InMemoryServices>) {
    let (spec, memory) = spec(name, config);
    let function = f
        .engine
        .load(spec, &wasm(path))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (function, memory)
}

fn outputs(out: &sluice_host_api::TransformOutput) -> Vec<(u32, String, String)> {
    out.entries()
        .map(|e| match e {
            OutputEntry::Message {
                input,
                topic,
                value,
                ..
            } => (
                input,
                topic.to_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ),
            OutputEntry::Failure { input, reason } => (input, "!failed".into(), reason.to_owned()),
        })
        .collect()
}

#[test]
fn tag_filter_evaluates_the_configured_expression() {
    let f = engine();
    let (filter, _) = load(
        &f,
        components::TAG_FILTER,
        "tags",
        &[("tags", "red && !small")],
    );
    assert_eq!(filter.kind(), FunctionKind::Filter);
    let input = batch(&[
        tagged("a", &["red"]),
        tagged("b", &["red", "small"]),
        tagged("c", &["blue"]),
        tagged("d", &["big", "red"]),
        rec("e"),
    ]);
    let out = filter.filter(&ctx(), &input).unwrap();
    assert_eq!(
        out.answer.iter().collect::<Vec<_>>(),
        [true, false, false, true, false]
    );
    assert_eq!(out.messages, 5);
    assert!(out.effects.is_empty());
}

#[test]
fn json_filter_compares_fields() {
    let f = engine();
    let (filter, _) = load(
        &f,
        components::JSON_FILTER,
        "big-eur",
        &[("predicate", r#"amount > 100 && currency == "EUR""#)],
    );
    let input = batch(&[
        rec(r#"{"amount": 150, "currency": "EUR"}"#),
        rec(r#"{"amount": 50, "currency": "EUR"}"#),
        rec(r#"{"amount": 150, "currency": "USD"}"#),
        rec("not json"),
        rec(r#"{"currency": "EUR"}"#),
    ]);
    let out = filter.filter(&ctx(), &input).unwrap();
    assert_eq!(
        out.answer.iter().collect::<Vec<_>>(),
        [true, false, false, false, false]
    );
}

#[test]
fn pii_redactor_masks_emails_phones_and_cards() {
    let f = engine();
    let (pii, _) = load(&f, components::PII_REDACT, "pii", &[]);
    let input = batch(&[
        rec("mail jane.doe@example.com now"),
        rec("card 4111 1111 1111 1111 ok"),
        rec("call +1 415-555-0100 please"),
        rec("nothing to hide"),
    ]);
    let out = pii.transform(&ctx(), &input).unwrap();
    let got = outputs(&out.answer);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(!got[0].2.contains("jane.doe@example.com"), "{got:?}");
    assert!(!got[1].2.contains("4111 1111 1111 1111"), "{got:?}");
    assert!(!got[2].2.contains("555-0100"), "{got:?}");
    assert_eq!(got[3], (3, String::new(), "nothing to hide".into()));
    assert!(
        got.iter().all(|(_, topic, _)| topic.is_empty()),
        "to the output topic"
    );
}

#[test]
fn router_fans_out_by_field_and_fails_unroutable_inputs() {
    let f = engine();
    let (router, _) = load(
        &f,
        components::ROUTER,
        "router",
        &[("field", "region"), ("routes", "eu=orders-eu,us=orders-us")],
    );
    let input = batch(&[
        rec(r#"{"region": "eu", "id": 1}"#),
        rec(r#"{"region": "us", "id": 2}"#),
        rec(r#"{"region": "mars", "id": 3}"#),
    ]);
    let out = router.transform(&ctx(), &input).unwrap();
    let got = outputs(&out.answer);
    assert_eq!(got[0].0, 0);
    assert_eq!(got[0].1, "orders-eu");
    assert_eq!(got[1].1, "orders-us");
    assert_eq!((got[2].0, got[2].1.as_str()), (2, "!failed"), "{got:?}");
    assert!(got[2].2.contains("mars"), "{got:?}");
}

#[test]
fn router_outputs_are_checked_against_the_allowed_topics() {
    let f = engine();
    let (mut spec, _) = spec("router", &[("field", "region"), ("routes", "eu=orders-eu")]);
    spec.allowed_topics = Some(BTreeSet::from(["orders-us".to_owned()]));
    let router = f.engine.load(spec, &wasm(components::ROUTER)).unwrap();
    let err = router
        .transform(&ctx(), &batch(&[rec(r#"{"region": "eu"}"#)]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidOutput);
    assert!(err.message.contains("orders-eu"), "{err}");
}

#[test]
fn order_totals_keeps_running_totals_in_kv() {
    let f = engine();
    let (handler, memory) = load(&f, components::ORDER_TOTALS, "totals", &[]);
    let first = batch(&[
        rec(r#"{"customer": "ann", "amount": 10.5}"#),
        rec(r#"{"customer": "bob", "amount": 1}"#),
        rec(r#"{"customer": "ann", "amount": 2}"#),
        rec("garbage"),
    ]);
    let out = handler.handle(&ctx(), &first).unwrap();
    assert_eq!(out.answer[..3], [Outcome::Ack, Outcome::Ack, Outcome::Ack]);
    assert!(
        matches!(out.answer[3], Outcome::DeadLetter(_)),
        "{:?}",
        out.answer
    );
    assert!(
        memory.kv_value("total/ann").is_none(),
        "nothing is written before the broker commits the effects"
    );
    memory.commit(&out.effects);
    let total = |who: &str| {
        let v = memory.kv_value(&format!("total/{who}")).expect("a total");
        String::from_utf8(v).unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(total("ann"), 12.5);
    assert_eq!(total("bob"), 1.0);

    let out = handler
        .handle(
            &ctx(),
            &batch(&[rec(r#"{"customer": "ann", "amount": 7.5}"#)]),
        )
        .unwrap();
    memory.commit(&out.effects);
    assert_eq!(
        total("ann"),
        20.0,
        "the second batch reads the committed total"
    );
    assert!(
        memory
            .logs()
            .iter()
            .any(|(f, _, m)| f == "totals" && m.contains("ann"))
    );

    memory.set_kv_unavailable(true);
    let out = handler
        .handle(
            &ctx(),
            &batch(&[rec(r#"{"customer": "ann", "amount": 1}"#)]),
        )
        .unwrap();
    assert_eq!(out.answer, [Outcome::Retry(Some(1000))]);
}

#[test]
fn reminder_schedules_a_follow_up_at_the_configured_delay() {
    let f = engine();
    let (handler, memory) = load(
        &f,
        components::REMINDER,
        "reminder",
        &[("topic", "follow-ups"), ("delay_ms", "30000")],
    );
    memory.set_now_ms(1_800_000_000_000);
    let out = handler
        .handle(
            &ctx(),
            &batch(&[Rec {
                key: Some("user-7"),
                value: "sign-up".into(),
                tags: vec![],
            }]),
        )
        .unwrap();
    assert_eq!(out.answer, [Outcome::Ack]);
    let [scheduled] = out.effects.scheduled.as_slice() else {
        panic!("one follow-up: {:?}", out.effects)
    };
    assert_eq!(scheduled.topic, "follow-ups");
    assert_eq!(scheduled.at_ms, 1_800_000_030_000);
    assert_eq!(scheduled.message.key.as_deref(), Some(&b"user-7"[..]));
    assert!(
        scheduled
            .message
            .headers
            .iter()
            .any(|h| h.name == "reminder-of")
    );
}

#[test]
fn every_host_call_round_trips() {
    let f = engine();
    let (handler, memory) = load(&f, components::KV_CONFIG, "echo", &[("greeting", "hello")]);
    let out = handler
        .handle(&ctx(), &batch(&[rec("one"), rec("two")]))
        .unwrap();
    assert_eq!(out.answer, [Outcome::Ack, Outcome::Ack]);
    let emitted: Vec<_> = out
        .effects
        .emitted
        .iter()
        .map(|e| (e.topic.as_str(), e.message.value.as_slice()))
        .collect();
    assert_eq!(emitted, [("echo", &b"one"[..]), ("echo", &b"two"[..])]);
    assert_eq!(
        out.effects.kv_writes.get("last"),
        Some(&Some(b"two".to_vec())),
        "the last write of the call wins"
    );
    let logs = memory.logs();
    assert!(
        logs.iter()
            .any(|(f, l, m)| f == "echo" && *l >= Level::Info && m == "hello one"),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_answer_like_sync_ones_and_run_concurrently() {
    let f = engine();
    let (filter, _) = load(&f, components::TAG_FILTER, "tags", &[("tags", "red")]);
    let input = batch(&[tagged("a", &["red"]), rec("b")]);
    let calls = (0..8).map(|_| filter.filter_async(ctx(), input.clone()));
    for out in futures::future::join_all(calls).await {
        assert_eq!(out.unwrap().answer.kept(), 1);
    }
    assert_eq!(filter.metrics().calls, 8);
}

/// A bad guest fails with its documented kind, and a good function in the
/// same engine keeps serving.
fn contained(f: &Fixture, bad: &Function, call: impl Fn(&Function) -> ErrorKind, want: ErrorKind) {
    let (good, _) = load(f, components::TAG_FILTER, "good", &[("tags", "red")]);
    assert_eq!(call(bad), want);
    let out = good
        .filter(&ctx(), &batch(&[tagged("a", &["red"])]))
        .unwrap();
    assert_eq!(out.answer.kept(), 1);
    assert_eq!(
        bad.metrics().errors.get(&want),
        Some(&1),
        "{:?}",
        bad.metrics()
    );
}

#[test]
fn an_endless_loop_times_out() {
    let f = engine();
    let (mut spec, _) = spec("loop", &[]);
    spec.limits.timeout = Duration::from_millis(50);
    let bad = f
        .engine
        .load(spec, &wasm(components::ENDLESS_LOOP))
        .unwrap();
    contained(
        &f,
        &bad,
        |bad| bad.filter(&ctx(), &batch(&[rec("x")])).unwrap_err().kind,
        ErrorKind::Timeout,
    );
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    let f = engine();
    let (mut spec, _) = spec("bomb", &[]);
    spec.limits.memory_bytes = 16 << 20;
    let bad = f.engine.load(spec, &wasm(components::MEMORY_BOMB)).unwrap();
    contained(
        &f,
        &bad,
        |bad| {
            let err = bad.filter(&ctx(), &batch(&[rec("x")])).unwrap_err();
            assert!(err.message.contains("16777216"), "{err}");
            err.kind
        },
        ErrorKind::Memory,
    );
}

#[test]
fn a_panic_is_a_trap_with_its_message_and_the_instance_is_replaced() {
    let f = engine();
    let (bad, memory) = load(&f, components::TRAP, "panicky", &[]);
    contained(
        &f,
        &bad,
        |bad| {
            let err = bad.handle(&ctx(), &batch(&[rec("boom")])).unwrap_err();
            assert!(err.message.contains("boom: deliberate panic"), "{err}");
            err.kind
        },
        ErrorKind::Trap,
    );
    assert!(
        memory
            .logs()
            .iter()
            .any(|(_, l, m)| *l == Level::Warn && m.contains("deliberate panic")),
        "the panic message reaches the function's log"
    );
    let before = bad.metrics();
    let out = bad.handle(&ctx(), &batch(&[rec("fine")])).unwrap();
    assert_eq!(
        out.answer,
        [Outcome::Ack],
        "the next batch succeeds on a fresh instance"
    );
    let after = bad.metrics();
    assert_eq!(after.instances_created, before.instances_created + 1);
    assert!(after.instances_recycled >= 1);
}

#[test]
fn a_huge_output_hits_the_output_limit() {
    let f = engine();
    let (mut spec, _) = spec("huge", &[]);
    spec.limits.memory_bytes = 512 << 20;
    spec.limits.recycle_above_memory = 512 << 20;
    // The output limit is what is tested: writing that much output takes
    // well over the default 1 s on a loaded machine, which turned it into a
    // timeout (seen once with five builds sharing two cores).
    spec.limits.timeout = std::time::Duration::from_secs(60);
    let bad = f.engine.load(spec, &wasm(components::HUGE_OUTPUT)).unwrap();
    contained(
        &f,
        &bad,
        |bad| {
            let err = bad.transform(&ctx(), &batch(&[rec("x")])).unwrap_err();
            assert!(err.message.contains("limit"), "{err}");
            err.kind
        },
        ErrorKind::OutputLimit,
    );
}

#[test]
fn components_that_are_not_functions_are_refused_clearly() {
    let f = engine();
    let (s, _) = spec("wrong", &[]);
    let err = f
        .engine
        .load(s, &wasm(components::WRONG_WORLD))
        .unwrap_err();
    assert!(matches!(err, LoadError::NoWorld { .. }), "{err}");
    assert!(
        err.to_string().contains("run"),
        "names what it exports: {err}"
    );

    let (mut s, _) = spec("expects-handler", &[]);
    s.kind = Some(FunctionKind::Handler);
    let err = f.engine.load(s, &wasm(components::TAG_FILTER)).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WrongWorld {
                expected: FunctionKind::Handler,
                found: FunctionKind::Filter
            }
        ),
        "{err}"
    );

    let (s, _) = spec("garbage", &[]);
    let err = f.engine.load(s, b"\0asm not really").unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn bad_input_batches_and_wrong_calls_are_clear_errors() {
    let f = engine();
    let (filter, _) = load(&f, components::TAG_FILTER, "tags", &[("tags", "red")]);
    let mut input = batch(&[rec("a")]);
    input.truncate(input.len() - 3);
    let err = filter.filter(&ctx(), &input).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    let err = filter.handle(&ctx(), &batch(&[rec("a")])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(err.message.contains("filter"), "{err}");
    let out = filter.filter(&ctx(), &[]).unwrap();
    assert!(out.answer.is_empty(), "an empty batch is an empty answer");
}

#[test]
fn instances_are_reused_and_recycled_after_their_call_budget() {
    let f = engine();
    let (mut s, _) = spec("tags", &[("tags", "red")]);
    s.limits.max_calls_per_instance = 3;
    let filter = f.engine.load(s, &wasm(components::TAG_FILTER)).unwrap();
    let input = batch(&[tagged("a", &["red"])]);
    for _ in 0..7 {
        filter.filter(&ctx(), &input).unwrap();
    }
    let m = filter.metrics();
    assert_eq!(m.calls, 7);
    assert_eq!(m.messages, 7);
    assert_eq!(
        m.instances_created, 3,
        "calls 1-3, 4-6 and 7 on three instances: {m:?}"
    );
    assert_eq!(m.instances_recycled, 2);
    assert_eq!(m.error_count(), 0);
}

#[test]
fn compiled_components_are_cached_by_content() {
    let cache = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config.clone()).unwrap();
    let bytes = wasm(components::TAG_FILTER);
    let path = engine.cached_path(&bytes).unwrap();
    let (s, _) = spec("tags", &[("tags", "red")]);
    engine.load(s, &bytes).unwrap();
    assert!(path.exists(), "compiled code lands in the cache");

    // A corrupt entry is detected and replaced, not trusted.
    let mut entry = std::fs::read(&path).unwrap();
    let mid = entry.len() / 2;
    entry[mid] ^= 0xff;
    std::fs::write(&path, &entry).unwrap();
    let engine = Engine::new(config).unwrap();
    let (s, _) = spec("tags", &[("tags", "red")]);
    let filter = engine.load(s, &bytes).unwrap();
    assert_eq!(
        filter
            .filter(&ctx(), &batch(&[tagged("a", &["red"])]))
            .unwrap()
            .answer
            .kept(),
        1
    );
    assert_ne!(
        std::fs::read(&path).unwrap(),
        entry,
        "the entry was rewritten"
    );
}

#[test]
fn fuel_is_counted_when_enabled() {
    let engine = Engine::new(EngineConfig {
        fuel: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let (s, _) = spec("tags", &[("tags", "red")]);
    let filter = engine.load(s, &wasm(components::TAG_FILTER)).unwrap();
    let out = filter
        .filter(&ctx(), &batch(&[tagged("a", &["red"])]))
        .unwrap();
    assert!(out.fuel > 0);
    assert_eq!(filter.metrics().fuel, out.fuel);

    let (mut s, _) = spec("loop", &[]);
    s.limits.fuel_per_call = Some(1_000_000);
    s.limits.timeout = Duration::from_secs(30);
    let bad = engine.load(s, &wasm(components::ENDLESS_LOOP)).unwrap();
    let err = bad.filter(&ctx(), &batch(&[rec("x")])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("fuel"), "{err}");
}

#[test]
fn effects_past_the_budget_fail_the_call() {
    let f = engine();
    let (mut s, _) = spec("echo", &[("greeting", "hi")]);
    s.limits.max_effects_per_call = 2;
    let handler = f.engine.load(s, &wasm(components::KV_CONFIG)).unwrap();
    let err = handler
        .handle(&ctx(), &batch(&[rec("1"), rec("2"), rec("3")]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::OutputLimit, "{err}");
    let ok = handler
        .handle(&ctx(), &batch(&[rec("1"), rec("2")]))
        .unwrap();
    assert_eq!(ok.effects.emitted.len(), 2);
}

#[test]
fn emits_to_topics_outside_the_deployment_are_denied() {
    let f = engine();
    let (mut s, _) = spec("echo", &[("greeting", "hi")]);
    s.allowed_topics = Some(BTreeSet::from(["elsewhere".to_owned()]));
    let handler = f.engine.load(s, &wasm(components::KV_CONFIG)).unwrap();
    // The guest sees `denied` (a failed host call, not a failed batch);
    // kv-config dead-letters the message with the error's text.
    let out = handler.handle(&ctx(), &batch(&[rec("1")])).unwrap();
    assert!(out.effects.emitted.is_empty());
    match &out.answer[..] {
        [Outcome::DeadLetter(reason)] => assert!(reason.contains("echo"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

fn with_headers(value: &str, headers: &[(&'static str, &str)]) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    let hs: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|(n, v)| (*n, Some(v.as_bytes())))
        .collect();
    b.push(1_700_000_000_000, None, Some(value.as_bytes()), &hs);
    b.finish().to_vec()
}

#[test]
fn a_function_whose_init_rejects_its_config_is_not_deployed() {
    let f = engine();
    let (s, _) = spec("no-tags", &[]);
    let err = f.engine.load(s, &wasm(components::TAG_FILTER)).unwrap_err();
    assert!(matches!(err, LoadError::Init(_)), "{err}");
    assert!(
        err.to_string().contains("tags"),
        "names the missing parameter: {err}"
    );
}

#[test]
fn messages_are_counted_across_batches_and_control_batches_are_skipped() {
    let f = engine();
    let (filter, _) = load(&f, components::TAG_FILTER, "tags", &[("tags", "red")]);
    let mut control = batch(&[tagged("marker", &["red"])]);
    control[22] |= 0x20; // attributes bit 5: a control batch (commit/abort marker)
    let mut input = batch(&[tagged("a", &["red"]), tagged("b", &["blue"])]);
    input.extend_from_slice(&control);
    input.extend_from_slice(&batch(&[tagged("c", &["red"])]));
    let out = filter.filter(&ctx(), &input).unwrap();
    assert_eq!(out.messages, 3);
    assert_eq!(out.answer.iter().collect::<Vec<_>>(), [true, false, true]);
}

#[test]
fn guest_output_is_drained_every_call_and_never_breaks_printing() {
    let f = engine();
    let (handler, memory) = load(&f, components::KV_CONFIG, "chatty", &[]);
    for _ in 0..20 {
        let out = handler
            .handle(&ctx(), &with_headers("x", &[("print", "2000")]))
            .unwrap();
        assert_eq!(out.answer, [Outcome::Ack]);
    }
    let printed: Vec<_> = memory
        .logs()
        .into_iter()
        .filter(|(_, l, m)| *l == Level::Warn && m.starts_with("line 0 of 2000"))
        .collect();
    assert_eq!(printed.len(), 20, "each call's output reaches the log");
    assert!(
        printed[0].2.ends_with("bytes dropped]"),
        "and overflow is counted"
    );
    assert_eq!(
        handler.metrics().instances_created,
        1,
        "no trap, no recycling"
    );
}

#[test]
fn a_guest_that_sleeps_in_wasi_is_stopped_not_waited_for() {
    let f = engine();
    let (handler, _) = load(&f, components::KV_CONFIG, "sleepy", &[]);
    let err = handler
        .handle(&ctx(), &with_headers("x", &[("sleep-ms", "600000")]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Trap);
    assert!(err.message.contains("may not block"), "{err}");
}

#[test]
fn deadlines_hold_after_the_engine_handle_is_dropped() {
    let f = engine();
    let (mut s, _) = spec("loop", &[]);
    s.limits.timeout = Duration::from_millis(50);
    let bad = f.engine.load(s, &wasm(components::ENDLESS_LOOP)).unwrap();
    drop(f);
    let err = bad.filter(&ctx(), &batch(&[rec("x")])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
}

#[test]
fn a_failed_call_leaves_no_effects_and_reads_see_the_calls_own_writes() {
    let f = engine();
    let (handler, memory) = load(&f, components::KV_CONFIG, "echo", &[]);
    let err = handler
        .handle(&ctx(), &with_headers("lost", &[("panic", "")]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Trap);
    assert!(err.message.contains("asked to panic"), "{err}");
    let out = handler
        .handle(&ctx(), &with_headers("kept", &[("kv-get", "last")]))
        .unwrap();
    let values: Vec<_> = out
        .effects
        .emitted
        .iter()
        .map(|e| e.message.value.clone())
        .collect();
    assert_eq!(
        values,
        [b"kept".to_vec()],
        "nothing of the failed call leaks"
    );
    assert!(
        memory.logs().iter().any(|(_, _, m)| m == "kv last = kept"),
        "a read sees the call's own uncommitted write: {:?}",
        memory.logs()
    );
    assert_eq!(memory.kv_value("last"), None, "and nothing is committed");
}

#[test]
fn cancellations_commit_with_the_batch() {
    let f = engine();
    let (handler, memory) = load(&f, components::KV_CONFIG, "echo", &[]);
    memory.set_now_ms(1_000);
    let out = handler
        .handle(&ctx(), &with_headers("x", &[("schedule-after-ms", "5000")]))
        .unwrap();
    memory.commit(&out.effects);
    let [pending] = memory.pending_delays().try_into().unwrap();
    assert_eq!(pending.at_ms, 6_000);

    let out = handler
        .handle(&ctx(), &with_headers("y", &[("cancel", &pending.id)]))
        .unwrap();
    assert_eq!(out.effects.cancelled, std::slice::from_ref(&pending.id));
    assert_eq!(
        memory.pending_delays().len(),
        1,
        "not cancelled until committed"
    );
    assert!(
        memory
            .logs()
            .iter()
            .any(|(_, _, m)| m == &format!("cancelled {}: true", pending.id))
    );
    memory.commit(&out.effects);
    assert!(memory.pending_delays().is_empty());

    let out = handler
        .handle(&ctx(), &with_headers("z", &[("cancel", &pending.id)]))
        .unwrap();
    assert!(
        out.effects.cancelled.is_empty(),
        "an unknown id cancels nothing"
    );
    assert!(
        memory
            .logs()
            .iter()
            .any(|(_, _, m)| m == &format!("cancelled {}: false", pending.id))
    );
}

#[test]
fn a_full_instance_pool_is_a_clear_transient_error_and_recovers() {
    let engine = Engine::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let load = |name: &str| {
        let (s, _) = spec(name, &[("tags", "red")]);
        engine.load(s, &wasm(components::TAG_FILTER))
    };
    // Each loaded function keeps one idle instance: two fill the pool.
    let a = load("a").unwrap();
    let b = load("b").unwrap();
    let err = load("c").unwrap_err();
    assert!(matches!(err, LoadError::Instantiate(_)), "{err}");
    let err = a.instantiate_and_drop().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Instantiate);
    assert!(err.is_transient(), "says nothing about the messages");

    b.drain_pool();
    let c = load("c").unwrap();
    let out = c.filter(&ctx(), &batch(&[tagged("x", &["red"])])).unwrap();
    assert_eq!(out.answer.kept(), 1);
    a.filter(&ctx(), &batch(&[tagged("x", &["red"])])).unwrap();
}

#[test]
fn instances_that_grew_past_the_threshold_are_replaced() {
    let f = engine();
    let (mut s, _) = spec("tags", &[("tags", "red")]);
    s.limits.recycle_above_memory = 1;
    let filter = f.engine.load(s, &wasm(components::TAG_FILTER)).unwrap();
    let before = filter.metrics().instances_created;
    for _ in 0..3 {
        filter
            .filter(&ctx(), &batch(&[tagged("a", &["red"])]))
            .unwrap();
    }
    assert_eq!(filter.metrics().instances_created, before + 3);
}
