//! The checks and figures every reliability scenario shares (docs/reliability.md): the tenant
//! shape, the tuned connection, the item-by-item check of a committed run against the emulator,
//! and the figures file each scenario writes.

use std::collections::BTreeMap;

use cxone_emulator::{Emulator, Endpoint, ResultType, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{Connection, ItemStatus, Manifest};
use cxone_etm::store::{LocalStore, ObjectStore};
use serde_json::{Value, json};

use super::runs::{committed_findings, connection, manifest};

/// 8 projects of 240 results (40 per page) and 3 environments of 90 results (30 per page): a few
/// hundred requests per scenario, enough for every fault to fire many times.
pub fn shape() -> TenantShape {
    TenantShape {
        projects: 8,
        results_per_scan: 240,
        dast_environments: 3,
        dast_results_per_scan: 90,
        ..TenantShape::default()
    }
}

pub fn tuned(emulator: &Emulator, id: &str, kind: ConnectorKind) -> Connection {
    let mut c = connection(emulator, id, kind);
    c.vendor.results_page_size = 40;
    c.vendor.dast_page_size = 30;
    // A storm at 30% should not exhaust the retries: 0.3^13 per call is about 1.6e-7.
    c.vendor.retry.max_retries = 12;
    c.vendor.retry.max_total_wait_secs = 60;
    c
}

/// What each item should have committed: SAST results of the project's latest completed SAST scan,
/// or the environment's latest completed scan's results; `None` for items without such a scan.
pub fn expected_per_item(
    emulator: &Emulator,
    kind: ConnectorKind,
) -> BTreeMap<String, Option<u64>> {
    let expected = emulator.expected();
    match kind {
        ConnectorKind::Sast => expected
            .projects
            .iter()
            .map(|p| {
                let want = p.main_branch_sast_scan.as_ref().map(|scan| {
                    let scan = p.scans.iter().find(|s| &s.id == scan).unwrap();
                    scan.by_type.get(&ResultType::Sast).copied().unwrap_or(0)
                });
                (p.id.clone(), want)
            })
            .collect(),
        ConnectorKind::Sca => {
            unimplemented!("the reliability scenarios run SAST and DAST connections")
        }
        ConnectorKind::Dast => expected
            .environments
            .iter()
            .map(|e| {
                let want = e
                    .latest_completed_scan
                    .as_ref()
                    .map(|scan| e.scans.iter().find(|s| &s.id == scan).unwrap().results);
                (e.id.clone(), want)
            })
            .collect(),
    }
}

/// The checks every scenario shares. `failing` names the items (vendor ids) that must end
/// incomplete or failed, with a word their reason must hold; every other item must be complete.
pub async fn check_run(
    store: &LocalStore,
    emulator: &Emulator,
    kind: ConnectorKind,
    manifest_key: &str,
    failing: &BTreeMap<String, &str>,
) -> Value {
    let m: Manifest = manifest(store, manifest_key).await;
    let committed = committed_findings(store, &m).await;
    let expected = expected_per_item(emulator, kind);
    assert_eq!(m.items.len(), expected.len(), "every item was planned");
    let (mut results_in, mut results_out, mut findings) = (0, 0, 0);
    for item in &m.items {
        let want = expected[&item.vendor_id];
        results_in += want.unwrap_or(0);
        if let Some(word) = failing.get(&item.vendor_id) {
            assert!(
                matches!(item.status, ItemStatus::Incomplete | ItemStatus::Failed),
                "{} should not be complete",
                item.vendor_id
            );
            let reason = item.reason.as_deref().unwrap_or_default();
            assert!(reason.contains(word), "{}: {reason}", item.vendor_id);
            assert!(
                item.objects.is_empty() && item.figures.findings_out == 0,
                "an incomplete item commits nothing, so none of its findings can read as fixed"
            );
            continue;
        }
        match want {
            None => assert_eq!(item.status, ItemStatus::NoScan, "{}", item.vendor_id),
            Some(want) => {
                assert_eq!(
                    item.status,
                    ItemStatus::Complete,
                    "{}: {:?}",
                    item.vendor_id,
                    item.reason
                );
                assert_eq!(
                    item.figures.findings_out + item.figures.rejected,
                    want,
                    "{}: every result committed once or rejected",
                    item.vendor_id
                );
                results_out += item.figures.findings_out + item.figures.rejected;
                findings += item.figures.findings_out;
            }
        }
    }
    assert_eq!(
        committed.len() as u64,
        findings,
        "no finding is committed twice"
    );
    let marker: Value = serde_json::from_slice(
        &store
            .get(&manifest_key.replace("manifest.json", "_COMMITTED"))
            .await
            .unwrap()
            .expect("the run committed"),
    )
    .unwrap();
    assert_eq!(marker["complete"], failing.is_empty());
    assert_eq!(m.complete, failing.is_empty());
    let incomplete: Vec<Value> = m
        .items
        .iter()
        .filter(|i| matches!(i.status, ItemStatus::Incomplete | ItemStatus::Failed))
        .map(|i| json!({"item": i.name, "reason": i.reason}))
        .collect();
    json!({
        "kind": format!("{kind:?}"),
        "resultsIn": results_in,
        "resultsOut": results_out,
        "findings": findings,
        "rejected": results_out - findings,
        "incomplete": incomplete,
        "complete": m.complete,
    })
}

/// Writes a scenario's figures to `target/tmp/reliability/<name>.json`.
pub fn record_figures(name: &str, injected: &str, runs: &[Value], emulator: &Emulator) {
    let traffic = emulator.traffic();
    let figures = json!({
        "scenario": name,
        "injected": injected,
        "runs": runs,
        "requests": traffic.requests.values().sum::<u64>(),
        "tokenRequests": traffic.requests_to(Endpoint::Token),
        "peakInFlight": traffic.peak_in_flight,
        "faultsFired": traffic.faults_fired,
    });
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&figures).unwrap(),
    )
    .unwrap();
}
