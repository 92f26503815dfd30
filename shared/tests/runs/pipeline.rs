//! Full runs of SAST and DAST connections against the emulator, into a local directory store:
//! every result committed exactly once or rejected, manifests that match their objects, repeatable
//! runs, partial runs that do not claim completeness, and the run lock.

use std::collections::BTreeMap;

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Endpoint, FaultSpec, ResultType, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::mapping::Lifecycle;
use cxone_etm::pipeline::{
    ItemStatus, RunState, StepError, Trigger, begin_run, collect, finalize, read_state, transform,
};
use cxone_etm::secret::Credential;
use cxone_etm::store::ObjectStore;
use serde_json::Value;

#[tokio::test]
async fn sast_and_dast_runs_commit_every_result_exactly_once() {
    let emulator = emulator(TenantShape {
        projects: 12,
        results_per_scan: 120,
        dast_environments: 4,
        dast_results_per_scan: 130,
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("full");
    let expected = emulator.expected();

    let sast = run(
        &store,
        &connection(&emulator, "sast", ConnectorKind::Sast),
        api_key(&emulator),
    )
    .await
    .unwrap();
    assert!(sast.complete, "{:?}", sast.problems);
    let m = manifest(&store, &sast.manifest).await;
    let committed = committed_findings(&store, &m).await;
    assert_eq!(
        sast.findings + sast.rejected,
        expected.totals.by_type[&ResultType::Sast]
    );
    assert_eq!(committed.len() as u64, sast.findings);
    assert_eq!(
        sast.records_in, expected.totals.results,
        "every record of every pulled scan was read"
    );
    // The default branch policy is main: where a project's newest completed scan is on a feature
    // branch, the committed scan is still main's.
    assert!(
        expected
            .projects
            .iter()
            .any(|p| p.main_branch_sast_scan.is_some()
                && p.main_branch_sast_scan != p.latest_completed_sast_scan),
        "the tenant must hold a project whose newest completed scan is not on main"
    );
    for project in &expected.projects {
        let item = m
            .items
            .iter()
            .find(|i| i.vendor_id == project.id)
            .expect("every project is an item");
        match &project.main_branch_sast_scan {
            None => assert_eq!(item.status, ItemStatus::NoScan),
            Some(scan) => {
                assert_eq!(item.status, ItemStatus::Complete);
                assert_eq!(item.scan_id.as_ref(), Some(scan));
                let want = project
                    .scans
                    .iter()
                    .find(|s| &s.id == scan)
                    .unwrap()
                    .by_type
                    .get(&ResultType::Sast)
                    .copied()
                    .unwrap_or(0);
                assert_eq!(
                    item.figures.findings_out + item.figures.rejected,
                    want,
                    "{}",
                    project.name
                );
            }
        }
    }
    assert!(
        store
            .get(&sast.manifest.replace("manifest.json", "_COMMITTED"))
            .await
            .unwrap()
            .is_some()
    );
    let state = read_state(&store, "sast").await.unwrap().unwrap();
    assert_eq!(
        (state.state, state.last_committed_run.as_deref()),
        (RunState::Processed, Some(sast.run_id.as_str()))
    );
    assert!(
        store.get("connections/sast/lock").await.unwrap().is_none(),
        "the lock is released"
    );

    let dast = run(
        &store,
        &connection(&emulator, "dast", ConnectorKind::Dast),
        oauth(&emulator),
    )
    .await
    .unwrap();
    assert!(dast.complete);
    let committed = committed_findings(&store, &manifest(&store, &dast.manifest).await).await;
    assert_eq!(
        committed.len() as u64 + dast.rejected,
        expected.totals.dast_results
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_second_run_over_the_same_data_commits_the_same_findings() {
    let emulator = emulator(TenantShape {
        projects: 6,
        results_per_scan: 80,
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("repeat");
    let c = connection(&emulator, "repeat", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let second = run(&store, &c, oauth(&emulator)).await.unwrap();
    assert_ne!(first.run_id, second.run_id);
    let a = committed_findings(&store, &manifest(&store, &first.manifest).await).await;
    let b = committed_findings(&store, &manifest(&store, &second.manifest).await).await;
    assert_eq!(a, b);
    assert!(!a.is_empty());
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn findings_whose_vendor_ids_repeat_keep_one_identity_from_run_to_run() {
    let emulator = emulator(TenantShape {
        projects: 5,
        results_per_scan: 120,
        repeated_result_ids_percent: 25,
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("repeated-ids");
    let c = connection(&emulator, "repeated-ids", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store, &first.manifest).await;
    let expected = emulator.expected().totals.by_type[&ResultType::Sast];
    assert_eq!(
        m1.totals.findings_out, expected,
        "every record is a finding"
    );
    assert_eq!(m1.totals.rejected, 0);
    assert!(m1.totals.collisions > 10, "{}", m1.totals.collisions);
    for item in &m1.items {
        let ids: Vec<String> = findings_in(&store, &item.objects)
            .await
            .into_iter()
            .map(|(_, f)| f["externalFindingId"].as_str().unwrap().to_string())
            .collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "unique within {}", item.vendor_id);
    }

    // The next run over the same scans: every finding is the one it was (ACTIVE), none NEW,
    // none closed.
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    let lines = finding_lines(&store, &m2).await;
    assert_eq!(lines.len() as u64, expected);
    assert!(
        lines
            .values()
            .all(|f| f["lifecycleStatus"] == "ACTIVE" || f["vendorStatus"] == "FIXED"),
        "{:?}",
        m2.totals.lifecycle
    );
    assert_eq!(
        committed_findings(&store, &m1).await,
        committed_findings(&store, &m2).await
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_run_with_incomplete_items_commits_without_claiming_completeness() {
    let emulator = emulator(TenantShape {
        projects: 4,
        project_results: vec![25],
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("partial");
    let mut c = connection(&emulator, "partial", ConnectorKind::Sast);
    c.vendor.results_page_size = 10;
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            total_drift: 2,
            ..FaultSpec::default()
        },
    );
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(!summary.complete);
    let m = manifest(&store, &summary.manifest).await;
    assert!(!m.complete);
    assert!(m.items.iter().any(|i| i.status == ItemStatus::Incomplete
        && i.reason.as_deref().unwrap().contains("total changed")));
    assert!(
        m.items
            .iter()
            .filter(|i| i.status == ItemStatus::Incomplete)
            .all(|i| i.objects.is_empty()),
        "incomplete items commit no batch"
    );
    let marker: Value = serde_json::from_slice(
        &store
            .get(&summary.manifest.replace("manifest.json", "_COMMITTED"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(marker["complete"], false);
    std::fs::remove_dir_all(dir).ok();
}

/// Every item refused (a role without results): every item is tried and recorded, and the run
/// fails, committing nothing, so no closure can follow from it.
#[tokio::test]
async fn a_run_whose_every_item_the_vendor_refuses_fails_and_commits_nothing() {
    let emulator = emulator(TenantShape {
        projects: 3,
        results_per_scan: 10,
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("refused");
    let no_results = Credential::ApiKey(emulator.credentials.api_key_no_results.clone().into());
    let error = run(
        &store,
        &connection(&emulator, "refused", ConnectorKind::Sast),
        no_results,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, StepError::NothingCommitted(reason) if reason.contains("every item failed (3 failed)") && reason.contains("403")),
        "{error}"
    );
    let state = read_state(&store, "refused").await.unwrap().unwrap();
    assert_eq!(state.state, RunState::Failed);
    assert_eq!(state.reason, Some(error.to_string()));
    assert_eq!(state.last_committed_run, None);
    let run = cxone_etm::pipeline::RunRef {
        connection_id: "refused".into(),
        run_id: state.last_run.unwrap(),
    };
    assert!(store.get(&run.commit_marker()).await.unwrap().is_none());
    // The manifest stays for the report: each item tried, each reason kept.
    let m = manifest(&store, &run.manifest()).await;
    assert_eq!(m.items.len(), 3);
    assert!(
        m.items.iter().all(|i| i.status == ItemStatus::Failed
            && i.reason.as_deref().unwrap().contains("403")),
        "{:?}",
        m.items
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_second_trigger_while_a_run_holds_the_lock_is_refused() {
    let emulator = emulator(TenantShape::default()).await;
    let (store, dir) = temp_store("locked");
    let c = connection(&emulator, "locked", ConnectorKind::Sast);
    let holder = begin_run(
        &store,
        "locked",
        Trigger::Schedule,
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    let refused = run(&store, &c, api_key(&emulator)).await.unwrap_err();
    assert!(
        matches!(&refused, StepError::AlreadyRunning { run_id, .. } if *run_id == holder.run_id),
        "{refused}"
    );
    assert_eq!(
        emulator.traffic().requests.values().sum::<u64>(),
        0,
        "a refused trigger calls no vendor"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A run that goes on past its lease, while another run takes the lock over and commits, must not
/// commit too: both reconcile against the same last committed run, so the findings one closes the
/// other would report again (and its own new ones would be new twice).
#[tokio::test]
async fn a_run_that_outlived_its_lease_commits_nothing_after_another_took_over() {
    let emulator = emulator(TenantShape::default()).await;
    let (store, dir) = temp_store("outlived");
    let c = connection(&emulator, "outlived", ConnectorKind::Sast);
    let (slow, vendor, work) = planned_run(&store, &c, &emulator, 2).await;
    for item in &work {
        collect(&store, &vendor, &c, item, None).await.unwrap();
        transform(&store, &c, item).await.unwrap();
    }
    // Its lease runs out before it finalizes.
    let key = "connections/outlived/lock";
    let mut lock: Value = serde_json::from_slice(&store.get(key).await.unwrap().unwrap()).unwrap();
    lock["expiresAt"] = 0.into();
    store
        .put(key, serde_json::to_vec(&lock).unwrap().into())
        .await
        .unwrap();
    let taken_over = begin_run(
        &store,
        "outlived",
        Trigger::Schedule,
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();

    let refused = finalize(&store, &c, &slow).await.unwrap_err();
    assert!(
        matches!(&refused, StepError::LostLock { holder, .. } if holder.contains(&taken_over.run_id)),
        "{refused}"
    );
    assert!(!refused.is_retryable());
    assert!(refused.to_string().contains("nothing of it is committed"));
    assert!(store.get(&slow.commit_marker()).await.unwrap().is_none());
    assert!(store.get(&slow.manifest()).await.unwrap().is_none());
    let holder: Value = serde_json::from_slice(&store.get(key).await.unwrap().unwrap()).unwrap();
    assert_eq!(
        holder["runId"], taken_over.run_id,
        "the refused run leaves the lock to the run that took it over"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_run_that_cannot_list_items_fails_with_the_reason_and_releases_the_lock() {
    let emulator = emulator(TenantShape::default()).await;
    let (store, dir) = temp_store("failed");
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            ..FaultSpec::default()
        },
    );
    let error = run(
        &store,
        &connection(&emulator, "failed", ConnectorKind::Sast),
        api_key(&emulator),
    )
    .await
    .unwrap_err();
    assert!(
        error.is_retryable() && error.to_string().contains("gave up"),
        "{error:?}"
    );
    let state = read_state(&store, "failed").await.unwrap().unwrap();
    assert_eq!(state.state, RunState::Failed);
    assert!(state.reason.unwrap().contains("503"));
    assert!(
        store
            .get("connections/failed/lock")
            .await
            .unwrap()
            .is_none()
    );
    let counts: BTreeMap<_, _> = emulator.traffic().faults_fired.server_errors;
    assert!(counts["projects"] >= 1);
    std::fs::remove_dir_all(dir).ok();
}

/// Every committed SAST finding of a run, by external finding id.
async fn finding_lines(
    store: &cxone_etm::store::LocalStore,
    m: &cxone_etm::pipeline::Manifest,
) -> BTreeMap<String, Value> {
    findings_in(store, m.items.iter().flat_map(|i| &i.objects))
        .await
        .into_iter()
        .map(|(_, f)| (f["externalFindingId"].as_str().unwrap().to_string(), f))
        .collect()
}

#[tokio::test]
async fn sast_findings_keep_their_severity_before_and_after_triage() {
    let emulator = emulator(TenantShape {
        projects: 4,
        results_per_scan: 300,
        ..TenantShape::default()
    })
    .await;
    // What the vendor says, read independently: triaged severities from /api/results (by result
    // hash), severities before triage from /api/sast-results?apply-predicates=false.
    let client = default_client(&emulator);
    let mut triaged = BTreeMap::new();
    let mut original = BTreeMap::new();
    for p in emulator.expected().projects {
        let scan = p.main_branch_sast_scan.unwrap();
        let mut pager = client.results(&scan);
        while let Some(page) = pager.next_page().await.unwrap() {
            let body: Value = serde_json::from_slice(&page.body).unwrap();
            for r in body["results"].as_array().unwrap() {
                if r["type"] == "sast" {
                    let hash = r["data"]["resultHash"].as_str().unwrap().to_string();
                    triaged.insert(
                        r["id"].as_str().unwrap().to_string(),
                        (r["severity"].clone(), hash),
                    );
                }
            }
        }
        let mut pager = client.original_severities(&scan);
        while let Some(page) = pager.next_page().await.unwrap() {
            let body: Value = serde_json::from_slice(&page.body).unwrap();
            for r in body["results"].as_array().unwrap() {
                original.insert(
                    r["resultHash"].as_str().unwrap().to_string(),
                    r["severity"].clone(),
                );
            }
        }
    }
    // `/api/results` ids are the result hash or a number; the hash is what both endpoints share.
    let changed = triaged
        .values()
        .filter(|(severity, hash)| original[hash] != *severity)
        .count() as u64;
    assert!(
        changed > 0,
        "the tenant holds findings whose severity triage changed"
    );

    let (store, dir) = temp_store("original-severity");
    let c = connection(&emulator, "original", ConnectorKind::Sast);
    assert!(c.config.original_severity, "on by default");
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(summary.complete, "{:?}", summary.problems);
    let m = manifest(&store, &summary.manifest).await;
    let lines = finding_lines(&store, &m).await;
    assert_eq!(lines.len(), triaged.len());
    for (id, f) in &lines {
        let (severity, hash) = &triaged[id];
        assert_eq!(f["vendorSeverity"], *severity, "{id}");
        assert_eq!(f["originalVendorSeverity"], original[hash], "{id}");
        assert_eq!(
            f["severityChangedByTriage"] == Value::Bool(true),
            *severity != original[hash],
            "{id}"
        );
    }
    assert_eq!(m.totals.severity_changed_by_triage, changed);

    // Off: no slim pull, and the findings carry only the triaged severity.
    let mut off = connection(&emulator, "original-off", ConnectorKind::Sast);
    off.config.original_severity = false;
    emulator.reset_traffic();
    let summary = run(&store, &off, api_key(&emulator)).await.unwrap();
    assert!(!emulator.traffic().requests.contains_key("sast-results"));
    let m = manifest(&store, &summary.manifest).await;
    let lines = finding_lines(&store, &m).await;
    assert!(
        lines
            .values()
            .all(|f| f.get("originalVendorSeverity").is_none())
    );
    assert_eq!(m.totals.severity_changed_by_triage, 0);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn sast_findings_say_where_the_flaw_is_and_link_back_to_the_result() {
    let emulator = emulator(TenantShape {
        projects: 6,
        results_per_scan: 40,
        ..TenantShape::default()
    })
    .await;
    // What the vendor says, read independently: each result's first and last data-flow node,
    // its scan and project, and each project's record.
    let client = default_client(&emulator);
    let projects = client.projects().await.unwrap();
    let mut expected = BTreeMap::new();
    for p in emulator.expected().projects {
        let scan = p.main_branch_sast_scan.clone().unwrap();
        let mut pager = client.results(&scan);
        while let Some(page) = pager.next_page().await.unwrap() {
            let body: Value = serde_json::from_slice(&page.body).unwrap();
            for r in body["results"].as_array().unwrap() {
                if r["type"] == "sast" {
                    let nodes = r["data"]["nodes"].as_array().unwrap();
                    let at = |n: &Value| serde_json::json!({"file": n["fileName"], "line": n["line"], "column": n["column"], "method": n["method"]});
                    let link = format!(
                        "{}/results/{scan}/{}/sast?result-id={}",
                        emulator.api_url,
                        p.id,
                        url::form_urlencoded::byte_serialize(
                            r["data"]["resultHash"].as_str().unwrap().as_bytes()
                        )
                        .collect::<String>()
                    );
                    expected.insert(
                        r["id"].as_str().unwrap().to_string(),
                        (at(&nodes[0]), at(nodes.last().unwrap()), link, scan.clone()),
                    );
                }
            }
        }
    }
    assert!(expected.len() > 100);

    let (store, dir) = temp_store("locations");
    let c = connection(&emulator, "locations", ConnectorKind::Sast);
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(summary.complete, "{:?}", summary.problems);
    let m = manifest(&store, &summary.manifest).await;
    let lines = finding_lines(&store, &m).await;
    assert_eq!(lines.len(), expected.len());
    for (id, f) in &lines {
        let (source, sink, link, scan) = &expected[id];
        assert_eq!(&f["source"], source, "{id}");
        assert_eq!(&f["sink"], sink, "{id}");
        assert_eq!(f["vendorFindingURL"], link.as_str(), "{id}");
        assert!(
            f["vendorScanURL"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/scans?id={scan}&branch=", emulator.api_url)),
            "{id}: {}",
            f["vendorScanURL"]
        );
        assert!(
            f["language"].is_string() && f["queryGroup"].is_string(),
            "{f}"
        );
    }
    // The links work: the emulator's web app opens each result and scan they name, and only those.
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    for f in lines.values().take(60) {
        let result = f["vendorFindingURL"].as_str().unwrap().to_string();
        assert_eq!(status(result.clone()).await, 200, "{result}");
        assert_eq!(
            status(result.replace("result-id=", "result-id=x")).await,
            404
        );
        let scan = f["vendorScanURL"].as_str().unwrap().to_string();
        assert_eq!(status(scan).await, 200);
    }

    // Each asset carries its project's context, for routing findings to their owners.
    // One committed line of each item (its asset), by vendor item id.
    let assets: BTreeMap<String, Value> =
        findings_in(&store, m.items.iter().flat_map(|i| &i.objects))
            .await
            .into_iter()
            .map(|(line, _)| (line["vendorItemId"].as_str().unwrap().to_string(), line))
            .collect();
    assert_eq!(
        assets.len(),
        emulator
            .expected()
            .projects
            .iter()
            .filter(|p| p.main_branch_sast_scan.is_some())
            .count()
    );
    for raw in &projects.raw {
        let project: Value = serde_json::from_str(raw).unwrap();
        let Some(line) = assets.get(project["id"].as_str().unwrap()) else {
            continue;
        };
        let asset = &line["asset"];
        let tags: Vec<String> = project["tags"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| match v.as_str().unwrap() {
                "" => k.clone(),
                v => format!("{k}:{v}"),
            })
            .collect();
        assert_eq!(asset["tags"], serde_json::json!(tags), "{asset}");
        assert_eq!(asset["groups"], project["groups"]);
        assert_eq!(asset["applications"], project["applicationIds"]);
        assert_eq!(asset["criticality"], project["criticality"]);
        for (field, target) in [("mainBranch", "mainBranch"), ("repoUrl", "repositoryUrl")] {
            match project[field].as_str().unwrap() {
                "" => assert!(asset.get(target).is_none(), "a blank {field} is no value"),
                value => assert_eq!(asset[target], value),
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_broken_pull_of_severities_before_triage_leaves_the_item_uncommitted() {
    let emulator = emulator(TenantShape {
        projects: 3,
        results_per_scan: 100,
        ..TenantShape::default()
    })
    .await;
    let broken = emulator.expected().projects[1].clone();
    let scan = broken.main_branch_sast_scan.clone().unwrap();
    // The slim pull's total moves between pages: the item is incomplete, named, not transformed.
    emulator.set_fault(
        Endpoint::SastResults,
        FaultSpec {
            total_drift: 5,
            only_matching: Some(scan.clone()),
            ..FaultSpec::default()
        },
    );
    let mut c = connection(&emulator, "original-broken", ConnectorKind::Sast);
    c.vendor.results_page_size = 40;
    let (store, dir) = temp_store("original-broken");
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(!summary.complete);
    let m = manifest(&store, &summary.manifest).await;
    let item = m.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    assert_eq!(item.status, ItemStatus::Incomplete);
    assert!(
        item.reason
            .as_deref()
            .unwrap()
            .starts_with("severities before triage:"),
        "{:?}",
        item.reason
    );
    assert!(item.objects.is_empty(), "nothing of it is committed");

    // Refused outright (403): the item fails with the role to ask for; the others commit.
    emulator.set_fault(
        Endpoint::SastResults,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(scan),
            ..FaultSpec::default()
        },
    );
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m = manifest(&store, &summary.manifest).await;
    let item = m.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    assert_eq!(item.status, ItemStatus::Failed);
    assert!(
        item.reason.as_deref().unwrap().contains("view-results"),
        "{:?}",
        item.reason
    );
    assert!(
        m.items
            .iter()
            .filter(|i| i.vendor_id != broken.id)
            .all(|i| i.status == ItemStatus::Complete)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A directory store that keeps raw pages as collect wrote them before zstd: gzip'd, named
/// `<page>.json.gz`, and outcomes that list no page checksums.
#[derive(Clone)]
struct GzipPagesStore(cxone_etm::store::LocalStore);

impl GzipPagesStore {
    fn as_before_zstd(key: &str, body: bytes::Bytes) -> (String, bytes::Bytes) {
        if key.contains("/raw/") && key.ends_with("/collect.json") {
            let mut outcome: Value = serde_json::from_slice(&body).unwrap();
            let fields = outcome.as_object_mut().unwrap();
            fields.remove("pageChecksums");
            fields.remove("originalChecksums");
            return (
                key.to_string(),
                serde_json::to_vec(&outcome).unwrap().into(),
            );
        }
        let Some(stem) = key
            .strip_suffix(".json.zst")
            .filter(|_| key.contains("/raw/"))
        else {
            return (key.to_string(), body);
        };
        let page = cxone_etm::packing::unpack(key, &body).unwrap();
        (
            format!("{stem}.json.gz"),
            cxone_etm::packing::gzip(&[&page]),
        )
    }
}

impl ObjectStore for GzipPagesStore {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), cxone_etm::store::StoreError> {
        let (key, body) = Self::as_before_zstd(key, body);
        self.0.put(&key, body).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<bool, cxone_etm::store::StoreError> {
        let (key, body) = Self::as_before_zstd(key, body);
        self.0.put_if_absent(&key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, cxone_etm::store::StoreError> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, cxone_etm::store::StoreError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), cxone_etm::store::StoreError> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn raw_pages_a_collect_before_zstd_gzipped_are_transformed_alike() {
    let emulator = emulator(TenantShape {
        projects: 4,
        results_per_scan: 90,
        ..TenantShape::default()
    })
    .await;
    let c = connection(&emulator, "gzip-pages", ConnectorKind::Sast);
    let (straight, straight_dir) = temp_store("zstd-pages");
    let expected = run(&straight, &c, api_key(&emulator)).await.unwrap();
    let (local, dir) = temp_store("gzip-pages");
    let summary = run(&GzipPagesStore(local.clone()), &c, api_key(&emulator))
        .await
        .unwrap();
    assert!(summary.complete, "{:?}", summary.problems);
    let raw = local.list("connections/gzip-pages/runs/").await.unwrap();
    let pages = |suffix: &str| {
        raw.iter()
            .filter(|k| k.contains("/raw/") && k.ends_with(suffix))
            .count()
    };
    // Results pages and pages of severities before triage, all gzip'd as before, and outcomes
    // that list no checksums.
    assert!(pages(".json.gz") >= 8, "{raw:?}");
    assert_eq!(pages(".json.zst"), 0);
    for key in raw.iter().filter(|k| k.ends_with("/collect.json")) {
        let outcome = local.get(key).await.unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&outcome).contains("Checksums"),
            "{key}"
        );
    }
    let gzipped = committed_findings(&local, &manifest(&local, &summary.manifest).await).await;
    let zstd = committed_findings(&straight, &manifest(&straight, &expected.manifest).await).await;
    assert!(!zstd.is_empty());
    assert_eq!(gzipped, zstd);
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(straight_dir).ok();
}

/// A directory store that holds one raw page of `item` as `body` instead of what collect packed:
/// a page broken at rest between collect and transform. With `stale_ledger`, it also writes that
/// ledger as the item's next one just before the item's transform record, as a transform cut off
/// between the two writes in an earlier attempt would have left it.
#[derive(Clone)]
struct BrokenPageStore {
    inner: cxone_etm::store::LocalStore,
    item: String,
    page: u32,
    body: bytes::Bytes,
    stale_ledger: Option<bytes::Bytes>,
}

impl ObjectStore for BrokenPageStore {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), cxone_etm::store::StoreError> {
        let record = format!("/etm/{}/transform.json", self.item);
        if let (Some(ledger), Some(base)) = (&self.stale_ledger, key.strip_suffix(&record)) {
            let ledger_key = format!("{base}/ledger/{}.json.gz", self.item);
            self.inner.put(&ledger_key, ledger.clone()).await?;
        }
        match key.ends_with(&format!("/raw/{}/{}.json.zst", self.item, self.page)) {
            true => self.inner.put(key, self.body.clone()).await,
            false => self.inner.put(key, body).await,
        }
    }
    async fn put_if_absent(
        &self,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<bool, cxone_etm::store::StoreError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, cxone_etm::store::StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, cxone_etm::store::StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), cxone_etm::store::StoreError> {
        self.inner.delete(key).await
    }
}

/// The transform reads each page on a second core while it maps the one before: a broken page
/// fails its item whether it is read first, ahead in the middle, or last. The item's reason names
/// the page, nothing of it is committed (not even its pages mapped before the broken one) and its
/// findings from the last run are carried, not closed; the other items commit as before.
#[tokio::test]
async fn a_raw_page_broken_at_rest_fails_its_item_wherever_it_lies() {
    let emulator = emulator(TenantShape {
        projects: 3,
        results_per_scan: 200,
        ..TenantShape::default()
    })
    .await;
    let broken = emulator.expected().projects[1].clone();
    let item = cxone_etm::layout::item_key(&broken.id);
    let mut c = connection(&emulator, "broken-page", ConnectorKind::Sast);
    c.vendor.results_page_size = 25;
    let (local, dir) = temp_store("broken-page");
    let clean = run(&local, &c, api_key(&emulator)).await.unwrap();
    assert!(clean.complete, "{:?}", clean.problems);
    let clean = manifest(&local, &clean.manifest).await;
    let others = |m: &cxone_etm::pipeline::Manifest| {
        let mut m = m.clone();
        m.items.retain(|i| i.vendor_id != broken.id);
        m
    };
    let keys = local.list("connections/broken-page/runs/").await.unwrap();
    let pages = keys
        .iter()
        .filter(|k| k.contains(&format!("/raw/{item}/")) && !k.contains("original"))
        .filter(|k| k.ends_with(".json.zst"))
        .count() as u32;
    assert!(pages >= 3, "{keys:?}");
    let not_json = cxone_etm::packing::pack_page(br#"{"results": [{"id": "#);
    for page in [0, pages / 2, pages - 1] {
        for (what, body) in [
            ("not zstd", bytes::Bytes::from_static(b"not a zstd frame")),
            ("not JSON", not_json.clone()),
        ] {
            let store = BrokenPageStore {
                inner: local.clone(),
                item: item.clone(),
                page,
                body,
                stale_ledger: None,
            };
            let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
            assert!(!summary.complete, "page {page} {what}");
            let m = manifest(&local, &summary.manifest).await;
            let failed = m.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
            assert_eq!(failed.status, ItemStatus::Failed, "page {page} {what}");
            let reason = failed.reason.as_deref().unwrap();
            // Refused by the checksum collect.json lists, before it is unpacked.
            let named = match what {
                "not zstd" => format!(
                    "/raw/{item}/{page}.json.zst: not the page collect counted (its checksum is missing"
                ),
                _ => format!(
                    "/raw/{item}/{page}.json.zst: not the page collect counted (its checksum is "
                ),
            };
            assert!(
                reason.starts_with("transform failed: ") && reason.contains(&named),
                "page {page} {what}: {reason}"
            );
            assert!(failed.objects.is_empty(), "page {page} {what}");
            let run_ref = cxone_etm::layout::RunRef {
                connection_id: "broken-page".into(),
                run_id: summary.run_id.clone(),
            };
            assert_eq!(
                local.list(&run_ref.etm_prefix(&item)).await.unwrap(),
                vec![run_ref.transform_record(&item)],
                "page {page} {what}: no batch file of the pages mapped before it is left"
            );
            assert!(failed.carried_forward > 0, "page {page} {what}");
            assert_eq!(
                committed_findings(&local, &others(&m)).await,
                committed_findings(&local, &others(&clean)).await,
                "page {page} {what}: the other items commit as in the clean run"
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A transform cut off after writing an asset's next ledger and before its record, whose next
/// attempt then fails for good: the ledger it left is not the run's. On a first run (no ledger
/// to carry) it is removed, so the next run reports the asset's findings as new, not as open
/// findings ETM was never sent.
#[tokio::test]
async fn a_ledger_left_by_a_transform_that_then_failed_is_not_the_runs() {
    let emulator = emulator(TenantShape {
        projects: 2,
        results_per_scan: 120,
        ..TenantShape::default()
    })
    .await;
    let broken = emulator.expected().projects[0].clone();
    let item = cxone_etm::layout::item_key(&broken.id);
    let mut c = connection(&emulator, "stale-ledger", ConnectorKind::Sast);
    c.vendor.results_page_size = 25;
    let (elsewhere, elsewhere_dir) = temp_store("stale-ledger-source");
    let source = run(&elsewhere, &c, api_key(&emulator)).await.unwrap();
    let source_run = cxone_etm::layout::RunRef {
        connection_id: "stale-ledger".into(),
        run_id: source.run_id.clone(),
    };
    let ledger = elsewhere
        .get(&source_run.ledger(&item))
        .await
        .unwrap()
        .expect("the asset's ledger");
    let (local, dir) = temp_store("stale-ledger");
    let store = BrokenPageStore {
        inner: local.clone(),
        item: item.clone(),
        page: 1,
        body: bytes::Bytes::from_static(b"not a zstd frame"),
        stale_ledger: Some(ledger),
    };
    let failed = run(&store, &c, api_key(&emulator)).await.unwrap();
    let failed_run = cxone_etm::layout::RunRef {
        connection_id: "stale-ledger".into(),
        run_id: failed.run_id.clone(),
    };
    let m = manifest(&local, &failed.manifest).await;
    let item_line = m.items.iter().find(|i| i.item == item).unwrap();
    assert_eq!(item_line.status, ItemStatus::Failed);
    assert_eq!(item_line.carried_forward, 0);
    assert!(
        local
            .get(&failed_run.ledger(&item))
            .await
            .unwrap()
            .is_none(),
        "the ledger the failed transform left is removed"
    );
    let next = run(&local, &c, api_key(&emulator)).await.unwrap();
    assert!(next.complete, "{:?}", next.problems);
    let m = manifest(&local, &next.manifest).await;
    let figures = &m.items.iter().find(|i| i.item == item).unwrap().figures;
    assert!(figures.findings_out > 0);
    assert_eq!(
        figures.lifecycle.get(&Lifecycle::New).copied().unwrap_or(0),
        figures.findings_out,
        "every finding of the asset is new to ETM: {:?}",
        figures.lifecycle
    );
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(elsewhere_dir).ok();
}

/// A clean scan where a map change gives one engine alone another asset (SCA keyed by the
/// project's name, SAST still by its id): the item's engines report on two assets, and each is
/// sent alone, on one line each. Before, only the first engine's asset was sent.
#[tokio::test]
async fn each_asset_of_a_clean_scan_is_sent_alone_when_its_engines_report_on_two() {
    let emulator = emulator(TenantShape {
        projects: 2,
        results_per_scan: 0,
        ..TenantShape::default()
    })
    .await;
    let mut config = connection(&emulator, "clean-two", ConnectorKind::Sast).config;
    config.engines = Some(vec![cxone_etm::Engine::Sast, cxone_etm::Engine::Sca]);
    let (store, dir) = temp_store("clean-two");
    let first = run(
        &store,
        &config.clone().validate().unwrap(),
        api_key(&emulator),
    )
    .await
    .unwrap();
    assert!(first.complete, "{:?}", first.problems);
    config.transform_maps = vec![assets_by_name(cxone_etm::Engine::Sca)];
    let second = run(&store, &config.validate().unwrap(), api_key(&emulator))
        .await
        .unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m = manifest(&store, &second.manifest).await;
    let projects = emulator.expected().projects;
    let complete = m.items.iter().filter(|i| i.status == ItemStatus::Complete);
    assert_eq!(complete.clone().count(), projects.len(), "{:?}", m.items);
    for item in complete {
        let project = projects.iter().find(|p| p.id == item.vendor_id).unwrap();
        let mut sent = BTreeMap::new();
        for object in &item.objects {
            for line in checked_object_lines(&store, object).await {
                assert_eq!(line["findingGroup"]["findings"], serde_json::json!([]));
                sent.insert(
                    line["engine"].as_str().unwrap().to_string(),
                    line["externalAssetId"].as_str().unwrap().to_string(),
                );
            }
        }
        let expected = BTreeMap::from([
            ("sast".to_string(), project.id.clone()),
            ("sca".to_string(), project.name.clone()),
        ]);
        assert_eq!(sent, expected, "{}", item.item);
    }
    std::fs::remove_dir_all(dir).ok();
}

/// SCA moved to the project's name in a run where its scan holds no SCA result, while SAST, on
/// the project's id, sends findings: SCA's findings close on the old asset, and its new asset is
/// sent alone, after the pull's pages. Before, an asset was sent alone only when the item wrote
/// nothing else, so the new asset never reached ETM.
#[tokio::test]
async fn a_moved_engine_with_a_clean_scan_is_sent_alone_beside_another_engines_findings() {
    let before = emulator(TenantShape {
        projects: 2,
        ..TenantShape::default()
    })
    .await;
    let mut config = connection(&before, "moved-clean", ConnectorKind::Sast).config;
    config.engines = Some(vec![cxone_etm::Engine::Sast, cxone_etm::Engine::Sca]);
    let (store, dir) = temp_store("moved-clean");
    let first = run(
        &store,
        &config.clone().validate().unwrap(),
        api_key(&before),
    )
    .await
    .unwrap();
    assert!(first.complete, "{:?}", first.problems);
    // The same projects and scans, none of whose results is SCA's now.
    let after = emulator(TenantShape {
        projects: 2,
        result_mix: cxone_emulator::ResultMix {
            sast: 80,
            kics: 15,
            sca: 0,
            containers: 5,
        },
        ..TenantShape::default()
    })
    .await;
    config.vendor = connection(&after, "moved-clean", ConnectorKind::Sast)
        .config
        .vendor;
    config.transform_maps = vec![assets_by_name(cxone_etm::Engine::Sca)];
    let second = run(&store, &config.validate().unwrap(), api_key(&after))
        .await
        .unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m = manifest(&store, &second.manifest).await;
    let projects = after.expected().projects;
    let complete = m.items.iter().filter(|i| i.status == ItemStatus::Complete);
    assert_eq!(complete.clone().count(), projects.len(), "{:?}", m.items);
    for item in complete {
        let project = projects.iter().find(|p| p.id == item.vendor_id).unwrap();
        let (mut sca_closed, mut sca_alone, mut sast_findings) = (0, Vec::new(), 0);
        for object in &item.objects {
            for line in checked_object_lines(&store, object).await {
                let findings = line["findingGroup"]["findings"].as_array().unwrap().len();
                match line["engine"].as_str().unwrap() {
                    "sca" if findings == 0 => sca_alone.push(line["externalAssetId"].clone()),
                    "sca" => {
                        assert_eq!(line["externalAssetId"], project.id.as_str());
                        sca_closed += findings;
                    }
                    _ => sast_findings += findings,
                }
            }
        }
        assert!(sca_closed > 0 && sast_findings > 0, "{}", item.item);
        assert_eq!(
            sca_alone,
            vec![Value::from(project.name.as_str())],
            "{}",
            item.item
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A project whose latest scan holds no result is an asset all the same: the connector syncs
/// assets, and findings ride with them. Each run sends it on one line of its own, its findings
/// empty, valid against the batch schema. Before, an asset with no finding was never written, so
/// a project with a clean scan never appeared in ETM.
#[tokio::test]
async fn a_project_whose_scan_holds_no_result_is_sent_as_an_asset_alone() {
    let emulator = emulator(TenantShape {
        projects: 3,
        results_per_scan: 0,
        ..TenantShape::default()
    })
    .await;
    let c = connection(&emulator, "clean", ConnectorKind::Sast);
    let (store, dir) = temp_store("clean");
    let schema: Value = serde_json::from_str(cxone_etm::mapping::BATCH_SCHEMA).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for n in 1..=2 {
        let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(summary.complete, "{:?}", summary.problems);
        let m = manifest(&store, &summary.manifest).await;
        let scanned: Vec<_> = m
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Complete)
            .collect();
        assert!(!scanned.is_empty(), "run {n}");
        let object_lines: u64 = m
            .items
            .iter()
            .flat_map(|i| &i.objects)
            .map(|o| o.lines)
            .sum();
        assert_eq!(m.totals.lines, object_lines, "run {n}: every line counted");
        for item in scanned {
            assert_eq!(item.objects.len(), 1, "run {n}: {item:?}");
            assert_eq!(item.figures.lines, 1, "run {n}");
            assert_eq!(item.objects[0].findings, 0);
            let lines = checked_object_lines(&store, &item.objects[0]).await;
            assert_eq!(lines.len(), 1, "run {n}");
            let line = &lines[0];
            assert_eq!(line["findingGroup"]["findings"], serde_json::json!([]));
            assert!(line["asset"].is_object(), "{line}");
            let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{line}");
        }
        // Replay sends it alone too.
        let run = cxone_etm::layout::RunRef {
            connection_id: "clean".into(),
            run_id: summary.run_id.clone(),
        };
        let raw = dir.join(run.raw_prefix("x").trim_end_matches("/x/"));
        let context = cxone_etm::mapping::TransformContext {
            connection_id: "clean".into(),
            run_id: "replay".into(),
            connector_kind: ConnectorKind::Sast,
            produced_at: "2026-12-06T00:00:00Z".into(),
        };
        let replayed = cxone_etm::mapping::replay_dir(
            &raw,
            &dir.join(format!("replay-{n}")),
            c.first_plan(),
            &c.scoring,
            &context,
            &c.options,
        )
        .unwrap();
        let scanned = m.items.iter().filter(|i| i.status == ItemStatus::Complete);
        for item in scanned {
            let files = &replayed
                .items
                .iter()
                .find(|r| r.item == item.item)
                .unwrap()
                .files;
            assert_eq!(files.len(), 1, "replay of {}", item.item);
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
