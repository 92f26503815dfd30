//! Full SAST and DAST runs against the emulator under each fault a live tenant produces. For every
//! scenario: each result the emulator holds ends in exactly one committed batch (or the rejected
//! list), or the run names precisely which items are incomplete and why, commits nothing for them,
//! and its commit marker does not claim completeness. Each scenario writes its figures to
//! `target/tmp/reliability/<scenario>.json`; `scripts/reliability-table.py` renders them for
//! docs/reliability.md.

use std::collections::BTreeMap;

use crate::common::reliability::*;
use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Emulator, Endpoint, FaultSpec, RetryAfter, TenantShape, TrafficSnapshot};
use cxone_etm::ConnectorKind;
use cxone_etm::mapping::Lifecycle;
use cxone_etm::pipeline::Manifest;
use serde_json::{Value, json};

/// Runs SAST and DAST under the faults `setup` sets, checks both, and records the figures.
async fn scenario(
    name: &str,
    injected: &str,
    setup: impl Fn(&Emulator),
    failing: impl Fn(&Emulator) -> BTreeMap<String, &'static str>,
) -> (Vec<Value>, TrafficSnapshot) {
    let emulator = emulator(shape()).await;
    setup(&emulator);
    let (store, dir) = temp_store(&format!("reliability-{name}"));
    let mut runs = Vec::new();
    for (kind, credential) in [
        (ConnectorKind::Sast, api_key(&emulator)),
        (ConnectorKind::Dast, oauth(&emulator)),
    ] {
        let id = format!("{name}-{kind:?}").to_lowercase();
        let tokens_before = emulator.traffic().requests_to(Endpoint::Token);
        let started = std::time::Instant::now();
        let summary = run(&store, &tuned(&emulator, &id, kind), credential)
            .await
            .unwrap_or_else(|e| panic!("{name} {kind:?}: {e:?}"));
        let mut row = check_run(
            &store,
            &emulator,
            kind,
            &summary.manifest,
            &failing(&emulator),
        )
        .await;
        row["seconds"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        row["tokenRequests"] =
            json!(emulator.traffic().requests_to(Endpoint::Token) - tokens_before);
        runs.push(row);
    }
    record_figures(name, injected, &runs, &emulator);
    std::fs::remove_dir_all(dir).ok();
    (runs, emulator.traffic())
}

fn none(_: &Emulator) -> BTreeMap<String, &'static str> {
    BTreeMap::new()
}

fn everywhere(emulator: &Emulator, spec: FaultSpec) {
    for endpoint in Endpoint::ALL {
        emulator.set_fault(endpoint, spec.clone());
    }
}

#[tokio::test]
async fn storms_of_429_with_retry_after_in_seconds() {
    let (_, traffic) = scenario(
        "429-retry-after-seconds",
        "30% of requests to every endpoint answered 429 with Retry-After: 1",
        |e| {
            everywhere(
                e,
                FaultSpec {
                    rate_limit_rate: 0.3,
                    retry_after: RetryAfter::Seconds(1),
                    ..FaultSpec::default()
                },
            )
        },
        none,
    )
    .await;
    let fired: u64 = traffic.faults_fired.rate_limited.values().sum();
    assert!(fired >= 10, "the storm fired: {fired} answers 429");
}

#[tokio::test]
async fn storms_of_429_with_retry_after_as_an_http_date() {
    let (_, traffic) = scenario(
        "429-retry-after-date",
        "30% of requests to every endpoint answered 429 with Retry-After as an HTTP-date 1 s ahead",
        |e| {
            everywhere(
                e,
                FaultSpec {
                    rate_limit_rate: 0.3,
                    retry_after: RetryAfter::HttpDate(1),
                    ..FaultSpec::default()
                },
            )
        },
        none,
    )
    .await;
    let fired: u64 = traffic.faults_fired.rate_limited.values().sum();
    assert!(fired >= 10, "the storm fired: {fired} answers 429");
}

#[tokio::test]
async fn storms_of_429_without_retry_after() {
    let (_, traffic) = scenario(
        "429-no-retry-after",
        "30% of requests to every endpoint answered 429 without Retry-After",
        |e| {
            everywhere(
                e,
                FaultSpec {
                    rate_limit_rate: 0.3,
                    ..FaultSpec::default()
                },
            )
        },
        none,
    )
    .await;
    let fired: u64 = traffic.faults_fired.rate_limited.values().sum();
    assert!(fired >= 10, "the storm fired: {fired} answers 429");
}

#[tokio::test]
async fn steady_server_errors_resets_and_jittered_latency() {
    let (_, traffic) = scenario(
        "5xx-resets-latency",
        "every endpoint: 10% 503 (HTML), 5% connections dropped, 20 ms + up to 30 ms jitter",
        |e| {
            everywhere(
                e,
                FaultSpec {
                    server_error_rate: 0.1,
                    reset_rate: 0.05,
                    latency_ms: 20,
                    jitter_ms: 30,
                    ..FaultSpec::default()
                },
            )
        },
        none,
    )
    .await;
    let fired = &traffic.faults_fired;
    let (errors, resets): (u64, u64) = (
        fired.server_errors.values().sum(),
        fired.resets.values().sum(),
    );
    // About 13 and 6 of some 130 requests (unseeded draws): together at least 5 but for about
    // one draw in 100,000.
    assert!(
        errors + resets >= 5,
        "the faults fired: {errors} 503s, {resets} connections dropped"
    );
}

#[tokio::test]
async fn tokens_that_expire_every_second_during_a_long_pull() {
    let (runs, _) = scenario(
        "tokens-expire",
        "access tokens stop working 1 s after issue (their exp claims 30 min); SAST results pages take 150 ms, DAST 600 ms",
        |e| {
            e.set_fault(
                Endpoint::Token,
                FaultSpec {
                    expire_tokens_after_secs: Some(1),
                    ..FaultSpec::default()
                },
            );
            for (endpoint, latency_ms) in [(Endpoint::Results, 150), (Endpoint::DastResults, 600)] {
                e.set_fault(
                    endpoint,
                    FaultSpec {
                        latency_ms,
                        ..FaultSpec::default()
                    },
                );
            }
        },
        none,
    )
    .await;
    // Each pull, SAST and DAST alike, must outlive its first token and renew it on the way.
    for row in &runs {
        let seconds = row["seconds"].as_f64().unwrap();
        let tokens = row["tokenRequests"].as_u64().unwrap();
        assert!(
            seconds > 1.5 && tokens >= 2,
            "each pull outlives its tokens and re-authenticates: {seconds} s, {tokens} token requests"
        );
    }
}

#[tokio::test]
async fn tokens_that_die_during_every_rate_limit_wait() {
    let (runs, traffic) = scenario(
        "tokens-die-in-waits",
        "access tokens stop working 1 s after issue; 30% of results pages answer 429 with Retry-After: 2 (up to 6 per endpoint)",
        |e| {
            e.set_fault(
                Endpoint::Token,
                FaultSpec {
                    expire_tokens_after_secs: Some(1),
                    ..FaultSpec::default()
                },
            );
            for endpoint in [Endpoint::Results, Endpoint::DastResults] {
                e.set_fault(
                    endpoint,
                    FaultSpec {
                        rate_limit_rate: 0.3,
                        retry_after: RetryAfter::Seconds(2),
                        max: Some(6),
                        ..FaultSpec::default()
                    },
                );
            }
        },
        none,
    )
    .await;
    assert!(runs.iter().all(|r| r["complete"] == true));
    let fired: u64 = traffic.faults_fired.rate_limited.values().sum();
    let tokens = traffic.requests_to(Endpoint::Token);
    assert!(
        fired >= 1 && tokens > 2,
        "the waits outlived the first two tokens (one per run) and new ones were taken: {fired} waits, {tokens} token requests"
    );
}

#[tokio::test]
async fn truncated_bodies_and_malformed_records_inside_valid_pages() {
    let (runs, traffic) = scenario(
        "truncated-malformed",
        "results and DAST results: 20% of bodies cut off halfway, 20% of pages with one record breaking the schema",
        |e| {
            for endpoint in [Endpoint::Results, Endpoint::DastResults] {
                e.set_fault(
                    endpoint,
                    FaultSpec {
                        truncate_rate: 0.2,
                        malformed_rate: 0.2,
                        ..FaultSpec::default()
                    },
                );
            }
        },
        none,
    )
    .await;
    assert!(
        runs.iter().any(|r| r["rejected"].as_u64().unwrap() > 0),
        "malformed records were rejected, not dropped: {runs:?}"
    );
    let truncated: u64 = traffic.faults_fired.truncated.values().sum();
    assert!(truncated > 0, "bodies were cut off and fetched again");
}

#[tokio::test]
async fn one_project_refused_and_one_environment_failing_for_good() {
    let refused_scan = |e: &Emulator| {
        let p = e
            .expected()
            .projects
            .into_iter()
            .find(|p| p.main_branch_sast_scan.is_some())
            .unwrap();
        (p.id, p.main_branch_sast_scan.unwrap())
    };
    let broken_environment = |e: &Emulator| e.expected().environments[1].id.clone();
    scenario(
        "one-item-refused",
        "one project's results answer 403; one environment's scans answer 503 on every attempt",
        |e| {
            e.set_fault(
                Endpoint::Results,
                FaultSpec {
                    forbidden_rate: 1.0,
                    only_matching: Some(refused_scan(e).1),
                    ..FaultSpec::default()
                },
            );
            e.set_fault(
                Endpoint::DastScans,
                FaultSpec {
                    server_error_rate: 1.0,
                    only_matching: Some(broken_environment(e)),
                    ..FaultSpec::default()
                },
            );
        },
        |e| BTreeMap::from([(refused_scan(e).0, "403"), (broken_environment(e), "503")]),
    )
    .await;
}

#[tokio::test]
async fn a_total_that_changes_during_paging() {
    scenario(
        "total-drift",
        "results and DAST results: the reported total grows by 1 on every request",
        |e| {
            for endpoint in [Endpoint::Results, Endpoint::DastResults] {
                e.set_fault(
                    endpoint,
                    FaultSpec {
                        total_drift: 1,
                        ..FaultSpec::default()
                    },
                );
            }
        },
        |e| {
            let sast = e
                .expected()
                .projects
                .into_iter()
                .filter(|p| p.main_branch_sast_scan.is_some())
                .map(|p| (p.id, "total changed"));
            let dast = e
                .expected()
                .environments
                .into_iter()
                .filter(|env| env.latest_completed_scan.is_some())
                .map(|env| (env.id, "total changed"));
            sast.chain(dast).collect()
        },
    )
    .await;
}

#[tokio::test]
async fn a_hundred_items_under_429s_never_exceed_the_request_cap() {
    let emulator = emulator(TenantShape {
        projects: 100,
        results_per_scan: 30,
        ..TenantShape::default()
    })
    .await;
    everywhere(
        &emulator,
        FaultSpec {
            rate_limit_rate: 0.2,
            latency_ms: 5,
            ..FaultSpec::default()
        },
    );
    let (store, dir) = temp_store("reliability-concurrency");
    let mut c = tuned(&emulator, "concurrency", ConnectorKind::Sast);
    c.config.item_concurrency = 20;
    c.vendor.concurrency = 4;
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    let row = check_run(
        &store,
        &emulator,
        ConnectorKind::Sast,
        &summary.manifest,
        &BTreeMap::new(),
    )
    .await;
    let traffic = emulator.traffic();
    assert!(
        traffic.peak_in_flight <= 4,
        "peak in flight {} > cap 4",
        traffic.peak_in_flight
    );
    let rate_limited: u64 = traffic.faults_fired.rate_limited.values().sum();
    assert!(rate_limited >= 10, "the storm really fired: {rate_limited}");
    record_figures(
        "concurrency",
        "100 projects, 20 items at once, request cap 4; 20% of requests to every endpoint answered 429, 5 ms latency",
        &[row],
        &emulator,
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Ids a tenant may hand out that break naive key schemes: a path separator and the ids it would
/// collapse into once replaced or escaped, a parent directory, a percent escape, non-ASCII, and two
/// ids longer than a file name may be that share their first 299 characters.
fn hostile_ids() -> Vec<String> {
    [
        "a/b",
        "a_b",
        "a~2Fb",
        "..",
        "x y%2F..%2F",
        "プロジェクト",
        &"x".repeat(300),
        &format!("{}y", "x".repeat(299)),
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn hostile_vendor_ids_each_keep_their_own_findings_across_runs() {
    let ids = hostile_ids();
    let emulator = emulator(TenantShape {
        projects: ids.len() as u32,
        dast_environments: ids.len() as u32,
        scans_per_project: 1,
        hostile_ids: ids.clone(),
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-hostile-ids");
    let mut rows = Vec::new();
    for (kind, credential) in [
        (ConnectorKind::Sast, api_key(&emulator)),
        (ConnectorKind::Dast, oauth(&emulator)),
    ] {
        let c = tuned(&emulator, &format!("hostile-{kind:?}").to_lowercase(), kind);
        let first = run(&store, &c, credential.clone()).await.unwrap();
        // Item by item against the emulator: each id its own item, every result committed once.
        let row = check_run(&store, &emulator, kind, &first.manifest, &BTreeMap::new()).await;
        let m1: Manifest = manifest(&store, &first.manifest).await;
        let listed: Vec<&str> = m1.items.iter().map(|i| i.vendor_id.as_str()).collect();
        assert_eq!(listed.len(), ids.len(), "{kind:?}: {listed:?}");
        assert!(
            ids.iter().all(|id| listed.contains(&id.as_str())),
            "{kind:?}: {listed:?}"
        );
        let keys: Vec<&str> = m1
            .items
            .iter()
            .flat_map(|i| &i.objects)
            .map(|o| o.key.as_str())
            .collect();
        let distinct: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "{kind:?}: two items wrote one object"
        );
        // The next run finds each finding where it left it: nothing new or reopened, and nothing
        // closed but what the vendor itself reports fixed.
        let second = run(&store, &c, credential).await.unwrap();
        let m2: Manifest = manifest(&store, &second.manifest).await;
        assert!(second.complete);
        let lifecycle = &m2.totals.lifecycle;
        assert_eq!(
            lifecycle.get(&Lifecycle::New),
            None,
            "{kind:?} run 2: {lifecycle:?}"
        );
        assert_eq!(
            lifecycle.get(&Lifecycle::Reopened),
            None,
            "{kind:?} run 2: {lifecycle:?}"
        );
        assert_eq!(
            lifecycle.get(&Lifecycle::Fixed).copied().unwrap_or(0),
            m2.totals.fixed,
            "{kind:?} run 2: none closed by absence: {lifecycle:?}"
        );
        assert_eq!(m2.totals.findings_out, m1.totals.findings_out);
        rows.push(row);
    }
    record_figures(
        "hostile-ids",
        "8 projects and 8 environments with the ids `a/b`, `a_b`, `a~2Fb`, `..`, `x y%2F..%2F`, `プロジェクト` and two of 300 characters sharing 299; two runs each",
        &rows,
        &emulator,
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A project whose record is larger than a Step Functions payload (3,000 tags, about 400 KiB):
/// the plan stores it beside the work list (`raw/<item>/item.json`), every work list line stays
/// small, and the transform reads it there: the run is exact and the asset keeps every tag.
/// Before, the record went into the work list whole, and on AWS its group's child could not
/// start (a child's input is limited to 256 KiB), the project failed on every run.
#[tokio::test]
async fn a_project_record_too_large_for_a_work_list_is_read_from_beside_it() {
    use cxone_etm::layout::{RunRef, item_key};
    use cxone_etm::store::ObjectStore;
    let emulator = emulator(TenantShape {
        projects: 3,
        first_project_extra_tags: 3_000,
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-large-record");
    let c = tuned(&emulator, "large-record", ConnectorKind::Sast);
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    check_run(
        &store,
        &emulator,
        ConnectorKind::Sast,
        &summary.manifest,
        &BTreeMap::new(),
    )
    .await;
    let m: Manifest = manifest(&store, &summary.manifest).await;
    let run = RunRef {
        connection_id: "large-record".into(),
        run_id: m.run_id.clone(),
    };
    let large = item_key(&emulator.expected().projects[0].id);

    let work = store.get(&run.work_list()).await.unwrap().unwrap();
    let mut carried = Vec::new();
    for line in work.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.len() < 96 * 1024 + 1024,
            "a line of {} bytes",
            line.len()
        );
        let group: Value = serde_json::from_slice(line).unwrap();
        carried.extend(group["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(carried.len(), 3);
    for item in &carried {
        let is_large = item["item"] == large.as_str();
        assert_eq!(item["recordStored"] == true, is_large, "{}", item["item"]);
        assert_eq!(item["record"].is_null(), is_large, "{}", item["item"]);
    }
    let stored = store.get(&run.item_record(&large)).await.unwrap().unwrap();
    assert!(stored.len() > 300 * 1024, "{} bytes", stored.len());
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["tags"].as_object().unwrap().len(), 3_002);

    let line = m.items.iter().find(|i| i.item == large).unwrap();
    let findings = findings_in(&store, &line.objects).await;
    assert!(!findings.is_empty());
    for (batch_line, _) in &findings {
        let tags = batch_line["asset"]["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 3_002);
        assert!(
            tags.iter()
                .any(|t| t.as_str().unwrap().starts_with("team:"))
        );
    }
    // `cxone-etm transform` replays the run's raw folders: the large record from its item.json
    // (collect's record is null), the others from collect.json.
    let context = cxone_etm::mapping::TransformContext {
        connection_id: "large-record".into(),
        run_id: "replay".into(),
        connector_kind: ConnectorKind::Sast,
        produced_at: "2026-12-06T00:00:00Z".into(),
    };
    let raw = dir.join(
        run.raw_prefix(&large)
            .trim_end_matches(&format!("/{large}/")),
    );
    let replayed = cxone_etm::mapping::replay_dir(
        &raw,
        &dir.join("replay"),
        c.first_plan(),
        &c.scoring,
        &context,
        &c.options,
    )
    .unwrap();
    assert!(replayed.unfinished.is_empty(), "{:?}", replayed.unfinished);
    assert_eq!(replayed.figures.findings_out, m.totals.findings_out);
    std::fs::remove_dir_all(dir).ok();
}

/// A transform map that fits no record (a required source the records lack) rejects every one.
/// Each is still named: the manifest lists the first 100 of the item, and every one is a line of
/// the item's rejected object, which the manifest names with its hash; the item's findings are
/// held, none closed. Before, all of them were held in memory and listed in the manifest: a
/// project of 300,000 results made a 144 MB manifest and peaked at 440 MB.
#[tokio::test]
async fn a_map_that_fits_no_record_names_every_rejection_beside_the_manifest() {
    use cxone_etm::pipeline::LISTED_PER_ITEM;
    let emulator = emulator(TenantShape {
        projects: 2,
        results_per_scan: 300,
        scans_per_project: 1,
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-all-rejected");
    let fitting = tuned(&emulator, "all-rejected", ConnectorKind::Sast);
    let first = run(&store, &fitting, api_key(&emulator)).await.unwrap();
    assert!(first.complete);
    let mut map: Value = serde_json::from_str(cxone_etm::mapping::DEFAULT_SAST_MAP).unwrap();
    map["entries"].as_array_mut().unwrap().push(json!({
        "source": "findings[].alternateId",
        "target": "findingGroup.findings[].customAttributes.alternate",
        "required": true,
    }));
    let mut config = fitting.config.clone();
    config.transform_map = Some(serde_json::from_value(map).unwrap());
    let unfitting = config.validate().unwrap();
    let second = run(&store, &unfitting, api_key(&emulator)).await.unwrap();
    let m: Manifest = manifest(&store, &second.manifest).await;
    assert_eq!(m.totals.findings_out, 0);
    let with_scan: Vec<_> = m
        .items
        .iter()
        .filter(|i| i.figures.records_in > 0)
        .collect();
    assert!(!with_scan.is_empty());
    for item in with_scan {
        let rejected = item.figures.rejected;
        assert!(rejected > LISTED_PER_ITEM as u64, "{rejected}");
        assert_eq!(item.rejected.len(), LISTED_PER_ITEM);
        let object = item.rejected_object.as_ref().expect("a rejected object");
        assert!(
            !item.objects.iter().any(|o| o.key == object.key),
            "not a batch"
        );
        let all: Vec<cxone_etm::mapping::Rejected> = checked_object_lines(&store, object)
            .await
            .into_iter()
            .map(|line| serde_json::from_value(line).unwrap())
            .collect();
        assert_eq!(all.len() as u64, rejected);
        assert_eq!(
            all[..LISTED_PER_ITEM],
            item.rejected[..],
            "the listed ones first"
        );
        let positions: std::collections::BTreeSet<(u32, u32)> =
            all.iter().map(|r| (r.page, r.index)).collect();
        assert_eq!(positions.len() as u64, rejected, "each record once");
        assert!(
            all.iter()
                .all(|r| r.reason.contains("required value is missing"))
        );
        // Its open findings are held: any of them may be a rejected record.
        assert!(item.figures.held_for_rejected_records > 0);
    }
    assert_eq!(
        m.totals
            .lifecycle
            .get(&Lifecycle::Fixed)
            .copied()
            .unwrap_or(0),
        m.totals.fixed,
        "none closed by absence: {:?}",
        m.totals.lifecycle
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Every attempt of a run collects an environment's DAST scan the first one chose: two attempts
/// of one item can run at once (a retried invocation still running) and store their pages under
/// the same keys, so a newer scan completing between them must not mix into the older one's
/// pull. The choice is recorded (`raw/<item>/dast-scan.json`, written only where none is) before
/// any page; an attempt that finds one pulls that scan, though the vendor's latest is another.
#[tokio::test]
async fn every_attempt_of_a_run_collects_the_dast_scan_the_first_chose() {
    use cxone_etm::store::ObjectStore;
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        dast_scans_per_environment: 3,
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-dast-scan-choice");
    let c = tuned(&emulator, "dast-choice", ConnectorKind::Dast);
    let (run_ref, vendor, items) = planned_run(&store, &c, &emulator, 1).await;
    let environments = emulator.expected().environments;
    // An environment with an older completed scan than its latest.
    let (env, older) = environments
        .iter()
        .find_map(|env| {
            let latest = env.latest_completed_scan.as_ref()?;
            let older = env
                .scans
                .iter()
                .find(|s| s.status == "Completed" && &s.id != latest && s.results > 0)?;
            Some((env, older))
        })
        .expect("an environment with two completed scans");
    let pinned = items.iter().find(|i| i.vendor_id == env.id).unwrap();
    store
        .put(
            &run_ref.dast_scan(&pinned.item),
            serde_json::to_vec(&json!({"scanId": older.id}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let outcome = cxone_etm::pipeline::collect(&store, &vendor, &c, pinned, None)
        .await
        .unwrap();
    assert_eq!(outcome.scan_id.as_deref(), Some(older.id.as_str()));
    assert_eq!(outcome.records_fetched(), older.results);

    // An item no attempt chose for: its latest completed scan, recorded before its pages.
    let (fresh, latest) = items
        .iter()
        .filter(|i| i.vendor_id != env.id)
        .find_map(|i| {
            let env = environments.iter().find(|e| e.id == i.vendor_id)?;
            Some((i, env.latest_completed_scan.clone()?))
        })
        .unwrap();
    let outcome = cxone_etm::pipeline::collect(&store, &vendor, &c, fresh, None)
        .await
        .unwrap();
    assert_eq!(outcome.scan_id.as_deref(), Some(latest.as_str()));
    let chosen = store
        .get(&run_ref.dast_scan(&fresh.item))
        .await
        .unwrap()
        .unwrap();
    let chosen: Value = serde_json::from_slice(&chosen).unwrap();
    assert_eq!(chosen["scanId"], json!(latest));
    std::fs::remove_dir_all(dir).ok();
}

/// A tenant whose SAST ids all repeat (pairs of findings share each id) renames every record:
/// the manifest lists the item's first 100 collisions, and every one is a line of its
/// `collisions.ndjson.gz`, which the manifest names with its hash, each the id a committed
/// finding carries. Before, every collision was held in memory and listed in the manifest.
#[tokio::test]
async fn collisions_past_the_listed_are_named_beside_the_manifest() {
    use cxone_etm::pipeline::LISTED_PER_ITEM;
    let emulator = emulator(TenantShape {
        projects: 1,
        results_per_scan: 400,
        scans_per_project: 1,
        repeated_result_ids_percent: 100,
        result_mix: cxone_emulator::ResultMix {
            sast: 100,
            kics: 0,
            sca: 0,
            containers: 0,
        },
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-all-collide");
    let c = tuned(&emulator, "all-collide", ConnectorKind::Sast);
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(summary.complete, "{:?}", summary.problems);
    let m: Manifest = manifest(&store, &summary.manifest).await;
    let item = &m.items[0];
    let collided = item.figures.collisions;
    assert!(collided > LISTED_PER_ITEM as u64, "{collided}");
    assert_eq!(item.collisions.len(), LISTED_PER_ITEM);
    let object = item
        .collisions_object
        .as_ref()
        .expect("a collisions object");
    assert!(
        !item.objects.iter().any(|o| o.key == object.key),
        "not a batch"
    );
    let all = checked_object_lines(&store, object).await;
    assert_eq!(all.len() as u64, collided);
    let listed: Vec<Value> = item
        .collisions
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(all[..LISTED_PER_ITEM], listed[..], "the listed ones first");
    let sent: std::collections::BTreeSet<String> = findings_in(&store, &item.objects)
        .await
        .into_iter()
        .map(|(_, f)| f["externalFindingId"].as_str().unwrap().to_string())
        .collect();
    for collision in &all {
        let renamed = collision["renamedTo"].as_str().unwrap();
        assert!(renamed.starts_with(&format!(
            "{}#",
            collision["externalFindingId"].as_str().unwrap()
        )));
        assert!(sent.contains(renamed), "{renamed}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// An item's collect outcome is written once: an attempt that finishes after another recorded the
/// item answers the outcome that stands (the transform may have reconciled it). One that cannot be
/// read was reconciled by nothing: a group that meets it records the item failed over it, naming
/// the problem, and the run reports that item, not a failed run.
#[tokio::test]
async fn a_collect_outcome_stands_once_written_and_an_unreadable_one_is_replaced() {
    use cxone_etm::pipeline::{ItemStatus, TimeBudget};
    use cxone_etm::store::ObjectStore;
    let emulator = emulator(TenantShape {
        projects: 2,
        scans_per_project: 1,
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-outcome-once");
    let c = tuned(&emulator, "outcome-once", ConnectorKind::Sast);
    let (_, vendor, items) = planned_run(&store, &c, &emulator, 1).await;
    let (first, second) = (&items[0], &items[1]);

    // A failure recorded first stands: a later collect of the item answers it.
    let failed =
        cxone_etm::pipeline::record_collect_failure(&store, first, "refused", Default::default())
            .await
            .unwrap();
    let again = cxone_etm::pipeline::collect(&store, &vendor, &c, first, None)
        .await
        .unwrap();
    assert_eq!(again, failed);

    // An unreadable outcome: the group records the item failed over it.
    store
        .put(
            &second.collect_outcome_key(),
            bytes::Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
    let (done, error) = cxone_etm::pipeline::collect_group(
        &store,
        &vendor,
        &c,
        std::slice::from_ref(second),
        TimeBudget::until(None),
    )
    .await;
    assert!(error.is_some());
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, ItemStatus::Failed);
    assert!(
        done[0].reason.as_deref().unwrap().contains("unreadable"),
        "{:?}",
        done[0].reason
    );
    let stored = store
        .get(&second.collect_outcome_key())
        .await
        .unwrap()
        .unwrap();
    let stored: cxone_etm::pipeline::CollectOutcome = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored, done[0]);
    std::fs::remove_dir_all(dir).ok();
}

/// A page stored over the one collect counted (another attempt of the collect, one Step Functions
/// retried while it still ran, storing what the vendor sent it after the outcome was recorded)
/// is not reconciled: the transform refuses it by the checksum the outcome lists, the item fails
/// with its findings carried, and nothing is closed. The same records packed otherwise pass.
/// Before, the transform reconciled whatever stood under the page's key: a record missing from
/// the later page was closed while the vendor still had it, and NEW again at the next run.
#[tokio::test]
async fn a_page_stored_over_the_one_collect_counted_is_not_reconciled() {
    use cxone_etm::pipeline::{CollectOutcome, ItemStatus};
    use cxone_etm::store::ObjectStore;
    let emulator = emulator(TenantShape {
        projects: 2,
        scans_per_project: 1,
        ..shape()
    })
    .await;
    let (store, dir) = temp_store("reliability-page-over-counted");
    let c = tuned(&emulator, "page-over", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);

    let (run_ref, vendor, items) = planned_run(&store, &c, &emulator, 1).await;
    for item in &items {
        cxone_etm::pipeline::collect(&store, &vendor, &c, item, None)
            .await
            .unwrap();
    }
    let (changed, repacked) = (&items[0], &items[1]);
    let outcome: CollectOutcome = serde_json::from_slice(
        &store
            .get(&changed.collect_outcome_key())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(outcome.pages >= 2, "{} pages", outcome.pages);
    assert_eq!(outcome.page_checksums.len() as u32, outcome.pages);
    let stored_page = |item: &cxone_etm::pipeline::WorkItem, number: u32| {
        let key = run_ref.raw_page(&item.item, number);
        let store = store.clone();
        async move {
            let packed = store.get(&key).await.unwrap().unwrap();
            let page = cxone_etm::packing::unpack(&key, &packed).unwrap();
            (key, page)
        }
    };
    // The later attempt's page lacks one SAST record the counted page holds.
    let (key, page) = stored_page(changed, 1).await;
    let mut page: Value = serde_json::from_slice(&page).unwrap();
    let results = page["results"].as_array_mut().unwrap();
    let sast = results.iter().rposition(|r| r["type"] == "sast").unwrap();
    let dropped = results.remove(sast)["id"].clone();
    let later = cxone_etm::packing::pack_page(&serde_json::to_vec(&page).unwrap());
    store.put(&key, later).await.unwrap();
    // The other item's first page stored again with the same records, packed otherwise.
    let (key, page) = stored_page(repacked, 0).await;
    let mut level_9 = zstd::bulk::Compressor::new(9).unwrap();
    level_9.include_checksum(true).unwrap();
    store
        .put(&key, level_9.compress(&page).unwrap().into())
        .await
        .unwrap();

    for item in &items {
        cxone_etm::pipeline::transform(&store, &c, item)
            .await
            .unwrap();
    }
    let m2 = cxone_etm::pipeline::finalize(&store, &c, &run_ref)
        .await
        .unwrap();
    let line = |of: &cxone_etm::pipeline::WorkItem| {
        m2.items.iter().find(|i| i.item == of.item).unwrap().clone()
    };
    assert_eq!(
        closed_findings(&m2),
        0,
        "nothing closed, {dropped} least of all"
    );
    let failed = line(changed);
    assert_eq!(failed.status, ItemStatus::Failed);
    let reason = failed.reason.unwrap();
    assert!(
        reason.starts_with("transform failed: ")
            && reason.contains(&format!(
                "{}/1.json.zst: not the page collect counted",
                changed.item
            )),
        "{reason}"
    );
    assert!(failed.objects.is_empty(), "{:?}", failed.objects);
    assert_eq!(line(repacked).status, ItemStatus::Complete);

    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(&store, &third.manifest).await;
    nothing_new_or_reopened(&m3, "the run after");
    assert_eq!(closed_findings(&m3), 0);
    std::fs::remove_dir_all(dir).ok();
}
