//! The transform: golden batches from the real sample page and from emulator data, every line
//! valid against the JSON Schema, and each semantic rule provoked.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::*;
use cxone_emulator::TenantShape;
use cxone_etm::mapping::{
    AssetTypes, BATCH_SCHEMA, CompiledScoring, ItemOutcome, ItemTransformer, Lifecycle, Plan,
    PullHold, Scoring, TransformContext, TransformError, TransformMap, TransformOptions, Unseen,
};
use cxone_etm::{ConnectorKind, Engine};
use serde_json::{Value, json};

const REAL_PAGE: &str = include_str!("fixtures/results_real_sample.json");
const REAL_PROJECT: &str = include_str!("fixtures/project_real_sample.json");

/// The context of a connection whose kind fits the engine.
fn context(engine: Engine) -> TransformContext {
    TransformContext {
        connection_id: "conn-sast-1".into(),
        run_id: "run-0001".into(),
        connector_kind: match engine {
            Engine::Dast => ConnectorKind::Dast,
            Engine::Sca => ConnectorKind::Sca,
            _ => ConnectorKind::Sast,
        },
        produced_at: "2026-11-22T10:00:00Z".into(),
    }
}

/// Runs one item through the default map and scoring; returns its lines and outcome.
fn run(
    kind: Engine,
    item: &str,
    pages: &[&[u8]],
    options: TransformOptions,
) -> (Vec<String>, ItemOutcome) {
    run_with(&TransformMap::default_for(kind), item, pages, options)
}

fn run_with(
    map: &TransformMap,
    item: &str,
    pages: &[&[u8]],
    options: TransformOptions,
) -> (Vec<String>, ItemOutcome) {
    let plan = map.compile().expect("map compiles");
    let scoring = Scoring::default_table().compile().unwrap();
    let mut transformer = ItemTransformer::new(
        &plan,
        &scoring,
        &context(map.kind),
        options,
        item.as_bytes(),
    )
    .expect("item");
    let mut lines = Vec::new();
    for (n, page) in pages.iter().enumerate() {
        for line in transformer.push_page(page, n as u32).expect("page") {
            lines.push(String::from_utf8(line).unwrap());
        }
    }
    (lines, transformer.finish().unwrap())
}

fn validate(lines: &[String]) {
    let schema: Value = serde_json::from_str(BATCH_SCHEMA).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    for line in lines {
        assert!(line.ends_with('\n'), "lines end with a newline");
        let value: Value = serde_json::from_str(line).expect("each line is JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "line does not validate: {errors:?}\n{line}"
        );
    }
}

/// Compares with a checked-in golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, lines: &[String]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let actual = lines.concat();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn findings(line: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(line).unwrap();
    v["findingGroup"]["findings"].as_array().unwrap().clone()
}

#[test]
fn the_real_sample_page_maps_to_its_golden_batch() {
    let (lines, outcome) = run(
        Engine::Sast,
        REAL_PROJECT,
        &[REAL_PAGE.as_bytes()],
        TransformOptions::default(),
    );
    validate(&lines);
    golden("real_sample_sast.ndjson", &lines);
    assert_eq!(
        (outcome.figures.records_in, outcome.figures.findings_out),
        (1, 1)
    );
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        line["externalAssetId"],
        "8f060e6b-f931-4af8-82c3-5f0fcf9a7922"
    );
    assert_eq!(line["asset"]["assetDetail"]["name"], "janedoe/example-docs");
    assert_eq!(
        line["asset"]["assetTypes"],
        json!(["GENERIC_APPLICATION"]),
        "no repository URL, no Code Repository asset"
    );
    let finding = &findings(&lines[0])[0];
    assert_eq!(finding["externalFindingId"], "1ZOFSPJzlZAqW4XH/43v0l2qI7w=");
    assert_eq!(finding["severity"], 2);
    assert_eq!(finding["qds"], 30);
    assert_eq!(finding["findingStatus"], "ACTIVE", "RECURRENT → ACTIVE");
    assert_eq!(finding["findingType"]["vulnerability"]["cweId"], 522);
    assert_eq!(finding["name"], "Insufficiently_Protected_Credentials");
    assert!(
        finding.get("description").is_none(),
        "the sample has no description"
    );
    assert_eq!(finding["triageState"], "TO_VERIFY");
}

async fn emulator_pages(kind: Engine) -> Vec<(String, Vec<Vec<u8>>)> {
    let emulator = emulator(TenantShape {
        seed: 7,
        projects: 4,
        scans_per_project: 2,
        project_results: vec![12, 5],
        dast_environments: 2,
        dast_scans_per_environment: 1,
        dast_results_per_scan: 6,
        ..TenantShape::default()
    })
    .await;
    let client = default_client(&emulator);
    let mut items = Vec::new();
    match kind.on_projects() {
        true => {
            let projects = client.projects().await.unwrap();
            let ids: Vec<String> = projects.items.iter().map(|p| p.id.clone()).collect();
            let scans = client
                .last_scans(
                    &ids,
                    &cxone_etm::cxone::LastScanQuery::completed(Some(kind)),
                )
                .await
                .unwrap();
            let raw = client_raw_projects(&emulator).await;
            for (id, record) in raw {
                let Some(scan) = scans.scans.get(&id) else {
                    continue;
                };
                let mut pager = client.results(&scan.id);
                let mut pages = Vec::new();
                while let Some(page) = pager.next_page().await.unwrap() {
                    pages.push(page.body.to_vec());
                }
                items.push((record, pages));
            }
        }
        false => {
            let raw = client_raw_environments(&emulator).await;
            for (id, record) in raw {
                let scan = client
                    .latest_completed_dast_scan(&id)
                    .await
                    .unwrap()
                    .unwrap();
                let mut pager = client.dast_results(&scan.scan_id, &id);
                let mut pages = Vec::new();
                while let Some(page) = pager.next_page().await.unwrap() {
                    pages.push(page.body.to_vec());
                }
                items.push((record, pages));
            }
        }
    }
    items
}

/// The project records as the API sends them (the transform reads the raw record).
async fn client_raw_projects(emulator: &cxone_emulator::Emulator) -> Vec<(String, String)> {
    let token = oauth_token(emulator).await;
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/projects?limit=100", emulator.api_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p.to_string()))
        .collect()
}

async fn client_raw_environments(emulator: &cxone_emulator::Emulator) -> Vec<(String, String)> {
    let token = oauth_token(emulator).await;
    let body: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/dast/scans/environments?from=0&to=100",
            emulator.api_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["environmentId"].as_str().unwrap().to_string(),
                e.to_string(),
            )
        })
        .collect()
}

async fn oauth_token(emulator: &cxone_emulator::Emulator) -> String {
    let body: Value = reqwest::Client::new()
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", emulator.credentials.client_id.as_str()),
            ("client_secret", emulator.credentials.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn emulator_data_maps_to_the_golden_batches_for_every_engine() {
    for (kind, name) in [
        (Engine::Sast, "emulator_sast.ndjson"),
        (Engine::Sca, "emulator_sca.ndjson"),
        (Engine::Kics, "emulator_kics.ndjson"),
        (Engine::Containers, "emulator_containers.ndjson"),
        (Engine::Dast, "emulator_dast.ndjson"),
    ] {
        let mut all_lines = Vec::new();
        let mut total = cxone_etm::mapping::Figures::default();
        for (record, pages) in emulator_pages(kind).await {
            let pages: Vec<&[u8]> = pages.iter().map(Vec::as_slice).collect();
            let (lines, outcome) = run(kind, &record, &pages, TransformOptions::default());
            total.add(&outcome.figures);
            all_lines.extend(lines);
        }
        validate(&all_lines);
        golden(name, &all_lines);
        assert_eq!(
            total.records_in,
            total.findings_out + total.rejected + total.skipped(),
            "{kind:?}: nothing lost"
        );
        assert!(total.findings_out > 0);
        if kind.on_projects() {
            // A transformer alone on an item counts every other engine's records as skipped.
            let others: Vec<&str> = Engine::PROJECT_ENGINES
                .iter()
                .filter(|e| **e != kind)
                .map(|e| e.as_str())
                .collect();
            assert!(
                others
                    .iter()
                    .all(|t| total.skipped_by_type.contains_key(*t)),
                "{kind}: {total:?}"
            );
            assert_eq!(total.duplicates, 0, "{kind}: no two findings alike");
        } else {
            for f in all_lines.iter().flat_map(|l| findings(l)) {
                let expected = match f["vendorStatus"].as_str().unwrap() {
                    "New" => "NEW",
                    "Recurrent" | "Active" => "ACTIVE",
                    "Fixed" => "FIXED",
                    "Resurfaced" => "REOPENED",
                    other => panic!("unexpected DAST status {other}"),
                };
                assert_eq!(f["findingStatus"], expected);
            }
        }
    }
}

fn sast_record(id: &str, extra: Value) -> Value {
    let mut record = json!({
        "type": "sast", "id": id, "similarityId": "-12", "status": "NEW", "state": "TO_VERIFY", "severity": "HIGH",
        "firstFoundAt": "2026-01-01T00:00:00Z", "foundAt": "2026-02-01T00:00:00Z", "description": "d",
        "data": {"queryName": "SQL_Injection", "queryId": 14517067005933136034u64, "group": "Java_High_Risk"},
        "vulnerabilityDetails": {"cweId": 89}
    });
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    record
}

fn page(records: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"results": records, "totalCount": 0, "scanID": "s"})).unwrap()
}

const PROJECT_WITH_REPO: &str = r#"{"id":"p-1","name":"acme/checkout","createdAt":"2025-09-08T10:56:35.671243Z","repoUrl":"https://github.com/acme/checkout","mainBranch":"main"}"#;

#[test]
fn records_are_findings_rejected_or_skipped_never_lost() {
    let records = vec![
        sast_record("a", json!({})),
        sast_record("b", json!({"status": "FIXED"})),
        json!({"type": "sca", "id": "CVE-1", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW"}),
        json!({"type": "kics", "id": "k", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW"}),
        sast_record("", json!({"id": null})),
        json!(42),
        sast_record(
            "c",
            json!({"severity": 3, "data": "corrupted", "createdAt": 12345}),
        ),
        sast_record(
            "d",
            json!({"state": "Risk_Accepted_By_AppSec", "severity": "BLOCKER"}),
        ),
        sast_record(
            "e",
            json!({"firstFoundAt": "yesterday", "vulnerabilityDetails": {"cweId": "NVD-CWE-Other"}}),
        ),
    ];
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions::default(),
    );
    validate(&lines);
    let f = &outcome.figures;
    assert_eq!(f.records_in, 9);
    assert_eq!(f.skipped_by_type.get("sca"), Some(&1));
    assert_eq!(f.skipped_by_type.get("kics"), Some(&1));
    assert_eq!(f.rejected, 2, "{:?}", outcome.rejected);
    assert_eq!(f.findings_out, 5);
    assert_eq!(f.records_in, f.findings_out + f.rejected + f.skipped());
    assert_eq!(f.fixed, 1);
    assert!(
        outcome.rejected.iter().any(|r| r.index == 4
            && r.reason.contains("findings[].id")
            && r.reason.contains("missing")),
        "{:?}",
        outcome.rejected
    );
    assert!(
        outcome
            .rejected
            .iter()
            .any(|r| r.index == 5 && r.reason.contains("not a JSON object"))
    );

    let out = findings(&lines[0]);
    let by_id = |id: &str| {
        out.iter()
            .find(|f| f["externalFindingId"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id("b")["findingStatus"],
        "FIXED",
        "fixed findings go out closed, never open"
    );
    let c = by_id("c");
    assert!(
        c.get("name").is_none(),
        "the corrupted `data` left the name empty: {c}"
    );
    assert_eq!(c["vendorSeverity"], "3");
    assert!(c["flaggedValues"].as_array().unwrap().iter().any(|v| {
        v.as_str()
            .unwrap()
            .contains("severity '3' matches no scoring row; scored and mapped as MEDIUM")
    }));
    let d = by_id("d");
    assert_eq!(d["triageState"], "Risk_Accepted_By_AppSec");
    assert_eq!(d["triageStateKnown"], false);
    assert_eq!(
        d["qds"], 55,
        "an unknown severity takes the default severity's QDS"
    );
    assert_eq!(d["severity"], 3, "and the value map's default");
    assert_eq!(f.unknown_triage_states, 1);
    let e = by_id("e");
    assert!(
        e.get("firstFoundOn").is_none() && e.get("findingType").is_none(),
        "misfits are left out and flagged: {e}"
    );
    assert_eq!(e["flaggedValues"].as_array().unwrap().len(), 2);
    let a = by_id("a");
    assert_eq!(
        (
            a["severity"].clone(),
            a["qds"].clone(),
            a["triageStateKnown"].clone()
        ),
        (json!(4), json!(80), json!(true))
    );
}

#[test]
fn dast_values_go_through_the_spec_value_maps() {
    let environment =
        r#"{"environmentId":"env-1","domain":"shop.example.com","url":"https://shop.example.com"}"#;
    let statuses = [
        "New",
        "Recurrent",
        "Fixed",
        "Resurfaced",
        "Active",
        "Reviewed",
    ];
    let severities = ["info", "LOW", "MEDIUM", "High", "CRITICAL", "SEVERE"];
    let records: Vec<Value> = statuses
        .iter()
        .zip(severities)
        .enumerate()
        .map(|(i, (status, severity))| {
            json!({"id": format!("r{i}"), "severity": severity, "state": "To Verify", "status": status, "name": "XSS",
                   "cwe_id": "-1", "owasp": ["A03:2021 - Injection"], "url": "https://shop.example.com/q", "scan_type": "DAST"})
        })
        .collect();
    let body =
        serde_json::to_vec(&json!({"results": records, "total": 6, "pages_number": 1})).unwrap();
    let (lines, outcome) = run(
        Engine::Dast,
        environment,
        &[&body],
        TransformOptions::default(),
    );
    validate(&lines);
    let out = findings(&lines[0]);
    let got: Vec<(Value, Value)> = out
        .iter()
        .map(|f| (f["findingStatus"].clone(), f["findingSeverity"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("NEW"), json!(1)),
            (json!("ACTIVE"), json!(2)),
            (json!("FIXED"), json!(3)),
            (json!("REOPENED"), json!(4)),
            (json!("ACTIVE"), json!(5)),
            (json!("ACTIVE"), json!(3)),
        ],
        "unknown values take the map's default and are flagged"
    );
    assert_eq!(
        out[5]["flaggedValues"].as_array().unwrap().len(),
        3,
        "status, severity and the scoring miss: {}",
        out[5]
    );
    assert_eq!(
        out[0]["triageState"], "TO_VERIFY",
        "spaced title case states are recognised"
    );
    assert!(out[0].get("cweId").is_none(), "CWE -1 is no CWE");
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        line["externalAssetId"], "env-1",
        "DAST assets are identified by their environment"
    );
    assert_eq!(outcome.figures.fixed, 1);
    assert_eq!(
        out[3]["vendorSeverity"], "High",
        "the vendor's word, as sent"
    );
    let counted: Vec<(&str, u64)> = outcome
        .figures
        .by_severity
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    assert_eq!(
        counted,
        [
            ("CRITICAL", 1),
            ("HIGH", 1),
            ("MEDIUM", 1),
            ("LOW", 1),
            ("INFO", 1),
            ("SEVERE", 1)
        ],
        "counted by what the severity means, whatever its case, most severe first"
    );
}

/// The default SAST map and scoring table, compiled once.
fn sast_rules() -> &'static (Plan, CompiledScoring) {
    static RULES: std::sync::OnceLock<(Plan, CompiledScoring)> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        (
            TransformMap::default_for(Engine::Sast).compile().unwrap(),
            Scoring::default_table().compile().unwrap(),
        )
    })
}

/// A transformer of the project `PROJECT_WITH_REPO` through the default SAST map and scoring.
fn sast_transformer() -> ItemTransformer<'static> {
    let (plan, scoring) = sast_rules();
    transformer_of(plan, scoring, PROJECT_WITH_REPO)
}

/// A transformer of `item` through `plan` and `scoring`, with the default options.
fn transformer_of<'p>(
    plan: &'p Plan,
    scoring: &'p CompiledScoring,
    item: &str,
) -> ItemTransformer<'p> {
    ItemTransformer::new(
        plan,
        scoring,
        &context(plan.kind),
        TransformOptions::default(),
        item.as_bytes(),
    )
    .unwrap()
}

/// The entry of `map` that writes `target` (a target path's last segment).
fn entry_for<'m>(map: &'m mut TransformMap, target: &str) -> &'m mut cxone_etm::mapping::MapEntry {
    map.entries
        .iter_mut()
        .find(|e| e.target.ends_with(target))
        .unwrap_or_else(|| panic!("the map writes {target}"))
}

/// A SAST record whose identity fields (similarity id, source and sink) come from `at`.
fn located(id: &str, at: u32, extra: Value) -> Value {
    let mut record = sast_record(id, extra);
    record["similarityId"] = json!(format!("-{at}"));
    record["data"]["resultHash"] = json!(format!("hash{at}"));
    record["data"]["nodes"] = json!([
        {"fileName": "/src/In.java", "line": at, "column": 1},
        {"fileName": "/src/Out.java", "line": at + 1, "column": 2}
    ]);
    record
}

/// Each record's `externalFindingId` by its description (a marker of the record), the records
/// given in `pages`, with the repeated ids counted first as collect counts them.
fn ids_by_record(pages: &[Vec<Value>]) -> (BTreeMap<String, String>, ItemOutcome) {
    ids_after(pages, None)
}

/// The ids `bodies` repeat, counted as collect counts them: a first pass over every page, then,
/// where an id came more than once, a second for the identities of its records.
fn repeats_in(
    plans: &[&cxone_etm::mapping::Plan],
    bodies: &[Vec<u8>],
    engines: &[Engine],
) -> cxone_etm::mapping::Repeats {
    let mut tally = cxone_etm::mapping::IdTally::new(plans);
    for body in bodies {
        tally.add_page(body, engines);
    }
    if tally.needs_identities() {
        for body in bodies {
            tally.add_identities(body, engines);
        }
    }
    tally.repeats()
}

/// [`ids_by_record`] reconciled against the ledger of a previous run, when one is given.
fn ids_after(
    pages: &[Vec<Value>],
    previous: Option<cxone_etm::mapping::Ledger>,
) -> (BTreeMap<String, String>, ItemOutcome) {
    let bodies: Vec<Vec<u8>> = pages.iter().map(|p| page(p.clone())).collect();
    let mut transformer = sast_transformer();
    transformer.expect_repeats(Arc::new(
        repeats_in(&[&sast_rules().0], &bodies, &[Engine::Sast]).into(),
    ));
    if let Some(previous) = previous {
        transformer.reconcile(previous, "run-2", None);
    }
    let mut ids = BTreeMap::new();
    for (n, body) in bodies.iter().enumerate() {
        for line in transformer.push_page(body, n as u32).unwrap() {
            validate(&[String::from_utf8(line.clone()).unwrap()]);
            for f in findings(std::str::from_utf8(&line).unwrap()) {
                let id = f["externalFindingId"].as_str().unwrap().to_string();
                let marker = f["description"].as_str().unwrap().to_string();
                assert!(ids.insert(marker, id).is_none());
            }
        }
    }
    (ids, transformer.finish().unwrap())
}

#[test]
fn repeated_vendor_ids_are_told_apart_by_content_never_by_position() {
    // The vendor gives `dup` to three different results, and a real result's id is `dup#2`.
    let records: Vec<Value> = (0..40u32)
        .map(|n| {
            let id = match n {
                3 | 17 | 31 => "dup".to_string(),
                9 => "dup#2".to_string(),
                n => format!("r{n}"),
            };
            located(&id, n * 10, json!({"description": format!("record {n}")}))
        })
        .collect();
    let (ids, outcome) = ids_by_record(std::slice::from_ref(&records));
    assert_eq!(ids.len(), 40, "every record is a finding");
    let unique: BTreeSet<&String> = ids.values().collect();
    assert_eq!(unique.len(), 40, "unique within the asset: {ids:?}");
    assert_eq!(
        ids["record 9"], "dup#2",
        "an id that does not repeat is kept"
    );
    assert_eq!(ids["record 0"], "r0");
    for n in [3, 17, 31] {
        let id = &ids[&format!("record {n}")];
        assert!(
            id.starts_with("dup#") && id.len() == "dup#".len() + 16,
            "{id}"
        );
    }
    assert_eq!(outcome.figures.collisions, 3);

    // The same results in other orders and other page sizes: every record keeps its id.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for page_size in [1, 3, 7, 40] {
        let mut shuffled = records.clone();
        for i in (1..shuffled.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            shuffled.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let pages: Vec<Vec<Value>> = shuffled.chunks(page_size).map(<[Value]>::to_vec).collect();
        let (again, _) = ids_by_record(&pages);
        assert_eq!(again, ids, "pages of {page_size}, shuffled");
    }
}

#[test]
fn a_told_apart_finding_keeps_its_id_when_its_code_moves_or_its_twin_goes() {
    let twins = vec![
        located("dup", 10, json!({"description": "a"})),
        located("dup", 20, json!({"description": "b"})),
    ];
    let (first, outcome) = ids_after(std::slice::from_ref(&twins), None);
    let ledger = outcome.ledger.clone();
    assert!(ledger.is_none(), "not reconciled without a previous ledger");
    // The next scan: code above both flaws was edited (every line moved by 3), then `b` went.
    let moved: Vec<Value> = twins
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for node in r["data"]["nodes"].as_array_mut().unwrap() {
                node["line"] = json!(node["line"].as_u64().unwrap() + 3);
            }
            r
        })
        .collect();
    let (second, _) = ids_after(std::slice::from_ref(&moved), None);
    assert_eq!(second, first, "lines and columns are not identity");
    let previous = {
        let mut t = sast_transformer();
        t.expect_repeats(Arc::new(
            repeats_in(&[&sast_rules().0], &[page(twins.clone())], &[Engine::Sast]).into(),
        ));
        t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
        t.push_page(&page(twins.clone()), 0).unwrap();
        t.finish().unwrap().ledger.unwrap()
    };
    let (alone, outcome) = ids_after(&[vec![moved[0].clone()]], Some(previous));
    assert_eq!(
        alone["a"], first["a"],
        "the id no longer repeats, but the finding keeps the id it had"
    );
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Active], 1);
}

/// A record whose id as sent is the name another record of the scan is told apart by
/// (`<id>#<16 hex>`: a vendor can compute it) is told apart in turn: three findings under three
/// ids, on the first run and the next, and on a run where the twin it mimics has gone (the
/// other keeps the suffixed name the ledger holds, while its id no longer repeats). Before, the
/// two shared one id: the item failed on every run (`UncountedRepeats`) and, once the id was in
/// a ledger, one finding was skipped as the other's duplicate. An id with `#` of another shape
/// stands as sent.
#[test]
fn an_id_sent_as_another_findings_told_apart_name_is_told_apart_in_turn() {
    let twins = vec![
        located("dup", 10, json!({"description": "a"})),
        located("dup", 20, json!({"description": "b"})),
    ];
    let (named, _) = ids_by_record(std::slice::from_ref(&twins));
    let mut records = twins.clone();
    records.push(located(&named["a"], 30, json!({"description": "forged"})));
    records.push(located("abc#2", 40, json!({"description": "plain"})));
    let (first, outcome) = ids_by_record(std::slice::from_ref(&records));
    assert_eq!(first["a"], named["a"]);
    assert_eq!(first["plain"], "abc#2");
    assert!(
        first["forged"].starts_with(&format!("{}#", named["a"])),
        "{first:?}"
    );
    assert_eq!(
        first.values().collect::<BTreeSet<_>>().len(),
        4,
        "{first:?}"
    );
    assert_eq!(outcome.figures.duplicates, 0);
    // Reconciled: run 1 against no ledger, run 2 against run 1's.
    let (outcome, written, _) =
        reconciled_pass(&records, cxone_etm::mapping::Ledger::default(), "run-1");
    assert_eq!(written, first.values().cloned().collect::<BTreeSet<_>>());
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::New], 4);
    let run1 = outcome.ledger.unwrap();
    let (outcome, second, closed) = reconciled_pass(&records, run1.clone(), "run-2");
    assert_eq!(second, written);
    assert_eq!((outcome.figures.duplicates, closed), (0, 0));
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Active], 4);
    // The twin `b` fixed: `a` keeps its name, alone now, and only `b` closes.
    let without_b: Vec<Value> = records
        .iter()
        .filter(|r| r["description"] != "b")
        .cloned()
        .collect();
    let (outcome, third, closed) = reconciled_pass(&without_b, run1, "run-3");
    let mut kept = written.clone();
    kept.remove(&first["b"]);
    assert_eq!(third, kept);
    assert_eq!((outcome.figures.duplicates, closed), (0, 1));
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Active], 3);
}

/// A finding the vendor lists FIXED is sent FIXED on every run it comes, and counted FIXED; of
/// those, the ones ETM held closed already or never had open are counted apart (`fixedBefore`),
/// so a report tells them from the findings fixed since the last run.
#[test]
fn findings_sent_fixed_again_or_first_seen_fixed_are_counted_apart() {
    let fixed = json!({"status": "FIXED"});
    let run1 = [
        sast_record("first-seen-fixed", fixed.clone()),
        sast_record("open", json!({})),
    ];
    let (outcome, _, _) = reconciled_pass(&run1, cxone_etm::mapping::Ledger::default(), "run-1");
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Fixed], 1);
    assert_eq!(outcome.figures.fixed_before, 1);
    let run2 = [
        sast_record("first-seen-fixed", fixed.clone()),
        sast_record("open", fixed),
    ];
    let (outcome, _, closed) = reconciled_pass(&run2, outcome.ledger.unwrap(), "run-2");
    assert_eq!(closed, 0);
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Fixed], 2);
    assert_eq!(outcome.figures.fixed_before, 1, "fixed since: `open` alone");
}

/// One pass of a SAST transformer over `records` (their repeated ids counted first, as collect
/// counts them), reconciled against `previous`: the outcome, the ids written, and how many
/// absent findings were closed.
fn reconciled_pass(
    records: &[Value],
    previous: cxone_etm::mapping::Ledger,
    run: &str,
) -> (ItemOutcome, BTreeSet<String>, u64) {
    reconciled_page(page(records.to_vec()), previous, run)
}

/// [`reconciled_pass`] over a page's bytes.
fn reconciled_page(
    body: Vec<u8>,
    previous: cxone_etm::mapping::Ledger,
    run: &str,
) -> (ItemOutcome, BTreeSet<String>, u64) {
    let mut t = sast_transformer();
    t.expect_repeats(Arc::new(
        repeats_in(
            &[&sast_rules().0],
            std::slice::from_ref(&body),
            &[Engine::Sast],
        )
        .into(),
    ));
    t.reconcile(previous, run, None);
    let mut written = BTreeSet::new();
    for line in t.push_page(&body, 0).unwrap() {
        for f in findings(std::str::from_utf8(&line).unwrap()) {
            written.insert(f["externalFindingId"].as_str().unwrap().to_string());
        }
    }
    let (_, closed) = close_absent(&mut t);
    (t.finish().unwrap(), written, closed)
}

/// One run of an asset that SAST and SCA report on, each from a scan of its own branch, as the
/// transform step runs it: each engine reconciled against its part of the stored ledger (read as
/// `LedgerByEngine`), the next ledger stored from the parts (`LedgerParts`). Answers the stored
/// ledger and, per engine, what it closed and held on a change of branch.
fn stored_run(
    stored: Option<&[u8]>,
    engines: [(Engine, &[Value], Option<&str>); 2],
    run: &str,
) -> (Vec<u8>, BTreeMap<Engine, (u64, u64)>) {
    let mut previous = match stored {
        Some(bytes) => serde_json::from_slice::<cxone_etm::mapping::LedgerByEngine>(bytes)
            .unwrap()
            .into_parts(Engine::Sast)
            .unwrap(),
        None => BTreeMap::new(),
    };
    let scoring = Scoring::default_table().compile().unwrap();
    let mut next = cxone_etm::mapping::LedgerParts::default();
    let mut figures = BTreeMap::new();
    for (engine, records, branch) in engines {
        let plan = TransformMap::default_for(engine).compile().unwrap();
        let body = page(records.to_vec());
        let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
        t.expect_repeats(Arc::new(
            repeats_in(&[&plan], std::slice::from_ref(&body), &[engine]).into(),
        ));
        t.reconcile(previous.remove(&engine).unwrap_or_default(), run, branch);
        t.push_page(&body, 0).unwrap();
        let (_, closed) = close_absent(&mut t);
        let done = t.finish().unwrap();
        figures.insert(engine, (closed, done.figures.held_on_branch_change));
        next.absorb(engine, done.ledger.unwrap());
    }
    (serde_json::to_vec(&next).unwrap(), figures)
}

/// A scan that names no branch, after one that named its branch, may be of another branch: what
/// it lacks is held open for the run, as on a change of branch, and closes on the next run that
/// still lacks it. The stored ledger keeps that the engine's scan named none (`engineBranches`,
/// null) beside the branch another engine's scan names: read back as the other's, the engine was
/// held on every run, never closing. The other way round (a branch after none) holds the same.
#[test]
fn a_scan_that_names_no_branch_after_one_that_did_holds_what_it_lacks_for_a_run() {
    let sast = [sast_record("a", json!({}))];
    let sca_both = [
        sca_record("CVE-1", "npm-x-1", json!({})),
        sca_record("CVE-2", "npm-y-1", json!({})),
    ];
    let sca_one = [sca_both[0].clone()];
    let (first, _) = stored_run(
        None,
        [
            (Engine::Sast, &sast, Some("main")),
            (Engine::Sca, &sca_both, Some("main")),
        ],
        "run-1",
    );
    let (second, figures) = stored_run(
        Some(&first),
        [
            (Engine::Sast, &sast, Some("main")),
            (Engine::Sca, &sca_one, None),
        ],
        "run-2",
    );
    assert_eq!(figures[&Engine::Sca], (0, 1), "CVE-2 held, not closed");
    assert!(
        String::from_utf8_lossy(&second).contains(r#""engineBranches":{"sca":null}"#),
        "{}",
        String::from_utf8_lossy(&second)
    );
    let (_, figures) = stored_run(
        Some(&second),
        [
            (Engine::Sast, &sast, Some("main")),
            (Engine::Sca, &sca_one, None),
        ],
        "run-3",
    );
    assert_eq!(figures[&Engine::Sca], (1, 0), "CVE-2 closes the run after");
    assert_eq!(figures[&Engine::Sast], (0, 0));

    // A branch named after none: held for a run too.
    let (_, figures) = stored_run(
        Some(&second),
        [
            (Engine::Sast, &sast, Some("main")),
            (Engine::Sca, &sca_one, Some("main")),
        ],
        "run-3",
    );
    assert_eq!(figures[&Engine::Sca], (0, 1));
}

/// An id one record sent, then two records told apart: the open finding it was is held open,
/// not closed (either record may be it), and both are new under `<id>#<suffix>`. When the id
/// stands alone again, its record is that finding (ACTIVE) and the twins close. Before, the
/// finding still there was closed as FIXED the run its id began to repeat.
#[test]
fn a_finding_whose_id_begins_to_repeat_is_held_open_not_closed() {
    let alone = vec![
        located("dup", 10, json!({"description": "a"})),
        located("other", 30, json!({"description": "c"})),
    ];
    let twins = vec![
        alone[0].clone(),
        located("dup", 20, json!({"description": "b"})),
        alone[1].clone(),
    ];
    let (first, ..) = reconciled_pass(&alone, Default::default(), "run-1");

    let (second, written, closed) = reconciled_pass(&twins, first.ledger.unwrap(), "run-2");
    assert_eq!(closed, 0, "nothing closed: {:?}", second.figures);
    assert_eq!(second.figures.held_as_id_now_repeats, 1);
    assert_eq!(second.figures.lifecycle[&Lifecycle::New], 2);
    assert_eq!(second.figures.lifecycle[&Lifecycle::Active], 1);
    assert_eq!(written.len(), 3);
    assert!(
        written.iter().filter(|id| id.starts_with("dup#")).count() == 2,
        "{written:?}"
    );
    let ledger = second.ledger.unwrap();
    assert_eq!(ledger.open_findings(), 4, "dup held, its twins and other");

    let (third, written, closed) = reconciled_pass(&alone, ledger, "run-3");
    assert_eq!(
        written,
        BTreeSet::from(["dup".to_string(), "other".to_string()])
    );
    assert_eq!(third.figures.lifecycle[&Lifecycle::Active], 2);
    assert_eq!(closed, 2, "the twins close");
    assert_eq!(third.figures.held_as_id_now_repeats, 0);
}

/// What `settle_absent` counts to close and `close_absent` then closes, with the lines it hands
/// over.
fn close_absent(t: &mut ItemTransformer) -> (Vec<Vec<u8>>, u64) {
    let to_close = t.settle_absent();
    let mut lines = Vec::new();
    let closed = t
        .close_absent(&mut |line| {
            lines.push(line.to_vec());
            Ok(())
        })
        .unwrap();
    assert_eq!(closed, to_close, "settle_absent counted what is closed");
    (lines, closed)
}

/// Entries of the previous ledger are rewritten in place as their findings are seen. What was
/// not seen is closed by `close_absent`, once; and a transformer finished without that step keeps
/// those entries as they were: no entry of the asset's ledger is lost on either path.
#[test]
fn every_entry_of_the_previous_ledger_reaches_the_next_once() {
    let both = page(vec![
        sast_record("a", json!({})),
        sast_record("b", json!({})),
    ]);
    let only_a = page(vec![sast_record("a", json!({"status": "RECURRENT"}))]);
    let previous = {
        let mut t = sast_transformer();
        t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
        t.push_page(&both, 0).unwrap();
        t.finish().unwrap().ledger.unwrap()
    };
    assert_eq!(previous.open_findings(), 2);

    let mut t = sast_transformer();
    t.reconcile(previous.clone(), "run-2", None);
    t.push_page(&only_a, 0).unwrap();
    let (lines, closed) = close_absent(&mut t);
    assert_eq!(closed, 1);
    let closures: Vec<Value> = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .collect();
    assert_eq!(closures.len(), 1);
    assert_eq!(closures[0]["externalFindingId"], "b");
    let outcome = t.finish().unwrap();
    assert_eq!(outcome.figures.lifecycle[&Lifecycle::Active], 1);
    let next = outcome.ledger.unwrap();
    assert_eq!(next.findings.len(), 2);
    assert!(!next.findings["b"].open, "b was closed");
    assert_eq!(next.findings["a"].first_seen.as_str(), "run-1");
    assert_eq!(next.findings["a"].status.as_str(), "RECURRENT");

    let mut t = sast_transformer();
    t.reconcile(previous.clone(), "run-2", None);
    t.push_page(&only_a, 0).unwrap();
    let unsettled = t.close_absent(&mut |_| panic!("a line of a finding not settled to close"));
    assert_eq!(unsettled.unwrap(), 0, "nothing closes unless settled");
    let kept = t.finish().unwrap().ledger.unwrap();
    assert_eq!(kept.findings.len(), 2);
    assert_eq!(
        kept.findings["b"], previous.findings["b"],
        "b kept as it was"
    );

    // A rejected record might be b: nothing is closed, b is held open in the next ledger.
    let with_rejected = page(vec![
        sast_record("a", json!({})),
        sast_record("x", json!({"id": null})),
    ]);
    let mut t = sast_transformer();
    t.reconcile(previous.clone(), "run-2", None);
    t.push_page(&with_rejected, 0).unwrap();
    assert_eq!(close_absent(&mut t).1, 0);
    assert_eq!(
        t.settle_absent(),
        0,
        "settled once: b is not counted held twice"
    );
    let outcome = t.finish().unwrap();
    assert_eq!(outcome.figures.rejected, 1);
    assert_eq!(outcome.figures.held_for_rejected_records, 1);
    let held = outcome.ledger.unwrap();
    assert_eq!(held.findings.len(), 2);
    assert!(held.findings["b"].open, "b held open");
}

/// An asset the asset-type filter leaves out (no repository URL, only code repositories taken)
/// sends nothing, closures neither: a finding gone from the vendor while the asset is left out
/// stays open in its ledger, as it was, on the asset it was on, though the map now names another
/// (it moves once the asset is sent again).
#[test]
fn an_asset_left_out_by_type_closes_nothing_even_of_findings_gone() {
    // A map that names the asset by the project's name: what ETM holds is under its id.
    let mut by_name = TransformMap::default_for(Engine::Sast);
    entry_for(&mut by_name, "externalAssetId").source = "name".into();
    let plan = &by_name.compile().unwrap();
    let scoring = &Scoring::default_table().compile().unwrap();
    let previous = first_ledger(
        Engine::Sast,
        vec![sast_record("a", json!({})), sast_record("b", json!({}))],
    );
    let previous_asset = previous.asset.clone();
    let no_repo = r#"{"id":"p-1","name":"acme/checkout","createdAt":"2025-09-08T10:56:35.671243Z","mainBranch":"main"}"#;
    let options = TransformOptions {
        asset_types: AssetTypes {
            generic_application: false,
            code_repository: true,
        },
        ..TransformOptions::default()
    };
    let mut t = ItemTransformer::new(
        plan,
        scoring,
        &context(Engine::Sast),
        options,
        no_repo.as_bytes(),
    )
    .unwrap();
    t.reconcile(previous, "run-2", Some("dev"));
    let lines = t
        .push_page(&page(vec![sast_record("a", json!({}))]), 0)
        .unwrap();
    assert!(lines.is_empty(), "nothing of the asset is sent");
    assert_eq!(close_absent(&mut t), (Vec::new(), 0), "b is not closed");
    let outcome = t.finish().unwrap();
    assert_eq!(outcome.figures.skipped_by_filter, 1);
    assert_eq!(outcome.figures.rejected, 0);
    let kept = outcome.ledger.unwrap();
    assert!(kept.findings["a"].open && kept.findings["b"].open);
    assert_eq!(
        kept.asset, previous_asset,
        "its findings stay on the asset ETM holds them on"
    );
    assert_eq!(kept.branch, None, "and of the branch they came from");
}

/// A record with no `type` may be any engine's finding: the pull's first transformer rejects it
/// (and holds its absent findings open, as for any rejected record); a transformer beside it on
/// the same pull leaves it to the first, and closes nothing once held for it (what the pipeline's
/// transform step does for every engine of a pull with such a record).
#[test]
fn a_record_with_no_type_holds_every_engines_absent_findings_open() {
    let previous = first_ledger(
        Engine::Sast,
        vec![sast_record("a", json!({})), sast_record("b", json!({}))],
    );
    let mut untyped = sast_record("x", json!({}));
    untyped.as_object_mut().unwrap().remove("type");
    let with_untyped = page(vec![sast_record("a", json!({})), untyped]);

    let mut first = sast_transformer();
    first.reconcile(previous.clone(), "run-2", None);
    first.push_page(&with_untyped, 0).unwrap();
    assert_eq!(first.pull_hold(), Some(PullHold::UnattributedRecord));
    assert_eq!(close_absent(&mut first).1, 0);
    let outcome = first.finish().unwrap();
    assert_eq!(outcome.figures.rejected, 1);
    assert!(
        outcome.rejected[0].reason.contains("no `type`"),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(outcome.figures.held_for_rejected_records, 1);
    assert!(outcome.figures.skipped_by_type.is_empty());

    let beside = || {
        let mut t = sast_transformer();
        t.beside(&[], &[], false);
        t.reconcile(previous.clone(), "run-2", None);
        t.push_page(&with_untyped, 0).unwrap();
        t
    };
    let mut unheld = beside();
    assert_eq!(unheld.pull_hold(), None, "met by the first only");
    assert_eq!(close_absent(&mut unheld).1, 1, "b, were it not held");
    let mut held = beside();
    held.hold_pull(PullHold::UnattributedRecord);
    assert_eq!(close_absent(&mut held).1, 0);
    let outcome = held.finish().unwrap();
    assert_eq!(outcome.figures.held_for_rejected_records, 1);
    assert!(outcome.ledger.unwrap().findings["b"].open, "b held open");
}

/// Records of a type no engine reads may be an engine's, renamed by the vendor: an engine with
/// no record of its own in that pull holds its absent findings open once told of them; one with a
/// record of its own closes what it lacks, as does one with none in a pull of known types only.
#[test]
fn an_engine_with_no_record_beside_records_of_an_unknown_type_closes_nothing() {
    let previous = first_ledger(
        Engine::Sast,
        vec![sast_record("a", json!({})), sast_record("b", json!({}))],
    );
    let mut renamed = sast_record("x", json!({}));
    renamed["type"] = json!("sast-v2");
    let mut of_sca = sast_record("y", json!({}));
    of_sca["type"] = json!("sca");
    let transformed = |records: Vec<Value>| {
        let mut t = sast_transformer();
        t.reconcile(previous.clone(), "run-2", None);
        t.push_page(&page(records), 0).unwrap();
        if !t.unknown_record_types().is_empty() {
            t.beside_unknown_record_types();
        }
        t
    };

    let mut alone = transformed(vec![renamed.clone()]);
    assert_eq!(alone.unknown_record_types(), vec!["sast-v2"]);
    assert_eq!(alone.unseen(), Some(Unseen::UnknownRecordTypes));
    assert_eq!(close_absent(&mut alone).1, 0);
    let outcome = alone.finish().unwrap();
    assert_eq!(outcome.figures.held_for_unknown_record_types, 2);
    assert_eq!(outcome.figures.skipped_by_type["sast-v2"], 1);
    let held = outcome.ledger.unwrap();
    assert!(held.findings["a"].open && held.findings["b"].open);

    let mut beside_its_own = transformed(vec![sast_record("a", json!({})), renamed]);
    assert_eq!(close_absent(&mut beside_its_own).1, 1, "b");
    let outcome = beside_its_own.finish().unwrap();
    assert_eq!(outcome.figures.held_for_unknown_record_types, 0);

    let mut known_types_only = transformed(vec![of_sca]);
    assert_eq!(known_types_only.unknown_record_types(), Vec::<&str>::new());
    assert_eq!(close_absent(&mut known_types_only).1, 2, "a and b");

    // A type Checkmarx One ships for an engine not read here is another engine's, not a rename.
    let mut of_secrets = sast_record("z", json!({}));
    of_secrets["type"] = json!("sscs-secret-detection");
    let mut another_engines = transformed(vec![of_secrets]);
    assert_eq!(another_engines.unseen(), None);
    assert_eq!(close_absent(&mut another_engines).1, 2, "a and b");
}

/// A record's `type` is read ASCII case and blanks aside, as the vendor's other words are: a
/// record typed `SAST` is a SAST finding, not one of an unknown engine, skipped, whose absence
/// closed every SAST finding as fixed. The id tally reads it so too.
#[test]
fn a_records_type_is_read_case_and_blanks_aside() {
    let previous = first_ledger(
        Engine::Sast,
        vec![sast_record("a", json!({})), sast_record("b", json!({}))],
    );
    let typed = |id: &str, kind: &str| {
        let mut record = sast_record(id, json!({}));
        record["type"] = json!(kind);
        record
    };
    let mut t = sast_transformer();
    t.reconcile(previous, "run-2", None);
    t.push_page(&page(vec![typed("a", "SAST"), typed("b", " Sast ")]), 0)
        .unwrap();
    assert_eq!(close_absent(&mut t).1, 0, "neither a nor b is closed");
    let outcome = t.finish().unwrap();
    assert_eq!(outcome.figures.findings_out, 2);
    assert!(
        outcome.figures.skipped_by_type.is_empty(),
        "{:?}",
        outcome.figures.skipped_by_type
    );

    let plans: Vec<_> = [Engine::Sast, Engine::Kics]
        .iter()
        .map(|e| TransformMap::default_for(*e).compile().unwrap())
        .collect();
    let kics = json!({"type": "KICS", "id": "k", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW"});
    let body = page(vec![typed("k", "Sast"), kics]);
    let repeats = repeats_in(
        &plans.iter().collect::<Vec<_>>(),
        std::slice::from_ref(&body),
        &[Engine::Sast, Engine::Kics],
    );
    assert_eq!(repeats.told_apart, ["k"], "one id, two engines");
}

/// An id the asset's ledger holds for another engine is told apart by its suffix, and keeps the
/// suffix it was given when its identity fields change (a KICS finding's line moves with every
/// edit above it): the finding stays ACTIVE, not closed and opened again under a new name.
#[test]
fn an_id_told_apart_for_another_engines_sake_keeps_its_suffix() {
    let others = Arc::new(cxone_etm::fingerprint::TextSet::from_iter(["500"]));
    let sent = |t: &mut ItemTransformer, record: Value| {
        let lines = t.push_page(&page(vec![record]), 0).unwrap();
        let line = String::from_utf8(lines[0].clone()).unwrap();
        findings(&line)[0].clone()
    };
    let mut first = sast_transformer();
    first.beside_ids_of_other_engines(others.clone());
    first.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    let given = sent(&mut first, sast_record("500", json!({})));
    let name = given["externalFindingId"].as_str().unwrap().to_string();
    assert!(name.starts_with("500#"), "{name}");
    let done = first.finish().unwrap();
    assert_eq!(done.figures.collisions, 1);

    let mut second = sast_transformer();
    second.beside_ids_of_other_engines(others);
    second.reconcile(done.ledger.unwrap(), "run-2", None);
    let moved = sent(
        &mut second,
        sast_record("500", json!({"similarityId": "-99"})),
    );
    assert_eq!(moved["externalFindingId"], json!(name));
    assert_eq!(moved["lifecycleStatus"], "ACTIVE");
    assert_eq!(close_absent(&mut second).1, 0);
}

/// The same for a name given for another engine's sake: an id sent as it is told apart in turn.
#[test]
fn an_id_sent_as_a_name_given_for_another_engines_sake_is_told_apart_in_turn() {
    let others = Arc::new(cxone_etm::fingerprint::TextSet::from_iter(["500"]));
    let mut t = sast_transformer();
    t.beside_ids_of_other_engines(others);
    t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    let body = page(vec![sast_record("500", json!({}))]);
    let line = String::from_utf8(t.push_page(&body, 0).unwrap().remove(0)).unwrap();
    let name = findings(&line)[0]["externalFindingId"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = page(vec![sast_record(&name, json!({"similarityId": "-7"}))]);
    let line = String::from_utf8(t.push_page(&forged, 1).unwrap().remove(0)).unwrap();
    let id = findings(&line)[0]["externalFindingId"].clone();
    assert!(
        id.as_str().unwrap().starts_with(&format!("{name}#")),
        "{id} beside {name}"
    );
    assert_eq!(t.finish().unwrap().figures.collisions, 2);
}

/// A transformer of `item` for `engine`'s default map, told the ids `pages` repeat (as collect
/// counts them) and reconciled against `previous`; each page pushed. Answers what it closed.
fn reconciled_over(
    engine: Engine,
    previous: cxone_etm::mapping::Ledger,
    pages: &[Vec<Value>],
) -> (u64, ItemOutcome) {
    let plan = TransformMap::default_for(engine).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let bodies: Vec<Vec<u8>> = pages.iter().map(|p| page(p.clone())).collect();
    let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
    t.expect_repeats(Arc::new(repeats_in(&[&plan], &bodies, &[engine]).into()));
    t.reconcile(previous, "run-2", None);
    for (n, body) in bodies.iter().enumerate() {
        t.push_page(body, n as u32).unwrap();
    }
    let (_, closed) = close_absent(&mut t);
    (closed, t.finish().unwrap())
}

/// The ledger of a first run over `records` through `engine`'s default map.
fn first_ledger(engine: Engine, records: Vec<Value>) -> cxone_etm::mapping::Ledger {
    let plan = TransformMap::default_for(engine).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
    t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    t.push_page(&page(records), 0).unwrap();
    t.finish().unwrap().ledger.unwrap()
}

/// A finding sent twice under its own id, its triage state changed between the two (its list
/// moved while it was paged, so another record may have gone by unseen): nothing absent is closed,
/// `b` is held. Two SCA records of one CVE in one package, from two files, are two records of one
/// finding on every run: they hold nothing, and `b` closes.
#[test]
fn a_finding_sent_twice_holds_the_absent_unless_its_id_repeats_by_nature() {
    let previous = first_ledger(
        Engine::Sast,
        vec![located("a", 1, json!({})), located("b", 2, json!({}))],
    );
    let edited = located("a", 1, json!({"state": "CONFIRMED"}));
    let (closed, outcome) = reconciled_over(
        Engine::Sast,
        previous,
        &[vec![located("a", 1, json!({}))], vec![edited]],
    );
    assert_eq!(closed, 0, "{:?}", outcome.figures);
    assert_eq!(outcome.figures.duplicates, 1);
    assert!(outcome.figures.held_for_repeated_records >= 1);
    assert!(outcome.ledger.unwrap().findings["b"].open, "b held open");

    let log4j = "Maven-org.apache.logging.log4j:log4j-core-2.14.1";
    let lodash = "Npm-lodash-4.17.15";
    let previous = first_ledger(
        Engine::Sca,
        vec![
            sca_record("CVE-2021-44228", log4j, json!({})),
            sca_record("CVE-2020-8203", lodash, json!({})),
        ],
    );
    let from = |file: &str| json!({"data": {"packageIdentifier": log4j, "scaPackageData": {"locations": [file]}}});
    let (closed, outcome) = reconciled_over(
        Engine::Sca,
        previous,
        &[vec![
            sca_record("CVE-2021-44228", log4j, from("pom.xml")),
            sca_record("CVE-2021-44228", log4j, from("app/pom.xml")),
        ]],
    );
    assert_eq!(outcome.figures.duplicates, 1);
    assert_eq!(outcome.figures.held_for_repeated_records, 0);
    assert_eq!(closed, 1, "lodash's finding closes: {:?}", outcome.figures);
}

/// A finding sent twice to an asset with no previous findings: collect names its id sent twice,
/// so the transform remembers it, writes it once and skips the second record; the item is not
/// refused for an id written twice.
#[test]
fn a_new_finding_sent_twice_is_written_once() {
    let plan = TransformMap::default_for(Engine::Sast).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let bodies = [
        page(vec![located("a", 1, json!({})), located("b", 2, json!({}))]),
        page(vec![located("a", 1, json!({"state": "CONFIRMED"}))]),
    ];
    let repeats = repeats_in(&[&plan], &bodies, &[Engine::Sast]);
    assert_eq!(repeats.sent_twice, ["a"]);
    let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
    t.expect_repeats(Arc::new(repeats.into()));
    t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    let mut written = Vec::new();
    for (n, body) in bodies.iter().enumerate() {
        for line in t.push_page(body, n as u32).unwrap() {
            written.extend(findings(std::str::from_utf8(&line).unwrap()));
        }
    }
    let outcome = t.finish().unwrap();
    let ids: Vec<&str> = written
        .iter()
        .map(|f| f["externalFindingId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(outcome.figures.duplicates, 1);
    assert_eq!(outcome.ledger.unwrap().findings.len(), 2);
}

/// A ledger an earlier version left after a list moved while it was paged: the finding sent
/// twice renamed `a#<suffix>` (NEW), the record as sent, `a`, held open beside it. The next pull
/// sends `a` once: it is `a` again (ACTIVE), and the alias closes.
#[test]
fn an_alias_an_earlier_version_made_of_a_finding_sent_twice_closes() {
    let plan = TransformMap::default_for(Engine::Sast).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let previous = first_ledger(Engine::Sast, vec![located("a", 1, json!({}))]);
    let with_alias = {
        let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
        // As an earlier version's collect counted the id: repeated, to be told apart.
        let repeated = cxone_etm::mapping::Repeats {
            told_apart: vec!["a".into()],
            sent_twice: Vec::new(),
        };
        t.expect_repeats(Arc::new(repeated.into()));
        t.reconcile(previous, "run-2", None);
        t.push_page(&page(vec![located("a", 1, json!({}))]), 0)
            .unwrap();
        t.push_page(
            &page(vec![located("a", 1, json!({"state": "CONFIRMED"}))]),
            1,
        )
        .unwrap();
        assert_eq!(close_absent(&mut t).1, 0, "held: a came twice");
        t.finish().unwrap().ledger.unwrap()
    };
    let open: Vec<&str> = with_alias
        .findings
        .iter()
        .filter(|(_, e)| e.open)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(open.contains(&"a") && open[1].starts_with("a#"), "{open:?}");

    let (closed, outcome) = reconciled_over(
        Engine::Sast,
        with_alias,
        &[vec![located("a", 1, json!({}))]],
    );
    assert_eq!(closed, 1, "the alias: {:?}", outcome.figures);
    assert_eq!(outcome.figures.collisions, 0);
    let ledger = outcome.ledger.unwrap();
    assert!(ledger.findings["a"].open);
    assert_eq!(outcome.figures.lifecycle.get(&Lifecycle::New), None);
}

/// Closures handed over line by line, two findings a line: when the sink fails on the third
/// line, after two were delivered, the item is broken (some findings are marked closed whose lines
/// never arrived), and neither closing again nor finishing lets that ledger through.
#[test]
fn closures_that_break_off_partway_fail_the_item() {
    let ids: Vec<String> = (0..7).map(|n| format!("f{n}")).collect();
    let previous = {
        let mut t = sast_transformer();
        t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
        let records = ids.iter().map(|id| sast_record(id, json!({}))).collect();
        t.push_page(&page(records), 0).unwrap();
        t.finish().unwrap().ledger.unwrap()
    };
    let (plan, scoring) = sast_rules();
    let two_a_line = TransformOptions {
        max_findings_per_line: 2,
        ..TransformOptions::default()
    };
    let transformer = || {
        let mut t = ItemTransformer::new(
            plan,
            scoring,
            &context(plan.kind),
            two_a_line.clone(),
            PROJECT_WITH_REPO.as_bytes(),
        )
        .unwrap();
        t.reconcile(previous.clone(), "run-2", None);
        t.push_page(&page(vec![]), 0).unwrap();
        t
    };

    let mut t = transformer();
    assert_eq!(t.settle_absent(), 7);
    let mut delivered = 0;
    let broke = t
        .close_absent(&mut |_| {
            delivered += 1;
            match delivered {
                3 => Err(std::io::Error::other("the store hung up")),
                _ => Ok(()),
            }
        })
        .unwrap_err();
    assert_eq!(broke.to_string(), "the store hung up");
    let again = t.close_absent(&mut |_| panic!("no line after a break"));
    assert!(again.unwrap_err().to_string().contains("failed partway"));
    assert!(matches!(t.finish(), Err(TransformError::ClosingBroken)));

    let (lines, closed) = close_absent(&mut transformer());
    assert_eq!(
        (lines.len(), closed),
        (4, 7),
        "the attempt after closes all seven"
    );
}

/// Ids collect counted once are not remembered one by one while they are written: if two
/// records carry such an id after all (collect and the map disagreed), the next ledger finds it
/// when it settles and the item is refused, naming the id, rather than committed with the
/// finding twice. Without collect's count, the second record is skipped as a duplicate.
#[test]
fn an_id_collect_counted_once_that_comes_twice_refuses_the_item() {
    let twice = page(vec![
        sast_record("a", json!({"description": "first"})),
        sast_record("b", json!({})),
        sast_record("a", json!({"description": "second"})),
    ]);
    let mut counted = sast_transformer();
    counted.expect_repeats(Arc::default());
    counted.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    counted.push_page(&twice, 0).unwrap();
    let refused = counted.finish().unwrap_err();
    assert!(
        matches!(&refused, TransformError::UncountedRepeats(ids) if ids == &["a"]),
        "{refused}"
    );
    assert!(refused.to_string().contains("\"a\""), "{refused}");

    let mut uncounted = sast_transformer();
    uncounted.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    let written: usize = uncounted
        .push_page(&twice, 0)
        .unwrap()
        .iter()
        .map(|l| findings(std::str::from_utf8(l).unwrap()).len())
        .sum();
    assert_eq!(written, 2, "the second `a` is not written");
    let outcome = uncounted.finish().unwrap();
    assert_eq!(outcome.figures.duplicates, 1);
    assert_eq!(outcome.ledger.unwrap().findings.len(), 2);
}

/// A map whose id entry has a value map (or a default) can give two records one id that collect
/// counted as two: those ids are remembered as they are written, and the second is a duplicate,
/// not a reason to refuse the item on every run.
#[test]
fn ids_a_value_map_makes_one_are_remembered_and_the_second_skipped() {
    let mut map = TransformMap::default_for(Engine::Sast);
    let id_entry = entry_for(&mut map, "externalFindingId");
    id_entry.value_map = Some(BTreeMap::from([
        ("a".to_string(), json!("same")),
        ("b".to_string(), json!("same")),
    ]));
    let plan = map.compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let mut t = transformer_of(&plan, &scoring, PROJECT_WITH_REPO);
    t.expect_repeats(Arc::default());
    t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
    t.push_page(
        &page(vec![
            sast_record("a", json!({})),
            sast_record("b", json!({})),
        ]),
        0,
    )
    .unwrap();
    let outcome = t.finish().expect("not refused");
    assert_eq!(outcome.figures.duplicates, 1);
    assert!(outcome.ledger.unwrap().findings.contains_key("same"));
}

/// Against a previous ledger, a record served twice is written once (its finding is not seen
/// twice), and a finding the filters now leave out keeps its entry as it was: neither closed
/// nor counted, and never reported as NEW when the filter is lifted.
#[test]
fn against_the_previous_ledger_a_repeat_is_written_once_and_a_left_out_finding_is_kept() {
    let previous = {
        let mut t = sast_transformer();
        t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
        t.push_page(
            &page(vec![
                sast_record("a", json!({})),
                sast_record("low", json!({"severity": "LOW"})),
            ]),
            0,
        )
        .unwrap();
        t.finish().unwrap().ledger.unwrap()
    };
    let (plan, scoring) = sast_rules();
    let high_only = TransformOptions {
        severities: vec![cxone_etm::cxone::Severity::High],
        ..TransformOptions::default()
    };
    let mut t = ItemTransformer::new(
        plan,
        scoring,
        &context(plan.kind),
        high_only,
        PROJECT_WITH_REPO.as_bytes(),
    )
    .unwrap();
    t.reconcile(previous.clone(), "run-2", None);
    let a = sast_record("a", json!({"status": "RECURRENT"}));
    let lines = t
        .push_page(
            &page(vec![
                a.clone(),
                sast_record("low", json!({"severity": "LOW"})),
                a,
            ]),
            0,
        )
        .unwrap();
    let written: Vec<Value> = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["lifecycleStatus"], "ACTIVE");
    assert_eq!(
        close_absent(&mut t).1,
        0,
        "the left-out finding is not absent"
    );
    let outcome = t.finish().unwrap();
    assert_eq!(
        (
            outcome.figures.duplicates,
            outcome.figures.skipped_by_filter,
            outcome.figures.findings_out
        ),
        (1, 1, 1)
    );
    let next = outcome.ledger.unwrap();
    assert_eq!(next.findings.len(), 2);
    assert_eq!(next.findings["low"], previous.findings["low"]);
    assert_eq!(next.findings["a"].status.as_str(), "RECURRENT");
}

/// A finding ETM holds open that a pull settles or fixes is sent so, even where the filters now
/// leave it out: triaged NOT_EXPLOITABLE under a filter of open states, it goes PROTECTED; fixed
/// and lowered below a severity filter, it goes FIXED. Before, each was left out and stayed open
/// in ETM for good. One lowered below the filter and still open is sent once at its new
/// severity (before, ETM held it HIGH for as long as it stayed LOW); one left out at the severity
/// ETM holds (a filter narrowed), or one ETM never held, is left out as before.
#[test]
fn a_finding_the_filters_leave_out_is_still_sent_when_the_pull_settles_or_fixes_it() {
    use cxone_etm::cxone::{Severity, TriageState};
    let previous = {
        let mut t = sast_transformer();
        t.reconcile(cxone_etm::mapping::Ledger::default(), "run-1", None);
        let mut records = ["triaged", "open", "fixed", "lowered"]
            .map(|id| sast_record(id, json!({})))
            .to_vec();
        records.push(sast_record("low-all-along", json!({"severity": "LOW"})));
        t.push_page(&page(records), 0).unwrap();
        t.finish().unwrap().ledger.unwrap()
    };
    let (plan, scoring) = sast_rules();
    let actionable_high = TransformOptions {
        triage_states: ["TO_VERIFY", "CONFIRMED", "URGENT"]
            .map(TriageState::read)
            .to_vec(),
        severities: vec![Severity::High],
        ..TransformOptions::default()
    };
    let mut t = ItemTransformer::new(
        plan,
        scoring,
        &context(plan.kind),
        actionable_high.clone(),
        PROJECT_WITH_REPO.as_bytes(),
    )
    .unwrap();
    t.reconcile(previous.clone(), "run-2", None);
    let pull = page(vec![
        sast_record("triaged", json!({"state": "NOT_EXPLOITABLE"})),
        sast_record("open", json!({"state": "CONFIRMED"})),
        sast_record("fixed", json!({"severity": "LOW", "status": "FIXED"})),
        sast_record("lowered", json!({"severity": "LOW"})),
        sast_record("never-sent", json!({"state": "NOT_EXPLOITABLE"})),
        sast_record("low-all-along", json!({"severity": "low "})),
    ]);
    let lines = t.push_page(&pull, 0).unwrap();
    let sent: BTreeMap<String, (Value, Value)> = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .map(|f| {
            let id = f["externalFindingId"].as_str().unwrap().to_string();
            (
                id,
                (f["findingStatus"].clone(), f["lifecycleStatus"].clone()),
            )
        })
        .collect();
    assert_eq!(
        sent,
        BTreeMap::from([
            ("fixed".into(), (json!("FIXED"), json!("FIXED"))),
            ("lowered".into(), (json!("NEW"), json!("ACTIVE"))),
            ("open".into(), (json!("NEW"), json!("ACTIVE"))),
            ("triaged".into(), (json!("PROTECTED"), json!("ACTIVE"))),
        ]),
    );
    let lowered = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .find(|f| f["externalFindingId"] == "lowered")
        .unwrap();
    assert_eq!(lowered["vendorSeverity"], "LOW");
    assert_eq!(close_absent(&mut t).1, 0, "nothing absent");
    let outcome = t.finish().unwrap();
    assert_eq!(
        outcome.figures.skipped_by_filter, 2,
        "never-sent, low-all-along"
    );
    let next = outcome.ledger.unwrap();
    assert_eq!(next.findings["lowered"].severity.as_str(), "LOW");
    assert!(next.findings["lowered"].open);
    assert_eq!(
        next.findings["low-all-along"],
        previous.findings["low-all-along"]
    );
    assert!(!next.findings["fixed"].open && next.findings["triaged"].open);
    assert!(!next.findings.contains_key("never-sent"));

    // Run 3, the same records: the triaged one, still open in the ledger (so that ETM closes it
    // when it goes), is sent PROTECTED again; the fixed one, closed there, is left out.
    let mut t = ItemTransformer::new(
        plan,
        scoring,
        &context(plan.kind),
        actionable_high,
        PROJECT_WITH_REPO.as_bytes(),
    )
    .unwrap();
    t.reconcile(next, "run-3", None);
    let lines = t.push_page(&pull, 0).unwrap();
    let sent: Vec<(String, Value)> = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .map(|f| {
            (
                f["externalFindingId"].as_str().unwrap().to_string(),
                f["findingStatus"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("triaged".to_string(), json!("PROTECTED")),
            ("open".to_string(), json!("NEW"))
        ]
    );
    assert_eq!(close_absent(&mut t).1, 0);
    // The fixed one, the lowered one (held LOW now), the one never sent, the one LOW all along.
    assert_eq!(t.finish().unwrap().figures.skipped_by_filter, 4);
}

/// A stored ledger edited by hand (out of id order, an id twice) is read with the later entry of
/// the id, and reconciles like any other.
#[test]
fn a_previous_ledger_out_of_order_with_an_id_twice_reconciles_by_its_later_entry() {
    let entry = |open: bool| json!({"open": open, "qds": 70, "severity": "HIGH", "status": "NEW", "firstSeen": "run-0"});
    let stored = format!(
        r#"{{"vendorItemId":"p","asset":"","findings":{{"b":{},"a":{},"b":{}}}}}"#,
        entry(true),
        entry(true),
        entry(false)
    );
    let previous: cxone_etm::mapping::Ledger = serde_json::from_str(&stored).unwrap();
    assert_eq!(previous.findings.len(), 2);
    let mut t = sast_transformer();
    t.reconcile(previous, "run-2", None);
    let lines = t
        .push_page(&page(vec![sast_record("b", json!({}))]), 0)
        .unwrap();
    let written: Vec<Value> = lines
        .iter()
        .flat_map(|l| findings(std::str::from_utf8(l).unwrap()))
        .collect();
    assert_eq!(
        written[0]["lifecycleStatus"], "REOPENED",
        "b was last stored fixed"
    );
    assert_eq!(close_absent(&mut t).1, 1, "a is closed");
    let next = t.finish().unwrap().ledger.unwrap();
    assert_eq!(
        next.findings.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(next.findings["b"].open && !next.findings["a"].open);
}

#[test]
fn a_record_alike_in_every_identity_field_is_skipped_as_a_duplicate() {
    let records = vec![
        located("same", 1, json!({"description": "first"})),
        located(
            "same",
            1,
            json!({"description": "twin", "state": "CONFIRMED"}),
        ),
        located("other", 2, json!({"description": "other"})),
    ];
    let (ids, outcome) = ids_by_record(std::slice::from_ref(&records));
    assert_eq!(ids.len(), 2);
    assert_eq!(
        ids["first"], "same",
        "one finding sent twice keeps its id: no identity suffix, no collision"
    );
    assert_eq!(outcome.figures.duplicates, 1);
    assert_eq!(
        outcome.figures.rejected, 0,
        "a duplicate is not a rejected record"
    );
    assert_eq!(outcome.figures.collisions, 0);
    assert_eq!(
        outcome.figures.records_in,
        outcome.figures.findings_out + outcome.figures.rejected + outcome.figures.skipped()
    );
    // Without the count of repeated ids (a transform nobody told), a repeat is skipped too,
    // never renamed by where it arrives.
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions::default(),
    );
    let emitted: Vec<String> = lines
        .iter()
        .flat_map(|l| findings(l))
        .map(|f| f["externalFindingId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(emitted, ["same", "other"]);
    assert_eq!(outcome.figures.duplicates, 1);
}

#[test]
fn asset_types_follow_the_repository_url_and_the_filter() {
    let one = page(vec![sast_record("a", json!({}))]);
    let (lines, _) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&one],
        TransformOptions::default(),
    );
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        line["asset"]["assetTypes"],
        json!(["GENERIC_APPLICATION", "CODE_REPOSITORY"])
    );
    assert_eq!(
        line["asset"]["assetDetail"]["codeRepositoryAssetClass"],
        json!({"url": "https://github.com/acme/checkout", "mainBranch": "main"})
    );

    let repo_only = TransformOptions {
        asset_types: AssetTypes {
            generic_application: false,
            code_repository: true,
        },
        ..TransformOptions::default()
    };
    let (lines, _) = run(Engine::Sast, PROJECT_WITH_REPO, &[&one], repo_only.clone());
    validate(&lines);
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["asset"]["assetTypes"], json!(["CODE_REPOSITORY"]));
    assert!(
        line["asset"]["assetDetail"]
            .get("genericApplicationAssetClass")
            .is_none()
    );

    // A project without a repository and only Code Repository wanted: nothing to emit, all counted.
    let (lines, outcome) = run(Engine::Sast, REAL_PROJECT, &[&one], repo_only);
    assert!(lines.is_empty());
    assert_eq!(outcome.figures.skipped_by_filter, 1);
    assert_eq!(outcome.figures.records_in, outcome.figures.skipped());
}

#[test]
fn large_pages_are_split_into_parts() {
    let records: Vec<Value> = (0..25)
        .map(|i| sast_record(&format!("r{i}"), json!({})))
        .collect();
    let options = TransformOptions {
        max_findings_per_line: 10,
        ..TransformOptions::default()
    };
    let (lines, outcome) = run(Engine::Sast, PROJECT_WITH_REPO, &[&page(records)], options);
    let sizes: Vec<usize> = lines.iter().map(|l| findings(l).len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let parts: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["part"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(parts, vec![0, 1, 2]);
    assert_eq!(outcome.figures.lines, 3);
}

#[test]
fn a_custom_map_changes_the_output_without_code() {
    let mut map = TransformMap::default_for(Engine::Sast);
    map.entries
        .retain(|e| e.target != "findingGroup.findings[].description");
    map.entries.push(serde_json::from_value(json!({"source": "findings[].data.group", "target": "findingGroup.findings[].category"})).unwrap());
    let text = serde_json::to_string_pretty(&map).unwrap();
    let reloaded: TransformMap = serde_json::from_str(&text).unwrap();
    let (lines, _) = run_with(
        &reloaded,
        PROJECT_WITH_REPO,
        &[&page(vec![sast_record("a", json!({}))])],
        TransformOptions::default(),
    );
    let finding = &findings(&lines[0])[0];
    assert_eq!(finding["category"], "Java_High_Risk");
    assert!(finding.get("description").is_none());
}

#[test]
fn broken_pages_and_items_fail_with_the_reason() {
    let plan = TransformMap::default_for(Engine::Sast).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let options = TransformOptions::default();
    let e = ItemTransformer::new(
        &plan,
        &scoring,
        &context(plan.kind),
        options.clone(),
        br#"{"name":"no id"}"#,
    )
    .err()
    .unwrap();
    assert_eq!(e, TransformError::Item("the record has no `id`".into()));
    let mut t = ItemTransformer::new(
        &plan,
        &scoring,
        &context(plan.kind),
        options,
        PROJECT_WITH_REPO.as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        t.push_page(b"{\"results\":[{\"id\":", 3),
        Err(TransformError::Page { page: 3, .. })
    ));
    assert!(matches!(
        t.push_page(b"{\"items\":[]}", 4),
        Err(TransformError::Page { page: 4, .. })
    ));
}

#[test]
fn triage_states_settle_status_through_the_connection_map() {
    let records = vec![
        sast_record("a", json!({"state": "NOT_EXPLOITABLE"})),
        sast_record("b", json!({"state": "CONFIRMED"})),
        sast_record("c", json!({"state": "IGNORE_FOR_NOW"})),
    ];
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records.clone())],
        TransformOptions::default(),
    );
    validate(&lines);
    let out = findings(&lines[0]);
    let status: Vec<&str> = out
        .iter()
        .map(|f| f["findingStatus"].as_str().unwrap())
        .collect();
    assert_eq!(status[0], "PROTECTED", "NOT_EXPLOITABLE is not open");
    assert_ne!(status[1], "PROTECTED");
    assert_ne!(status[2], "PROTECTED", "an unknown custom state stays open");
    assert_eq!(out[2]["triageStateKnown"], false, "and is flagged");
    assert_eq!(outcome.figures.settled_by_triage, 1);

    let custom: cxone_etm::mapping::TriageMap = serde_json::from_value(
        json!({"states": {"IGNORE_FOR_NOW": "FIXED", "NOT_EXPLOITABLE": "OPEN"}}),
    )
    .unwrap();
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions {
            triage: custom,
            ..TransformOptions::default()
        },
    );
    let out = findings(&lines[0]);
    assert_ne!(out[0]["findingStatus"], "PROTECTED");
    assert_eq!(out[2]["findingStatus"], "FIXED");
    assert_eq!(outcome.figures.settled_by_triage, 1);
}

/// One reconciled pass of `plan` over `records` against `previous`, with `triage`: each finding
/// written as (`lifecycleStatus`, `findingStatus`), how many absent findings closed, and the next
/// ledger.
fn statuses_after(
    plan: &Plan,
    triage: &cxone_etm::mapping::TriageMap,
    records: Vec<Value>,
    previous: cxone_etm::mapping::Ledger,
) -> (
    BTreeMap<String, (Value, Value)>,
    u64,
    cxone_etm::mapping::Ledger,
) {
    let options = TransformOptions {
        triage: triage.clone(),
        ..TransformOptions::default()
    };
    let scoring = &sast_rules().1;
    let item = PROJECT_WITH_REPO.as_bytes();
    let mut t = ItemTransformer::new(plan, scoring, &context(plan.kind), options, item).unwrap();
    let run = if previous.findings.is_empty() {
        "run-1"
    } else {
        "run-2"
    };
    t.reconcile(previous, run, None);
    let mut written = BTreeMap::new();
    for line in t.push_page(&page(records), 0).unwrap() {
        for f in findings(std::str::from_utf8(&line).unwrap()) {
            let id = f["externalFindingId"].as_str().unwrap().to_string();
            written.insert(
                id,
                (f["lifecycleStatus"].clone(), f["findingStatus"].clone()),
            );
        }
    }
    let (_, closed) = close_absent(&mut t);
    (written, closed, t.finish().unwrap().ledger.unwrap())
}

/// A triage state the connection's map settles as FIXED closes the finding in the ledger as in
/// ETM: FIXED while it stays so, not closed again when it goes, REOPENED when triage opens it.
/// Before, the ledger kept it open: ACTIVE beside `findingStatus` FIXED, a second closure when
/// it went, ACTIVE (not REOPENED) when it opened again.
#[test]
fn a_finding_triage_settles_as_fixed_is_closed_in_the_ledger() {
    let plan = &sast_rules().0;
    let triage = serde_json::from_value(json!({"states": {"RISK_REMOVED": "FIXED"}})).unwrap();
    let settled = || sast_record("t", json!({"state": "RISK_REMOVED"}));
    let open = || sast_record("o", json!({}));
    let pass = |records, previous| statuses_after(plan, &triage, records, previous);

    let (written, _, first) = pass(vec![settled(), open()], Default::default());
    assert_eq!(
        written["t"],
        (json!("FIXED"), json!("FIXED")),
        "{written:?}"
    );
    assert_eq!(written["o"].0, "NEW");
    assert!(!first.findings["t"].open, "closed in the ledger as in ETM");

    let (written, _, _) = pass(vec![settled(), open()], first.clone());
    assert_eq!(
        written["t"],
        (json!("FIXED"), json!("FIXED")),
        "still fixed"
    );

    let (_, closed, _) = pass(vec![open()], first.clone());
    assert_eq!(
        closed, 0,
        "a finding reported fixed is not closed again when it goes"
    );

    let opened = sast_record("t", json!({"state": "TO_VERIFY", "status": "RECURRENT"}));
    let (written, _, next) = pass(vec![opened, open()], first);
    assert_eq!(written["t"].0, "REOPENED", "{written:?}");
    assert_ne!(written["t"].1, "FIXED");
    assert!(next.findings["t"].open);
}

/// The ledger follows what ETM is told, not the vendor's word: a custom map that sends the
/// vendor's FIXED as ACTIVE, or sends no status (read from `state`, whose `TO_VERIFY` is no status
/// ETM takes), leaves the finding open, so when it goes it is closed in ETM. Before, the ledger
/// took it as closed and ETM kept it open for good.
#[test]
fn a_finding_a_custom_map_sends_open_stays_open_in_the_ledger() {
    let triage = cxone_etm::mapping::TriageMap::default();
    let fixed = sast_record("f", json!({"status": "FIXED", "state": "TO_VERIFY"}));
    for (source, value_map, sent) in [
        (
            "findings[].status",
            [("RECURRENT", "ACTIVE"), ("FIXED", "ACTIVE")],
            json!("ACTIVE"),
        ),
        (
            "findings[].state",
            [("CONFIRMED", "ACTIVE"), ("NOT_EXPLOITABLE", "PROTECTED")],
            Value::Null,
        ),
    ] {
        let mut map = TransformMap::default_for(Engine::Sast);
        let status = entry_for(&mut map, "findingStatus");
        status.source = source.to_string();
        status.value_map = Some(value_map.map(|(k, v)| (k.to_string(), json!(v))).into());
        status.default = None;
        let plan = map.compile().unwrap();
        let (written, _, first) =
            statuses_after(&plan, &triage, vec![fixed.clone()], Default::default());
        assert_eq!(written["f"], (json!("NEW"), sent), "{source}: {written:?}");
        assert!(first.findings["f"].open, "{source}");
        let (_, closed, _) = statuses_after(&plan, &triage, Vec::new(), first);
        assert_eq!(closed, 1, "{source}: sent open, closed when it goes");
    }
}

#[test]
fn source_and_sink_are_the_first_and_last_node_whatever_the_list_holds() {
    let node = |file: &str, line: u32, method: Option<&str>| {
        let mut n = json!({"fileName": file, "line": line, "column": 7, "name": "x", "nodeID": 1});
        if let Some(m) = method {
            n["method"] = json!(m);
        }
        n
    };
    let with_nodes = |id: &str, nodes: Value| {
        sast_record(
            id,
            json!({"data": {"queryName": "SQL_Injection", "resultHash": format!("h/{id}+="), "nodes": nodes}}),
        )
    };
    let records = vec![
        with_nodes(
            "three",
            json!([
                node("/a.java", 1, Some("read")),
                node("/b.java", 2, Some("mid")),
                node("/c.java", 3, None)
            ]),
        ),
        with_nodes("one", json!([node("/only.java", 9, Some("m"))])),
        with_nodes("none", json!([])),
        with_nodes("odd", json!("not a list")),
        with_nodes("mixed", json!([42, node("/z.java", 5, None)])),
        {
            let mut nameless = with_nodes(
                "x",
                json!([node("/in.java", 1, None), node("/out.java", 8, None)]),
            );
            nameless["id"] = Value::Null;
            nameless
        },
    ];
    let mut transformer = sast_transformer();
    transformer.link_to(cxone_etm::cxone::links::ScanLinks {
        base: "https://eu.ast.checkmarx.net".parse().unwrap(),
        scan_id: "scan-1".into(),
        project_id: Some("p-1".into()),
        branch: Some("main".into()),
    });
    let lines: Vec<String> = transformer
        .push_page(&page(records), 0)
        .unwrap()
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    validate(&lines);
    let out = findings(&lines[0]);
    assert_eq!(
        (out[0]["source"].clone(), out[0]["sink"].clone()),
        (
            json!({"file": "/a.java", "line": 1, "column": 7, "method": "read"}),
            json!({"file": "/c.java", "line": 3, "column": 7})
        ),
        "the last node's own fields only: no method carried over from an earlier node"
    );
    assert_eq!(out[1]["source"], out[1]["sink"], "one node is both");
    for (n, f) in out.iter().enumerate().skip(2).take(2) {
        assert!(
            f.get("source").is_none() && f.get("sink").is_none(),
            "{n}: {f}"
        );
    }
    assert!(
        out[4].get("source").is_none(),
        "a first element that is no node"
    );
    assert_eq!(out[4]["sink"]["file"], "/z.java");
    assert_eq!(
        out[0]["vendorFindingURL"],
        "https://eu.ast.checkmarx.net/results/scan-1/p-1/sast?result-id=h%2Fthree%2B%3D"
    );
    assert_eq!(
        out[0]["vendorScanURL"],
        "https://eu.ast.checkmarx.net/scans?id=scan-1&branch=main"
    );
    let outcome = transformer.finish().unwrap();
    assert_eq!(outcome.figures.rejected, 1);
    let rejected = &outcome.rejected[0];
    assert_eq!(
        (rejected.location.as_deref(), rejected.link.as_deref()),
        (
            Some("/out.java:8"),
            Some("https://eu.ast.checkmarx.net/results/scan-1/p-1/sast?result-id=h%2Fx%2B%3D")
        ),
        "a rejected record says where its flaw is and links to it"
    );
}

#[test]
fn a_custom_map_carries_any_vendor_field_as_a_custom_attribute() {
    let mut map = TransformMap::default_for(Engine::Sast);
    for (source, target) in [
        (
            "findings[].confidenceLevel",
            "findingGroup.findings[].customAttributes.confidence",
        ),
        (
            "findings[].data.nodes[last].name",
            "findingGroup.findings[].customAttributes.sinkNode",
        ),
        (
            "findings[].vulnerabilityDetails.compliances",
            "findingGroup.findings[].customAttributes.compliance",
        ),
        ("origin", "asset.customAttributes.origin"),
        ("tags.team", "asset.customAttributes.team"),
        ("tags.team/owner", "asset.customAttributes.owner"),
        ("tags.app.tier", "asset.customAttributes.tier"),
        ("tags.cost~center", "asset.customAttributes.cost"),
        ("tags", "asset.customAttributes.allTags"),
    ] {
        map.entries.push(cxone_etm::mapping::MapEntry {
            source: source.into(),
            target: target.into(),
            value_map: None,
            default: None,
            required: false,
        });
    }
    // Tag names are the tenant's: a `/`, a `.` or a `~` in one is part of the name.
    // A value map's key is read as the vendor's word is, blanks around it aside.
    map.entries.push(cxone_etm::mapping::MapEntry {
        source: "origin".into(),
        target: "asset.customAttributes.host".into(),
        value_map: Some([(" github ".to_string(), json!("gh"))].into()),
        default: None,
        required: false,
    });
    let project = r#"{"id":"p-1","name":"acme/checkout","origin":"GitHub","tags":{"team":"payments","team/owner":"ana","app.tier":"web","cost~center":"42","app":{"tier":"not a tag"}}}"#;
    let record = sast_record(
        "a",
        json!({"confidenceLevel": 87, "vulnerabilityDetails": {"cweId": 89, "compliances": ["PCI DSS v4.0", "OWASP Top 10 2021"]},
               "data": {"queryName": "SQL_Injection", "nodes": [{"name": "src"}, {"name": "executeQuery"}]}}),
    );
    let (lines, outcome) = run_with(
        &map,
        project,
        &[&page(vec![record])],
        TransformOptions::default(),
    );
    validate(&lines);
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        line["asset"]["customAttributes"],
        json!({"origin": "GitHub", "team": "payments", "owner": "ana", "tier": "web", "cost": "42", "host": "gh"}),
        "an object is no attribute: left out"
    );
    assert!(
        line["asset"]["flaggedValues"][0]
            .as_str()
            .unwrap()
            .contains("customAttributes.allTags: an object where a custom attribute belongs"),
        "and flagged: {line}"
    );
    let f = &findings(&lines[0])[0];
    assert_eq!(
        f["customAttributes"],
        json!({"confidence": 87, "sinkNode": "executeQuery", "compliance": ["PCI DSS v4.0", "OWASP Top 10 2021"]})
    );
    assert_eq!(outcome.figures.flagged_values, 0, "no finding was flagged");

    // A custom attribute's name is one word: a dotted one is an unknown target.
    map.entries.push(cxone_etm::mapping::MapEntry {
        source: "name".into(),
        target: "asset.customAttributes.a.b".into(),
        value_map: None,
        default: None,
        required: false,
    });
    let refused = map.compile().unwrap_err();
    assert!(refused[0].problem.contains("unknown target"), "{refused:?}");
}

#[test]
fn a_fixed_result_is_fixed_whatever_its_triage_state() {
    let records = vec![
        sast_record(
            "gone",
            json!({"status": "FIXED", "state": "NOT_EXPLOITABLE"}),
        ),
        sast_record("here", json!({"state": "NOT_EXPLOITABLE"})),
    ];
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions::default(),
    );
    let out = findings(&lines[0]);
    assert_eq!(out[0]["findingStatus"], "FIXED", "{}", out[0]);
    assert_eq!(out[1]["findingStatus"], "PROTECTED");
    assert_eq!(
        (outcome.figures.fixed, outcome.figures.settled_by_triage),
        (1, 1),
        "counted as shown: one fixed, one settled by triage"
    );
}

#[test]
fn values_that_mean_nothing_are_left_out_and_unknown_severities_agree() {
    let environment =
        r#"{"environmentId":"env-1","domain":"shop.example.com","url":"https://shop.example.com"}"#;
    let dast = |id: &str, severity: &str, cwe: &str, owasp: Value| {
        json!({"id": id, "severity": severity, "state": "To Verify", "status": "New", "name": "XSS",
               "cwe_id": cwe, "owasp": owasp, "url": "https://shop.example.com/q", "scan_type": "DAST"})
    };
    let body = serde_json::to_vec(&json!({"results": [
        dast("none", "HIGH", "-1", json!(["A03:2021 - Injection"])),
        dast("zero", "HIGH", "0", json!(["A03:2021 - Injection", "A07:2021 - Identification"])),
        dast("real", "BLOCKER", "CWE-79", json!([])),
    ], "total": 3, "pages_number": 1}))
    .unwrap();
    let (lines, outcome) = run(
        Engine::Dast,
        environment,
        &[&body],
        TransformOptions::default(),
    );
    validate(&lines);
    let out = findings(&lines[0]);
    assert!(out[0].get("cweId").is_none(), "no CWE -1: {}", out[0]);
    assert!(
        out[0]["flaggedValues"][0]
            .as_str()
            .unwrap()
            .contains("CWE -1 means no CWE"),
        "{}",
        out[0]
    );
    assert!(out[1].get("cweId").is_none());
    assert_eq!(out[2]["cweId"], 79);
    assert_eq!(out[0]["owaspTop10Name"], "A03:2021 - Injection", "one text");
    assert_eq!(
        out[1]["owaspTop10Name"],
        "A03:2021 - Injection, A07:2021 - Identification"
    );
    // BLOCKER is no severity the scoring table knows: its QDS and its ETM severity both come from
    // the table's defaultSeverity (MEDIUM: QDS 55, severity 3), and the finding says so.
    assert_eq!(
        (out[2]["qds"].clone(), out[2]["findingSeverity"].clone()),
        (json!(55), json!(3))
    );
    assert_eq!(out[2]["vendorSeverity"], "BLOCKER");
    assert!(
        out[2]["flaggedValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("scored and mapped as MEDIUM")),
        "{}",
        out[2]
    );
    assert_eq!(outcome.figures.flagged_values, 3);

    // The table's default decides, not the map's: with HIGH as the default, both follow it.
    let scoring = cxone_etm::mapping::Scoring::parse(&cxone_etm::mapping::DEFAULT_SCORING.replace(
        "\"defaultSeverity\": \"MEDIUM\"",
        "\"defaultSeverity\": \"HIGH\"",
    ))
    .unwrap();
    assert_eq!(scoring.default_severity(), "HIGH");
    let plan = TransformMap::default_for(Engine::Dast).compile().unwrap();
    let mut transformer = transformer_of(&plan, &scoring, environment);
    let lines = transformer.push_page(&body, 0).unwrap();
    let out = findings(std::str::from_utf8(&lines[0]).unwrap());
    assert_eq!(
        (out[2]["qds"].clone(), out[2]["findingSeverity"].clone()),
        (json!(80), json!(4))
    );
}

/// Ids as numbers past 64 bits, which a JSON reader holds as floats: two that differ past a
/// float's precision would be written as one id, one finding silently lost as a duplicate. Each
/// is rejected, saying why; the largest 64-bit id is kept exactly.
#[test]
fn an_id_past_64_bits_is_rejected_not_rounded_into_another() {
    let body = String::from_utf8(page(vec![
        sast_record("ID1", json!({})),
        sast_record("ID2", json!({})),
        sast_record("ID3", json!({})),
        sast_record("a", json!({})),
    ]))
    .unwrap()
    .replace("\"ID1\"", "18446744073709551616")
    .replace("\"ID2\"", "18446744073709551617")
    .replace("\"ID3\"", "18446744073709551615");
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[body.as_bytes()],
        TransformOptions::default(),
    );
    let ids: Vec<String> = lines
        .iter()
        .flat_map(|l| findings(l))
        .map(|f| f["externalFindingId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["18446744073709551615", "a"]);
    let rejected: Vec<u32> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, [0, 1]);
    assert!(
        outcome
            .rejected
            .iter()
            .all(|r| r.reason.contains("past what a 64-bit number holds exactly")),
        "{:?}",
        outcome.rejected
    );
}

/// A whole number past 64 bits in a list, a joined text or the tags is flagged and its field left
/// out, not written rounded: as text, `18446744073709551617` and `18446744073709551616` are both
/// `1.8446744073709552e19`. The largest 64-bit number keeps its digits wherever it is.
#[test]
fn a_number_past_64_bits_in_a_list_a_joined_text_or_the_tags_is_flagged_not_rounded() {
    let past = "18446744073709551617";
    let largest = "18446744073709551615";
    let rounded = "past what a 64-bit number holds exactly";
    let flagged = |v: &Value| -> Vec<String> {
        v["flaggedValues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    let numbers = |body: Vec<u8>| {
        String::from_utf8(body)
            .unwrap()
            .replace("\"PAST\"", past)
            .replace("\"LARGEST\"", largest)
    };

    // SAST: the project's tags and groups, the findings' compliances (a list), and a number a
    // value map reads (a custom attribute, which takes numbers as they are).
    let mut map = TransformMap::default_for(Engine::Sast);
    map.entries.push(cxone_etm::mapping::MapEntry {
        source: "findings[].vulnerabilityDetails.compliances".into(),
        target: "findingGroup.findings[].compliances".into(),
        value_map: None,
        default: None,
        required: false,
    });
    map.entries.push(cxone_etm::mapping::MapEntry {
        source: "findings[].confidenceLevel".into(),
        target: "findingGroup.findings[].customAttributes.rank".into(),
        value_map: Some(BTreeMap::from([("1".to_string(), json!("top"))])),
        default: None,
        required: false,
    });
    let project = format!(
        r#"{{"id":"p-1","name":"acme/checkout","tags":{{"team":"payments","cost":{past}}},"groups":["g",{largest}]}}"#
    );
    let compliances = |number: &str| {
        json!({"vulnerabilityDetails": {"cweId": 89, "compliances": ["PCI", number]},
               "confidenceLevel": number})
    };
    let body = numbers(page(vec![
        sast_record("a", compliances("PAST")),
        sast_record("b", compliances("LARGEST")),
    ]));
    let (lines, outcome) = run_with(
        &map,
        &project,
        &[body.as_bytes()],
        TransformOptions::default(),
    );
    validate(&lines);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    let asset = &line["asset"];
    assert_eq!(asset.get("tags"), None, "{asset}");
    assert_eq!(asset["groups"], json!(["g", largest]), "{asset}");
    assert!(
        flagged(asset)
            .iter()
            .any(|f| f.contains("tags") && f.contains(rounded)),
        "{asset}"
    );
    let out = findings(&lines[0]);
    assert_eq!(out[0].get("compliances"), None, "{}", out[0]);
    assert_eq!(out[0].get("customAttributes"), None, "{}", out[0]);
    for field in ["compliances", "customAttributes.rank"] {
        assert!(
            flagged(&out[0])
                .iter()
                .any(|f| f.contains(field) && f.contains(rounded)),
            "{field}: {}",
            out[0]
        );
    }
    assert_eq!(out[1]["compliances"], json!(["PCI", largest]), "{}", out[1]);
    // Not a word the value map knows: kept as it came, and flagged as such.
    assert_eq!(
        out[1]["customAttributes"]["rank"],
        json!(largest.parse::<u64>().unwrap())
    );
    assert_eq!(
        flagged(&out[1]),
        [format!("customAttributes.rank={largest}")],
        "{}",
        out[1]
    );

    // An item whose id is such a number is refused, naming why.
    let plan = TransformMap::default_for(Engine::Sast).compile().unwrap();
    let scoring = Scoring::default_table().compile().unwrap();
    let item = format!(r#"{{"id":{past},"name":"acme/checkout"}}"#);
    let refused = ItemTransformer::new(
        &plan,
        &scoring,
        &context(Engine::Sast),
        TransformOptions::default(),
        item.as_bytes(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        refused.contains("its `id`: ") && refused.contains(rounded),
        "{refused}"
    );

    // DAST: the OWASP names, a list joined into one text.
    let environment =
        r#"{"environmentId":"env-1","domain":"shop.example.com","url":"https://shop.example.com"}"#;
    let dast = |id: &str, owasp: &str| {
        json!({"id": id, "severity": "HIGH", "state": "To Verify", "status": "New", "name": "XSS",
               "cwe_id": "79", "owasp": ["A03", owasp], "url": "https://shop.example.com/q", "scan_type": "DAST"})
    };
    let body = numbers(
        serde_json::to_vec(
            &json!({"results": [dast("a", "PAST"), dast("b", "LARGEST")],
                                   "total": 2, "pages_number": 1}),
        )
        .unwrap(),
    );
    let (lines, outcome) = run(
        Engine::Dast,
        environment,
        &[body.as_bytes()],
        TransformOptions::default(),
    );
    validate(&lines);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let out = findings(&lines[0]);
    assert_eq!(out[0].get("owaspTop10Name"), None, "{}", out[0]);
    assert!(
        flagged(&out[0])
            .iter()
            .any(|f| f.contains("owaspTop10Name") && f.contains(rounded)),
        "{}",
        out[0]
    );
    assert_eq!(out[1]["owaspTop10Name"], json!(format!("A03, {largest}")));
}

/// A severity the vendor writes with blanks around it or in another case is that severity: scored
/// and mapped as it, nothing flagged. Before, ` HIGH` was scored and mapped as the table's
/// default (MEDIUM) and flagged, and a severity filter of HIGH left it out.
#[test]
fn a_severity_is_read_case_and_blanks_aside() {
    let records = vec![
        sast_record("a", json!({"severity": " HIGH "})),
        sast_record("b", json!({"severity": "high"})),
        sast_record("c", json!({"severity": "HIGH"})),
    ];
    let (lines, outcome) = run(
        Engine::Sast,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions::default(),
    );
    let out: Vec<Value> = lines.iter().flat_map(|l| findings(l)).collect();
    assert_eq!(out.len(), 3);
    for finding in &out {
        assert_eq!(
            (finding["qds"].clone(), finding["severity"].clone()),
            (json!(80), json!(4)),
            "{finding}"
        );
    }
    assert_eq!(outcome.figures.flagged_values, 0, "{out:?}");
    assert_eq!(
        cxone_etm::cxone::Severity::parse(" High\t"),
        cxone_etm::cxone::Severity::High
    );
}

mod property {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z0-9]{1,6}".prop_map(|id| sast_record(&id, json!({}))),
            "[a-z0-9]{1,6}".prop_map(|id| sast_record(&id, json!({"status": "FIXED"}))),
            prop_oneof![Just("sca"), Just("kics"), Just("containers"), Just("sscs-secret")]
                .prop_map(|t| json!({"type": t, "id": "x", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW"})),
            Just(sast_record("", json!({"id": null}))),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            ("[a-z]{1,4}", any::<i64>(), "[ -~]{0,8}").prop_map(|(id, n, s)| sast_record(&id, json!({"severity": n, "data": s, "state": s}))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn records_in_equal_findings_out_plus_rejected_plus_skipped(records in proptest::collection::vec(record(), 0..60)) {
            let n = records.len() as u64;
            let (lines, outcome) = run(Engine::Sast, PROJECT_WITH_REPO, &[&page(records)], TransformOptions { max_findings_per_line: 7, ..TransformOptions::default() });
            let f = &outcome.figures;
            prop_assert_eq!(f.records_in, n);
            prop_assert_eq!(f.records_in, f.findings_out + f.rejected + f.skipped());
            let emitted: usize = lines.iter().map(|l| findings(l).len()).sum();
            prop_assert_eq!(emitted as u64, f.findings_out);
            prop_assert_eq!(outcome.rejected.len() as u64, f.rejected);
        }
    }
}

#[test]
fn severities_before_triage_join_on_the_result_hash() {
    let mut t = sast_transformer();
    let hashed = |id: &str, hash: &str, severity: &str| {
        sast_record(
            id,
            json!({"severity": severity, "data": {"queryName": "SQL_Injection", "resultHash": hash}}),
        )
    };
    t.add_original_severities(
        br#"{"results":[{"resultHash":"h-a","severity":"CRITICAL"},{"resultHash":"h-b","severity":"LOW"},{"severity":"HIGH"},{"resultHash":"h-x"},{"resultHash":"h-c","severity":3},{"resultHash":{"broken":true}},"junk"],"totalCount":7}"#,
    )
    .expect("malformed rows cost only themselves, not the page");
    assert_eq!(t.figures().unreadable_original_severities, 5);
    let lines = t
        .push_page(
            &page(vec![
                hashed("a", "h-a", "LOW"),
                hashed("111914456", "h-b", "LOW"),
                hashed("c", "h-unknown", "MEDIUM"),
            ]),
            0,
        )
        .unwrap();
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    validate(&lines);
    let found: Vec<Value> = lines.iter().flat_map(|l| findings(l)).collect();
    assert_eq!(found[0]["vendorSeverity"], "LOW");
    assert_eq!(found[0]["originalVendorSeverity"], "CRITICAL");
    assert_eq!(found[0]["severityChangedByTriage"], true);
    assert_eq!(
        found[1]["originalVendorSeverity"], "LOW",
        "numeric ids join by hash too"
    );
    assert!(found[1].get("severityChangedByTriage").is_none());
    assert!(
        found[2].get("originalVendorSeverity").is_none(),
        "no original known"
    );
    assert_eq!(t.figures().severity_changed_by_triage, 1);

    let e = t.add_original_severities(b"{\"results\":{}}").unwrap_err();
    assert!(
        e.to_string()
            .contains("not a page of severities before triage"),
        "{e}"
    );
}

fn sca_record(cve: &str, package: &str, extra: Value) -> Value {
    let mut record = json!({
        "type": "sca", "id": cve, "similarityId": cve, "status": "NEW", "state": "TO_VERIFY", "severity": "HIGH",
        "data": {"packageIdentifier": package, "recommendedVersion": "9.9.9"},
        "vulnerabilityDetails": {"cveName": cve, "cweId": "CWE-78", "cvssScore": 9.8,
            "cvss": {"version": 3, "attackVector": "NETWORK", "attackComplexity": "LOW", "confidentiality": "HIGH"}}
    });
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    record
}

/// SCA's traps: a CVE id in many packages, string CWEs and NVD's "no CWE", empty and null CVSS,
/// dependency paths as lists of packages, booleans sent as texts; and ids that follow the package,
/// whatever the order the records come in.
#[test]
fn sca_findings_are_told_apart_by_package_and_read_in_sca_terms() {
    let log4j = "Maven-org.apache.logging.log4j:log4j-core-2.14.1";
    let records = vec![
        sca_record(
            "CVE-2021-44228",
            log4j,
            json!({"data": {"packageIdentifier": log4j, "publishedAt": "2021-12-10T00:00:00Z",
                "scaPackageData": {"isDirectDependency": "false", "fixLink": "https://devhub.checkmarx.com/cve-details/CVE-2021-44228",
                    "dependencyPaths": [[{"name": "Maven-acme-app-1.0"}, {"name": log4j}], []],
                    "locations": ["pom.xml"]},
                "exploitableMethods": [{"fullName": "org.apache.logging.log4j.core.lookup.JndiLookup.lookup", "name": "lookup"}, "x.y"]}}),
        ),
        sca_record(
            "CVE-2021-44228",
            "Maven-org.apache.logging.log4j:log4j-api-2.14.1",
            json!({"vulnerabilityDetails": {"cveName": "CVE-2021-44228", "cweId": "NVD-CWE-Other", "cvss": {}}}),
        ),
        sca_record(
            "CVE-2020-8203",
            "Npm-lodash-4.17.15",
            json!({"vulnerabilityDetails": {"cveName": "CVE-2020-8203", "cvss": null}}),
        ),
    ];
    let ids = |records: Vec<Value>| {
        let (lines, outcome) = run(
            Engine::Sca,
            PROJECT_WITH_REPO,
            &[&page(records)],
            TransformOptions::default(),
        );
        validate(&lines);
        let found: Vec<Value> = lines.iter().flat_map(|l| findings(l)).collect();
        (found, outcome)
    };
    let (found, outcome) = ids(records.clone());
    assert_eq!(outcome.figures.findings_out, 3);
    assert_eq!(
        outcome.figures.collisions, 0,
        "an always-suffixed id is no collision"
    );
    let by_package = |p: &str| {
        found
            .iter()
            .find(|f| f["package"]["identifier"] == p)
            .unwrap()
            .clone()
    };
    let core = by_package(log4j);
    let api = by_package("Maven-org.apache.logging.log4j:log4j-api-2.14.1");
    let lodash = by_package("Npm-lodash-4.17.15");
    for f in [&core, &api, &lodash] {
        let id = f["externalFindingId"].as_str().unwrap();
        let cve = f["findingType"]["vulnerability"]["cveId"].as_str().unwrap();
        assert!(
            id.starts_with(&format!("{cve}#")) && id.len() == cve.len() + 17,
            "{id}"
        );
    }
    assert_ne!(core["externalFindingId"], api["externalFindingId"]);
    assert_eq!(core["package"]["ecosystem"], "Maven");
    assert_eq!(core["package"]["direct"], false);
    assert_eq!(
        core["package"]["dependencyPaths"],
        json!([format!("Maven-acme-app-1.0 > {log4j}")])
    );
    assert_eq!(
        core["exploitableMethods"],
        json!([
            "org.apache.logging.log4j.core.lookup.JndiLookup.lookup",
            "x.y"
        ])
    );
    assert_eq!(core["findingType"]["vulnerability"]["cweId"], 78);
    assert_eq!(
        core["findingType"]["vulnerability"]["cvssVector"],
        "AV:N/AC:L/C:H"
    );
    assert_eq!(core["findingType"]["vulnerability"]["cvssScore"], 9.8);
    assert_eq!(
        core["fixLink"],
        "https://devhub.checkmarx.com/cve-details/CVE-2021-44228"
    );
    assert!(core.get("flaggedValues").is_none(), "{core}");
    // NVD's "no CWE" is left out and said; an empty or null CVSS is no value, not a misfit.
    assert!(api["findingType"]["vulnerability"].get("cweId").is_none());
    assert!(
        api["flaggedValues"][0]
            .as_str()
            .unwrap()
            .contains("NVD-CWE-Other"),
        "{api}"
    );
    assert!(
        api["findingType"]["vulnerability"]
            .get("cvssVector")
            .is_none()
    );
    assert!(
        lodash["findingType"]["vulnerability"]
            .get("cvssVector")
            .is_none()
    );
    assert!(lodash.get("flaggedValues").is_none(), "{lodash}");
    // The same records in another order keep their ids.
    let mut reversed = records.clone();
    reversed.reverse();
    let (again, _) = ids(reversed);
    let id_of = |fs: &[Value], p: &str| {
        fs.iter().find(|f| f["package"]["identifier"] == p).unwrap()["externalFindingId"].clone()
    };
    for p in [log4j, "Npm-lodash-4.17.15"] {
        assert_eq!(id_of(&found, p), id_of(&again, p));
    }
}

/// One transformer per engine shares an item's pages: each takes its engine's records, and a
/// type no engine of the item takes is counted once, by the first.
#[test]
fn engines_beside_each_other_split_a_page_and_count_every_record_once() {
    let records = vec![
        // A SAST and a KICS record that share an id (both numeric texts in real tenants).
        sast_record("k", json!({})),
        sca_record("CVE-1", "Npm-a-1", json!({})),
        json!({"type": "kics", "id": "k", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW",
            "data": {"filename": "/main.tf", "line": 3}}),
        json!({"type": "sca-container", "id": "CVE-2", "status": "NEW", "state": "TO_VERIFY", "severity": "LOW",
            "data": {"packageName": "zlib", "packageVersion": "1.2.11"}, "vulnerabilityDetails": {"cveName": "CVE-2", "cvss": null, "cweId": ""}}),
        json!({"type": "sscs-secret-detection", "id": "s", "status": "NEW", "state": "TO_VERIFY", "severity": "HIGH"}),
        json!({"id": "t", "status": "NEW", "severity": "LOW"}),
        json!("not an object"),
    ];
    let body = page(records);
    let scoring = Scoring::default_table().compile().unwrap();
    let plans: Vec<_> = Engine::PROJECT_ENGINES
        .iter()
        .map(|e| TransformMap::default_for(*e).compile().unwrap())
        .collect();
    let repeats = repeats_in(
        &plans.iter().collect::<Vec<_>>(),
        std::slice::from_ref(&body),
        &Engine::PROJECT_ENGINES,
    );
    assert_eq!(repeats.told_apart, ["k"]);
    assert!(repeats.sent_twice.is_empty());
    let repeated = Arc::new(cxone_etm::mapping::RepeatedIds::from(repeats));
    let mut total = cxone_etm::mapping::Figures::default();
    let mut out = BTreeMap::new();
    for (n, plan) in plans.iter().enumerate() {
        let transformer = || {
            let mut t = ItemTransformer::new(
                plan,
                &scoring,
                &context(plan.kind),
                TransformOptions::default(),
                PROJECT_WITH_REPO.as_bytes(),
            )
            .unwrap();
            let others: Vec<Engine> = Engine::PROJECT_ENGINES
                .into_iter()
                .filter(|e| *e != plan.kind)
                .collect();
            t.beside(&others, &[], n == 0);
            t.expect_repeats(repeated.clone());
            t
        };
        let mut t = transformer();
        // The same page read apart first, as on a second core, then mapped.
        let mut read_apart = transformer();
        let lines = t.push_page(&body, 0).unwrap();
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        validate(&lines);
        let done = t.finish().unwrap();
        let read = read_apart.reader().read(&body, 0).unwrap();
        let apart: Vec<String> = read_apart
            .push_read(&read)
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(apart, lines, "{}: read apart, the same lines", plan.kind);
        assert_eq!(read_apart.finish().unwrap().figures, done.figures);
        total.add(&done.figures);
        out.insert(plan.kind, (lines, done.figures));
    }
    assert_eq!(total.records_in, 7);
    assert_eq!(total.findings_out, 4);
    assert_eq!(
        total.rejected, 2,
        "the non-object and the record with no type, once each"
    );
    assert_eq!(
        total.skipped_by_type,
        BTreeMap::from([("sscs-secret-detection".to_string(), 1)])
    );
    for (engine, (lines, figures)) in &out {
        assert_eq!(figures.findings_out, 1, "{engine}");
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["engine"], engine.as_str());
    }
    let id = |engine: Engine| findings(&out[&engine].0[0])[0]["externalFindingId"].clone();
    let (sast, kics) = (id(Engine::Sast), id(Engine::Kics));
    assert!(
        sast.as_str().unwrap().starts_with("k#")
            && kics.as_str().unwrap().starts_with("k#")
            && sast != kics,
        "one asset, two engines, one vendor id: {sast} and {kics}"
    );
    let (lines, _) = &out[&Engine::Containers];
    let container = &findings(&lines[0])[0];
    assert_eq!(container["package"]["name"], "zlib");
    assert!(
        container["externalFindingId"]
            .as_str()
            .unwrap()
            .starts_with("CVE-2#")
    );
}

#[test]
fn a_broken_page_is_refused_saying_what_and_where_never_its_text() {
    let cases: [(&[u8], &str); 10] = [
        (b"{\"results\":[{\"id\":", "cut off at line 1 column 18"),
        // Not UTF-8: in a field the map reads, in a list element it reads, in one it skips.
        (
            b"{\"results\":[{\"id\":\"a\xff\"}]}",
            "not UTF-8 at byte 20",
        ),
        (
            b"{\"results\":[{\"id\":\"a\",\"data\":{\"nodes\":[{\"fileName\":\"\xff\"}]}}]}",
            "not UTF-8 at byte 52",
        ),
        (
            b"{\"results\":[{\"id\":\"a\",\"unread\":\"\xff\"}]}",
            "not UTF-8 at byte 32",
        ),
        (
            b"{\"results\":[{\"id\":\"secret-value\" \"x\"}]}",
            "invalid JSON at line 1 column 34",
        ),
        (
            b"{\"results\":[]} trailing",
            "invalid JSON at line 1 column 16",
        ),
        // A record cut off inside the list, past one read whole.
        (
            b"{\"results\":[{\"id\":\"a\"},{\"id\":\"b\",]}",
            "invalid JSON at line 1 column 34",
        ),
        (
            b"{\"results\":[{\"id\":\"a\"},{\"id\":\"b\"} {}]}",
            "invalid JSON at line 1 column 35",
        ),
        // A record the reader cannot read before one that breaks the page: the break is named.
        (
            b"{\"results\":[{\"id\":\"a\",\"similarityId\":1e999},{\"id\":\"b\",]}",
            "invalid JSON at line 1 column 55",
        ),
        // The list twice: collect counted the last one's records.
        (
            b"{\"results\":[{\"id\":\"a\"}],\"results\":[{\"id\":\"b\"}]}",
            "its list comes twice (at line 1 column 34): collect counted the last one's records",
        ),
    ];
    for (n, (page, problem)) in cases.into_iter().enumerate() {
        let e = sast_transformer()
            .push_page(page, n as u32)
            .expect_err(problem);
        assert_eq!(
            e,
            TransformError::Page {
                page: n as u32,
                problem: format!("not a page object ({problem})"),
            }
        );
    }
}

/// Valid JSON that serde_json lets through collect's check but the transform's reader cannot read
/// (a `\u` escape that is not a whole UTF-16 character; a number past a 64-bit float's range,
/// read whole or in a list's first or last element): only that record is rejected, saying why,
/// and as a record no engine can be told for it holds every absent finding open. Before, the
/// page failed, and with it the item, on every run the vendor sent the record.
#[test]
fn a_record_the_reader_cannot_read_is_rejected_alone_and_holds_the_absent() {
    let records = vec![
        sast_record("a", json!({})),
        sast_record("b", json!({"description": "LONE"})),
        sast_record("c", json!({"similarityId": "HUGE"})),
        sast_record(
            "d",
            json!({"data": {"nodes": [{"fileName": "HUGE"}, {"fileName": "y"}]}}),
        ),
        sast_record(
            "e",
            json!({"data": {"nodes": [{"fileName": "x"}, {"fileName": "HUGE"}]}}),
        ),
        sast_record("f", json!({})),
    ];
    let unreadable = String::from_utf8(page(records.clone()))
        .unwrap()
        .replace("\"LONE\"", "\"cut \\ud83d\"")
        .replace("\"HUGE\"", "1e999");
    serde_json::from_str::<serde::de::IgnoredAny>(&unreadable).expect("collect's check passes it");
    let (first, ..) = reconciled_pass(
        &[records.clone(), vec![sast_record("gone", json!({}))]].concat(),
        Default::default(),
        "run-1",
    );
    let (second, written, closed) =
        reconciled_page(unreadable.into_bytes(), first.ledger.unwrap(), "run-2");
    assert_eq!(written, BTreeSet::from(["a".to_string(), "f".to_string()]));
    let f = &second.figures;
    assert_eq!(
        (f.records_in, f.findings_out, f.rejected),
        (6, 2, 4),
        "{f:?}"
    );
    let rejected: Vec<u32> = second.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, [1, 2, 3, 4]);
    assert!(
        second
            .rejected
            .iter()
            .all(|r| r.reason.contains("cannot be read past its column")),
        "{:?}",
        second.rejected
    );
    assert_eq!(closed, 0, "nothing closed: {f:?}");
    assert_eq!(f.held_for_rejected_records, 5, "b to e and gone");
}

/// A custom map whose status value map misses a vendor status and names no default: the status
/// is flagged and left out, not written as the vendor sent it. Before, `RECURRENT` went out as
/// the finding's `findingStatus`, a value the batch schema refuses.
#[test]
fn a_status_a_value_map_misses_is_flagged_not_written_verbatim() {
    let mut map = TransformMap::default_for(Engine::Sast);
    let status = entry_for(&mut map, "findingStatus");
    status.value_map = Some(BTreeMap::from([("NEW".to_string(), json!("NEW"))]));
    status.default = None;
    let (lines, _) = run_with(
        &map,
        REAL_PROJECT,
        &[REAL_PAGE.as_bytes()],
        TransformOptions::default(),
    );
    validate(&lines);
    let finding = &findings(&lines[0])[0];
    assert!(finding.get("findingStatus").is_none(), "{finding}");
    let flagged = finding["flaggedValues"].as_array().unwrap();
    assert!(
        flagged.iter().any(|f| f
            .as_str()
            .unwrap()
            .contains("\"RECURRENT\" is not a finding status ETM takes")),
        "{flagged:?}"
    );
}

/// A status passed through without a value map is taken in any case (`Fixed`, `new`), written
/// as ETM spells it, not flagged.
#[test]
fn a_status_passed_through_is_taken_in_any_case() {
    let mut map = TransformMap::default_for(Engine::Sast);
    let status = entry_for(&mut map, "findingStatus");
    (status.value_map, status.default) = (None, None);
    let records = vec![
        sast_record("a", json!({"status": "Fixed"})),
        sast_record("b", json!({"status": "new"})),
    ];
    let (lines, _) = run_with(
        &map,
        PROJECT_WITH_REPO,
        &[&page(records)],
        TransformOptions::default(),
    );
    validate(&lines);
    let out = findings(&lines[0]);
    assert_eq!(
        (&out[0]["findingStatus"], &out[1]["findingStatus"]),
        (&json!("FIXED"), &json!("NEW"))
    );
    assert!(
        out.iter().all(|f| f.get("flaggedValues").is_none()),
        "{out:?}"
    );
}
