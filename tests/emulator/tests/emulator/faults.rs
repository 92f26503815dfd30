//! Every fault switch: it really happens, and turning it off really stops it.

use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use cxone_emulator::{Endpoint, FaultSpec, RetryAfter, TenantShape};
use reqwest::StatusCode;
use serde_json::Value;

fn spec() -> FaultSpec {
    FaultSpec::default()
}

#[tokio::test]
async fn rate_limit_sends_retry_after_in_seconds_as_a_date_or_not_at_all() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    let url = format!("{}/api/projects", emulator.api_url);

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::Seconds(7),
            ..spec()
        },
    );
    let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::HttpDate(30),
            ..spec()
        },
    );
    let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let date = httpdate::parse_http_date(response.headers()["retry-after"].to_str().unwrap())
        .expect("an HTTP-date");
    let ahead = date.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(15) && ahead <= Duration::from_secs(31),
        "{ahead:?}"
    );

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            ..spec()
        },
    );
    let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_none());

    emulator.clear_faults();
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK
    );
    assert_eq!(emulator.traffic().faults_fired.rate_limited["projects"], 3);
}

#[tokio::test]
async fn max_bounds_a_burst_and_other_endpoints_are_untouched() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            server_error_status: Some(502),
            max: Some(3),
            ..spec()
        },
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&emulator, &token, "/api/projects").await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::BAD_GATEWAY,
            StatusCode::BAD_GATEWAY,
            StatusCode::BAD_GATEWAY,
            StatusCode::OK,
            StatusCode::OK
        ]
    );
    assert_eq!(get(&emulator, &token, "/api/scans").await.0, StatusCode::OK);
}

#[tokio::test]
async fn server_errors_come_as_html_from_the_gateway_until_cleared() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            ..spec()
        },
    );
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let response = client()
        .get(format!("{}/api/results?scan-id={scan}", emulator.api_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("503 Service Unavailable")
    );
    emulator.clear_faults();
    assert_eq!(
        get(&emulator, &token, &format!("/api/results?scan-id={scan}"))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_matched_fault_hits_one_scan_and_leaves_the_others_alone() {
    let emulator = start(TenantShape {
        projects: 3,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let scans: Vec<String> = emulator
        .expected()
        .projects
        .iter()
        .filter_map(|p| p.latest_completed_sast_scan.clone())
        .collect();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(scans[0].clone()),
            ..spec()
        },
    );
    let (status, body) = get(
        &emulator,
        &token,
        &format!("/api/results?scan-id={}", scans[0]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Forbidden");
    for other in &scans[1..] {
        let (status, _) = get(&emulator, &token, &format!("/api/results?scan-id={other}")).await;
        assert_eq!(status, StatusCode::OK, "{other} is not matched");
    }
    assert_eq!(emulator.traffic().faults_fired.forbidden["results"], 1);
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            reset_rate: 1.0,
            ..spec()
        },
    );
    let error = client()
        .get(format!("{}/api/projects", emulator.api_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(
        error.is_request() || error.is_connect() || error.is_body(),
        "{error:?}"
    );
    assert_eq!(emulator.traffic().faults_fired.resets["projects"], 1);
    emulator.clear_faults();
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn truncate_cuts_the_body_short_of_its_content_length() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![200],
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let url = format!("{}/api/results?scan-id={scan}&limit=200", emulator.api_url);
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            truncate_rate: 1.0,
            ..spec()
        },
    );
    let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "headers arrive whole");
    let promised = response.content_length().unwrap();
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert!(promised > 100_000);
    emulator.clear_faults();
    let body: Value = client()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 200);
}

#[tokio::test]
async fn malformed_breaks_one_record_inside_a_valid_page() {
    let emulator = start(TenantShape {
        projects: 1,
        project_results: vec![50],
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let path = format!("/api/results?scan-id={scan}&limit=50");
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            malformed_rate: 1.0,
            ..spec()
        },
    );
    let body = get_ok(&emulator, &token, &path).await;
    let records = body["results"].as_array().unwrap();
    assert_eq!(records.len(), 50, "the page keeps its size");
    assert_eq!(body["totalCount"], 50);
    let broken: Vec<&Value> = records.iter().filter(|r| r.get("id").is_none()).collect();
    assert_eq!(broken.len(), 1);
    assert!(broken[0]["severity"].is_number() && broken[0]["data"].is_string());
    emulator.clear_faults();
    let body = get_ok(&emulator, &token, &path).await;
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"].is_string())
    );
}

#[tokio::test]
async fn malformed_applies_to_dast_and_projects_too() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            malformed_rate: 1.0,
            ..spec()
        },
    );
    emulator.set_fault(
        Endpoint::DastResults,
        FaultSpec {
            malformed_rate: 1.0,
            ..spec()
        },
    );
    let projects = get_ok(&emulator, &token, "/api/projects?limit=10").await;
    assert_eq!(
        projects["projects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.get("id").is_none())
            .count(),
        1
    );
    let scan = emulator.expected().environments[0]
        .latest_completed_scan
        .clone()
        .unwrap();
    let dast = get_ok(
        &emulator,
        &token,
        &format!("/api/dast/mfe-results/results/{scan}?per_page=20"),
    )
    .await;
    assert_eq!(
        dast["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("id").is_none())
            .count(),
        1
    );
}

#[tokio::test]
async fn latency_delays_answers_until_cleared() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            latency_ms: 300,
            jitter_ms: 50,
            ..spec()
        },
    );
    let started = Instant::now();
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    emulator.clear_faults();
    assert_eq!(emulator.expected().totals.projects, 10);
}

#[tokio::test]
async fn drift_changes_the_total_during_paging() {
    let emulator = start(TenantShape {
        projects: 30,
        ..TenantShape::default()
    })
    .await;
    let token = full_token(&emulator).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            total_drift: 4,
            ..spec()
        },
    );
    let first = get_ok(&emulator, &token, "/api/projects?limit=10&offset=0").await;
    let second = get_ok(&emulator, &token, "/api/projects?limit=10&offset=10").await;
    assert_eq!(first["totalCount"], 30);
    assert_eq!(second["totalCount"], 34);
    emulator.clear_faults();
    assert_eq!(
        get_ok(&emulator, &token, "/api/projects?limit=10&offset=20").await["totalCount"],
        30
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_can_be_switched_over_http_and_stats_count_requests_and_peak_in_flight() {
    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    let http = client();
    // Answers three seconds late, so the eight calls below (each with its own client and
    // connection) are all in flight together even on a loaded machine.
    let put = http
        .put(format!("{}/_emulator/faults/all", emulator.api_url))
        .json(&serde_json::json!({"latency_ms": 3000, "rate_limit_rate": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let bad = http
        .put(format!("{}/_emulator/faults/results", emulator.api_url))
        .json(&serde_json::json!({"latency": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad.status(),
        StatusCode::BAD_REQUEST,
        "unknown fault fields are refused"
    );
    let unknown = http
        .put(format!("{}/_emulator/faults/nowhere", emulator.api_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    http.post(format!("{}/_emulator/stats/reset", emulator.api_url))
        .send()
        .await
        .unwrap();

    let unix_us = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let before = unix_us();
    let calls = (0..8).map(|_| get(&emulator, &token, "/api/projects"));
    let answers = futures_util::future::join_all(calls).await;
    let first = emulator
        .traffic()
        .first_request_unix_us
        .expect("a first request");
    assert!(
        before <= first && first <= unix_us(),
        "the first request since the reset"
    );
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK));
    let stats: Value = http
        .get(format!("{}/_emulator/stats", emulator.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["traffic"]["requests"]["projects"], 8);
    assert_eq!(stats["traffic"]["peak_in_flight"], 8);
    assert_eq!(stats["traffic"]["in_flight"], 0);
    assert_eq!(stats["expected"]["totals"]["projects"], 10);

    let cleared = http
        .delete(format!("{}/_emulator/faults", emulator.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    let faults: Value = http
        .get(format!("{}/_emulator/faults", emulator.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["projects"]["latency_ms"], 0);
    let revoke = http
        .post(format!("{}/_emulator/revoke-tokens", emulator.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn token_endpoint_faults_apply_before_credentials_are_checked() {
    let emulator = start(TenantShape::default()).await;
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::Seconds(1),
            max: Some(1),
            ..spec()
        },
    );
    let key = emulator.credentials.api_key.clone();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", "ast-app"),
        ("refresh_token", key.as_str()),
    ];
    assert_eq!(
        token_response(&emulator, &form).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(token_response(&emulator, &form).await.0, StatusCode::OK);
    assert_eq!(emulator.traffic().requests_to(Endpoint::Token), 2);
}
