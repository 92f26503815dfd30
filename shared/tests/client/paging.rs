//! Pagers against the emulator: results complete and duplicate-free under both offset semantics
//! at the edges, totals that move, last scans in batches, DAST, and malformed records.

use std::collections::HashSet;

use crate::common::*;
use cxone_emulator::{Emulator, EmulatorConfig, Endpoint, FaultSpec, OffsetMode, TenantShape};
use cxone_etm::cxone::{
    Completeness, CxOneClient, LastScanQuery, Listing, OffsetSemantics, PageSource, Project,
    VendorError,
};
use serde_json::Value;

const LIMIT: u64 = 10;

#[tokio::test]
async fn results_are_complete_and_unique_under_both_offset_semantics_at_the_edges() {
    let sizes = vec![0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 4 * LIMIT + 3];
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let shape = TenantShape {
            projects: sizes.len() as u32,
            project_results: sizes.clone(),
            scans_per_project: 1,
            ..TenantShape::default()
        };
        let emulator = emulator_with(EmulatorConfig {
            shape,
            results_offset: mode,
            ..EmulatorConfig::default()
        })
        .await;
        let mut s = settings(&emulator);
        s.results_page_size = LIMIT as u32;
        let client = client(s, &api_key(&emulator));
        for (p, size) in sizes.iter().enumerate() {
            let scan = emulator.expected().projects[p]
                .latest_completed_sast_scan
                .clone()
                .unwrap();
            emulator.reset_traffic();
            let mut pager = client.results(&scan);
            let mut ids = Vec::new();
            while let Some(page) = pager.next_page().await.unwrap() {
                let body: Value = serde_json::from_slice(&page.body).unwrap();
                let records = body["results"].as_array().unwrap();
                assert_eq!(records.len(), page.records);
                ids.extend(
                    records
                        .iter()
                        .map(|r| format!("{}|{}|{}", r["type"], r["id"], r["alternateId"])),
                );
            }
            let c = pager.completeness();
            assert!(c.is_complete(), "{mode:?} size {size}: {:?}", c.problem());
            assert_eq!((c.expected, c.unique), (*size, *size));
            assert_eq!(
                ids.len() as u64,
                *size,
                "{mode:?} size {size}: pages handed over hold each result once"
            );
            assert_eq!(ids.iter().collect::<HashSet<_>>().len() as u64, *size);
            let requests = emulator.traffic().requests_to(Endpoint::Results);
            let minimum = size.div_ceil(LIMIT).max(1);
            // A full first page asks for the next, which tells how `offset` counts.
            let expected_semantics = match (size >= &LIMIT, mode) {
                (false, _) => OffsetSemantics::Unneeded,
                (true, OffsetMode::Page) => OffsetSemantics::PageIndex,
                (true, OffsetMode::Item) => OffsetSemantics::ItemCount,
            };
            assert_eq!(
                pager.semantics(),
                Some(expected_semantics),
                "{mode:?} size {size}"
            );
            // A scan whose last page is full asks for the page after it (a total reported short
            // of the results would leave them unread).
            let past_the_end = u64::from(*size > 0 && size % LIMIT == 0);
            let allowed = if expected_semantics == OffsetSemantics::ItemCount {
                minimum + 1
            } else {
                minimum
            } + past_the_end;
            assert!(
                requests <= allowed,
                "{mode:?} size {size}: {requests} requests, at most {allowed}"
            );
        }
    }
}

/// A server that reports fewer results than a scan holds, its last page by that total full: the
/// page after it is asked for, and the results there make the pull incomplete, rather than never
/// read and their findings closed as absent. A total that is true costs that one request, which a
/// server may answer empty or refuse (400, 404: the pull is whole all the same). On every results
/// pager: all engines (under both readings of `offset`), SAST before triage, and DAST.
#[tokio::test]
async fn a_total_reported_short_of_the_results_is_not_taken_for_complete() {
    let sizes = vec![25, 15, 20];
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let emulator = emulator_with(EmulatorConfig {
            shape: TenantShape {
                projects: 3,
                project_results: sizes.clone(),
                result_mix: cxone_emulator::ResultMix {
                    sast: 100,
                    kics: 0,
                    sca: 0,
                    containers: 0,
                },
                scans_per_project: 1,
                dast_environments: 3,
                dast_scans_per_environment: 1,
                environment_results: sizes.clone(),
                ..TenantShape::default()
            },
            results_offset: mode,
            ..EmulatorConfig::default()
        })
        .await;
        let mut s = settings(&emulator);
        s.results_page_size = LIMIT as u32;
        s.dast_page_size = LIMIT as u32;
        let client = client(s, &api_key(&emulator));
        let expected = emulator.expected();
        let cases = [
            Endpoint::Results,
            Endpoint::SastResults,
            Endpoint::DastResults,
        ]
        .into_iter()
        .flat_map(|endpoint| [None, Some(400), Some(404)].map(|past_end| (endpoint, past_end)));
        for (endpoint, past_end) in cases {
            for (i, claimed, complete) in [(0, 20, false), (1, 10, false), (2, 20, true)] {
                let case =
                    format!("{mode:?}, {endpoint:?} {i} claimed {claimed}, past end {past_end:?}");
                emulator.set_fault(
                    endpoint,
                    FaultSpec {
                        claimed_total: Some(claimed),
                        past_end_status: past_end,
                        ..FaultSpec::default()
                    },
                );
                emulator.reset_traffic();
                // Fired faults are counted since the emulator started.
                let refused_past_the_end = |traffic: &cxone_emulator::TrafficSnapshot| {
                    let fired = &traffic.faults_fired.refused_past_end;
                    fired.get(endpoint.name()).copied().unwrap_or(0)
                };
                let refused_before = refused_past_the_end(&emulator.traffic());
                let scan = expected.projects[i].scans[0].id.clone();
                let (_, c) = match endpoint {
                    Endpoint::Results => drain(&case, client.results(&scan)).await,
                    Endpoint::SastResults => drain(&case, client.original_severities(&scan)).await,
                    _ => {
                        let env = &expected.environments[i];
                        let scan = env.scans[0].id.clone();
                        drain(&case, client.dast_results(&scan, &env.id)).await
                    }
                };
                assert_eq!(c.is_complete(), complete, "{case}: {c:?}");
                if !complete {
                    let problem = c.problem().unwrap();
                    assert!(
                        problem.contains(&format!("but the server reported {claimed}")),
                        "{case}: {problem}"
                    );
                }
                let traffic = emulator.traffic();
                assert_eq!(traffic.requests_to(endpoint), claimed / LIMIT + 1, "{case}");
                // The page past the true end is asked for, and refused, where the total is true
                // and the last page full (by item offset, `/api/results`' last page is short).
                let asked_past_the_end =
                    complete && !(endpoint == Endpoint::Results && mode == OffsetMode::Item);
                let refused = refused_past_the_end(&traffic) - refused_before;
                let expected = u64::from(past_end.is_some() && asked_past_the_end);
                assert_eq!(refused, expected, "{case}");
            }
        }
    }
}

/// A DAST server that caps its pages below `per_page` and reports fewer results than it holds:
/// the page after a last page as full as the server sends them is asked for too.
/// An environment's scans that move between their pages (the total changes: a scan deleted or
/// created meanwhile), where the first completed scan is on a later page: a newer one may have
/// gone by unread at the page boundary, so none is taken. Found on the first page, the list was
/// read no further and the scan is taken.
#[tokio::test]
async fn a_dast_scan_list_that_moves_before_its_first_completed_scan_is_refused() {
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        dast_scans_per_environment: 2,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.dast_page_size = 1;
    let client = client(s, &api_key(&emulator));
    let moving = || FaultSpec {
        total_drift: 1,
        ..FaultSpec::default()
    };
    // Environment 3's newest scan is running: its completed one is on the second page.
    let running_last = &emulator.expected().environments[3];
    emulator.set_fault(Endpoint::DastScans, moving());
    let refused = client
        .latest_completed_dast_scan(&running_last.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("the total changed during paging")
            && refused.contains("the first completed scan is on the page from 1"),
        "{refused}"
    );
    let completed_first = &emulator.expected().environments[0];
    emulator.set_fault(Endpoint::DastScans, moving());
    let latest = client
        .latest_completed_dast_scan(&completed_first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.scan_id, completed_first.scans.last().unwrap().id);
}

/// An environment with more scans than a page, whose first page holds no completed scan: its
/// newest completed scan, on a later page, is taken, the list read no further. Before, the scans
/// left unread (by design: newest first, to the first completed one) read as a list that moved,
/// and the environment was never pulled.
#[tokio::test]
async fn a_dast_scan_list_read_in_part_takes_its_first_completed_scan_past_the_first_page() {
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        dast_scans_per_environment: 4,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.dast_page_size = 1;
    let client = client(s, &api_key(&emulator));
    // Environment 3's newest scan is running: its completed one is on the second page of four.
    let running_last = &emulator.expected().environments[3];
    assert_ne!(running_last.scans.last().unwrap().status, "Completed");
    emulator.reset_traffic();
    let latest = client
        .latest_completed_dast_scan(&running_last.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(latest.scan_id),
        running_last.latest_completed_scan.clone()
    );
    assert_eq!(emulator.traffic().requests_to(Endpoint::DastScans), 2);
}

#[tokio::test]
async fn a_dast_total_reported_short_by_a_server_that_caps_its_pages_is_not_taken_for_complete() {
    let emulator = emulator(TenantShape {
        dast_environments: 1,
        dast_scans_per_environment: 1,
        environment_results: vec![21],
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.dast_page_size = 10;
    let client = client(s, &api_key(&emulator));
    let env = &emulator.expected().environments[0];
    for (claimed, complete) in [(14, false), (21, true)] {
        emulator.set_fault(
            Endpoint::DastResults,
            FaultSpec {
                page_cap: Some(7),
                claimed_total: Some(claimed),
                ..FaultSpec::default()
            },
        );
        emulator.reset_traffic();
        let (records, c) = drain("capped", client.dast_results(&env.scans[0].id, &env.id)).await;
        assert_eq!(c.is_complete(), complete, "claimed {claimed}: {c:?}");
        assert_eq!(records, 21, "claimed {claimed}");
        assert_eq!(
            emulator.traffic().requests_to(Endpoint::DastResults),
            claimed / 7 + 1,
            "claimed {claimed}"
        );
    }
}

#[tokio::test]
async fn a_total_that_moves_during_paging_is_reported_not_hidden() {
    let emulator = emulator(TenantShape {
        projects: 1,
        project_results: vec![35],
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.results_page_size = 10;
    let client = client(s, &api_key(&emulator));
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            total_drift: 3,
            ..FaultSpec::default()
        },
    );
    let (_, pager) = pull_results(&client, &scan).await;
    let c = pager.completeness();
    assert!(!c.is_complete());
    assert!(
        c.problem()
            .unwrap()
            .contains("total changed during paging (first 35"),
        "{:?}",
        c.problem()
    );
}

#[tokio::test]
async fn a_server_that_stops_short_leaves_the_item_incomplete() {
    let emulator = emulator(TenantShape {
        projects: 30,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.projects_page_size = 10;
    let client = client(s, &api_key(&emulator));
    // The total grows by 5 after the first page: the server claims 35 and 40 but holds 30.
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            total_drift: 5,
            ..FaultSpec::default()
        },
    );
    let listing = client.projects().await.unwrap();
    assert_eq!(listing.items.len(), 30);
    assert!(!listing.completeness.is_complete());
}

#[tokio::test]
async fn projects_page_completely_and_malformed_records_are_listed_not_dropped() {
    let emulator = emulator(TenantShape {
        projects: 57,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.projects_page_size = 20;
    let client = client(s, &api_key(&emulator));
    let listing = client.projects().await.unwrap();
    assert_every_project_once(&emulator, &listing, "20 a page");
    assert_eq!(listing.completeness.pages, 3);

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            malformed_rate: 1.0,
            max: Some(1),
            ..FaultSpec::default()
        },
    );
    let listing = client.projects().await.unwrap();
    assert_eq!(listing.items.len(), 56);
    assert_eq!(listing.malformed.len(), 1);
    assert!(
        listing.malformed[0].starts_with("project record 10: invalid type"),
        "{}",
        listing.malformed[0]
    );
    assert!(
        listing.completeness.is_complete(),
        "every record arrived; one is unusable and reported"
    );
}

/// An emulator of 57 projects (`configure` sets what else differs) and a client that lists them
/// 10 a page, `concurrency` requests at once.
async fn fifty_seven_projects(
    configure: impl FnOnce(&mut EmulatorConfig),
    concurrency: usize,
) -> (Emulator, CxOneClient) {
    let mut config = EmulatorConfig {
        shape: TenantShape {
            projects: 57,
            ..TenantShape::default()
        },
        ..EmulatorConfig::default()
    };
    configure(&mut config);
    let emulator = emulator_with(config).await;
    let mut s = settings(&emulator);
    s.projects_page_size = 10;
    s.concurrency = concurrency;
    let client = client(s, &api_key(&emulator));
    (emulator, client)
}

/// The ids of the projects listed, in order.
fn ids_of(listing: &Listing<Project>) -> Vec<String> {
    listing.items.iter().map(|p| p.id.clone()).collect()
}

/// Every project of the tenant listed once, in order, and the listing complete.
fn assert_every_project_once(emulator: &Emulator, listing: &Listing<Project>, case: &str) {
    assert_eq!(ids_of(listing), emulator.expected().project_ids(), "{case}");
    assert!(listing.completeness.is_complete(), "{case}");
    assert_eq!(
        listing.completeness.duplicates, 0,
        "{case}: no page read twice"
    );
}

/// 57 projects at 10 a page (or 7, where the server caps it): the first page alone, then the
/// rest together; each page asked for once, in order, none left unread. With a concurrency of
/// one, one after another.
#[tokio::test]
async fn projects_after_the_first_page_are_asked_for_together_at_the_page_size_served() {
    for (cap, concurrency, pages) in [(None, 8, 6), (Some(7), 8, 9), (Some(7), 1, 9)] {
        let (emulator, client) = fifty_seven_projects(|_| {}, concurrency).await;
        emulator.set_fault(
            Endpoint::Projects,
            FaultSpec {
                latency_ms: 50,
                page_cap: cap,
                ..FaultSpec::default()
            },
        );
        emulator.reset_traffic();
        let listing = client.projects().await.unwrap();
        let case = format!("cap {cap:?}, concurrency {concurrency}");
        assert_every_project_once(&emulator, &listing, &case);
        assert_eq!(listing.completeness.pages, pages, "{case}");
        let traffic = emulator.traffic();
        assert_eq!(
            traffic.requests_to(Endpoint::Projects),
            u64::from(pages),
            "{case}"
        );
        if concurrency == 1 {
            assert_eq!(traffic.peak_in_flight, 1, "{case}");
        } else {
            assert!(
                traffic.peak_in_flight >= 2,
                "{case}: pages after the first asked for together, {} at most",
                traffic.peak_in_flight
            );
        }
    }
}

/// A page one project short in the middle: the pages asked for beyond it were asked at offsets
/// one too far, and are dropped unused, not waited for, even one the server refuses after ten
/// seconds; the listing goes on from where that page ended.
#[tokio::test]
async fn a_page_short_in_the_middle_of_the_projects_leaves_none_out() {
    let (emulator, client) = fifty_seven_projects(|c| c.projects.short_page_at = Some(10), 8).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            latency_ms: 10_000,
            forbidden_rate: 1.0,
            only_matching: Some("offset=20".into()),
            ..FaultSpec::default()
        },
    );
    emulator.reset_traffic();
    let started = std::time::Instant::now();
    let listing = client.projects().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "the page at offset 20 was waited for: {took:?}"
    );
    assert_every_project_once(&emulator, &listing, "a page short at offset 10");
    // 0; then 10 (9 projects), with 20 (slow, then refused), 30, 40 and 50 asked beside it,
    // dropped and cancelled; then 19, 29, 39 and 49.
    assert_eq!(listing.completeness.pages, 6);
    let requests = emulator.traffic().requests_to(Endpoint::Projects);
    assert!((6..=10).contains(&requests), "{requests} requests");
}

/// A server that answers every page as the first, whatever position it asks for, and claims
/// `claimed_total` records (the true total where `None`).
fn stuck_at_the_first_page(claimed_total: Option<u64>) -> FaultSpec {
    FaultSpec {
        position_ignored: true,
        claimed_total,
        ..FaultSpec::default()
    }
}

/// What a pager stalled on its second page says: its distinct records, the total claimed, and
/// why it stopped.
fn stalled_at_page_two(unique: u64, reported: u64) -> String {
    format!(
        "received {unique} distinct records but the server reported {reported}: page 2 held only records already received, so the server is not moving through the list (it ignores the offset or page asked for), and paging stopped there; the next run pulls it again"
    )
}

/// Waits at most 30 s for a listing: one that pages on towards a claimed total never ends.
async fn within_30_s<T>(case: &str, listing: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), listing)
        .await
        .unwrap_or_else(|_| panic!("{case}: the listing never ended"))
}

/// A server that answers every page from the first project, whatever the offset, even one that
/// claims a thousand million projects: the listing ends at the first page that brings no project
/// not seen before (never pages on towards the claim), keeps the projects it saw, and says it is
/// short, at a concurrency of one as at eight.
#[tokio::test]
async fn a_server_ignoring_the_offset_ends_the_listing_short_and_says_so() {
    for (claimed_total, concurrency) in [
        (None, 1),
        (None, 8),
        (Some(1_000_000_000), 1),
        (Some(1_000_000_000), 8),
    ] {
        let case = format!("claimed total {claimed_total:?}, concurrency {concurrency}");
        let (emulator, client) = fifty_seven_projects(|_| {}, concurrency).await;
        emulator.set_fault(Endpoint::Projects, stuck_at_the_first_page(claimed_total));
        emulator.reset_traffic();
        let listing = within_30_s(&case, client.projects()).await.unwrap();
        let first_ten = &emulator.expected().project_ids()[..10];
        assert_eq!(ids_of(&listing), first_ten, "{case}");
        let expected = claimed_total.unwrap_or(57);
        assert_eq!(
            listing.completeness.problem(),
            Some(stalled_at_page_two(10, expected)),
            "{case}"
        );
        // The first page, then the pages asked for beside the first repeat.
        let requests = emulator.traffic().requests_to(Endpoint::Projects);
        assert!(
            (2..=1 + concurrency as u64).contains(&requests),
            "{case}: {requests} requests"
        );
    }
}

/// Every other pager, against a server that answers every page as the first and claims a
/// thousand million records: each stops at the page that repeats the first, hands each record
/// over once, and says the list is short. The search for an environment's latest completed scan
/// fails, naming the repeat, where the first page has none: the scans after it are unknown, and
/// "no completed scan" would be a claim about them.
#[tokio::test]
async fn every_pager_stops_at_a_page_that_brings_nothing_new() {
    const CLAIM: u64 = 1_000_000_000;
    let emulator = emulator(TenantShape {
        projects: 1,
        project_results: vec![35],
        dast_environments: 23,
        dast_scans_per_environment: 3,
        environment_results: vec![35],
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    (s.results_page_size, s.dast_page_size) = (10, 10);
    let pager_client = client(s.clone(), &api_key(&emulator));
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    for endpoint in [
        Endpoint::Results,
        Endpoint::SastResults,
        Endpoint::DastEnvironments,
        Endpoint::DastResults,
    ] {
        let case = format!("{endpoint:?}");
        emulator.clear_faults();
        // The DAST scan is found before its results' pages are made to repeat.
        let dast_scan = pager_client
            .latest_completed_dast_scan(&emulator.expected().environments[0].id)
            .await
            .unwrap()
            .unwrap();
        emulator.set_fault(endpoint, stuck_at_the_first_page(Some(CLAIM)));
        emulator.reset_traffic();
        let (records, completeness) = match endpoint {
            Endpoint::Results => drain(&case, pager_client.results(&scan)).await,
            Endpoint::SastResults => drain(&case, pager_client.original_severities(&scan)).await,
            Endpoint::DastResults => {
                drain(
                    &case,
                    pager_client
                        .dast_results(&dast_scan.scan_id, &emulator.expected().environments[0].id),
                )
                .await
            }
            _ => {
                let listing = within_30_s(&case, pager_client.dast_environments())
                    .await
                    .unwrap();
                (listing.items.len() as u64, listing.completeness)
            }
        };
        assert_eq!(records, 10, "{case}: the first page's records, once each");
        assert_eq!(
            completeness.problem(),
            Some(stalled_at_page_two(10, CLAIM)),
            "{case}"
        );
        // The first page and the repeat; the severities pager asks pages ahead of the repeat
        // (the client's cap of 8), dropped unused.
        let requests = emulator.traffic().requests_to(endpoint);
        match endpoint {
            Endpoint::SastResults => {
                assert!(
                    (2..=1 + 8).contains(&requests),
                    "{case}: {requests} requests"
                )
            }
            _ => assert_eq!(requests, 2, "{case}"),
        }
    }
    // One scan a page: every fourth environment's newest scan is still running, and is all a
    // server stuck at the first page ever answers.
    emulator.clear_faults();
    s.dast_page_size = 1;
    let one_a_page = client(s, &api_key(&emulator));
    emulator.set_fault(Endpoint::DastScans, stuck_at_the_first_page(Some(CLAIM)));
    let mut failed = 0;
    for environment in &emulator.expected().environments {
        let case = format!("environment {}", environment.domain);
        emulator.reset_traffic();
        let latest = within_30_s(
            &case,
            one_a_page.latest_completed_dast_scan(&environment.id),
        )
        .await;
        let newest = environment.scans.last().unwrap();
        let requests = emulator.traffic().requests_to(Endpoint::DastScans);
        match latest {
            Ok(scan) => {
                assert_eq!(scan.unwrap().scan_id, newest.id, "{case}");
                assert_eq!(requests, 1, "{case}");
            }
            Err(error) => {
                assert_eq!(requests, 2, "{case}: the first page and its repeat");
                assert_eq!(newest.status, "Running", "{case}");
                let message = error.to_string();
                assert!(
                    message.contains("repeats scans already read (1 distinct of the 1000000000"),
                    "{case}: {message}"
                );
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 5, "environments 3, 7, 11, 15 and 19");
}

/// A server whose pages shrink to one record after the first: each list paged by item offset
/// (projects, severities before triage, DAST environments) stops at the fourth page past what its
/// total needs at the first page's size, hands over what it received once, and says why it is short.
#[tokio::test]
async fn pagers_stop_more_than_three_pages_past_what_the_total_needs_and_say_so() {
    let emulator = emulator(TenantShape {
        projects: 35,
        project_results: vec![60],
        scans_per_project: 1,
        dast_environments: 35,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    (s.projects_page_size, s.results_page_size, s.dast_page_size) = (10, 10, 10);
    let client = client(s, &api_key(&emulator));
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    for endpoint in [
        Endpoint::Projects,
        Endpoint::SastResults,
        Endpoint::DastEnvironments,
    ] {
        let case = format!("{endpoint:?}");
        emulator.clear_faults();
        let shrinking = FaultSpec {
            pages_shrink_to: Some(1),
            ..FaultSpec::default()
        };
        emulator.set_fault(endpoint, shrinking);
        emulator.reset_traffic();
        let (records, completeness) = match endpoint {
            Endpoint::Projects => {
                let listing = within_30_s(&case, client.projects()).await.unwrap();
                (listing.items.len() as u64, listing.completeness)
            }
            Endpoint::SastResults => drain(&case, client.original_severities(&scan)).await,
            _ => {
                let listing = within_30_s(&case, client.dast_environments())
                    .await
                    .unwrap();
                (listing.items.len() as u64, listing.completeness)
            }
        };
        let (total, needed) = (completeness.expected, completeness.expected.div_ceil(10));
        assert_eq!(needed, 4, "{case}: {total} records");
        // The first page of ten, then one record a page up to the fourth page past the total's need.
        let pages = needed + 4;
        assert_eq!(u64::from(completeness.pages), pages, "{case}");
        assert_eq!(records, 10 + pages - 1, "{case}: each record once");
        assert_eq!(
            completeness.problem(),
            Some(format!(
                "received {records} distinct records but the server reported {total}: paging stopped after page {pages}, more than three pages past what the total needs at the largest page the server sent, so the server is not paging as it began (its pages shrank, or it repeats records); the next run pulls it again"
            )),
            "{case}"
        );
        // The projects and severities pagers ask pages ahead (the client's cap of 8), dropped
        // where a page came shorter than asked.
        let requests = emulator.traffic().requests_to(endpoint);
        match endpoint {
            Endpoint::DastEnvironments => assert_eq!(requests, pages, "{case}"),
            _ => assert!(
                (pages..=1 + 8 * (pages - 1)).contains(&requests),
                "{case}: {requests} requests"
            ),
        }
    }
}

/// A server that caps the DAST environment window at 5 where 20 are asked: the listing counts the
/// pages the total needs at the size the server sends, not at the size it asked, and lists every
/// environment.
#[tokio::test]
async fn environments_are_listed_whole_from_a_server_that_caps_the_window() {
    let emulator = emulator(TenantShape {
        projects: 1,
        dast_environments: 35,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.dast_page_size = 20;
    let client = client(s, &api_key(&emulator));
    let capped = FaultSpec {
        page_cap: Some(5),
        ..FaultSpec::default()
    };
    emulator.set_fault(Endpoint::DastEnvironments, capped);
    let listing = client.dast_environments().await.unwrap();
    let c = &listing.completeness;
    assert!(c.is_complete(), "{:?}", c.problem());
    // At 20 a window the total would need 2 pages; at the 5 sent it needs 7, more than 2 + 3.
    assert_eq!((listing.items.len(), c.pages), (35, 7));
}

/// A server that caps the size of every page of severities before triage: the pager counts the
/// pages the total needs at the size the server sends, not at the size it asked, and reads every
/// record.
#[tokio::test]
async fn severities_are_read_whole_from_a_server_that_caps_the_page_size() {
    let emulator = emulator_with(EmulatorConfig {
        shape: TenantShape {
            projects: 1,
            project_results: vec![200],
            scans_per_project: 1,
            ..TenantShape::default()
        },
        faults: vec![(
            Endpoint::SastResults,
            FaultSpec {
                page_cap: Some(10),
                ..FaultSpec::default()
            },
        )],
        ..EmulatorConfig::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.results_page_size = 100;
    let client = client(s, &api_key(&emulator));
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let (records, completeness) = drain("capped", client.original_severities(&scan)).await;
    assert!(completeness.is_complete(), "{:?}", completeness.problem());
    // At 100 a page the total would need 2 pages; at the 10 sent it needs more than 2 + 3.
    assert!(completeness.expected > 50, "{completeness:?}");
    assert_eq!(records, completeness.expected);
    // And the page after the last where that is full.
    let past_the_end = u64::from(completeness.expected.is_multiple_of(10));
    assert_eq!(
        u64::from(completeness.pages),
        completeness.expected.div_ceil(10) + past_the_end
    );
}

/// Every page of a pager, counting the records handed over, and its verdict.
async fn drain(case: &str, mut pager: impl PageSource) -> (u64, Completeness) {
    let records = within_30_s(case, async {
        let mut records = 0;
        while let Some(page) = pager.next_page().await.unwrap() {
            records += page.records as u64;
        }
        records
    })
    .await;
    (records, pager.completeness().clone())
}

#[tokio::test]
async fn last_scans_come_in_batches_with_the_limit_set() {
    let emulator = emulator(TenantShape {
        projects: 45,
        scans_per_project: 3,
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.last_scan_batch = 25;
    let client = client(s, &api_key(&emulator));
    let expected = emulator.expected().projects;
    let ids = emulator.expected().project_ids();
    emulator.set_fault(
        Endpoint::LastScan,
        FaultSpec {
            latency_ms: 50,
            ..FaultSpec::default()
        },
    );
    emulator.reset_traffic();
    let scans = client
        .last_scans(&ids, &LastScanQuery::completed_sast())
        .await
        .unwrap()
        .scans;
    let traffic = emulator.traffic();
    assert_eq!(
        traffic.requests_to(Endpoint::LastScan),
        4,
        "45 projects in batches of 25, each asked again for its projects the answer left out (those without a completed SAST scan)"
    );
    assert!(
        traffic.peak_in_flight >= 2,
        "the batches asked for together, {} at most",
        traffic.peak_in_flight
    );
    for p in &expected {
        assert_eq!(
            scans.get(&p.id).map(|s| s.id.clone()),
            p.latest_completed_sast_scan,
            "{}",
            p.name
        );
    }
    assert!(scans.len() < 45, "projects without SAST have no entry");
}

/// The error of `last_scans` from a server whose `endpoint` ignores its filters.
async fn last_scans_refused(
    emulator: &Emulator,
    endpoint: Endpoint,
    client: &CxOneClient,
    ids: &[String],
    query: &LastScanQuery,
) -> String {
    emulator.set_fault(
        endpoint,
        FaultSpec {
            filters_ignored: true,
            ..FaultSpec::default()
        },
    );
    client.last_scans(ids, query).await.unwrap_err().to_string()
}

/// A server that ignores `last-scan`'s filters answers scans that are not what was asked (one
/// still running, one that ran another engine): the call fails, naming the project and the scan,
/// rather than the plan take such a scan for a completed SAST one, pull it whole and close every
/// finding it does not hold.
#[tokio::test]
async fn a_last_scan_answer_that_ignores_the_filters_is_refused() {
    let emulator = emulator(TenantShape {
        projects: 20,
        scans_per_project: 4,
        ..TenantShape::default()
    })
    .await;
    let client = client(settings(&emulator), &api_key(&emulator));
    let ids = emulator.expected().project_ids();
    let query = LastScanQuery::completed_sast();
    let honest = client.last_scans(&ids, &query).await.unwrap().scans;
    assert!(!honest.is_empty());
    let error = last_scans_refused(&emulator, Endpoint::LastScan, &client, &ids, &query).await;
    assert!(
        error.contains("the server ignores the query's filters")
            && (error.contains("where a Completed scan was asked for")
                || error.contains("not the sast engine asked for")),
        "{error}"
    );
}

/// A `last-scan` answer that does not list the engines a scan ran is checked against the scan's
/// record (`/api/scans/{id}`, one request a scan that lists none): where the server keeps to the
/// `engine` asked, the scans are taken as before; where it ignores it, a KICS-only re-scan is
/// refused, rather than taken for the project's SAST scan and every SAST finding closed; and a
/// record of another scan than asked is refused.
#[tokio::test]
async fn a_last_scan_answer_without_engines_is_checked_against_the_scans_record() {
    let emulator = emulator(TenantShape {
        projects: 4,
        scans_per_project: 2,
        rescan_engine: Some(cxone_emulator::ResultType::Kics),
        last_scan_without_engines: true,
        ..TenantShape::default()
    })
    .await;
    let client = client(settings(&emulator), &api_key(&emulator));
    let ids = emulator.expected().project_ids();
    let query = LastScanQuery::completed_sast();
    emulator.reset_traffic();
    let honest = client.last_scans(&ids, &query).await.unwrap().scans;
    let want: HashSet<(String, String)> = emulator
        .expected()
        .projects
        .into_iter()
        .filter_map(|p| Some((p.id, p.latest_completed_sast_scan?)))
        .collect();
    let got: HashSet<(String, String)> = honest
        .iter()
        .map(|(project, scan)| (project.clone(), scan.id.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(
        honest
            .values()
            .all(|scan| scan.engines.contains(&"sast".to_string()))
    );
    assert_eq!(
        emulator.traffic().requests_to(Endpoint::Scans),
        want.len() as u64,
        "one record asked for each scan"
    );
    let error = last_scans_refused(&emulator, Endpoint::LastScan, &client, &ids, &query).await;
    let rescanned = &emulator.expected().projects[1];
    assert!(
        error.contains(&format!(
            "project {}: scan {} ran kics, not the sast engine asked for",
            rescanned.id, rescanned.scans[1].id
        )),
        "{error}"
    );
    // A record of another scan than asked (a server ignoring the id in the path) is refused.
    emulator.clear_faults();
    let error = last_scans_refused(&emulator, Endpoint::Scans, &client, &ids, &query).await;
    let first = &emulator.expected().projects[0].scans[0].id;
    assert!(
        error.contains(&format!("the answer is the record of scan {first}")),
        "{error}"
    );
}

/// A server that ignores `project-ids` and answers at most 20 projects: asked again for the 10
/// its first answer left out of 30, it answers about projects not asked for. The call fails,
/// rather than those 10 read as projects without a scan (never pulled, the run complete).
#[tokio::test]
async fn last_scans_an_answer_about_projects_not_asked_for_is_refused() {
    let emulator = emulator(TenantShape {
        projects: 30,
        scans_per_project: 1,
        ..TenantShape::default()
    })
    .await;
    let client = client(settings(&emulator), &api_key(&emulator));
    let ids = emulator.expected().project_ids();
    emulator.set_fault(
        Endpoint::LastScan,
        FaultSpec {
            filters_ignored: true,
            page_cap: Some(20),
            ..FaultSpec::default()
        },
    );
    let error = client
        .last_scans(
            &ids,
            &LastScanQuery {
                scan_status: None,
                ..LastScanQuery::completed(None)
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("which was not asked for: the server ignores `project-ids`"),
        "{error}"
    );
}

/// A server that answers at most 20 projects however many are asked (the documented default
/// page): the ids its answer left out are asked again, so every project's last scan is found.
/// Before, the 10 it left out of a batch of 30 read as projects without a scan: never pulled,
/// and the run complete.
#[tokio::test]
async fn last_scans_a_capped_answer_left_out_are_asked_again() {
    let emulator = emulator(TenantShape {
        projects: 30,
        scans_per_project: 1,
        ..TenantShape::default()
    })
    .await;
    let client = client(settings(&emulator), &api_key(&emulator));
    let ids = emulator.expected().project_ids();
    emulator.set_fault(
        Endpoint::LastScan,
        FaultSpec {
            page_cap: Some(20),
            ..FaultSpec::default()
        },
    );
    emulator.reset_traffic();
    let scans = client
        .last_scans(
            &ids,
            &LastScanQuery {
                scan_status: None,
                ..LastScanQuery::completed(None)
            },
        )
        .await
        .unwrap()
        .scans;
    assert_eq!(scans.len(), 30, "every project's last scan (each has one)");
    assert_eq!(
        emulator.traffic().requests_to(Endpoint::LastScan),
        2,
        "20, then the 10 left out"
    );
}

#[tokio::test]
async fn dast_environments_scans_and_results_page_completely() {
    let emulator = emulator(TenantShape {
        dast_environments: 23,
        dast_scans_per_environment: 3,
        environment_results: vec![0, 1, 99, 100, 101, 250],
        ..TenantShape::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.dast_page_size = 10;
    let client = client(s, &api_key(&emulator));
    let environments = client.dast_environments().await.unwrap();
    assert_eq!(environments.items.len(), 23);
    assert!(environments.completeness.is_complete());
    let expected = emulator.expected().environments;
    for env in &expected {
        let scan = client.latest_completed_dast_scan(&env.id).await.unwrap();
        assert_eq!(
            scan.as_ref().map(|s| s.scan_id.clone()),
            env.latest_completed_scan,
            "{}",
            env.domain
        );
        let Some(scan) = scan else { continue };
        let mut pager = client.dast_results(&scan.scan_id, &env.id);
        let mut records = 0;
        while let Some(page) = pager.next_page().await.unwrap() {
            records += page.records as u64;
        }
        let want = env
            .scans
            .iter()
            .find(|s| s.id == scan.scan_id)
            .unwrap()
            .results;
        assert_eq!(records, want);
        assert!(
            pager.completeness().is_complete(),
            "{:?}",
            pager.completeness().problem()
        );
    }
}

/// A DAST scan id goes into the results URL as one path segment: a `/` in it is escaped (the
/// request stays on the results endpoint: the emulator knows no such scan), and an id that is a
/// dot segment, which a URL drops or resolves, is refused before any request.
#[tokio::test]
async fn a_dast_scan_id_is_one_path_segment_and_a_dot_segment_is_refused() {
    let emulator = emulator(TenantShape::default()).await;
    let client = client(settings(&emulator), &api_key(&emulator));
    for id in ["..", ".", ""] {
        emulator.reset_traffic();
        let refused = client.dast_results(id, "e").next_page().await.unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&format!(
                "the DAST scan id {id:?} cannot name a URL path segment"
            )),
            "{message}"
        );
        assert_eq!(emulator.traffic().requests_to(Endpoint::DastResults), 0);
    }
    emulator.reset_traffic();
    let missing = client
        .dast_results("a/b", "e")
        .next_page()
        .await
        .unwrap_err();
    assert!(matches!(missing, VendorError::NotFound { .. }), "{missing}");
    assert_eq!(emulator.traffic().requests_to(Endpoint::DastResults), 1);
}

/// Once the offset's meaning is known, the pages to come are requested ahead (a lone pager: the
/// client's cap of 8), still handed over in order, with no request past the last page; a page
/// fetched ahead that needs retries is retried and counted in the unit of work that asked for it.
#[tokio::test(flavor = "multi_thread")]
async fn pages_are_fetched_ahead_in_order_within_bounds_and_counted() {
    const ANSWER_MS: u64 = 250;
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let emulator = emulator_with(EmulatorConfig {
            shape: TenantShape {
                projects: 1,
                project_results: vec![10 * LIMIT],
                scans_per_project: 1,
                ..TenantShape::default()
            },
            results_offset: mode,
            ..EmulatorConfig::default()
        })
        .await;
        let mut s = settings(&emulator);
        s.results_page_size = LIMIT as u32;
        let client = client(s, &api_key(&emulator));
        let scan = emulator.expected().projects[0]
            .latest_completed_sast_scan
            .clone()
            .unwrap();
        // The fifth page's answers are slow and its first two are 503s. The item-offset server
        // needs one probe more to be told apart (offset=1), so its fifth page is page 5.
        let (fifth, fifth_number) = match mode {
            OffsetMode::Page => ("offset=4", 4),
            OffsetMode::Item => ("offset=41", 5),
        };
        emulator.set_fault(
            Endpoint::Results,
            FaultSpec {
                latency_ms: ANSWER_MS,
                ..FaultSpec::default()
            },
        );
        emulator.reset_traffic();
        let counters = std::sync::Arc::new(cxone_etm::cxone::Counters::default());
        let (numbers, ids, requests_when_fifth_in, pager) =
            cxone_etm::cxone::counted(counters.clone(), async {
                let mut pager = client.results(&scan);
                let (mut numbers, mut ids) = (Vec::new(), Vec::new());
                let mut faulted = false;
                let mut requests_when_fifth_in = 0;
                while let Some(page) = pager.next_page().await.unwrap() {
                    if !faulted {
                        // Set once the first page is in: the fault is for a page fetched ahead.
                        emulator.set_fault(
                            Endpoint::Results,
                            FaultSpec {
                                latency_ms: ANSWER_MS,
                                server_error_rate: 1.0,
                                max: Some(2),
                                only_matching: Some(fifth.into()),
                                ..FaultSpec::default()
                            },
                        );
                        faulted = true;
                    }
                    if page.number == fifth_number {
                        requests_when_fifth_in = emulator.traffic().requests_to(Endpoint::Results);
                    }
                    numbers.push(page.number);
                    let body: Value = serde_json::from_slice(&page.body).unwrap();
                    ids.extend(
                        body["results"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| format!("{}|{}|{}", r["type"], r["id"], r["alternateId"])),
                    );
                }
                (numbers, ids, requests_when_fifth_in, pager)
            })
            .await;
        assert!(pager.completeness().is_complete(), "{mode:?}");
        // By page index, ten full pages and the one after the last (empty: the total is true);
        // by item offset, the second page starts at 1, and the eleventh, the last, is short.
        let pages = 11;
        assert_eq!(
            numbers,
            (0..pages).collect::<Vec<u32>>(),
            "{mode:?}: in order"
        );
        assert_eq!(ids.iter().collect::<HashSet<_>>().len() as u64, 10 * LIMIT);
        let traffic = emulator.traffic();
        let fired = traffic.faults_fired.server_errors.get("results").copied();
        assert_eq!(fired, Some(2), "{mode:?}: the fifth page failed twice");
        // Every page once, two retries, nothing further past the end.
        let minimum = u64::from(pages) + 2;
        assert_eq!(traffic.requests_to(Endpoint::Results), minimum, "{mode:?}");
        // Read ahead: while the fifth page took its three slow answers, pages after it were
        // already asked for (one at a time, the count would be the pages up to it and the two
        // retries); never more in flight than the lone pager's eight.
        let one_at_a_time = u64::from(fifth_number) + 1 + 2;
        assert!(
            requests_when_fifth_in > one_at_a_time,
            "{mode:?}: {requests_when_fifth_in} requests when the fifth page was handed over"
        );
        assert!(
            traffic.peak_in_flight <= 8,
            "{mode:?}: {} requests in flight at most",
            traffic.peak_in_flight
        );
        // The unit of work's counters hold every page request and the token request.
        let seen = counters.snapshot();
        assert_eq!(
            (seen.requests, seen.retries),
            (minimum + 1, 2),
            "{mode:?}: requests made ahead count for the unit of work: {seen:?}"
        );
    }
}

/// Pagers of one client share its concurrency cap: while another pager of the client exists, a
/// pager requests only its half of the cap ahead (4 of 8); once the other is gone, the whole
/// cap; told to stop reading ahead (its pull is about to stop), one page at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_pager_reads_ahead_only_its_share_of_the_cap() {
    let emulator = emulator_with(EmulatorConfig {
        shape: TenantShape {
            projects: 1,
            project_results: vec![12 * LIMIT],
            scans_per_project: 1,
            ..TenantShape::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut s = settings(&emulator);
    s.results_page_size = LIMIT as u32;
    assert_eq!(s.concurrency, 8, "the default cap");
    let client = client(s, &api_key(&emulator));
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    // Pages 0 and 1 tell the offset's meaning (page indexes here); page 2 is the first that can
    // be requested ahead. It answers slowly, so by the time it is handed over every request
    // started beside it has arrived, and the count then says how many were started, whatever
    // the machine's load: pages 0 and 1, page 2 and the pages after it requested ahead, and
    // perhaps the one request started to top the read-ahead up again once page 2 is taken.
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            latency_ms: 1_500,
            only_matching: Some("offset=2".into()),
            ..FaultSpec::default()
        },
    );
    let pull = |client: cxone_etm::cxone::CxOneClient, ahead: bool| {
        let (scan, emulator) = (scan.clone(), &emulator);
        async move {
            emulator.reset_traffic();
            let mut pager = client.results(&scan);
            if !ahead {
                pager.stop_reading_ahead();
            }
            let (mut records, mut requests_when_slow_page_in) = (0, 0);
            while let Some(page) = pager.next_page().await.unwrap() {
                if page.number == 2 {
                    requests_when_slow_page_in = emulator.traffic().requests_to(Endpoint::Results);
                }
                records += page.records as u64;
            }
            assert!(pager.completeness().is_complete());
            assert_eq!(records, 12 * LIMIT);
            (
                requests_when_slow_page_in,
                emulator.traffic().peak_in_flight,
            )
        }
    };
    let other = client.results(&scan);
    let (shared, shared_peak) = pull(client.clone(), true).await;
    assert!(
        (6..=7).contains(&shared) && shared_peak <= 4,
        "beside another pager, 4 ahead: {shared} requests made when page 2 came, {shared_peak} in flight at most"
    );
    drop(other);
    let (alone, alone_peak) = pull(client.clone(), true).await;
    assert!(
        (10..=11).contains(&alone) && alone_peak <= 8,
        "alone, 8 ahead: {alone} requests made when page 2 came, {alone_peak} in flight at most"
    );
    let (stopped, stopped_peak) = pull(client.clone(), false).await;
    assert_eq!(
        (stopped, stopped_peak),
        (3, 1),
        "reading ahead stopped: one request at a time"
    );
}

/// A server (a vendor deployment, not the emulator) whose `last-scan` answer writes the status
/// with a trailing blank, or keys the asked project's UUID in upper case: the scan is taken, as
/// every other status and id is read, not the whole plan refused as a server ignoring its filters.
#[tokio::test]
async fn a_last_scan_answer_in_other_letter_case_or_with_blanks_is_the_scan_asked() {
    const ASKED: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let answers = [
        format!(r#"{{"{ASKED}":{{"id":"s1","status":"Completed ","branch":"main"}}}}"#),
        format!(
            r#"{{"{}":{{"id":"s1","status":"Completed","branch":"main"}}}}"#,
            ASKED.to_uppercase()
        ),
    ];
    let ask = |answer: String| async move {
        let server = routing_server(answer).await;
        let mut settings = cxone_etm::cxone::VendorSettings::for_custom(&server, &server, "acme");
        settings.allow_insecure_local = true;
        settings.retry.max_retries = 0;
        let credential = cxone_etm::secret::Credential::OAuthClient {
            client_id: "etm".into(),
            client_secret: "s".to_string().into(),
        };
        let client = CxOneClient::new(
            settings
                .validate(cxone_etm::cxone::CaBundleAt::Named)
                .unwrap(),
            &credential,
        )
        .unwrap();
        client
            .last_scans(&[ASKED.to_string()], &LastScanQuery::completed(None))
            .await
    };
    for answer in answers {
        let scans = ask(answer.clone())
            .await
            .unwrap_or_else(|e| panic!("{answer}: {e}"))
            .scans;
        assert_eq!(
            scans.get(ASKED).map(|s| s.id.as_str()),
            Some("s1"),
            "{answer}"
        );
    }
    // Both cases at once: which scan is the project's would be a guess.
    let both = format!(
        r#"{{"{ASKED}":{{"id":"s1","status":"Completed"}},"{}":{{"id":"s2","status":"Completed"}}}}"#,
        ASKED.to_uppercase()
    );
    let error = ask(both).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "names project {ASKED} twice, in different letter case"
        )),
        "{error}"
    );
}

/// A server answering the token request with a token, and every other request with `answer`.
async fn routing_server(answer: String) -> String {
    scripted_server(move |request| {
        let body = match request.contains("/protocol/openid-connect/token") {
            true => r#"{"access_token":"t","expires_in":1800}"#,
            false => &answer,
        };
        http_response("200 OK", "application/json", body)
    })
    .await
}
