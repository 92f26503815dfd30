//! `/api/results` under both offset semantics, field types as the real service sends them, and
//! `/api/sast-results`.

use std::collections::{BTreeMap, HashSet};

use crate::common::*;
use cxone_emulator::{EmulatorConfig, Endpoint, FaultSpec, OffsetMode, ResultType, TenantShape};
use reqwest::StatusCode;
use serde_json::Value;

/// Identity of a record across engine types (SCA ids repeat within a scan; alternateId does not).
fn key(r: &Value) -> String {
    format!("{}|{}|{}", r["type"], r["id"], r["alternateId"])
}

async fn latest_scan(emulator: &cxone_emulator::Emulator, project: usize) -> (String, u64) {
    let p = &emulator.expected().projects[project];
    let id = p
        .latest_completed_sast_scan
        .clone()
        .expect("a completed scan");
    let results = p.scans.iter().find(|s| s.id == id).unwrap().results;
    (id, results)
}

/// Pages a scan's results with `offset` read as `mode` says; returns the records and the totals seen.
async fn page_all(
    emulator: &cxone_emulator::Emulator,
    token: &str,
    scan: &str,
    limit: u64,
    mode: OffsetMode,
) -> (Vec<Value>, Vec<u64>) {
    let mut records = Vec::new();
    let mut totals = Vec::new();
    for page in 0.. {
        let offset = match mode {
            OffsetMode::Page => page,
            OffsetMode::Item => page * limit,
        };
        let body = get_ok(
            emulator,
            token,
            &format!("/api/results/?scan-id={scan}&limit={limit}&offset={offset}"),
        )
        .await;
        assert_eq!(body["scanID"], scan);
        totals.push(body["totalCount"].as_u64().unwrap());
        let batch = body["results"].as_array().unwrap().clone();
        let done =
            (batch.len() as u64) < limit || records.len() as u64 + batch.len() as u64 >= totals[0];
        records.extend(batch);
        if done {
            break;
        }
    }
    (records, totals)
}

#[tokio::test]
async fn both_offset_semantics_give_every_result_once_at_the_edges() {
    let limit = 10;
    let sizes = vec![0, 1, limit - 1, limit, limit + 1, 3 * limit + 7];
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let shape = TenantShape {
            projects: sizes.len() as u32,
            project_results: sizes.clone(),
            ..TenantShape::default()
        };
        let emulator = start_with(EmulatorConfig {
            shape,
            results_offset: mode,
            ..EmulatorConfig::default()
        })
        .await;
        let token = full_token(&emulator).await;
        for (p, size) in sizes.iter().enumerate() {
            let (scan, expected) = latest_scan(&emulator, p).await;
            assert_eq!(expected, *size);
            let (records, totals) = page_all(&emulator, &token, &scan, limit, mode).await;
            assert!(
                totals.iter().all(|t| *t == *size),
                "{mode:?} size {size}: totals {totals:?}"
            );
            assert_eq!(records.len() as u64, *size, "{mode:?} size {size}");
            assert_eq!(
                records.iter().map(key).collect::<HashSet<_>>().len() as u64,
                *size,
                "{mode:?}: no duplicates"
            );
        }
    }
}

/// One project's scan of `size` results, served with `offset` read as `mode` says.
async fn one_scan(size: u64, mode: OffsetMode) -> (cxone_emulator::Emulator, String, String) {
    let emulator = start_with(EmulatorConfig {
        shape: TenantShape {
            projects: 1,
            project_results: vec![size],
            ..TenantShape::default()
        },
        results_offset: mode,
        ..EmulatorConfig::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let (scan, _) = latest_scan(&emulator, 0).await;
    (emulator, token, scan)
}

/// Pages a scan asking `limit` a page, as a client that follows what the server sends: the next
/// page index, or (item offsets) the records received so far; until the total is received or a
/// page is empty. The keys of each page, in order.
async fn pages_as_sent(
    emulator: &cxone_emulator::Emulator,
    token: &str,
    scan: &str,
    limit: u64,
    mode: OffsetMode,
) -> Vec<Vec<String>> {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut received = 0;
    loop {
        let offset = match mode {
            OffsetMode::Page => pages.len() as u64,
            OffsetMode::Item => received,
        };
        let body = get_ok(
            emulator,
            token,
            &format!("/api/results/?scan-id={scan}&limit={limit}&offset={offset}"),
        )
        .await;
        let page: Vec<String> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(key)
            .collect();
        received += page.len() as u64;
        let done = page.is_empty() || received >= body["totalCount"].as_u64().unwrap();
        pages.push(page);
        if done {
            return pages;
        }
    }
}

/// A server that caps the page size (fault `page-cap`) sends at most the cap whatever `limit`
/// asks, and pages by what it sends: a page index counts pages of the cap, an item count items.
#[tokio::test]
async fn a_capped_page_size_is_what_both_offset_semantics_page_by() {
    let (limit, cap, size) = (10, 7, 30);
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let (emulator, token, scan) = one_scan(size, mode).await;
        let whole = pages_as_sent(&emulator, &token, &scan, limit, mode)
            .await
            .concat();
        assert_eq!(whole.len() as u64, size);
        emulator.set_fault(
            Endpoint::Results,
            FaultSpec {
                page_cap: Some(cap),
                ..FaultSpec::default()
            },
        );
        let pages = pages_as_sent(&emulator, &token, &scan, limit, mode).await;
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [7, 7, 7, 7, 2],
            "{mode:?}: {cap} a page where {limit} are asked"
        );
        assert_eq!(
            pages.concat(),
            whole,
            "{mode:?}: every result once, in order"
        );
    }
}

/// Pages that shrink after the first (fault `shrink-to`): by item offset every result still comes
/// once; by page index the server counts pages at the shrunk size, so its second page repeats
/// records of the first, as such a server would.
#[tokio::test]
async fn pages_that_shrink_after_the_first_follow_the_offset_semantics() {
    let (limit, shrunk, size) = (10, 4, 30);
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let (emulator, token, scan) = one_scan(size, mode).await;
        let whole = pages_as_sent(&emulator, &token, &scan, limit, mode)
            .await
            .concat();
        emulator.set_fault(
            Endpoint::Results,
            FaultSpec {
                pages_shrink_to: Some(shrunk),
                ..FaultSpec::default()
            },
        );
        let pages = pages_as_sent(&emulator, &token, &scan, limit, mode).await;
        assert_eq!(pages[0], whole[..10], "{mode:?}: the first page whole");
        match mode {
            OffsetMode::Item => {
                let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
                assert_eq!(sizes, [10, 4, 4, 4, 4, 4], "{mode:?}");
                assert_eq!(
                    pages.concat(),
                    whole,
                    "{mode:?}: every result once, in order"
                );
            }
            OffsetMode::Page => {
                assert_eq!(pages[1], whole[4..8], "{mode:?}: page 1 at 4 a page");
            }
        }
    }
}

#[tokio::test]
async fn a_client_assuming_the_wrong_offset_semantics_gets_gaps_or_duplicates() {
    let shape = TenantShape {
        projects: 1,
        project_results: vec![35],
        ..TenantShape::default()
    };
    let page_mode = start(shape.clone()).await;
    let token = full_token(&page_mode).await;
    let (scan, _) = latest_scan(&page_mode, 0).await;
    // Item offsets against a page-index server skip everything after the first page.
    let second = get_ok(
        &page_mode,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10&offset=10"),
    )
    .await;
    assert!(second["results"].as_array().unwrap().is_empty());
    assert_eq!(second["totalCount"], 35);

    let item_mode = start_with(EmulatorConfig {
        shape,
        results_offset: OffsetMode::Item,
        ..EmulatorConfig::default()
    })
    .await;
    let token = full_token(&item_mode).await;
    // Page indices against an item-offset server overlap.
    let first = get_ok(
        &item_mode,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10&offset=0"),
    )
    .await;
    let next = get_ok(
        &item_mode,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10&offset=1"),
    )
    .await;
    assert_eq!(first["results"][1], next["results"][0]);
}

#[tokio::test]
async fn results_mix_every_engine_with_the_real_field_types() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![2_000],
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let (scan, _) = latest_scan(&emulator, 0).await;
    let (records, _) = page_all(&emulator, &token, &scan, 10_000, OffsetMode::Page).await;
    assert_eq!(records.len(), 2_000);

    // `sca-container` is the containers engine's other shape: counted with it.
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut sca_container = 0;
    for r in &records {
        let kind = r["type"].as_str().unwrap();
        if kind == "sca-container" {
            sca_container += 1;
            assert!(r["data"]["imageName"].is_null() && r["data"]["packageName"].is_string());
        }
        let engine = if kind == "sca-container" {
            "containers"
        } else {
            kind
        };
        *by_type.entry(engine.to_string()).or_default() += 1;
    }
    assert!(
        sca_container > 0,
        "some containers results come as sca-container"
    );
    let totals = emulator.expected();
    let expected = &totals.projects[0]
        .scans
        .iter()
        .find(|s| s.id == scan)
        .unwrap()
        .by_type;
    let expected: BTreeMap<String, u64> = expected
        .iter()
        .map(|(t, n)| {
            (
                serde_json::to_value(t)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                *n,
            )
        })
        .collect();
    assert_eq!(by_type, expected);
    assert_eq!(
        by_type.len(),
        4,
        "sast, kics, sca and containers are all present"
    );

    let sast: Vec<&Value> = records.iter().filter(|r| r["type"] == "sast").collect();
    assert!(
        sast.iter()
            .all(|r| r["data"]["queryId"].is_u64() && r["similarityId"].is_string())
    );
    assert!(
        sast.iter()
            .any(|r| r["data"]["queryId"].as_u64().unwrap() > i64::MAX as u64),
        "u64 query ids"
    );
    assert!(
        sast.iter()
            .all(|r| r["vulnerabilityDetails"]["cweId"].is_u64()),
        "SAST cweId is an integer"
    );
    assert!(
        sast.iter().any(|r| r.get("description").is_none()),
        "some descriptions are missing"
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "sca")
            .all(|r| r["vulnerabilityDetails"]["cweId"].is_string())
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "containers")
            .all(|r| r["vulnerabilityDetails"]["cvss"].is_null())
    );
    // SCA: ids are CVE ids that repeat (one CVE, two packages); the package data real tenants
    // send; string CWEs with NVD's "no CWE"; some results without CVSS metrics.
    let sca: Vec<&Value> = records.iter().filter(|r| r["type"] == "sca").collect();
    let mut packages_by_cve: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &sca {
        packages_by_cve
            .entry(r["id"].as_str().unwrap())
            .or_default()
            .push(r["data"]["packageIdentifier"].as_str().unwrap());
        let package = &r["data"]["scaPackageData"];
        assert!(package["isDirectDependency"].is_boolean() && package["fixLink"].is_string());
        assert!(package["dependencyPaths"][0][0]["name"].is_string(), "{r}");
        assert!(r["data"]["publishedAt"].is_string());
    }
    assert!(
        packages_by_cve
            .values()
            .any(|p| p.len() == 2 && p[0] != p[1]),
        "a CVE id repeats, each time in another package"
    );
    assert!(
        sca.iter()
            .any(|r| r["vulnerabilityDetails"]["cweId"] == "NVD-CWE-Other")
    );
    assert!(
        sca.iter()
            .any(|r| r["vulnerabilityDetails"]["cvss"].is_null())
    );
    assert!(
        sca.iter()
            .any(|r| r["data"]["exploitableMethods"].is_array())
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "kics")
            .all(|r| r["data"]["filename"].is_string() && r["data"]["fileName"].is_null()),
        "KICS spells filename with a lower-case n"
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "kics")
            .all(|r| r["data"]["queryId"].is_string())
    );
    let severities: HashSet<&str> = records
        .iter()
        .map(|r| r["severity"].as_str().unwrap())
        .collect();
    assert!(severities.contains("CRITICAL") && severities.contains("INFO"));
    let states: HashSet<&str> = records
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains("NOT_EXPLOITABLE") && states.contains("Risk_Accepted_By_AppSec"),
        "custom states: {states:?}"
    );
    let statuses: HashSet<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains("RECURRENT") && statuses.contains("NEW") && statuses.contains("FIXED"),
        "{statuses:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["foundAt"].as_str().unwrap().len() == "2024-11-18T15:05:11Z".len())
    );
    assert!(
        records
            .iter()
            .all(|r| r["firstScanId"].is_string() && r.get("firstScanID").is_none())
    );
    let sca_ids: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "sca")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        sca_ids.len() > sca_ids.iter().collect::<HashSet<_>>().len(),
        "SCA ids (CVE ids) repeat within a scan"
    );
}

#[tokio::test]
async fn findings_keep_their_identity_from_scan_to_scan() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![200],
        scans_per_project: 3,
        branches_per_project: 1,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let scans = &emulator.expected().projects[0].scans;
    let (older, _) = page_all(&emulator, &token, &scans[1].id, 1000, OffsetMode::Page).await;
    let (newer, _) = page_all(&emulator, &token, &scans[2].id, 1000, OffsetMode::Page).await;
    let older: HashSet<String> = older.iter().map(key).collect();
    let newer_keys: HashSet<String> = newer.iter().map(key).collect();
    assert_eq!(
        older.intersection(&newer_keys).count(),
        190,
        "5% churn: 10 findings replaced"
    );
    let new_ones = newer.iter().filter(|r| !older.contains(&key(r)));
    assert!(
        new_ones
            .filter(|r| r["status"] != "FIXED")
            .all(|r| r["status"] == "NEW" && r["firstScanId"] == scans[2].id.as_str())
    );
}

#[tokio::test]
async fn result_filters_limits_and_bad_requests() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![500],
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let (scan, _) = latest_scan(&emulator, 0).await;
    let high = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=1000&severity=HIGH&severity=CRITICAL"),
    )
    .await;
    let page = high["results"].as_array().unwrap();
    assert_eq!(high["totalCount"].as_u64().unwrap(), page.len() as u64);
    assert!(
        !page.is_empty()
            && page
                .iter()
                .all(|r| r["severity"] == "HIGH" || r["severity"] == "CRITICAL")
    );
    let joined = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=1000&severity=HIGH,CRITICAL"),
    )
    .await;
    assert_eq!(joined["totalCount"], high["totalCount"]);

    let max = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10000"),
    )
    .await;
    assert_eq!(max["results"].as_array().unwrap().len(), 500);
    let (status, body) = get(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10001"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 400);
    assert!(
        body.get("data").is_some(),
        "results errors carry code, message, data: {body}"
    );
    let (status, body) = get(&emulator, &token, "/api/results?limit=10").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("scan-id"));
    let (status, _) = get(
        &emulator,
        &token,
        "/api/results?scan-id=00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let default = get_ok(&emulator, &token, &format!("/api/results?scan-id={scan}")).await;
    assert_eq!(
        default["results"].as_array().unwrap().len(),
        20,
        "default limit is 20"
    );
}

#[tokio::test]
async fn running_and_failed_scans_hold_no_results() {
    let emulator = start(TenantShape {
        projects: 5,
        scans_per_project: 3,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let running = emulator.expected().projects[4]
        .scans
        .last()
        .cloned()
        .unwrap();
    assert_eq!(running.status, "Running");
    let body = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={}", running.id),
    )
    .await;
    assert_eq!(body["totalCount"], 0);
    assert_eq!(body["results"], serde_json::json!([]));
}

#[tokio::test]
async fn sast_results_page_by_item_offset_in_the_flat_shape() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![333],
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let (scan, _) = latest_scan(&emulator, 0).await;
    let sast_total = emulator.expected().projects[0]
        .scans
        .iter()
        .find(|s| s.id == scan)
        .unwrap()
        .by_type[&ResultType::Sast];
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let body = get_ok(
            &emulator,
            &token,
            &format!("/api/sast-results?scan-id={scan}&limit=50&offset={offset}"),
        )
        .await;
        assert_eq!(body["totalCount"].as_u64().unwrap(), sast_total);
        let page = body["results"].as_array().unwrap();
        for r in page {
            assert!(
                r["ID"].is_string()
                    && r["queryIDStr"].is_string()
                    && r["similarityID"].is_i64()
                    && r["cweID"].is_u64(),
                "{r}"
            );
            assert_eq!(
                r["queryID"].as_u64().unwrap().to_string(),
                r["queryIDStr"].as_str().unwrap()
            );
            assert!(r["nodes"].is_array());
        }
        seen.extend(
            page.iter()
                .map(|r| r["resultHash"].as_str().unwrap().to_string()),
        );
        offset += 50;
        if offset >= sast_total {
            break;
        }
    }
    assert_eq!(seen.len() as u64, sast_total);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len() as u64, sast_total);
    let (all, _) = page_all(&emulator, &token, &scan, 1000, OffsetMode::Page).await;
    let from_all: Vec<String> = all
        .iter()
        .filter(|r| r["type"] == "sast")
        .map(|r| r["data"]["resultHash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen, from_all,
        "the same SAST results in the same order as /api/results"
    );
    let no_nodes = get_ok(
        &emulator,
        &token,
        &format!("/api/sast-results?scan-id={scan}&limit=1&include-nodes=false"),
    )
    .await;
    assert!(no_nodes["results"][0].get("nodes").is_none());
}

#[tokio::test]
async fn a_million_finding_scan_is_served_without_generating_it_whole() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![1_000_000],
        scans_per_project: 1,
        ..TenantShape::default()
    })
    .await;
    assert_eq!(emulator.expected().totals.results, 1_000_000);
    let token = full_token(&emulator).await;
    let (scan, _) = latest_scan(&emulator, 0).await;
    let last = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10000&offset=99"),
    )
    .await;
    assert_eq!(last["totalCount"], 1_000_000);
    assert_eq!(last["results"].as_array().unwrap().len(), 10_000);
    let past = get_ok(
        &emulator,
        &token,
        &format!("/api/results?scan-id={scan}&limit=10000&offset=100"),
    )
    .await;
    assert!(past["results"].as_array().unwrap().is_empty());
    let sast = get_ok(
        &emulator,
        &token,
        &format!("/api/sast-results?scan-id={scan}&limit=5&offset=599995"),
    )
    .await;
    assert_eq!(sast["results"].as_array().unwrap().len(), 5);
    assert_eq!(sast["totalCount"], 600_000);
}
