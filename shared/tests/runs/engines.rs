//! A project connection that delivers every engine of a scan (SAST, SCA, KICS, containers): each
//! engine's findings committed exactly as the emulator holds them, from each engine's own latest
//! scan; identities unique per asset; reconciled per engine across runs; and one pull per scan,
//! so where the latest scan ran every engine the vendor sees the requests of a SAST-only run.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Emulator, Endpoint, FaultSpec, ResultType, TenantShape};
use cxone_etm::mapping::Lifecycle;
use cxone_etm::pipeline::{ConnectionConfig, Manifest};
use cxone_etm::store::{LocalStore, ObjectStore};
use cxone_etm::{ConnectorKind, Engine};
use serde_json::Value;

fn shape(scans: u32, rescan_engine: Option<ResultType>) -> TenantShape {
    TenantShape {
        // Project 9's scans have no SAST.
        projects: 12,
        scans_per_project: scans,
        results_per_scan: 100,
        churn_percent: 25,
        rescan_engine,
        ..TenantShape::default()
    }
}

fn every_engine(emulator: &Emulator, id: &str) -> cxone_etm::pipeline::Connection {
    every_engine_config(emulator, id)
        .validate()
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// A connection of every project engine, three items at once, before it is validated.
fn every_engine_config(emulator: &Emulator, id: &str) -> ConnectionConfig {
    ConnectionConfig {
        item_concurrency: 3,
        engines: Some(Engine::PROJECT_ENGINES.to_vec()),
        ..ConnectionConfig::new(
            id,
            ConnectorKind::Sast,
            settings(emulator),
            "env:UNUSED_IN_TESTS",
        )
    }
}

fn engine_of(t: ResultType) -> Engine {
    match t {
        ResultType::Sast => Engine::Sast,
        ResultType::Sca => Engine::Sca,
        ResultType::Kics => Engine::Kics,
        ResultType::Containers => Engine::Containers,
    }
}

/// What tells one engine's findings apart, read the same way from a vendor record and from a
/// committed finding: the vendor id, and for CVE-keyed engines the package (and image).
fn identity_of_record(engine: Engine, r: &Value) -> String {
    let d = &r["data"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match engine {
        Engine::Sca => format!("{}|{}", text(&r["id"]), text(&d["packageIdentifier"])),
        Engine::Containers => format!(
            "{}|{}|{}|{}|{}",
            text(&r["id"]),
            text(&d["imageName"]),
            text(&d["imageTag"]),
            text(&d["packageName"]),
            text(&d["packageVersion"])
        ),
        _ => text(&r["id"]),
    }
}

fn identity_of_finding(engine: Engine, f: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let cve = text(&f["findingType"]["vulnerability"]["cveId"]);
    match engine {
        Engine::Sca => format!("{cve}|{}", text(&f["package"]["identifier"])),
        Engine::Containers => format!(
            "{cve}|{}|{}|{}|{}",
            text(&f["image"]["name"]),
            text(&f["image"]["tag"]),
            text(&f["package"]["name"]),
            text(&f["package"]["version"])
        ),
        _ => text(&f["externalFindingId"]),
    }
}

/// Per engine, per project: the branch of the engine's scan, and identity → closed by the vendor.
type View = BTreeMap<Engine, BTreeMap<String, (String, BTreeMap<String, bool>)>>;

/// Per engine, per project: identity → closed by the vendor, from each project's scan of that
/// engine (the latest completed main-branch scan that ran it), read from the emulator.
async fn vendor_view(emulator: &Emulator) -> View {
    let client = default_client(emulator);
    let mut view = View::new();
    for project in emulator.expected().projects {
        for (t, scan) in &project.main_branch_scan_by_engine {
            let engine = engine_of(*t);
            let mut pager = client.results(scan);
            let branch = project
                .scans
                .iter()
                .find(|s| &s.id == scan)
                .unwrap()
                .branch
                .clone();
            let (_, findings) = view
                .entry(engine)
                .or_default()
                .entry(project.id.clone())
                .or_insert_with(|| (branch, BTreeMap::new()));
            while let Some(page) = pager.next_page().await.unwrap() {
                let body: Value = serde_json::from_slice(&page.body).unwrap();
                for r in body["results"].as_array().unwrap() {
                    let kind = r["type"].as_str().unwrap();
                    if Engine::of_record_type(kind) == Some(engine) {
                        let fixed = r["status"] == "FIXED";
                        let fresh = findings
                            .insert(identity_of_record(engine, r), fixed)
                            .is_none();
                        assert!(fresh, "the emulator sends each finding once: {r}");
                    }
                }
            }
        }
    }
    view
}

/// What the connector should report per engine against what it reported before: the model of
/// the ledger (identities ever reported, and which are open; the branch of each engine's scan:
/// when it changes, absent findings are held open for one run, not closed).
#[derive(Default)]
struct Model {
    known: BTreeMap<(Engine, String, String), bool>,
    branches: BTreeMap<(Engine, String), String>,
}

impl Model {
    fn apply(&mut self, view: &View) -> BTreeMap<(Engine, &'static str), u64> {
        let mut counts = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut switched = BTreeSet::new();
        for (engine, projects) in view {
            for (project, (branch, findings)) in projects {
                let before = self
                    .branches
                    .insert((*engine, project.clone()), branch.clone());
                if before.is_some_and(|b| &b != branch) {
                    switched.insert((*engine, project.clone()));
                }
                for (identity, fixed) in findings {
                    let key = (*engine, project.clone(), identity.clone());
                    let status = match (fixed, self.known.get(&key)) {
                        (true, _) => "FIXED",
                        (false, None) => "NEW",
                        (false, Some(true)) => "ACTIVE",
                        (false, Some(false)) => "REOPENED",
                    };
                    *counts.entry((*engine, status)).or_default() += 1;
                    seen.insert(key.clone());
                    self.known.insert(key, !fixed);
                }
            }
        }
        for (key, open) in self.known.iter_mut() {
            let held = switched.contains(&(key.0, key.1.clone()));
            if *open && !seen.contains(key) && !held {
                *counts.entry((key.0, "FIXED")).or_default() += 1;
                *open = false;
            }
        }
        counts
    }
}

/// Every line's findings by (engine, lifecycle status); and that no asset carries an id twice.
async fn reported(store: &LocalStore, m: &Manifest) -> BTreeMap<(Engine, &'static str), u64> {
    let mut counts = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (line, f) in findings_in(store, m.items.iter().flat_map(|i| &i.objects)).await {
        let engine: Engine = serde_json::from_value(line["engine"].clone()).unwrap();
        let status = match f["lifecycleStatus"].as_str().unwrap() {
            "NEW" => "NEW",
            "ACTIVE" => "ACTIVE",
            "REOPENED" => "REOPENED",
            _ => "FIXED",
        };
        *counts.entry((engine, status)).or_default() += 1;
        let id = f["externalFindingId"].as_str().unwrap().to_string();
        let fresh = ids.insert((line["externalAssetId"].to_string(), id.clone()));
        assert!(fresh, "{id} twice on one asset");
        if f.get("closedReason").is_none() {
            assert!(!identity_of_finding(engine, &f).starts_with('|'), "{f}");
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn every_engine_is_committed_from_its_own_latest_scan_and_reconciled_per_engine() {
    let (store, _dir) = temp_store("engines");
    let mut model = Model::default();

    // Run 1: everything as the emulator holds it, per engine.
    let first = emulator(shape(3, None)).await;
    let expected = model.apply(&vendor_view(&first).await);
    let summary = run(&store, &every_engine(&first, "engines"), api_key(&first))
        .await
        .unwrap();
    let m1 = manifest(&store, &summary.manifest).await;
    assert!(m1.complete, "{:?}", m1.problems);
    let holds = first.expected().totals.by_engine;
    assert!(holds.values().all(|n| *n > 0), "{holds:?}");
    for (t, n) in &holds {
        let engine = engine_of(*t);
        let totals = &m1.totals_by_engine[&engine];
        assert_eq!(totals.findings_out + totals.rejected, *n, "{engine}");
        assert_eq!(summary.by_engine[&engine].findings, totals.findings_out);
    }
    assert!(
        m1.totals.skipped_by_type.is_empty(),
        "nothing asked for is skipped: {:?}",
        m1.totals.skipped_by_type
    );
    assert_eq!(m1.totals.duplicates, 0);
    assert_eq!(reported(&store, &m1).await, expected);

    // Run 2: a newer scan of every project: per engine, a quarter of the findings fixed and as
    // many new, each closed or added in its own engine.
    let second = emulator(shape(4, None)).await;
    let expected = model.apply(&vendor_view(&second).await);
    let summary = run(&store, &every_engine(&second, "engines"), api_key(&second))
        .await
        .unwrap();
    let m2 = manifest(&store, &summary.manifest).await;
    let got = reported(&store, &m2).await;
    assert_eq!(got, expected);
    for engine in Engine::PROJECT_ENGINES {
        for status in ["NEW", "ACTIVE", "FIXED"] {
            assert!(got.get(&(engine, status)) > Some(&0), "{engine} {status}");
        }
    }

    // Run 3: every third project's newest scan ran SCA alone: its SCA findings come from it,
    // the other engines' from the older scan that ran them (one more pull for those projects).
    let third = emulator(shape(4, Some(ResultType::Sca))).await;
    let expected = model.apply(&vendor_view(&third).await);
    let summary = run(&store, &every_engine(&third, "engines"), api_key(&third))
        .await
        .unwrap();
    let m3 = manifest(&store, &summary.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    // The older scan's SCA records are superseded by the SCA re-scan: read, counted, not taken.
    assert!(m3.totals.superseded > 0);
    // Those copies are not counted as repeats of the SCA ids: no id is a collision.
    assert_eq!(m3.totals.collisions, 0);
    // The project without a main branch takes SAST from a scan of another branch than before:
    // its absent findings are held for one run (the model above knows it).
    assert!(m3.totals.held_on_branch_change > 0);
    assert!(
        m3.totals.skipped_by_type.is_empty(),
        "{:?}",
        m3.totals.skipped_by_type
    );
    assert_eq!(reported(&store, &m3).await, expected);
    for (t, n) in &third.expected().totals.by_engine {
        let totals = &m3.totals_by_engine[&engine_of(*t)];
        assert_eq!(totals.findings_out + totals.rejected, *n, "{t:?}");
    }
    // Run 4: every third project's newest scan ran SAST alone; the other engines come from an
    // older scan whose SAST records are superseded copies: they never make a SAST id look
    // repeated (which would rename, close and reopen every SAST finding of the project).
    let fourth = emulator(shape(5, Some(ResultType::Sast))).await;
    let expected_fourth = model.apply(&vendor_view(&fourth).await);
    let summary = run(&store, &every_engine(&fourth, "engines"), api_key(&fourth))
        .await
        .unwrap();
    let m4 = manifest(&store, &summary.manifest).await;
    assert!(m4.complete, "{:?}", m4.problems);
    assert_eq!(reported(&store, &m4).await, expected_fourth);
    assert!(m4.totals.superseded > 0);
    assert_eq!(m4.totals.collisions, 0);
    let rescanned: Vec<_> = third
        .expected()
        .projects
        .into_iter()
        .filter(|p| {
            let sca = &p.main_branch_scan_by_engine[&ResultType::Sca];
            p.main_branch_scan_by_engine.get(&ResultType::Kics) != Some(sca)
        })
        .collect();
    assert!(!rescanned.is_empty());
    for project in rescanned {
        let item = m3.items.iter().find(|i| i.vendor_id == project.id).unwrap();
        assert_eq!(
            item.scan_id.as_ref(),
            Some(&project.main_branch_scan_by_engine[&ResultType::Sca]),
            "the SCA re-scan is the item's main scan"
        );
        assert!(item.by_engine[&Engine::Kics].records_in > 0);
    }
}

/// A KICS finding that leaves a scan leaves its numeric id to a SAST finding new in it (one id
/// sequence for every engine): the SAST finding is told apart by its suffix, not sent under the
/// id of the KICS finding that closes in the same run. Before, one id was sent NEW and FIXED on
/// one asset in one run, and the next ledger kept only one of the two.
#[tokio::test(flavor = "multi_thread")]
async fn an_id_another_engines_finding_left_is_told_apart() {
    let (store, _dir) = temp_store("ids-reused");
    let mut model = Model::default();
    let reusing = |scans| TenantShape {
        kics_ids_reused_by_sast: true,
        ..shape(scans, None)
    };
    let committed = |tenant: &Emulator| {
        let (c, key) = (every_engine(tenant, "ids-reused"), api_key(tenant));
        let store = &store;
        async move {
            let summary = run(store, &c, key).await.unwrap();
            let m = manifest(store, &summary.manifest).await;
            assert!(m.complete, "{:?}", m.problems);
            m
        }
    };
    let first = emulator(reusing(3)).await;
    let before = vendor_view(&first).await;
    model.apply(&before);
    committed(&first).await;

    let second = emulator(reusing(4)).await;
    let now = vendor_view(&second).await;
    let reused: Vec<&String> = now[&Engine::Sast]
        .iter()
        .flat_map(|(project, (_, sast))| {
            let kics = &before[&Engine::Kics][project].1;
            sast.keys().filter(|id| kics.contains_key(*id))
        })
        .collect();
    assert!(!reused.is_empty(), "the tenant reuses no KICS id");
    let expected = model.apply(&now);
    let m2 = committed(&second).await;
    // One id per finding on each asset (`reported` checks it), each engine's statuses as the
    // vendor's scans say.
    assert_eq!(reported(&store, &m2).await, expected);
    assert!(
        m2.totals.collisions >= reused.len() as u64,
        "{}",
        m2.totals.collisions
    );

    // The same scans again: every finding as it was, the told-apart ones under the same ids.
    let expected = model.apply(&now);
    let m3 = committed(&second).await;
    assert_eq!(reported(&store, &m3).await, expected);
    nothing_new_or_reopened(&m3, "the same scans again");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_pull_serves_every_engine_with_the_requests_of_a_sast_only_run() {
    // Nine projects: each one's scans ran every engine.
    let tenant = TenantShape {
        projects: 9,
        results_per_scan: 300,
        ..TenantShape::default()
    };
    let emulator = emulator(tenant).await;
    let (sast_store, _a) = temp_store("engines-sast-only");
    let (all_store, _b) = temp_store("engines-all");

    emulator.reset_traffic();
    let sast = connection(&emulator, "sast-only", ConnectorKind::Sast);
    let sast_only = run(&sast_store, &sast, api_key(&emulator)).await.unwrap();
    let sast_requests = emulator.traffic().requests;

    emulator.reset_traffic();
    let all = run(
        &all_store,
        &every_engine(&emulator, "all"),
        api_key(&emulator),
    )
    .await
    .unwrap();
    let all_requests = emulator.traffic().requests;

    assert_eq!(all_requests, sast_requests);
    // The same SAST findings; the SAST-only run read the other engines' records too, and
    // skipped them.
    assert_eq!(
        all.by_engine[&Engine::Sast].findings,
        sast_only.by_engine[&Engine::Sast].findings
    );
    // Every record read once, and every one delivered.
    assert_eq!(all.records_in, sast_only.records_in);
    assert_eq!(all.findings, all.records_in);
    assert!(sast_only.skipped > 0 && all.skipped == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sca_connection_delivers_sca_alone_and_its_check_reads_its_scans() {
    let emulator = emulator(shape(2, None)).await;
    let sca = connection(&emulator, "sca", ConnectorKind::Sca);
    assert_eq!(sca.engines().collect::<Vec<_>>(), vec![Engine::Sca]);

    let report =
        cxone_etm::cxone::test_connection(&sca.vendor, Ok(api_key(&emulator)), sca.run_calls())
            .await;
    assert!(report.passed, "{}", report.to_table());
    assert!(
        report.checks[4]
            .detail
            .contains("of the first 10: 10 a completed sca scan"),
        "{}",
        report.checks[4].detail
    );

    let (store, _dir) = temp_store("engines-sca");
    emulator.reset_traffic();
    let summary = run(&store, &sca, api_key(&emulator)).await.unwrap();
    let requests = emulator.traffic().requests;
    assert!(summary.complete);
    let holds = emulator.expected().totals.by_engine[&ResultType::Sca];
    assert_eq!(summary.by_engine[&Engine::Sca].findings, holds);
    assert_eq!(summary.findings, holds, "no finding of another engine");
    let m = manifest(&store, &summary.manifest).await;
    for other in ["sast", "kics", "containers"] {
        assert!(
            m.totals.skipped_by_type[other] > 0,
            "{other} counted as skipped"
        );
    }
    assert!(requests["results"] > 0);
    assert!(
        !requests.contains_key("sast-results"),
        "no severities before triage without SAST: {requests:?}"
    );
    let lines = findings_in(&store, m.items.iter().flat_map(|i| &i.objects)).await;
    assert_eq!(lines.len() as u64, holds);
    assert!(
        lines
            .iter()
            .all(|(line, _)| line["connectorKind"] == "SCA" && line["engine"] == "sca")
    );
}

/// A `last-scan` answer that does not say which engines a scan ran: each engine is asked for on
/// its own, and the SCA re-scans never pass for the projects' SAST scans.
#[tokio::test(flavor = "multi_thread")]
async fn scans_that_do_not_list_their_engines_are_asked_about_each_engine() {
    let (store, _dir) = temp_store("engines-unlisted");
    let listed = emulator(shape(4, Some(ResultType::Sca))).await;
    let (listed_store, _d) = temp_store("engines-listed");
    let baseline = run(&listed_store, &every_engine(&listed, "e"), api_key(&listed))
        .await
        .unwrap();
    let unlisted = emulator(TenantShape {
        last_scan_without_engines: true,
        ..shape(4, Some(ResultType::Sca))
    })
    .await;
    let summary = run(&store, &every_engine(&unlisted, "e"), api_key(&unlisted))
        .await
        .unwrap();
    assert!(summary.complete);
    assert_eq!(summary.by_engine, baseline.by_engine);
    for (t, n) in &unlisted.expected().totals.by_engine {
        assert_eq!(summary.by_engine[&engine_of(*t)].findings, *n, "{t:?}");
    }
}

/// Every branch its own asset, with every engine: each branch takes each engine from its own
/// latest scan that ran it, and the branches are listed once per project, not once per engine.
#[tokio::test(flavor = "multi_thread")]
async fn every_branch_takes_each_engine_from_its_own_latest_scan() {
    let emulator = emulator(shape(5, Some(ResultType::Kics))).await;
    let connection = ConnectionConfig {
        item_concurrency: 3,
        engines: Some(Engine::PROJECT_ENGINES.to_vec()),
        branches: cxone_etm::pipeline::BranchPolicy::EachBranch,
        ..ConnectionConfig::new(
            "branches",
            ConnectorKind::Sast,
            settings(&emulator),
            "env:UNUSED_IN_TESTS",
        )
    }
    .validate()
    .unwrap();
    let mut expected: BTreeMap<Engine, u64> = BTreeMap::new();
    for project in emulator.expected().projects {
        let branches: BTreeSet<&String> = project.scans.iter().map(|s| &s.branch).collect();
        for branch in branches {
            for t in ResultType::ALL {
                let latest = project.scans.iter().rev().find(|s| {
                    &s.branch == branch
                        && s.status == "Completed"
                        && s.by_type.get(&t).is_some_and(|n| *n > 0)
                });
                *expected.entry(engine_of(t)).or_default() += latest.map_or(0, |s| s.by_type[&t]);
            }
        }
    }
    let (store, _dir) = temp_store("engines-branches");
    emulator.reset_traffic();
    let summary = run(&store, &connection, api_key(&emulator)).await.unwrap();
    let requests = emulator.traffic().requests;
    assert!(summary.complete);
    for (engine, n) in &expected {
        assert!(*n > 0);
        assert_eq!(summary.by_engine[engine].findings, *n, "{engine}");
    }
    assert_eq!(requests["branches"], 12, "one listing per project");
    // A branch asset's SAST findings link to their result under the project's id, not the
    // asset's (`<project>@<branch>`).
    let m: Manifest = manifest(&store, &summary.manifest).await;
    let projects: BTreeSet<String> = emulator
        .expected()
        .projects
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut linked = 0;
    for item in &m.items {
        for (_, finding) in findings_in(&store, &item.objects).await {
            if let Some(link) = finding["vendorFindingURL"].as_str() {
                assert!(!link.contains('@') && !link.contains("%40"), "{link}");
                assert!(projects.contains(&item.vendor_id), "{}", item.vendor_id);
                assert!(
                    link.contains(&format!("/{}/sast?", item.vendor_id)),
                    "{link}"
                );
                linked += 1;
            }
        }
    }
    assert!(linked > 0);
}

/// The look-back window holds for each scan: an engine whose latest scan is older than the
/// window delivers nothing, and its findings are carried, open, never closed.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_whose_scan_is_older_than_the_window_is_carried_not_closed() {
    let (store, _dir) = temp_store("engines-window");
    let first = emulator(shape(4, None)).await;
    run(&store, &every_engine(&first, "window"), api_key(&first))
        .await
        .unwrap();
    // Every third project's newest scan ran SCA alone; its other engines' scan is two days older.
    let rescans = emulator(shape(4, Some(ResultType::Sca))).await;
    let project = rescans.expected().projects[1].clone();
    let client = default_client(&rescans);
    let created = |engine: Engine| {
        let client = &client;
        let id = project.id.clone();
        async move {
            let scans = client
                .last_scans(
                    std::slice::from_ref(&id),
                    &cxone_etm::cxone::LastScanQuery {
                        use_main_branch: true,
                        ..cxone_etm::cxone::LastScanQuery::completed(Some(engine))
                    },
                )
                .await
                .unwrap();
            let at = scans.scans[&id].created_at.clone().unwrap();
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .unwrap()
        }
    };
    let (sca_at, sast_at) = (created(Engine::Sca).await, created(Engine::Sast).await);
    assert!(sca_at - sast_at >= time::Duration::days(2));
    // SCA's scan at least half a day inside the window, SAST's at least half a day outside,
    // whatever the time of day the test runs at.
    let sca_age = time::OffsetDateTime::now_utc() - sca_at;
    let window = (sca_age + time::Duration::hours(12)).whole_days() as u32 + 1;
    let mut connection = every_engine(&rescans, "window");
    connection.config.filters.max_scan_age_days = Some(window);
    let connection = connection.config.validate().unwrap();
    let summary = run(&store, &connection, api_key(&rescans)).await.unwrap();
    let m = manifest(&store, &summary.manifest).await;
    assert!(m.complete, "{:?}", m.problems);
    let item = m.items.iter().find(|i| i.vendor_id == project.id).unwrap();
    assert!(
        item.by_engine[&Engine::Sca].findings_out > 0,
        "SCA's scan is in the window"
    );
    assert!(
        !item.by_engine.contains_key(&Engine::Sast),
        "{:?}",
        item.by_engine
    );
    let run_ref = cxone_etm::layout::RunRef {
        connection_id: "window".into(),
        run_id: m.run_id.clone(),
    };
    let collected: Value = serde_json::from_slice(
        &store
            .get(&run_ref.collect_outcome(&item.item))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        collected["otherPulls"][0]["notTaken"]
            .as_str()
            .unwrap()
            .contains("look-back window"),
        "{collected}"
    );
    // Nothing of SAST, KICS or containers is closed for that project; their ledger entries go on.
    let closed: Vec<_> = findings_in(&store, &item.objects)
        .await
        .into_iter()
        .filter(|(line, f)| line["engine"] != "sca" && f["lifecycleStatus"] == "FIXED")
        .collect();
    assert!(closed.is_empty(), "{closed:?}");
    let ledger: Value = {
        let body = store
            .get(&run_ref.ledger(&item.item))
            .await
            .unwrap()
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let open_of = |engine: &str| {
        ledger["findings"]
            .as_object()
            .unwrap()
            .values()
            .filter(|e| e["engine"] == engine && e["open"] == true)
            .count() as u64
    };
    assert!(
        open_of("sast") > 0,
        "the project's SAST findings are still open"
    );
    let carried = ["sast", "kics", "containers"]
        .map(open_of)
        .iter()
        .sum::<u64>();
    assert_eq!(
        item.carried_forward, carried,
        "the open findings of the engines not pulled are counted as carried"
    );
}

/// A results record whose `type` is gone may be any engine's finding. It is rejected once, and
/// every engine of the pull holds its absent findings open, not only the engine whose
/// transformer read the record first: nothing is closed, and the next clean run finds every
/// finding where it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_with_no_type_closes_no_engines_findings() {
    let emulator = emulator(shape(2, None)).await;
    // Pages of 7: the record the fault takes the type from is of every engine by turns.
    let connection = every_engine_in_pages_of_7(&emulator, "untyped");
    let (store, _dir) = temp_store("engines-untyped");
    let untyped = FaultSpec {
        untyped_rate: 1.0,
        ..FaultSpec::default()
    };
    let (m1, m2, traffic) = clean_then_faulted(&emulator, &store, &connection, untyped).await;
    let untyped = traffic.faults_fired.untyped["results"];
    assert!(untyped > 0);
    assert_eq!(
        m2.totals.rejected - m1.totals.rejected,
        untyped,
        "each record without a type rejected once"
    );
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    let holding: Vec<Engine> = m2
        .totals_by_engine
        .iter()
        .filter(|(_, figures)| figures.held_for_rejected_records > 0)
        .map(|(engine, _)| *engine)
        .collect();
    // KICS and containers are never a pull's first engine (SAST is, or SCA where a project has
    // no SAST): their holds come from a record the first engine's transformer rejected.
    assert!(
        holding.len() >= 2
            && holding
                .iter()
                .any(|e| [Engine::Kics, Engine::Containers].contains(e)),
        "the records without a type were of several engines, each holding its own: {holding:?}"
    );

    let third = run(&store, &connection, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    nothing_new_or_reopened(&m3, "m3");
    assert_eq!(closed_findings(&m3), 0, "nothing is closed");
}

/// The vendor renames an engine's record type (`kics` served as `iac`, as `containers` and
/// `sca-container` name one engine's records): the pulls hold no KICS record, and records of a
/// type no engine reads. KICS's absent findings may all be there under the new name: held open,
/// none closed, the new type counted where it is skipped. The next run, the name back, finds
/// every finding where it was.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_whose_record_type_the_vendor_renamed_closes_nothing() {
    let emulator = emulator(shape(2, None)).await;
    let connection = every_engine(&emulator, "retyped");
    let (store, _dir) = temp_store("engines-retyped");
    let retyped = FaultSpec {
        record_type_renamed: Some(("kics".into(), "iac".into())),
        ..FaultSpec::default()
    };
    let (m1, m2, _) = clean_then_faulted(&emulator, &store, &connection, retyped).await;
    let kics_before = &m1.totals_by_engine[&Engine::Kics];
    let kics_open = kics_before.findings_out - kics_before.fixed;
    assert!(kics_open > 0, "{kics_before:?}");
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(
        closed_findings(&m2),
        0,
        "nothing is closed: {:?}",
        m2.totals
    );
    assert_eq!(
        m2.totals.skipped_by_type.get("iac"),
        Some(&kics_before.records_in),
        "{:?}",
        m2.totals.skipped_by_type
    );
    let kics = &m2.totals_by_engine[&Engine::Kics];
    assert_eq!(kics.held_for_unknown_record_types, kics_open, "{kics:?}");
    assert_eq!(m2.totals.held_for_unknown_record_types, kics_open);

    let third = run(&store, &connection, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    assert_eq!(m3.totals.held_for_unknown_record_types, 0);
    nothing_new_or_reopened(&m3, "m3");
    assert_eq!(closed_findings(&m3), 0, "nothing is closed");
}

/// The rename beside records with no `type` (one a page): a record no engine can be told for
/// holds every engine's absent findings, KICS's among them. Each is held once, for the first
/// reason (`heldForRejectedRecords`), none closed, and the next clean run reopens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_record_type_beside_untyped_records_holds_each_finding_once() {
    let emulator = emulator(shape(2, None)).await;
    let connection = every_engine(&emulator, "retyped-untyped");
    let (store, _dir) = temp_store("engines-retyped-untyped");
    let faults = FaultSpec {
        record_type_renamed: Some(("kics".into(), "iac".into())),
        untyped_rate: 1.0,
        ..FaultSpec::default()
    };
    let (m1, m2, _) = clean_then_faulted(&emulator, &store, &connection, faults).await;
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(
        closed_findings(&m2),
        0,
        "nothing is closed: {:?}",
        m2.totals
    );
    assert!(m2.totals.rejected > 0, "{:?}", m2.totals);
    assert!(m2.totals.skipped_by_type.contains_key("iac"));
    let kics_before = &m1.totals_by_engine[&Engine::Kics];
    let kics_open = kics_before.findings_out - kics_before.fixed;
    let kics = &m2.totals_by_engine[&Engine::Kics];
    assert_eq!(kics.held_for_rejected_records, kics_open, "{kics:?}");
    assert_eq!(kics.held_for_unknown_record_types, 0, "{kics:?}");

    let third = run(&store, &connection, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "m3");
    assert_eq!(closed_findings(&m3), 0, "nothing is closed");
}

/// A finding edited while its scan's results were paged, and moved to a later page (the emulator's
/// `move-first-to-end`): it comes twice, with other bytes each time, so collect counts both and
/// finds the pull whole, while the record it pushed back one place goes unseen. The repeat holds
/// every engine's absent findings open: nothing is closed, and the next clean run reopens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_that_moves_while_it_is_paged_closes_nothing() {
    let emulator = emulator(shape(2, None)).await;
    let connection = every_engine_in_pages_of_7(&emulator, "moved");
    let (store, _dir) = temp_store("engines-moved");
    let moved = FaultSpec {
        first_moved_to_end: true,
        ..FaultSpec::default()
    };
    let (m1, m2, _) = clean_then_faulted(&emulator, &store, &connection, moved).await;
    assert_eq!(m1.totals.held_for_repeated_records, 0, "{:?}", m1.totals);
    assert!(
        m2.complete,
        "collect counts the pulls whole: {:?}",
        m2.problems
    );
    assert_eq!(
        closed_findings(&m2),
        0,
        "nothing is closed: {:?}",
        m2.totals
    );
    assert!(m2.totals.duplicates > 0, "{:?}", m2.totals);
    assert!(m2.totals.held_for_repeated_records > 0, "{:?}", m2.totals);
    // The finding sent twice is one finding: it keeps its id (it is not renamed to a new one
    // with its identity suffix, its old id left to close a run later).
    assert_eq!(m2.totals.collisions, 0, "{:?}", m2.totals);
    let lifecycle = &m2.totals.lifecycle;
    assert_eq!(lifecycle.get(&Lifecycle::New), None, "{lifecycle:?}");

    let third = run(&store, &connection, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    assert_eq!(m3.totals.held_for_repeated_records, 0, "{:?}", m3.totals);
    assert_eq!(
        closed_findings(&m3),
        0,
        "nothing is closed: {:?}",
        m3.totals
    );
    let lifecycle = &m3.totals.lifecycle;
    assert_eq!(lifecycle.get(&Lifecycle::Reopened), None, "{lifecycle:?}");
    assert_eq!(lifecycle.get(&Lifecycle::New), None, "{lifecycle:?}");
}

/// Run 1 as the emulator holds it (complete), then run 2 with `fault` on every results request:
/// their manifests, and the traffic of run 2.
async fn clean_then_faulted(
    emulator: &Emulator,
    store: &LocalStore,
    connection: &cxone_etm::pipeline::Connection,
    fault: FaultSpec,
) -> (Manifest, Manifest, cxone_emulator::TrafficSnapshot) {
    let first = run(store, connection, api_key(emulator)).await.unwrap();
    let m1 = manifest(store, &first.manifest).await;
    assert!(m1.complete, "{:?}", m1.problems);
    emulator.set_fault(Endpoint::Results, fault);
    let second = run(store, connection, api_key(emulator)).await;
    let traffic = emulator.traffic();
    emulator.clear_faults();
    let m2 = manifest(store, &second.unwrap().manifest).await;
    (m1, m2, traffic)
}

/// SAST's map alone moves its findings to the project's name while KICS stays on the project's
/// id, in a tenant whose KICS ids come back as SAST ids (`kics_ids_reused_by_sast`). The ledger
/// keeps one entry per id whatever its engine's asset, so a SAST id that a KICS entry holds is
/// told apart on the new asset as on the old: every finding keeps its entry, and the same scans
/// again find nothing NEW, reopen nothing and close nothing. Before (ids told apart only beside
/// engines on the same asset), the KICS entry took the SAST finding's place, which was sent NEW
/// on every run.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_moved_alone_tells_its_ids_apart_from_another_engines_on_the_old_asset() {
    steady_after_reused_ids("ids-reused-moved", |config| {
        config.transform_maps = vec![assets_by_name(Engine::Sast)];
    })
    .await;
}

/// KICS taken off the connection, in a tenant whose KICS ids come back as SAST ids: the ledger
/// keeps KICS's entries (its findings stay open, nothing pulls them), so a SAST id one of them
/// holds is told apart, and the same scans again find nothing NEW, reopen nothing and close
/// nothing. Without KICS's ids (only the engines delivered counted), a SAST finding and a KICS
/// entry would share one ledger entry, and the SAST finding be sent NEW on every run.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_taken_off_the_connection_still_has_its_ids_told_apart() {
    steady_after_reused_ids("ids-reused-dropped", |config| {
        config.engines = Some(vec![Engine::Sast, Engine::Sca, Engine::Containers]);
    })
    .await;
}

/// Run 1 on scans 3 of a tenant whose KICS ids come back as SAST ids; runs 2 and 3 on scans 4
/// with the connection as `change` leaves it: run 2 tells ids apart, run 3 is steady.
async fn steady_after_reused_ids(id: &str, change: impl FnOnce(&mut ConnectionConfig)) {
    let (store, _dir) = temp_store(id);
    let reusing = |scans| TenantShape {
        kics_ids_reused_by_sast: true,
        ..shape(scans, None)
    };
    let first = emulator(reusing(3)).await;
    let c = every_engine(&first, id);
    let m1 = manifest(
        &store,
        &run(&store, &c, api_key(&first)).await.unwrap().manifest,
    )
    .await;
    assert!(m1.complete, "{:?}", m1.problems);

    let second = emulator(reusing(4)).await;
    let mut changed = every_engine_config(&second, id);
    change(&mut changed);
    let changed = changed.validate().unwrap();
    let m2 = manifest(
        &store,
        &run(&store, &changed, api_key(&second))
            .await
            .unwrap()
            .manifest,
    )
    .await;
    assert!(m2.complete, "{:?}", m2.problems);
    assert!(m2.totals.collisions > 0, "{:?}", m2.totals);

    let m3 = manifest(
        &store,
        &run(&store, &changed, api_key(&second))
            .await
            .unwrap()
            .manifest,
    )
    .await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "the same scans again");
    assert_eq!(closed_findings(&m3), 0, "{:?}", m3.totals);
}

/// Every project engine, results in pages of 7 (records of every engine on every page).
fn every_engine_in_pages_of_7(emulator: &Emulator, id: &str) -> cxone_etm::pipeline::Connection {
    let mut config = every_engine_config(emulator, id);
    config.vendor.results_page_size = 7;
    config.validate().unwrap_or_else(|e| panic!("{e:?}"))
}

/// The connection's engines changed between the plan and the transform (a config put while a run
/// is under way): the item is refused with the reason, recorded for finalize to give, never
/// transformed with records counted nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_planned_with_an_engine_the_connection_no_longer_delivers_is_refused() {
    let emulator = emulator(shape(2, None)).await;
    let (store, _dir) = temp_store("engines-changed");
    let summary = run(
        &store,
        &every_engine(&emulator, "changed"),
        api_key(&emulator),
    )
    .await
    .unwrap();
    let run_ref = cxone_etm::layout::RunRef {
        connection_id: "changed".into(),
        run_id: summary.run_id.clone(),
    };
    let (items, _) = cxone_etm::pipeline::read_work_list(&store, &run_ref)
        .await
        .unwrap();
    let item = items.iter().find(|i| i.scan_id.is_some()).unwrap();
    // The item as it stood before its transform: the record a transform writes goes first.
    store
        .delete(&run_ref.transform_record(&item.item))
        .await
        .unwrap();
    let sast_only = connection(&emulator, "changed", ConnectorKind::Sast);
    let refused = cxone_etm::pipeline::transform(&store, &sast_only, item)
        .await
        .unwrap();
    let message = refused.failed.clone().unwrap_or_default();
    assert!(
        message.contains("which the connection no longer delivers"),
        "{message}"
    );
    assert!(refused.objects.is_empty() && refused.figures.findings_out == 0);
    let stored: cxone_etm::pipeline::TransformRecord = serde_json::from_slice(
        &store
            .get(&run_ref.transform_record(&item.item))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored, refused,
        "the refusal is what the item's record says"
    );
}
