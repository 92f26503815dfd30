//! DAST environments and scans (`from`/`to` windows) and results (`page`/`per_page`).

use std::collections::HashSet;

use crate::common::*;
use cxone_emulator::TenantShape;
use reqwest::StatusCode;
use serde_json::Value;

fn shape() -> TenantShape {
    TenantShape {
        dast_environments: 23,
        dast_scans_per_environment: 4,
        environment_results: vec![0, 1, 99, 100, 101, 250],
        ..TenantShape::default()
    }
}

#[tokio::test]
async fn environments_page_with_from_to_windows() {
    let emulator = start(shape()).await;
    let token = full_token(&emulator).await;
    let default = get_ok(&emulator, &token, "/api/dast/scans/environments").await;
    assert_eq!(
        default["environments"].as_array().unwrap().len(),
        10,
        "default window is 10"
    );
    assert_eq!(default["totalItems"], 23);
    let mut seen = Vec::new();
    for from in (0..23).step_by(10) {
        let page = get_ok(
            &emulator,
            &token,
            &format!("/api/dast/scans/environments/?from={from}&to={}", from + 10),
        )
        .await;
        assert_eq!(page["totalItems"], 23);
        seen.extend(
            page["environments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["environmentId"].as_str().unwrap().to_string()),
        );
    }
    let expected: Vec<String> = emulator
        .expected()
        .environments
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(seen, expected);
    let env = &default["environments"][0];
    for field in [
        "environmentId",
        "domain",
        "url",
        "scanType",
        "lastScanID",
        "riskLevel",
        "lastStatus",
    ] {
        assert!(env.get(field).is_some(), "environment lacks {field}: {env}");
    }
    let api_only = get_ok(
        &emulator,
        &token,
        "/api/dast/scans/environments?to=100&match%5Bscantype%5D=DASTAPI",
    )
    .await;
    assert!(
        api_only["environments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["scanType"] == "DASTAPI")
    );
    assert_eq!(api_only["totalItems"], 4);
    let (status, body) = get(
        &emulator,
        &token,
        "/api/dast/scans/environments?sort=domain",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "bare sort columns are rejected"
    );
    assert!(body["message"].as_str().unwrap().contains("column:asc"));
    let sorted = get_ok(
        &emulator,
        &token,
        "/api/dast/scans/environments?sort=domain:asc&to=100",
    )
    .await;
    let domains: Vec<&str> = sorted["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["domain"].as_str().unwrap())
        .collect();
    assert!(domains.windows(2).all(|w| w[0] <= w[1]));
    let (status, _) = get(
        &emulator,
        &token,
        "/api/dast/scans/environments?from=5&to=2",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scans_of_an_environment_newest_first() {
    let emulator = start(shape()).await;
    let token = full_token(&emulator).await;
    let env = &emulator.expected().environments[3];
    let body = get_ok(
        &emulator,
        &token,
        &format!("/api/dast/scans/scans?environmentId={}", env.id),
    )
    .await;
    assert_eq!(body["totalScans"], 4);
    let listed: Vec<&str> = body["scans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scanId"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = env.scans.iter().rev().map(|s| s.id.as_str()).collect();
    assert_eq!(listed, expected);
    assert_eq!(
        body["scans"][0]["lastStatus"], "Running",
        "this environment's newest scan is still running"
    );
    let completed = get_ok(
        &emulator,
        &token,
        &format!(
            "/api/dast/scans/scans?environmentId={}&lastStatus=Completed",
            env.id
        ),
    )
    .await;
    assert_eq!(completed["totalScans"], 3);
    assert_eq!(
        completed["scans"][0]["scanId"],
        env.latest_completed_scan.as_deref().unwrap()
    );
    let (status, body) = get(&emulator, &token, "/api/dast/scans/scans").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("environmentId"));
    let (status, _) = get(
        &emulator,
        &token,
        "/api/dast/scans/scans?environmentId=00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn results_page_with_page_and_per_page_at_the_edges() {
    let emulator = start(shape()).await;
    let token = full_token(&emulator).await;
    for env in emulator.expected().environments.iter().take(6) {
        let scan = env.latest_completed_scan.as_deref().unwrap();
        let expected = env.scans.iter().find(|s| s.id == scan).unwrap().results;
        let mut ids = Vec::new();
        let mut page = 1;
        loop {
            let body = get_ok(
                &emulator,
                &token,
                &format!("/api/dast/mfe-results/results/{scan}?page={page}&per_page=100"),
            )
            .await;
            assert_eq!(body["total"].as_u64().unwrap(), expected);
            assert_eq!(
                body["pages_number"].as_u64().unwrap(),
                expected.div_ceil(100)
            );
            ids.extend(
                body["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_string()),
            );
            if page >= body["pages_number"].as_u64().unwrap() {
                break;
            }
            page += 1;
        }
        assert_eq!(ids.len() as u64, expected);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len() as u64, expected);
    }
}

#[tokio::test]
async fn results_use_snake_case_wire_names_and_string_cwe_ids() {
    let emulator = start(TenantShape {
        dast_environments: 1,
        dast_results_per_scan: 300,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let env = &emulator.expected().environments[0];
    let scan = env.latest_completed_scan.as_deref().unwrap();
    let mut records: Vec<Value> = Vec::new();
    for page in 1..=3 {
        let body = get_ok(
            &emulator,
            &token,
            &format!("/api/dast/mfe-results/results/{scan}?page={page}&per_page=100"),
        )
        .await;
        records.extend(body["results"].as_array().unwrap().iter().cloned());
    }
    for r in &records {
        assert!(r["cwe_id"].is_string() && r.get("cweId").is_none(), "{r}");
        assert_eq!(r["environment_id"], env.id.as_str());
        assert!(r["owasp"].is_array() && r["scan_type"].is_string());
        assert!(r["url"].as_str().unwrap().starts_with(&env.url));
    }
    let statuses: HashSet<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    for s in ["New", "Recurrent", "Fixed", "Resurfaced", "Active"] {
        assert!(statuses.contains(s), "status {s} missing from {statuses:?}");
    }
    let severities: HashSet<&str> = records
        .iter()
        .map(|r| r["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities.len(), 5, "{severities:?}");
    assert!(
        records.iter().any(|r| r["state"] == "To Verify"),
        "states are spaced title case"
    );

    let default = get_ok(
        &emulator,
        &token,
        &format!("/api/dast/mfe-results/results/{scan}"),
    )
    .await;
    assert_eq!(
        default["results"].as_array().unwrap().len(),
        10,
        "per_page defaults to 10"
    );
    for bad in ["per_page=101", "per_page=0", "page=0"] {
        let (status, body) = get(
            &emulator,
            &token,
            &format!("/api/dast/mfe-results/results/{scan}?{bad}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = get(
        &emulator,
        &token,
        "/api/dast/mfe-results/results/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
