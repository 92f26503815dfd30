//! The retry layer against real faults: 429 with and without Retry-After, 5xx bursts, truncated
//! bodies, dropped connections, 403, and the concurrency cap under pressure.

use std::time::{Duration, Instant};

use crate::common::*;
use cxone_emulator::{Endpoint, FaultSpec, RetryAfter, TenantShape};
use cxone_etm::cxone::{RetrySettings, VendorError};
use cxone_etm::secret::Credential;

fn fault() -> FaultSpec {
    FaultSpec::default()
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_the_server_asks() {
    let emulator = emulator(TenantShape::default()).await;
    let client = default_client(&emulator);
    client.authenticate().await.unwrap();

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::Seconds(1),
            max: Some(1),
            ..fault()
        },
    );
    let started = Instant::now();
    assert_eq!(client.projects().await.unwrap().items.len(), 10);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured ({:?})",
        started.elapsed()
    );

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::HttpDate(1),
            max: Some(1),
            ..fault()
        },
    );
    assert_eq!(client.projects().await.unwrap().items.len(), 10);

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            max: Some(3),
            ..fault()
        },
    );
    assert_eq!(client.projects().await.unwrap().items.len(), 10);

    let counters = client.counters();
    assert_eq!(counters.rate_limited, 5, "{counters:?}");
    assert_eq!(counters.retries, 5);
    assert_eq!(emulator.traffic().faults_fired.rate_limited["projects"], 5);
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_fails_at_once_with_the_reason() {
    let emulator = emulator(TenantShape::default()).await;
    let mut s = settings(&emulator);
    s.retry = RetrySettings {
        max_total_wait_secs: 5,
        ..s.retry
    };
    let client = client(s, &api_key(&emulator));
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::Seconds(600),
            ..fault()
        },
    );
    let started = Instant::now();
    let e = client.projects().await.unwrap_err();
    assert!(matches!(e, VendorError::RetryAfterTooLong { .. }), "{e}");
    assert!(e.to_string().contains("600s"));
    assert!(e.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "did not sleep 600 s"
    );
    assert_eq!(client.counters().retries, 0, "no wait at all");
}

/// A 503 that says when to come back (a gateway in maintenance) is waited out as a 429's
/// `Retry-After` is, and is not counted as rate limiting: one past the budget fails at once.
#[tokio::test]
async fn a_503_retry_after_is_read_and_one_beyond_the_budget_fails_at_once() {
    let emulator = emulator(TenantShape::default()).await;
    let mut s = settings(&emulator);
    s.retry = RetrySettings {
        max_total_wait_secs: 5,
        ..s.retry
    };
    let client = client(s, &api_key(&emulator));
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            server_error_retry_after: true,
            retry_after: RetryAfter::Seconds(600),
            ..fault()
        },
    );
    let e = client.projects().await.unwrap_err();
    assert!(matches!(e, VendorError::RetryAfterTooLong { .. }), "{e}");
    let counters = client.counters();
    assert_eq!((counters.retries, counters.rate_limited), (0, 0));
    // One the budget holds is waited, then the list is read.
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            server_error_retry_after: true,
            retry_after: RetryAfter::Seconds(1),
            max: Some(1),
            ..fault()
        },
    );
    assert_eq!(client.projects().await.unwrap().items.len(), 10);
    let counters = client.counters();
    assert_eq!((counters.retries, counters.rate_limited), (1, 0));
}

#[tokio::test]
async fn retry_after_zero_still_waits_the_least_delay_between_attempts() {
    let emulator = emulator(TenantShape::default()).await;
    let mut s = settings(&emulator);
    s.retry = RetrySettings {
        base_delay_ms: 600,
        ..s.retry
    };
    let client = client(s, &api_key(&emulator));
    client.authenticate().await.unwrap();
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            rate_limit_rate: 1.0,
            retry_after: RetryAfter::Seconds(0),
            max: Some(3),
            ..fault()
        },
    );
    let started = Instant::now();
    assert_eq!(client.projects().await.unwrap().items.len(), 10);
    assert_eq!(client.counters().rate_limited, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three `Retry-After: 0` answers were retried after {:?}, not after 3 × the 300 ms floor (half the base delay)",
        started.elapsed()
    );
}

#[tokio::test]
async fn server_error_bursts_are_retried_and_endless_ones_give_up_with_the_count() {
    let emulator = emulator(TenantShape::default()).await;
    let client = default_client(&emulator);
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            server_error_status: Some(502),
            max: Some(3),
            ..fault()
        },
    );
    assert_eq!(client.projects().await.unwrap().items.len(), 10);
    assert_eq!(client.counters().retries, 3);

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            ..fault()
        },
    );
    let e = client.projects().await.unwrap_err();
    match &e {
        VendorError::RetriesExhausted { attempts, last, .. } => {
            assert_eq!(*attempts, 7, "one attempt and six retries");
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("expected RetriesExhausted, got {other}"),
    }
}

#[tokio::test]
async fn truncated_bodies_and_dropped_connections_are_retried() {
    let emulator = emulator(TenantShape {
        projects: 1,
        project_results: vec![300],
        ..TenantShape::default()
    })
    .await;
    let client = default_client(&emulator);
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            truncate_rate: 1.0,
            max: Some(2),
            ..fault()
        },
    );
    let (records, pager) = pull_results(&client, &scan).await;
    assert_eq!(records, 300);
    assert!(pager.completeness().is_complete());
    assert_eq!(emulator.traffic().faults_fired.truncated["results"], 2);

    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            reset_rate: 1.0,
            max: Some(2),
            ..fault()
        },
    );
    let (records, _) = pull_results(&client, &scan).await;
    assert_eq!(records, 300);
    assert_eq!(emulator.traffic().faults_fired.resets["results"], 2);
    assert_eq!(client.counters().retries, 4);
}

#[tokio::test]
async fn a_missing_role_is_a_403_that_names_the_role_and_is_not_retried() {
    let emulator = emulator(TenantShape::default()).await;
    let credential = Credential::ApiKey(emulator.credentials.api_key_no_results.clone().into());
    let client = client(settings(&emulator), &credential);
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let e = client.results(&scan).next_page().await.unwrap_err();
    assert!(
        matches!(
            e,
            VendorError::Forbidden {
                endpoint: "results",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("view-results"));
    assert_eq!(client.counters().retries, 0);
    assert_eq!(
        client.projects().await.unwrap().items.len(),
        10,
        "projects are still readable"
    );
}

#[tokio::test]
async fn the_concurrency_cap_holds_under_429s_and_latency() {
    let emulator = emulator(TenantShape {
        projects: 40,
        results_per_scan: 50,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.concurrency = 4;
    s.retry.max_retries = 20;
    let client = client(s, &api_key(&emulator));
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            latency_ms: 20,
            rate_limit_rate: 0.2,
            retry_after: RetryAfter::Absent,
            ..fault()
        },
    );
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            latency_ms: 20,
            ..fault()
        },
    );
    emulator.reset_traffic();
    let expected = emulator.expected();
    let pulls = expected
        .projects
        .iter()
        .filter_map(|p| p.main_branch_sast_scan.clone())
        .map(|scan| {
            let client = client.clone();
            async move { pull_results(&client, &scan).await }
        });
    let outcomes = futures_util::future::join_all(pulls).await;
    let total: u64 = outcomes.iter().map(|(n, _)| *n).sum();
    assert_eq!(total, expected.totals.results, "no item lost");
    assert!(
        outcomes
            .iter()
            .all(|(_, pager)| pager.completeness().is_complete())
    );
    let traffic = emulator.traffic();
    assert!(
        traffic.faults_fired.rate_limited["results"] > 0,
        "429s really happened"
    );
    assert!(
        traffic.peak_in_flight <= 4,
        "peak in flight {} exceeds the cap of 4",
        traffic.peak_in_flight
    );
    assert!(
        traffic.peak_in_flight >= 2,
        "the pulls did run concurrently"
    );
}

#[tokio::test]
async fn branch_listings_retry_broken_answers_and_fail_with_the_endpoint_named() {
    let emulator = emulator(TenantShape {
        branches_per_project: 3,
        scans_per_project: 3,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.retry.max_retries = 2;
    let client = client(s, &api_key(&emulator));
    let project = emulator.expected().projects[0].clone();
    let mut want: Vec<String> = Vec::new();
    for scan in project.scans.iter().rev() {
        if !want.contains(&scan.branch) {
            want.push(scan.branch.clone());
        }
    }
    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            truncate_rate: 1.0,
            max: Some(2),
            ..fault()
        },
    );
    assert_eq!(
        client.project_branches_page(&project.id, 0).await.unwrap(),
        want
    );
    assert_eq!(emulator.traffic().faults_fired.truncated["branches"], 2);

    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            server_error_rate: 1.0,
            ..fault()
        },
    );
    let e = client
        .project_branches_page(&project.id, 0)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("branches"), "{e}");
}
