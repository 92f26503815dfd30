//! Full runs into a directory store, and reading back what they committed.

use std::collections::BTreeSet;
use std::io::Read;

use cxone_emulator::Emulator;
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{
    Connection, ConnectionConfig, Manifest, ObjectEntry, Trigger, run_connection,
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

pub async fn manifest(store: &LocalStore, key: &str) -> Manifest {
    serde_json::from_slice(&store.get(key).await.unwrap().unwrap()).unwrap()
}

/// Every committed finding as (asset, externalFindingId), after checking each object against the manifest.
pub async fn committed_findings(
    store: &LocalStore,
    manifest: &Manifest,
) -> BTreeSet<(String, String)> {
    let mut findings = BTreeSet::new();
    for item in &manifest.items {
        for object in &item.objects {
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
            assert_eq!(body.len() as u64, object.bytes);
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len() as u64, object.lines);
            let mut count = 0;
            for line in &lines {
                assert_eq!(line["runId"], manifest.run_id.as_str());
                for f in line["findingGroup"]["findings"].as_array().unwrap() {
                    count += 1;
                    let fresh = findings.insert((
                        line["externalAssetId"].as_str().unwrap().to_string(),
                        f["externalFindingId"].as_str().unwrap().to_string(),
                    ));
                    assert!(fresh, "a finding is committed twice");
                }
            }
            assert_eq!(count, object.findings);
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
        let body = store.get(&object.key).await.unwrap().unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            for finding in line["findingGroup"]["findings"].as_array().unwrap() {
                out.push((line.clone(), finding.clone()));
            }
        }
    }
    out
}
