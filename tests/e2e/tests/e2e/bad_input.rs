//! Bad input never panics: property tests over every parser a user or the vendor feeds — connection
//! configs (JSON and YAML), transform maps, scoring tables, vendor records and pages, and the
//! events each Lambda handler receives. Inputs are arbitrary text and, more telling, valid
//! documents with one value replaced by an arbitrary one or removed. The case counts bound the
//! time (about half a minute in all); `PROPTEST_CASES` raises them for a longer hunt.

use std::path::PathBuf;

use cxone_etm::cxone::{DastEnvironment, DastResult, DastScan, LastScan, Project, ScanResult};
use cxone_etm::mapping::{
    DEFAULT_SCORING, ItemTransformer, Scoring, TransformContext, TransformMap, TransformOptions,
};
use cxone_etm::pipeline::ConnectionConfig;
use cxone_etm::{ConnectorKind, Engine};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::{Met, through};

fn repo_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Any JSON value, a few levels deep, with the numbers and strings that trip parsers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        Just(json!("")),
        Just(json!("../../etc/passwd")),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer inside `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let next = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(next.clone());
                pointers(v, next, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let next = format!("{at}/{i}");
                out.push(next.clone());
                pointers(v, next, out);
            }
        }
        _ => {}
    }
}

/// `valid` with the value at one pointer replaced by `replacement`, or removed when `remove`.
fn mutate(valid: &Value, at: Index, replacement: Value, remove: bool) -> Value {
    let mut all = Vec::new();
    pointers(valid, String::new(), &mut all);
    let mut doc = valid.clone();
    if all.is_empty() {
        return replacement;
    }
    let pointer = &all[at.index(all.len())];
    let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) if remove => {
            map.remove(&key.replace("~1", "/").replace("~0", "~"));
        }
        Some(Value::Array(items)) if remove => {
            items.remove(key.parse::<usize>().expect("array pointer"));
        }
        _ => *doc.pointer_mut(pointer).expect("pointer exists") = replacement,
    }
    doc
}

/// A valid document and mutations of it.
fn mutations_of(valid: Value) -> impl Strategy<Value = Value> {
    (any::<Index>(), any_json(), any::<bool>())
        .prop_map(move |(at, replacement, remove)| mutate(&valid, at, replacement, remove))
}

fn valid_config() -> Value {
    json!({
        "id": "cx-sast", "name": "Checkmarx SAST", "kind": "sast",
        "vendor": {"region": "EU", "tenant": "acme", "retry": {"max_retries": 3}},
        "secret": "env:CX_KEY",
        "item_concurrency": 4,
        "filters": {"asset_types": {"generic_application": true, "code_repository": true}},
        "schedule": {"expression": "cron(0 2 * * ? *)", "timezone": "Europe/Berlin", "start_date": "2026-12-01"}
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn connection_configs_never_panic(doc in mutations_of(valid_config())) {
        let text = doc.to_string();
        if let Err(errors) = ConnectionConfig::load(&text) {
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| !e.problem.trim().is_empty()), "{errors:?}");
        }
        let yaml = serde_yaml_ng::to_string(&doc).unwrap();
        let _ = ConnectionConfig::load(&yaml);
    }

    #[test]
    fn connection_config_text_never_panics(text in ".{0,200}") {
        prop_assert!(ConnectionConfig::load(&text).is_err() || text.contains("id"));
    }

    #[test]
    fn transform_maps_never_panic(
        kind in prop_oneof![
            Just(Engine::Sast),
            Just(Engine::Sca),
            Just(Engine::Kics),
            Just(Engine::Containers),
            Just(Engine::Dast),
        ],
        at in any::<Index>(),
        replacement in any_json(),
        remove in any::<bool>(),
    ) {
        let valid = serde_json::to_value(TransformMap::default_for(kind)).unwrap();
        let doc = mutate(&valid, at, replacement, remove);
        if let Err(errors) = TransformMap::parse(&doc.to_string()) {
            prop_assert!(!errors.is_empty());
        }
    }

    #[test]
    fn scoring_tables_never_panic(doc in mutations_of(serde_json::from_str(DEFAULT_SCORING).unwrap())) {
        if let Err(errors) = Scoring::parse(&doc.to_string()) {
            prop_assert!(!errors.is_empty());
        }
    }

    #[test]
    fn vendor_records_never_panic(doc in any_json()) {
        let _ = serde_json::from_value::<Project>(doc.clone());
        let _ = serde_json::from_value::<LastScan>(doc.clone());
        let _ = serde_json::from_value::<ScanResult>(doc.clone());
        let _ = serde_json::from_value::<DastEnvironment>(doc.clone());
        let _ = serde_json::from_value::<DastScan>(doc.clone());
        let _ = serde_json::from_value::<DastResult>(doc);
    }
}

fn transform_page(kind: Engine, item: &[u8], page: &[u8]) {
    let map = TransformMap::default_for(kind).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let context = TransformContext {
        connection_id: "fuzz".into(),
        run_id: "fuzz".into(),
        connector_kind: if kind.on_projects() {
            ConnectorKind::Sast
        } else {
            ConnectorKind::Dast
        },
        produced_at: "2026-11-22T00:00:00Z".into(),
    };
    if let Ok(mut t) =
        ItemTransformer::new(&map, &scoring, &context, TransformOptions::default(), item)
    {
        let _ = t.push_page(page, 0);
        let outcome = t.finish().expect("an item not reconciled is never refused");
        let f = &outcome.figures;
        assert_eq!(f.records_in, f.findings_out + f.rejected + f.skipped());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn results_pages_from_the_vendor_never_panic_the_transform(
        page in mutations_of(serde_json::from_str(&repo_file("shared/tests/fixtures/results_real_sample.json")).unwrap()),
        project in mutations_of(serde_json::from_str(&repo_file("shared/tests/fixtures/project_real_sample.json")).unwrap()),
    ) {
        for engine in Engine::PROJECT_ENGINES {
            transform_page(engine, project.to_string().as_bytes(), page.to_string().as_bytes());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_transform(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let project = repo_file("shared/tests/fixtures/project_real_sample.json");
        for engine in Engine::PROJECT_ENGINES {
            transform_page(engine, project.as_bytes(), &bytes);
        }
        transform_page(Engine::Dast, &bytes, &bytes);
    }
}

/// Sends `event` to the handler its sample file belongs to, as the Lambda runtime would.
async fn dispatch(
    runtime: &cxone_etm::lambda::Runtime<cxone_etm::store::MemoryStore>,
    sample: &str,
    event: Value,
) -> Met {
    match sample.split(['-', '.']).next() {
        Some("trigger") => through(|e| cxone_etm_trigger::handler::handle(runtime, e), event).await,
        Some("collect") => through(|e| cxone_etm_collect::handler::handle(runtime, e), event).await,
        Some("transform") => {
            through(|e| cxone_etm_transform::handler::handle(runtime, e), event).await
        }
        Some("finalize") => {
            through(|e| cxone_etm_finalize::handler::handle(runtime, e), event).await
        }
        other => panic!("no handler for sample {other:?}"),
    }
}

/// Every sample event, with one value replaced or removed, through its handler over memory ports and
/// the emulator: refused by its payload type, or an answer or a typed Fatal/Retryable error; never a
/// panic.
#[test]
fn lambda_events_never_panic_a_handler() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let fixture = tokio.block_on(cxone_etm_e2e::fixture());
    let mut samples: Vec<(String, Value)> =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let event = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                (name, event)
            })
            .collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(samples.len() >= 7, "the sample events were found");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(120));
    runner
        .run(
            &(any::<Index>(), any::<Index>(), any_json(), any::<bool>()),
            |(which, at, replacement, remove)| {
                let (name, valid) = &samples[which.index(samples.len())];
                let event = mutate(valid, at, replacement, remove);
                match tokio.block_on(dispatch(&fixture.runtime, name, event)) {
                    Met::Refused(refused) => {
                        prop_assert!(!refused.to_string().is_empty(), "{name}");
                    }
                    Met::Handled(Ok(answer)) => {
                        if let Some(status) = answer.get("statusCode") {
                            let status = status.as_i64().unwrap_or(0);
                            prop_assert!((200..600).contains(&status), "{name}: {answer}");
                        }
                    }
                    Met::Handled(Err(diagnostic)) => {
                        prop_assert!(
                            ["Fatal", "Retryable"].contains(&diagnostic.error_type.as_str()),
                            "{name}: {diagnostic:?}"
                        );
                        prop_assert!(!diagnostic.error_message.is_empty());
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
