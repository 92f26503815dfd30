//! Full runs into a directory store, and reading back what they committed.

use std::collections::BTreeSet;
use std::io::Read;

use cxone_emulator::Emulator;
use cxone_etm::ConnectorKind;
use cxone_etm::mapping::Lifecycle;
use cxone_etm::pipeline::{
    Connection, ConnectionConfig, Manifest, ObjectEntry, RunRef, Trigger, VendorAccess, WorkItem,
    begin_run, plan, run_connection,
};
use cxone_etm::secret::{Credential, SecretSource};
use cxone_etm::store::{LocalStore, ObjectStore};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::settings;

pub fn connection(emulator: &Emulator, id: &str, kind: ConnectorKind) -> Connection {
    let config = ConnectionConfig {
        item_concurrency: 3,
        ..ConnectionConfig::new(id, kind, settings(emulator), "env:UNUSED_IN_TESTS")
    };
    config.validate().unwrap_or_else(|e| panic!("{e:?}"))
}

pub fn temp_store(name: &str) -> (LocalStore, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("cxone-etm-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (LocalStore::new(&dir), dir)
}

pub async fn run(
    store: &(impl ObjectStore + Clone + 'static),
    connection: &Connection,
    credential: Credential,
) -> Result<cxone_etm::pipeline::RunSummary, cxone_etm::pipeline::StepError> {
    run_connection(
        store,
        connection,
        SecretSource::provided(credential),
        Trigger::Local,
        &|_| {},
        &|_| {},
    )
    .await
}

/// A run begun and planned, step by step as the trigger and the state machine's plan do: its reference, the
/// vendor access its steps use, and its work items (in groups for `children` at once).
pub async fn planned_run(
    store: &LocalStore,
    connection: &Connection,
    emulator: &Emulator,
    children: usize,
) -> (RunRef, VendorAccess, Vec<WorkItem>) {
    let run = begin_run(
        store,
        &connection.config.id,
        Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let vendor = VendorAccess::new(
        connection.vendor.clone(),
        SecretSource::provided(super::api_key(emulator)),
    )
    .await
    .unwrap();
    let groups = plan(store, &vendor, connection, &run, children)
        .await
        .unwrap();
    let work = groups.into_iter().flat_map(|g| g.items).collect();
    (run, vendor, work)
}

pub async fn manifest(store: &LocalStore, key: &str) -> Manifest {
    serde_json::from_slice(&store.get(key).await.unwrap().unwrap()).unwrap()
}

/// The findings a run closed: its closure objects' findings.
pub fn closed_findings(m: &Manifest) -> u64 {
    m.items
        .iter()
        .flat_map(|i| &i.objects)
        .filter(|o| o.key.ends_with(cxone_etm::layout::CLOSURES))
        .map(|o| o.findings)
        .sum()
}

/// The batch lines of a manifest object, after checking the object against its entry: digest,
/// size, lines and findings.
pub async fn checked_lines(store: &LocalStore, object: &ObjectEntry) -> Vec<Value> {
    let lines = checked_object_lines(store, object).await;
    let findings: usize = lines
        .iter()
        .map(|l| l["findingGroup"]["findings"].as_array().unwrap().len())
        .sum();
    assert_eq!(findings as u64, object.findings, "{}", object.key);
    lines
}

/// The JSON lines of an object a manifest names (a batch, an item's rejected records or
/// collisions), after checking the object against its entry: digest, size and lines.
pub async fn checked_object_lines(store: &LocalStore, object: &ObjectEntry) -> Vec<Value> {
    let body = store
        .get(&object.key)
        .await
        .unwrap()
        .expect("every manifest object exists");
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        object.sha256,
        "{}",
        object.key
    );
    assert_eq!(body.len() as u64, object.bytes, "{}", object.key);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, object.lines, "{}", object.key);
    lines
}

/// Every committed finding as (asset, externalFindingId), after checking each object against the manifest.
pub async fn committed_findings(
    store: &LocalStore,
    manifest: &Manifest,
) -> BTreeSet<(String, String)> {
    let mut findings = BTreeSet::new();
    for item in &manifest.items {
        for object in &item.objects {
            for line in checked_lines(store, object).await {
                assert_eq!(line["runId"], manifest.run_id.as_str());
                for f in line["findingGroup"]["findings"].as_array().unwrap() {
                    let fresh = findings.insert((
                        line["externalAssetId"].as_str().unwrap().to_string(),
                        f["externalFindingId"].as_str().unwrap().to_string(),
                    ));
                    assert!(fresh, "a finding is committed twice");
                }
            }
        }
    }
    findings
}

/// Every finding in `objects`, beside the batch line that holds it.
pub async fn findings_in(
    store: &LocalStore,
    objects: impl IntoIterator<Item = &ObjectEntry>,
) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for object in objects {
        for line in checked_lines(store, object).await {
            for finding in line["findingGroup"]["findings"].as_array().unwrap() {
                out.push((line.clone(), finding.clone()));
            }
        }
    }
    out
}

/// The run found every finding as it was: none NEW, none REOPENED.
pub fn nothing_new_or_reopened(m: &Manifest, what: &str) {
    for status in [Lifecycle::New, Lifecycle::Reopened] {
        assert_eq!(
            m.totals.lifecycle.get(&status),
            None,
            "{what}: {:?}",
            m.totals.lifecycle
        );
    }
}

/// The shipped map of `engine`, but for `externalAssetId`: the project's name, not its id.
pub fn assets_by_name(engine: cxone_etm::Engine) -> cxone_etm::mapping::TransformMap {
    let shipped = cxone_etm::mapping::TransformMap::default_for(engine);
    let mut map: Value = serde_json::to_value(shipped).unwrap();
    for entry in map["entries"].as_array_mut().unwrap() {
        if entry["target"] == "externalAssetId" {
            entry["source"] = "name".into();
        }
    }
    serde_json::from_value(map).unwrap()
}
