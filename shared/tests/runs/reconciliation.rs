//! Three consecutive runs of one SAST connection while the tenant changes under it: findings
//! added and fixed (a newer scan), fixed ones back (an older scan is the latest again), a project
//! deleted (reported, then closed by policy), one project refused and one incomplete (both carried
//! forward). Every lifecycle count is checked against a model computed from the emulator's own
//! results. Branch policies (a switch of branch, main with fallback, every branch its own asset)
//! have their own runs below.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Emulator, Endpoint, FaultSpec, ResultMix, ResultType, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::cxone::Severity;
use cxone_etm::layout::CLOSURES;
use cxone_etm::mapping::{AssetTypes, Lifecycle};
use cxone_etm::pipeline::{ItemStatus, Manifest, RunSummary, StepError};
use cxone_etm::store::{LocalStore, ObjectStore, StoreError};
use serde_json::Value;

const PROJECTS: u32 = 5;

fn shape(projects: u32, scans: u32) -> TenantShape {
    TenantShape {
        projects,
        scans_per_project: scans,
        results_per_scan: 40,
        churn_percent: 25,
        ..TenantShape::default()
    }
}

/// Per project id (all but `except`): SAST result id → closed by the vendor (status FIXED), read
/// from the emulator.
async fn vendor_view(
    emulator: &Emulator,
    except: Option<&str>,
) -> BTreeMap<String, BTreeMap<String, bool>> {
    let client = default_client(emulator);
    let mut view = BTreeMap::new();
    for project in emulator.expected().projects {
        if except == Some(project.id.as_str()) {
            continue;
        }
        let Some(scan) = project.main_branch_sast_scan else {
            continue;
        };
        let mut findings = BTreeMap::new();
        let mut pager = client.results(&scan);
        while let Some(page) = pager.next_page().await.unwrap() {
            let body: Value = serde_json::from_slice(&page.body).unwrap();
            for r in body["results"].as_array().unwrap() {
                if r["type"] == "sast" {
                    let fixed = r["status"].as_str().unwrap().eq_ignore_ascii_case("fixed");
                    findings.insert(r["id"].as_str().unwrap().to_string(), fixed);
                }
            }
        }
        view.insert(project.id, findings);
    }
    view
}

/// The reconciliation rules, written out independently of the connector: per project, the open
/// and fixed ids after a run, and the counts the run should report.
#[derive(Default)]
struct Model {
    open: BTreeMap<String, BTreeSet<String>>,
    fixed: BTreeMap<String, BTreeSet<String>>,
}

impl Model {
    fn apply(
        &mut self,
        view: &BTreeMap<String, BTreeMap<String, bool>>,
        skip: &BTreeSet<String>,
    ) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for (project, findings) in view {
            if skip.contains(project) {
                continue;
            }
            let open = self.open.entry(project.clone()).or_default();
            let fixed = self.fixed.entry(project.clone()).or_default();
            let mut next_open = BTreeSet::new();
            let mut next_fixed = BTreeSet::new();
            for (id, closed_by_vendor) in findings {
                let status = if *closed_by_vendor {
                    "FIXED"
                } else if open.contains(id) {
                    "ACTIVE"
                } else if fixed.contains(id) {
                    "REOPENED"
                } else {
                    "NEW"
                };
                *counts.entry(status).or_default() += 1;
                if *closed_by_vendor {
                    next_fixed.insert(id.clone());
                } else {
                    next_open.insert(id.clone());
                }
            }
            for id in open.iter().filter(|id| !findings.contains_key(*id)) {
                *counts.entry("FIXED").or_default() += 1;
                next_fixed.insert(id.clone());
            }
            for id in fixed.iter().filter(|id| !findings.contains_key(*id)) {
                next_fixed.insert(id.clone());
            }
            *open = next_open;
            *fixed = next_fixed;
        }
        counts
    }
}

async fn run_on(store: &LocalStore, emulator: &Emulator) -> RunSummary {
    let c = connection(emulator, "lifecycle", ConnectorKind::Sast);
    run(store, &c, api_key(emulator)).await.unwrap()
}

/// Every finding line of a run, as (project, id, lifecycleStatus, findingStatus).
async fn lines_of(store: &LocalStore, m: &Manifest) -> Vec<(String, String, String, String)> {
    let objects = m
        .items
        .iter()
        .flat_map(|i| &i.objects)
        .chain(m.deleted_items.iter().flat_map(|d| &d.objects));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    findings_in(store, objects)
        .await
        .iter()
        .map(|(line, f)| {
            (
                text(&line["vendorItemId"]),
                text(&f["externalFindingId"]),
                text(&f["lifecycleStatus"]),
                text(&f["findingStatus"]),
            )
        })
        .collect()
}

fn counted(lines: &[(String, String, String, String)]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for (_, _, status, _) in lines {
        let key = ["NEW", "ACTIVE", "REOPENED", "FIXED"]
            .into_iter()
            .find(|s| s == status)
            .unwrap_or_else(|| panic!("unknown lifecycle status {status}"));
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The model's counts keyed as the manifest keys them.
fn as_lifecycle(counts: &BTreeMap<&'static str, u64>) -> BTreeMap<Lifecycle, u64> {
    counts
        .iter()
        .map(|(k, v)| {
            let status = Lifecycle::ALL.into_iter().find(|s| s.as_str() == *k);
            (
                status.unwrap_or_else(|| panic!("unknown lifecycle status {k}")),
                *v,
            )
        })
        .collect()
}

#[tokio::test]
async fn three_runs_report_new_active_fixed_and_reopened_per_asset() {
    let (store, dir) = temp_store("lifecycle");
    let mut model = Model::default();
    let none = BTreeSet::new();

    // Run 1: everything is new (or closed by the vendor).
    let first = emulator(shape(PROJECTS, 3)).await;
    let view = vendor_view(&first, None).await;
    let expected = model.apply(&view, &none);
    let summary = run_on(&store, &first).await;
    let m1 = manifest(&store, &summary.manifest).await;
    let lines = lines_of(&store, &m1).await;
    assert_eq!(counted(&lines), expected);
    assert_eq!(m1.totals.lifecycle, as_lifecycle(&expected));
    assert!(expected["NEW"] > 100 && !expected.contains_key("ACTIVE"));

    // Run 2: a newer scan (a quarter of each project's findings fixed, as many new) and the last
    // project deleted: it is reported, its findings neither closed nor counted.
    let second = emulator(shape(PROJECTS - 1, 4)).await;
    let view = vendor_view(&second, None).await;
    let expected = model.apply(&view, &none);
    let summary = run_on(&store, &second).await;
    let m2 = manifest(&store, &summary.manifest).await;
    let lines = lines_of(&store, &m2).await;
    assert_eq!(counted(&lines), expected);
    assert_eq!(m2.totals.lifecycle, as_lifecycle(&expected));
    assert!(expected["NEW"] > 0 && expected["ACTIVE"] > 0 && expected["FIXED"] > 0);
    for (_, _, lifecycle, finding_status) in &lines {
        if lifecycle == "FIXED" {
            assert_eq!(
                finding_status, "FIXED",
                "closures are explicit FIXED records"
            );
        }
    }
    let deleted_id = first.expected().projects[PROJECTS as usize - 1].id.clone();
    assert_eq!(m2.deleted_items.len(), 1);
    assert_eq!(m2.deleted_items[0].vendor_id, deleted_id);
    assert!(!m2.deleted_items[0].closed && m2.deleted_items[0].objects.is_empty());
    let deleted_open = m2.deleted_items[0].open_findings;
    assert_eq!(
        deleted_open,
        model.open.get(&deleted_id).map_or(0, |o| o.len() as u64)
    );
    assert_eq!(m2.carried_forward, deleted_open);

    // Run 3: the older scan is the latest again (what was fixed comes back, what was new goes),
    // project 0 is refused and project 1's pull is incomplete (the total of its severities
    // before triage moves): the findings of both are carried, never closed; and the deleted
    // project's findings are closed by policy.
    let third = emulator(shape(PROJECTS - 1, 3)).await;
    let refused = third.expected().projects[0].clone();
    let incomplete = third.expected().projects[1].clone();
    third.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: refused.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    third.set_fault(
        Endpoint::SastResults,
        FaultSpec {
            total_drift: 3,
            only_matching: incomplete.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    let mut view = vendor_view(&third, Some(&refused.id)).await;
    view.remove(&incomplete.id);
    let skip = BTreeSet::from([refused.id.clone(), incomplete.id.clone()]);
    let carried = model.open[&refused.id].len() as u64;
    let carried_incomplete = model.open[&incomplete.id].len() as u64;
    let mut expected = model.apply(&view, &skip);
    *expected.entry("FIXED").or_default() += deleted_open;
    // Pages of 10, so the drifting total shows between pages.
    let mut c = connection(&third, "lifecycle", ConnectorKind::Sast);
    c.config.close_deleted_items = true;
    c.vendor.results_page_size = 10;
    let summary = run(&store, &c, api_key(&third)).await.unwrap();
    assert!(!summary.complete, "a refused project makes the run partial");
    let m3 = manifest(&store, &summary.manifest).await;
    let lines = lines_of(&store, &m3).await;
    assert_eq!(counted(&lines), expected);
    assert_eq!(m3.totals.lifecycle, as_lifecycle(&expected));
    // The deleted project's closures are lines of the run and of their engine.
    let objects = m3
        .items
        .iter()
        .flat_map(|i| &i.objects)
        .chain(m3.deleted_items.iter().flat_map(|d| &d.objects));
    assert_eq!(m3.totals.lines, objects.map(|o| o.lines).sum::<u64>());
    let by_engine = |pick: fn(&cxone_etm::mapping::Figures) -> u64| {
        m3.totals_by_engine.values().map(pick).sum::<u64>()
    };
    assert_eq!(by_engine(|f| f.lines), m3.totals.lines);
    assert_eq!(
        by_engine(|f| f.lifecycle.get(&Lifecycle::Fixed).copied().unwrap_or(0)),
        expected["FIXED"]
    );
    assert!(expected["REOPENED"] > 0, "{expected:?}");
    let refused_item = m3.items.iter().find(|i| i.vendor_id == refused.id).unwrap();
    assert_eq!(refused_item.status, ItemStatus::Failed);
    assert_eq!(refused_item.carried_forward, carried);
    assert!(
        lines.iter().all(|(project, ..)| project != &refused.id),
        "nothing of the refused project is reported, so nothing of it reads as fixed"
    );
    let incomplete_item = m3
        .items
        .iter()
        .find(|i| i.vendor_id == incomplete.id)
        .unwrap();
    assert_eq!(incomplete_item.status, ItemStatus::Incomplete);
    assert_eq!(incomplete_item.carried_forward, carried_incomplete);
    assert!(carried_incomplete > 0);
    assert!(
        lines.iter().all(|(project, ..)| project != &incomplete.id),
        "nothing of the incomplete project is reported either"
    );
    assert_eq!(m3.carried_forward, carried + carried_incomplete);
    let deleted = &m3.deleted_items[0];
    assert!(deleted.closed);
    assert_eq!(deleted.objects[0].findings, deleted_open);
    assert_eq!(
        lines
            .iter()
            .filter(|(project, ..)| project == &deleted_id)
            .count() as u64,
        deleted_open
    );

    std::fs::remove_dir_all(dir).ok();
}

/// An asset type the filters leave out (a project without a repository URL, when only code
/// repositories are taken) writes none of its findings and closes none: they stay open in its
/// ledger, and are ACTIVE, not NEW, when the filter takes the type again.
#[tokio::test]
async fn an_asset_type_left_out_closes_none_of_its_findings() {
    let (store, dir) = temp_store("asset-types");
    // One scan a project: the vendor's findings are the same in every run.
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let first = run_on(&store, &emulator).await;
    let m1 = manifest(&store, &first.manifest).await;
    let by_project = |lines: &[(String, String, String, String)]| {
        let mut counts = BTreeMap::<String, usize>::new();
        for (project, _, _, _) in lines {
            *counts.entry(project.clone()).or_default() += 1;
        }
        counts
    };
    let lines1 = lines_of(&store, &m1).await;
    let findings1 = by_project(&lines1);

    let mut c = connection(&emulator, "lifecycle", ConnectorKind::Sast);
    c.config.filters.asset_types = AssetTypes {
        generic_application: false,
        code_repository: true,
    };
    let c = c.config.validate().unwrap();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete);
    let m2 = manifest(&store, &second.manifest).await;
    let closures = m2
        .items
        .iter()
        .flat_map(|i| &i.objects)
        .filter(|o| o.key.ends_with(CLOSURES))
        .count();
    assert_eq!(closures, 0, "leaving an asset type out closes nothing");
    let findings2 = by_project(&lines_of(&store, &m2).await);
    let left_out: Vec<&String> = findings1
        .keys()
        .filter(|p| !findings2.contains_key(*p))
        .collect();
    assert!(
        !left_out.is_empty(),
        "a project without a repository URL had findings in run 1 and none in run 2"
    );
    assert!(m2.totals.skipped_by_filter > 0);

    let third = run_on(&store, &emulator).await;
    let m3 = manifest(&store, &third.manifest).await;
    let lines3 = lines_of(&store, &m3).await;
    assert_eq!(
        by_project(&lines3),
        findings1,
        "every finding is written again"
    );
    // A finding the vendor reports fixed is FIXED in every run; every other one was NEW in run 1
    // and, kept open while left out, is ACTIVE now (NEW would mean forgotten, REOPENED closed).
    let first_seen: BTreeMap<&String, &String> = lines1
        .iter()
        .map(|(_, id, lifecycle, _)| (id, lifecycle))
        .collect();
    for (project, id, lifecycle, _) in &lines3 {
        let expected = match first_seen[id].as_str() {
            "FIXED" => "FIXED",
            _ => "ACTIVE",
        };
        assert_eq!(lifecycle, expected, "{project} {id}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn filters_leave_findings_out_without_closing_them() {
    let (store, dir) = temp_store("filters");
    let emulator = emulator(shape(PROJECTS, 3)).await;
    let first = run_on(&store, &emulator).await;
    let m1 = manifest(&store, &first.manifest).await;
    let open_before: u64 = m1
        .totals
        .lifecycle
        .get(&Lifecycle::New)
        .copied()
        .unwrap_or(0);
    let left_out = emulator.expected().projects[1].clone();

    // Run 2: only HIGH and CRITICAL findings, and every project but one by name.
    let mut c = connection(&emulator, "lifecycle", ConnectorKind::Sast);
    let keep = emulator
        .expected()
        .projects
        .iter()
        .filter(|p| p.id != left_out.id)
        .map(|p| {
            globset::escape(&p.name)
                .parse()
                .expect("an escaped name is a pattern")
        })
        .collect();
    c.config.filters.project_names = keep;
    c.config.filters.severities = vec![Severity::High, Severity::Critical];
    let c = c.config.validate().unwrap();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    let lines = lines_of(&store, &m2).await;
    let closure_objects = |m: &Manifest| {
        m.items
            .iter()
            .flat_map(|i| &i.objects)
            .filter(|o| o.key.ends_with(CLOSURES))
            .count()
    };
    assert_eq!(closure_objects(&m2), 0, "no finding is closed by a filter");
    assert!(lines.iter().all(|(_, _, lifecycle, _)| lifecycle != "NEW"));
    // Outside the severities, only findings ETM holds open that the vendor has settled are
    // sent: here those run 1 sent PROTECTED (triaged NOT_EXPLOITABLE), sent so again; never one
    // still open. (The same scans both runs: a FIXED one was closed by run 1.)
    let outside: Vec<(String, String)> =
        findings_in(&store, m2.items.iter().flat_map(|i| &i.objects))
            .await
            .iter()
            .map(|(_, f)| {
                let text = |key: &str| f[key].as_str().unwrap_or_default().to_string();
                (text("vendorSeverity"), text("findingStatus"))
            })
            .filter(|(severity, _)| !["HIGH", "CRITICAL"].contains(&severity.as_str()))
            .collect();
    assert!(
        !outside.is_empty() && outside.iter().all(|(_, status)| status == "PROTECTED"),
        "{outside:?}"
    );
    assert!(m2.totals.skipped_by_filter > 0);
    assert_eq!(m2.filtered_items.len(), 1);
    assert_eq!(m2.filtered_items[0].vendor_id, left_out.id);
    assert!(m2.filtered_items[0].reason.contains("project_names"));
    assert!(
        m2.carried_forward > 0,
        "the left-out project's findings are carried"
    );

    // Run 3: a look-back window the emulator's scans (months old) fall outside: every item is
    // skipped with the reason and nothing is closed.
    let mut c = connection(&emulator, "lifecycle", ConnectorKind::Sast);
    c.config.filters.max_scan_age_days = Some(30);
    let c = c.config.validate().unwrap();
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(
        lines_of(&store, &m3).await.is_empty(),
        "nothing emitted, nothing closed"
    );
    assert_eq!(closure_objects(&m3), 0);
    let with_scan: Vec<_> = m3.items.iter().filter(|i| i.reason.is_some()).collect();
    assert!(!with_scan.is_empty());
    assert!(with_scan.iter().all(|i| {
        i.status == ItemStatus::NoScan
            && i.reason
                .as_deref()
                .unwrap()
                .contains("look-back window of 30 days")
    }));
    assert_eq!(
        m3.carried_forward, open_before,
        "every finding open after run 1 is still open, carried"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_change_of_branch_holds_closures_for_one_run() {
    let (store, dir) = temp_store("branches");
    let emulator = emulator(TenantShape {
        branches_per_project: 2,
        ..shape(PROJECTS, 3)
    })
    .await;
    let feature = emulator.expected().projects[0].scans[1].branch.clone();
    let pinned = |branch: &str| {
        let mut c = connection(&emulator, "branches", ConnectorKind::Sast);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::Pinned {
            branch: branch.to_string(),
        };
        c.config.validate().unwrap()
    };
    let on_main = run(&store, &pinned("main"), api_key(&emulator))
        .await
        .unwrap();
    let m1 = manifest(&store, &on_main.manifest).await;
    assert!(m1.totals.findings_out > 0);

    // The feature branch's scan is older: some findings of main's are absent. Switching holds
    // them open instead of closing them…
    let switched = run(&store, &pinned(&feature), api_key(&emulator))
        .await
        .unwrap();
    let m2 = manifest(&store, &switched.manifest).await;
    assert_eq!(
        closed_findings(&m2),
        0,
        "no closure in the run that changed branch"
    );
    let held = m2.totals.held_on_branch_change;
    assert!(held > 0, "findings absent on the new branch were held");

    // …and a second run on the same branch closes what is still absent, exactly those.
    let again = run(&store, &pinned(&feature), api_key(&emulator))
        .await
        .unwrap();
    let m3 = manifest(&store, &again.manifest).await;
    assert_eq!(closed_findings(&m3), held);
    assert_eq!(m3.totals.held_on_branch_change, 0);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_rejected_record_never_closes_the_finding_it_might_be() {
    let (store, dir) = temp_store("rejected");
    // One scan per project and only SAST results: nothing changes between runs but the fault.
    let emulator = emulator(TenantShape {
        result_mix: ResultMix {
            sast: 100,
            kics: 0,
            sca: 0,
            containers: 0,
        },
        ..shape(PROJECTS, 1)
    })
    .await;
    let c = connection(&emulator, "rejected", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    let victim = emulator
        .expected()
        .projects
        .into_iter()
        .find(|p| p.main_branch_sast_scan.is_some())
        .unwrap();

    // Run 2: one record of the victim's pull arrives malformed (no id) and is rejected; the pull
    // is otherwise complete. Its finding is absent from the accepted records, but it is not fixed.
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            malformed_rate: 1.0,
            max: Some(1),
            only_matching: victim.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    let item = m2.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    assert_eq!(item.status, ItemStatus::Complete);
    assert_eq!(item.figures.rejected, 1, "{:?}", item.rejected);
    assert_eq!(
        m2.totals
            .lifecycle
            .get(&Lifecycle::Fixed)
            .copied()
            .unwrap_or(0),
        m2.totals.fixed,
        "no finding closed by absence: {:?}",
        m2.totals.lifecycle
    );
    assert_eq!(item.figures.held_for_rejected_records, 1);
    assert_eq!(m2.totals.held_for_rejected_records, 1);

    // Run 3: the record is whole again; it is the same open finding (ACTIVE), nothing reopened.
    emulator.clear_faults();
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert_eq!(m3.totals.held_for_rejected_records, 0);
    nothing_new_or_reopened(&m3, "run 3");
    assert_eq!(m3.totals.findings_out, m1.totals.findings_out);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_malformed_project_record_is_never_read_as_a_deleted_project() {
    let (store, dir) = temp_store("unlisted");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut c = connection(&emulator, "unlisted", ConnectorKind::Sast);
    c.config.close_deleted_items = true;
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;

    // Run 2: one record of the project list arrives malformed, so that project is not in the work
    // list. The list is incomplete: the project is not deleted, and none of its findings closes.
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            malformed_rate: 1.0,
            max: Some(1),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(!second.complete, "an incomplete list makes the run partial");
    let m2 = manifest(&store, &second.manifest).await;
    assert_eq!(m2.items.len() as u32, PROJECTS - 1, "one project unread");
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    assert_eq!(
        m2.totals
            .lifecycle
            .get(&Lifecycle::Fixed)
            .copied()
            .unwrap_or(0),
        m2.totals.fixed,
        "nothing closed by absence: {:?}",
        m2.totals.lifecycle
    );
    let open_now = m2.totals.findings_out - m2.totals.fixed;
    assert_eq!(open_now + m2.carried_forward, open_before);

    // Run 3: listed again, its findings are the same open ones (ACTIVE), nothing new or reopened.
    emulator.clear_faults();
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(third.complete);
    nothing_new_or_reopened(&m3, "run 3");
    std::fs::remove_dir_all(dir).ok();
}

/// A project whose id is crafted as another project's branch asset key (`<id>@<branch>-` and 8
/// hex digits of the branch's SHA-256; under `each_branch` a project without a scan keeps its
/// id's key) would share that branch's folder and ledger: it is left out, named in a problem,
/// and the branch goes on as it was. Before, finalize kept one of the two unsaid, and the
/// branch's findings went whichever way the two collects raced. (Its branch list answers 404, as
/// a project's deleted since the project list: before, that failed the run's plan.)
#[tokio::test]
async fn a_project_id_crafted_as_another_projects_branch_key_is_left_out_and_named() {
    use sha2::Digest;
    let id = "crafted-id";
    let emulator = emulator(shape(4, 1)).await;
    let expected = emulator.expected();
    let (store, dir) = temp_store(id);
    let c = closing_each_branch(&emulator, id);
    let m1 = first_complete_run(&store, &c, &emulator).await;
    let (project, scan) = expected
        .projects
        .iter()
        .find_map(|p| {
            let scan = p.scans.iter().find(|s| s.status == "Completed")?;
            Some((p, scan))
        })
        .unwrap();
    let branch = &scan.branch;
    let digest = hex::encode(&sha2::Sha256::digest(branch.as_bytes())[..4]);
    let crafted = format!("{}@{branch}-{digest}", project.id);
    let branch_item = |m: &Manifest| {
        m.items
            .iter()
            .find(|i| i.vendor_id == project.id && i.name.ends_with(&format!(" @ {branch}")))
            .cloned()
            .unwrap()
    };
    let before = branch_item(&m1);
    assert_eq!(
        before.item,
        cxone_etm::layout::item_key(&crafted),
        "the crafted id's key is the branch's"
    );

    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            last_project_id: Some(crafted.clone()),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(!second.complete);
    let m2 = manifest(&store, &second.manifest).await;
    let named: Vec<&String> = m2
        .problems
        .iter()
        .filter(|p| p.contains("has the storage key"))
        .collect();
    assert_eq!(named.len(), 1, "{:?}", m2.problems);
    assert!(
        named[0].starts_with(&format!("project {crafted} "))
            && named[0].contains(&format!("of project {} ", project.id)),
        "{}",
        named[0]
    );
    // Its branch list answered 404 (the tenant knows no such project): that list ends in doubt,
    // not the plan (as for a project deleted between the two lists).
    assert!(
        m2.problems.iter().any(|p| p.starts_with(&format!(
            "the branch list of project {crafted} may be short: the tenant answered the project not found (404)"
        ))),
        "{:?}",
        m2.problems
    );
    assert!(m2.items.iter().all(|i| i.vendor_id != crafted));
    let after = branch_item(&m2);
    assert_eq!(after.status, ItemStatus::Complete);
    assert_eq!(after.figures.findings_out, before.figures.findings_out);
    assert_eq!(closed_findings(&m2), 0);
    assert!(
        m2.deleted_items.iter().all(|d| !d.closed),
        "{:?}",
        m2.deleted_items
    );
    nothing_new_or_reopened(&m2, "run 2");
    std::fs::remove_dir_all(dir).ok();
}

/// A project renamed while the project list is paged moves to its end: it comes twice, with
/// other bytes, and the project pushed back over a page's edge is never sent, the count still
/// right. Under `close_deleted_items` that project is not deleted and none of its findings
/// closes; the renamed one is one item, not two. Before, the run answered complete and closed the
/// 23 findings of the project never sent as deleted.
#[tokio::test]
async fn a_project_list_that_moves_while_it_is_paged_deletes_nothing() {
    let (store, dir) = temp_store("list-moved");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut c = connection(&emulator, "list-moved", ConnectorKind::Sast);
    c.config.close_deleted_items = true;
    c.vendor.projects_page_size = 2;
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store, &first.manifest).await;
    let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;

    // Pages of 2: page 2 is served as projects 3 and 4, page 3 as project 0 renamed.
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            first_moved_to_end: true,
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    assert!(!second.complete, "a list that moved makes the run partial");
    let m2 = manifest(&store, &second.manifest).await;
    assert!(
        m2.problems.iter().any(
            |p| p.contains("1 item(s) were listed twice with other contents")
                && p.contains("(renamed)")
        ),
        "{:?}",
        m2.problems
    );
    let skipped = &emulator.expected().projects[2].id;
    let items: BTreeSet<&str> = m2.items.iter().map(|i| i.vendor_id.as_str()).collect();
    assert_eq!(items.len(), m2.items.len(), "each project once");
    assert_eq!(m2.items.len() as u32, PROJECTS - 1, "{items:?}");
    assert!(!items.contains(skipped.as_str()), "{items:?}");
    let renamed = &emulator.expected().projects[0].id;
    let kept = m2.items.iter().find(|i| &i.vendor_id == renamed).unwrap();
    assert!(
        kept.name.ends_with(" (renamed)"),
        "the later record: {}",
        kept.name
    );
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    let open_now = m2.totals.findings_out - m2.totals.fixed;
    assert!(m2.carried_forward > 0, "the project never sent is carried");
    assert_eq!(open_now + m2.carried_forward, open_before);

    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(third.complete, "{:?}", third.problems);
    nothing_new_or_reopened(&m3, "run 3");
    std::fs::remove_dir_all(dir).ok();
}

/// A project list paged while a project is deleted and another created: every page after the
/// first is served as if project 0 had gone and a new project come at the end, so project 2 is
/// never sent, yet the count is right and no project comes twice: the list reads complete. The
/// plan asks for each project of the last committed run the list did not send, alone: project 2
/// still has a scan, so the run is partial, nothing is reported deleted or closed, and its
/// findings are carried; the run after finds nothing NEW or REOPENED. Before, project 2 was
/// reported deleted and its open findings closed under `close_deleted_items`.
#[tokio::test]
async fn a_project_list_that_skips_one_while_it_is_paged_deletes_nothing() {
    a_list_that_skips_one_while_it_is_paged_deletes_nothing(ConnectorKind::Sast).await;
}

/// The same for a DAST environment list (paged with `from`/`to`): environment 2 is never sent;
/// asked for alone, it still has scans.
#[tokio::test]
async fn an_environment_list_that_skips_one_while_it_is_paged_deletes_nothing() {
    a_list_that_skips_one_while_it_is_paged_deletes_nothing(ConnectorKind::Dast).await;
}

/// A tenant whose `use-main-branch` answers are of another branch than the projects' records name
/// as their main one (emulator fault `projects:list-main-branch=trunk`: every record names
/// `trunk`, the scans stay on theirs): no such scan is taken for the main branch's, nor, under
/// `fallback_to_any`, any branch's (a server ignoring the filter would answer the same scan): no
/// project is pulled, every finding carried and none closed, the run partial, naming each
/// project. Before, the other branch's scan was taken for the main branch's, and every finding of
/// the main branch it lacks was closed.
#[tokio::test]
async fn a_main_branch_answer_of_another_branch_is_not_taken_for_the_main_branchs() {
    for fallback_to_any in [false, true] {
        let id = format!("main-branch-off-{fallback_to_any}");
        let (store, dir) = temp_store(&id);
        let emulator = emulator(shape(PROJECTS, 1)).await;
        let mut c = connection(&emulator, &id, ConnectorKind::Sast);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::Main { fallback_to_any };
        let first = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(first.complete, "{:?}", first.problems);
        let m1 = manifest(&store, &first.manifest).await;
        let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;

        emulator.set_fault(
            Endpoint::Projects,
            FaultSpec {
                main_branch_listed: Some("trunk".into()),
                ..FaultSpec::default()
            },
        );
        let second = run(&store, &c, api_key(&emulator)).await.unwrap();
        emulator.clear_faults();
        let m2 = manifest(&store, &second.manifest).await;
        let named = m2
            .problems
            .iter()
            .filter(|p| {
                p.contains("of its main branch trunk (`use-main-branch`), the tenant answered scan")
            })
            .count();
        let scanned = m1
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Complete)
            .count();
        assert!(!second.complete && named == scanned, "{:?}", m2.problems);
        assert_eq!(
            closed_findings(&m2),
            0,
            "{fallback_to_any}: nothing is closed"
        );
        // Under `fallback_to_any` too: a server that ignored the filter would answer the
        // same scan for any branch.
        assert!(
            m2.items.iter().all(|i| i.status == ItemStatus::NoScan),
            "{fallback_to_any}"
        );
        assert_eq!(m2.carried_forward, open_before);

        let third = run(&store, &c, api_key(&emulator)).await.unwrap();
        let m3 = manifest(&store, &third.manifest).await;
        assert!(third.complete, "{:?}", third.problems);
        nothing_new_or_reopened(&m3, "run 3");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// One project's entry in a `last-scan` answer that breaks the schema (its scan's id gone), under
/// each branch policy: that project alone takes no scan and is named, its findings carried, none
/// closed, nothing deleted; the other projects are delivered. Before, the whole answer was
/// refused, retried as if the server were down, and every run failed until the vendor's data
/// changed.
#[tokio::test]
async fn a_last_scan_entry_that_breaks_the_schema_fails_its_project_alone() {
    use cxone_etm::pipeline::BranchPolicy;
    for policy in [
        BranchPolicy::Any,
        BranchPolicy::Main {
            fallback_to_any: true,
        },
        BranchPolicy::EachBranch,
    ] {
        let id = format!("last-scan-unreadable-{policy:?}")
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let (store, dir) = temp_store(&id);
        let emulator = emulator(shape(PROJECTS, 1)).await;
        let mut c = connection(&emulator, &id, ConnectorKind::Sast);
        c.config.branches = policy.clone();
        c.config.close_deleted_items = true;
        let m1 = first_complete_run(&store, &c, &emulator).await;
        let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;

        emulator.set_fault(
            Endpoint::LastScan,
            FaultSpec {
                malformed_rate: 1.0,
                max: Some(1),
                ..FaultSpec::default()
            },
        );
        let second = run(&store, &c, api_key(&emulator)).await.unwrap();
        emulator.clear_faults();
        let m2 = manifest(&store, &second.manifest).await;
        let named: Vec<&String> = m2
            .problems
            .iter()
            .filter(|p| {
                p.contains("cannot be read (its scan does not read as the documented one: ")
            })
            .collect();
        assert!(!second.complete, "{policy:?}");
        assert_eq!(named.len(), 1, "{policy:?}: {:?}", m2.problems);
        let project = named[0]
            .strip_prefix("project ")
            .and_then(|p| p.split(':').next())
            .unwrap();
        assert!(
            named[0]
                .ends_with("no scan is taken for it: what it would hold is carried, none closed"),
            "{}",
            named[0]
        );
        for item in &m2.items {
            let expected = if item.vendor_id == project {
                ItemStatus::NoScan
            } else {
                ItemStatus::Complete
            };
            assert_eq!(item.status, expected, "{policy:?}: {}", item.item);
        }
        assert_eq!(
            m2.items
                .iter()
                .filter(|i| i.status == ItemStatus::Complete)
                .count(),
            m1.items.len() - 1,
            "{policy:?}: every other project delivered"
        );
        assert_eq!(closed_findings(&m2), 0, "{policy:?}");
        assert!(
            m2.deleted_items.is_empty(),
            "{policy:?}: {:?}",
            m2.deleted_items
        );
        assert_eq!(
            m2.totals.findings_out - m2.totals.fixed + m2.carried_forward,
            open_before,
            "{policy:?}"
        );

        let third = run(&store, &c, api_key(&emulator)).await.unwrap();
        let m3 = manifest(&store, &third.manifest).await;
        assert!(third.complete, "{policy:?}: {:?}", third.problems);
        nothing_new_or_reopened(&m3, "run 3");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// An environment's scans answered as if the server ignored `environmentId` (every environment's,
/// the newest another's), as an empty page beside their count, or oldest first whatever `sort`
/// asks: its collect takes no scan and fails, its findings carried, nothing closed; the other
/// environments are delivered. Before, the collect took the newest completed scan it was sent,
/// another environment's, and closed the environment's findings as absent; read the empty page as
/// "no completed scan"; and took the oldest scan for the latest.
#[tokio::test]
async fn an_environments_scans_that_are_not_its_own_are_not_taken() {
    let (store, dir) = temp_store("dast-scans-ignored");
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        ..shape(PROJECTS, 1)
    })
    .await;
    let c = connection(&emulator, "dast-scans-ignored", ConnectorKind::Dast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store, &first.manifest).await;
    let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;
    let oldest = emulator.expected().environments[0].id.clone();
    for (fault, why) in [
        (
            FaultSpec {
                filters_ignored: true,
                only_matching: Some(oldest.clone()),
                ..FaultSpec::default()
            },
            "the server ignored `environmentId`",
        ),
        (
            FaultSpec {
                page_cap: Some(0),
                only_matching: Some(oldest.clone()),
                ..FaultSpec::default()
            },
            "is empty, though the server reports",
        ),
        (
            FaultSpec {
                sort_ignored: true,
                only_matching: Some(oldest.clone()),
                ..FaultSpec::default()
            },
            "scans are not newest first as `sort=created:desc` asks",
        ),
    ] {
        emulator.set_fault(Endpoint::DastScans, fault);
        let second = run(&store, &c, api_key(&emulator)).await.unwrap();
        emulator.clear_faults();
        let m2 = manifest(&store, &second.manifest).await;
        let item = m2.items.iter().find(|i| i.vendor_id == oldest).unwrap();
        assert_eq!(item.status, ItemStatus::Failed, "{why}");
        assert!(
            item.reason.as_deref().is_some_and(|r| r.contains(why)),
            "{why}: {:?}",
            item.reason
        );
        assert!(
            m2.items
                .iter()
                .filter(|i| i.vendor_id != oldest)
                .all(|i| i.status == ItemStatus::Complete),
            "{why}"
        );
        assert_eq!(closed_findings(&m2), 0, "{why}: nothing is closed");
        let open_now = m2.totals.findings_out - m2.totals.fixed;
        assert_eq!(open_now + m2.carried_forward, open_before, "{why}");
    }
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(third.complete, "{:?}", third.problems);
    nothing_new_or_reopened(&m3, "run 3");
    std::fs::remove_dir_all(dir).ok();
}

/// An environment's scan record that is not a scan (its `scanId` gone), where it is the newest
/// completed one: the item fails, its findings carried, nothing closed. Before, the record was
/// passed over and the older completed scan after it taken for the latest, its churned findings
/// closed as absent.
#[tokio::test]
async fn a_dast_scan_record_that_is_not_a_scan_is_not_passed_over() {
    let (store, dir) = temp_store("dast-scan-unreadable");
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        // Environment 3's newest scan is running: newest first, its scans are Running,
        // Completed, Completed, and the middle one (the newest completed) is the one broken.
        dast_scans_per_environment: 3,
        ..shape(PROJECTS, 1)
    })
    .await;
    let c = connection(&emulator, "dast-scan-unreadable", ConnectorKind::Dast);
    let m1 = first_complete_run(&store, &c, &emulator).await;
    let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;
    let running_last = emulator.expected().environments[3].id.clone();
    emulator.set_fault(
        Endpoint::DastScans,
        FaultSpec {
            malformed_rate: 1.0,
            only_matching: Some(running_last.clone()),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m2 = manifest(&store, &second.manifest).await;
    let item = m2
        .items
        .iter()
        .find(|i| i.vendor_id == running_last)
        .unwrap();
    assert_eq!(item.status, ItemStatus::Failed, "{:?}", item.reason);
    assert!(
        item.reason
            .as_deref()
            .is_some_and(|r| r.contains("record 1 of the page from 0 is not a scan")),
        "{:?}",
        item.reason
    );
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    let open_now = m2.totals.findings_out - m2.totals.fixed;
    assert_eq!(open_now + m2.carried_forward, open_before);
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(third.complete, "{:?}", third.problems);
    nothing_new_or_reopened(&m3, "run 3");
    std::fs::remove_dir_all(dir).ok();
}

/// Results pages about another scan than asked (a server ignoring `scan-id`: its pages name
/// another scan in `scanID`, the severities before triage in each row; a DAST scan's results
/// name another environment): the item fails, its findings carried, nothing closed, the others
/// delivered. Before, the other scan's results were taken for the item's, and its own findings
/// absent from them closed (the other scan's severities before triage were taken for its own).
#[tokio::test]
async fn results_about_another_scan_are_not_taken() {
    for (kind, faulted) in [
        (ConnectorKind::Sast, Endpoint::Results),
        (ConnectorKind::Sast, Endpoint::SastResults),
        (ConnectorKind::Dast, Endpoint::DastResults),
    ] {
        let id = format!("results-of-another-{faulted:?}").to_lowercase();
        let (store, dir) = temp_store(&id);
        let emulator = emulator(TenantShape {
            dast_environments: 4,
            ..shape(PROJECTS, 1)
        })
        .await;
        let c = connection(&emulator, &id, kind);
        let first = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(first.complete, "{:?}", first.problems);
        let m1 = manifest(&store, &first.manifest).await;
        let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;
        // The tenant's first scan's results are served for the third item's scan.
        let expected = emulator.expected();
        let (endpoint, item, scan, why) = match kind {
            ConnectorKind::Dast => {
                let env = &expected.environments[2];
                let scan = env.latest_completed_scan.clone().unwrap();
                (
                    Endpoint::DastResults,
                    env.id.clone(),
                    scan,
                    "holds a result of environment",
                )
            }
            _ => {
                let project = &expected.projects[2];
                let scan = project.scans.last().unwrap().id.clone();
                (
                    faulted,
                    project.id.clone(),
                    scan,
                    "was asked for (`scan-id`)",
                )
            }
        };
        emulator.set_fault(
            endpoint,
            FaultSpec {
                filters_ignored: true,
                only_matching: Some(scan.clone()),
                ..FaultSpec::default()
            },
        );
        let second = run(&store, &c, api_key(&emulator)).await.unwrap();
        emulator.clear_faults();
        let m2 = manifest(&store, &second.manifest).await;
        let failed = m2.items.iter().find(|i| i.vendor_id == item).unwrap();
        assert_eq!(failed.status, ItemStatus::Failed, "{faulted:?}");
        assert!(
            failed
                .reason
                .as_deref()
                .is_some_and(|r| r.contains(why) && r.contains(&scan)),
            "{faulted:?}: {:?}",
            failed.reason
        );
        assert!(
            m2.items
                .iter()
                .filter(|i| i.vendor_id != item)
                .all(|i| i.status == ItemStatus::Complete),
            "{faulted:?}"
        );
        assert_eq!(closed_findings(&m2), 0, "{faulted:?}: nothing is closed");
        let open_now = m2.totals.findings_out - m2.totals.fixed;
        assert_eq!(open_now + m2.carried_forward, open_before, "{faulted:?}");
        let third = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(third.complete, "{:?}", third.problems);
        nothing_new_or_reopened(&manifest(&store, &third.manifest).await, "run 3");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A DAST scan whose login failed lacks what lies behind the login: the environment says so of
/// its last scan (`hasAuth`, `lastAuthSuccess` false), the one the run pulls, and its findings
/// absent from that scan are held open (`heldForFailedLogin`), not closed; what it shows is
/// sent. The environments without a login close what their scans lack as ever, and the next
/// run, the login working again, reopens nothing. Before, every finding behind the login was
/// closed as FIXED and sent NEW again once the login worked.
#[tokio::test]
async fn a_dast_scan_whose_login_failed_closes_nothing_it_lacks() {
    let id = "dast-login-failed";
    let (store, dir) = temp_store(id);
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        ..shape(PROJECTS, 1)
    })
    .await;
    let c = connection(&emulator, id, ConnectorKind::Dast);
    let m1 = first_complete_run(&store, &c, &emulator).await;
    let open = |m: &Manifest, environment: &str| {
        let item = m.items.iter().find(|i| i.vendor_id == environment).unwrap();
        item.figures.findings_out - item.figures.fixed
    };
    for endpoint in [Endpoint::DastEnvironments, Endpoint::DastResults] {
        let fault = FaultSpec {
            login_failed: true,
            ..FaultSpec::default()
        };
        emulator.set_fault(endpoint, fault);
    }
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(m2.complete, "{:?}", m2.problems);
    let (with_login, without): (Vec<_>, Vec<_>) = emulator
        .expected()
        .environments
        .into_iter()
        .filter(|e| e.latest_completed_scan.is_some() && open(&m1, &e.id) > 1)
        .partition(|e| e.has_login);
    assert!(!with_login.is_empty() && !without.is_empty());
    let mut held = 0;
    for e in &with_login {
        let item = m2.items.iter().find(|i| i.vendor_id == e.id).unwrap();
        let closed: u64 = (item.objects.iter())
            .filter(|o| o.key.ends_with(CLOSURES))
            .map(|o| o.findings)
            .sum();
        assert_eq!(closed, 0, "{}: nothing closed", item.item);
        assert!(item.figures.held_for_failed_login > 0, "{:?}", item.figures);
        assert_eq!(item.figures.failed_logins, 1, "{:?}", item.figures);
        assert_eq!(
            open(&m2, &e.id) + item.figures.held_for_failed_login,
            open(&m1, &e.id),
            "{}: what the scan showed, sent; the rest held",
            item.item
        );
        held += item.figures.held_for_failed_login;
    }
    assert_eq!(m2.totals.held_for_failed_login, held);
    for e in &without {
        let item = m2.items.iter().find(|i| i.vendor_id == e.id).unwrap();
        assert_eq!(item.figures.held_for_failed_login, 0, "{}", item.item);
        assert_eq!(item.figures.failed_logins, 0, "{}", item.item);
    }
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    nothing_new_or_reopened(&manifest(&store, &third.manifest).await, "run 3");
    // A connection whose first run meets the broken logins holds nothing (it has no ledger), yet
    // counts each environment whose login failed, for the alarm.
    let fresh = connection(&emulator, &format!("{id}-fresh"), ConnectorKind::Dast);
    for endpoint in [Endpoint::DastEnvironments, Endpoint::DastResults] {
        let fault = FaultSpec {
            login_failed: true,
            ..FaultSpec::default()
        };
        emulator.set_fault(endpoint, fault);
    }
    let first = run(&store, &fresh, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m = manifest(&store, &first.manifest).await;
    let behind_logins = emulator
        .expected()
        .environments
        .iter()
        .filter(|e| e.has_login && e.latest_completed_scan.is_some())
        .count() as u64;
    assert!(behind_logins > 0);
    assert_eq!(
        (m.totals.failed_logins, m.totals.held_for_failed_login),
        (behind_logins, 0)
    );
    std::fs::remove_dir_all(dir).ok();
}

async fn a_list_that_skips_one_while_it_is_paged_deletes_nothing(kind: ConnectorKind) {
    let id = format!("list-skipped-{kind:?}").to_lowercase();
    let (store, dir) = temp_store(&id);
    let emulator = emulator(TenantShape {
        dast_environments: 4,
        ..shape(PROJECTS, 1)
    })
    .await;
    let mut c = connection(&emulator, &id, kind);
    c.config.close_deleted_items = true;
    c.vendor.projects_page_size = 2;
    c.vendor.dast_page_size = 2;
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store, &first.manifest).await;
    let open_before: u64 = m1.totals.findings_out - m1.totals.fixed;
    let expected = emulator.expected();
    let (endpoint, skipped, asked) = match kind {
        ConnectorKind::Dast => (
            Endpoint::DastEnvironments,
            expected.environments[2].id.clone(),
            "DAST environment",
        ),
        _ => (
            Endpoint::Projects,
            expected.projects[2].id.clone(),
            "project",
        ),
    };
    let skipped_open = m1
        .items
        .iter()
        .find(|i| i.vendor_id == skipped)
        .map(|i| i.figures.findings_out - i.figures.fixed);
    assert!(skipped_open > Some(0), "the skipped one has open findings");

    emulator.set_fault(
        endpoint,
        FaultSpec {
            first_replaced: true,
            ..FaultSpec::default()
        },
    );
    if kind == ConnectorKind::Dast {
        // Asked alone, the environment's scans come as an empty page beside their count: a scan
        // all the same.
        emulator.set_fault(
            Endpoint::DastScans,
            FaultSpec {
                page_cap: Some(0),
                only_matching: Some(skipped.clone()),
                ..FaultSpec::default()
            },
        );
    }
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m2 = manifest(&store, &second.manifest).await;
    let items: BTreeSet<&str> = m2.items.iter().map(|i| i.vendor_id.as_str()).collect();
    assert!(!items.contains(skipped.as_str()), "{items:?}");
    assert!(
        items.iter().any(|id| id.ends_with("-new")),
        "the one created at the end is listed: {items:?}"
    );
    assert!(
        !second.complete,
        "a list that skipped one makes the run partial"
    );
    assert!(
        m2.problems.iter().any(|p| p
            .starts_with(&format!("{asked} {skipped} is not in the tenant's"))
            && p.contains("yet asked for alone the tenant has a scan of it")),
        "{:?}",
        m2.problems
    );
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    let open_now = m2.totals.findings_out - m2.totals.fixed;
    assert!(m2.carried_forward > 0, "the one never sent is carried");
    assert_eq!(open_now + m2.carried_forward, open_before);

    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(third.complete, "{:?}", third.problems);
    nothing_new_or_reopened(&m3, "run 3");

    // The last one deleted: asked about once, it is gone (its scans with it, the tenant answers
    // 404 or none) and closed; the run after asks nothing, none of its findings being open.
    let smaller = emulator_with(cxone_emulator::EmulatorConfig {
        shape: TenantShape {
            projects: PROJECTS - 1,
            dast_environments: 3,
            ..shape(PROJECTS, 1)
        },
        ..cxone_emulator::EmulatorConfig::default()
    })
    .await;
    let gone = match kind {
        ConnectorKind::Dast => expected.environments[3].id.clone(),
        _ => expected.projects[PROJECTS as usize - 1].id.clone(),
    };
    let mut c = connection(&smaller, &id, kind);
    c.config.close_deleted_items = true;
    let asked_about_gone = |emulator: &Emulator| {
        emulator
            .request_log()
            .iter()
            .filter(|(endpoint, target)| {
                [Endpoint::LastScan, Endpoint::DastScans].contains(endpoint)
                    && target.contains(gone.as_str())
            })
            .count()
    };
    // The question refused (403), or answered about other projects or with other environments'
    // scans (a server that ignores `project-ids` or `environmentId`): a problem, not the plan's
    // failure; the rest is delivered and nothing unlisted closed.
    let asked_endpoint = match kind {
        ConnectorKind::Dast => Endpoint::DastScans,
        _ => Endpoint::LastScan,
    };
    let mut answers = vec![(
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(gone.clone()),
            ..FaultSpec::default()
        },
        "403",
    )];
    // Asked alone, a server ignoring the filter answers about others.
    answers.push((
        FaultSpec {
            filters_ignored: true,
            only_matching: Some(gone.clone()),
            ..FaultSpec::default()
        },
        match kind {
            ConnectorKind::Dast => "the server ignored `environmentId`",
            _ => "which was not asked for: the server ignores `project-ids`",
        },
    ));
    for (fault, why) in answers {
        smaller.set_fault(asked_endpoint, fault);
        let refused = run(&store, &c, api_key(&smaller)).await.unwrap();
        smaller.clear_faults();
        let m = manifest(&store, &refused.manifest).await;
        assert!(
            !refused.complete
                && m.problems
                    .iter()
                    .any(|p| p.contains("asking whether they are still there failed")
                        && p.contains(why)),
            "{why}: {:?}",
            m.problems
        );
        assert!(
            m.deleted_items.is_empty() && m.items.iter().all(|i| i.status == ItemStatus::Complete),
            "{why}"
        );
    }
    smaller.reset_traffic();
    let fourth = run(&store, &c, api_key(&smaller)).await.unwrap();
    let m4 = manifest(&store, &fourth.manifest).await;
    assert!(fourth.complete, "{:?}", fourth.problems);
    let deleted: Vec<(&str, bool)> = m4
        .deleted_items
        .iter()
        .map(|d| (d.vendor_id.as_str(), d.closed))
        .collect();
    assert_eq!(deleted, [(gone.as_str(), true)]);
    let closed: u64 = m4.deleted_items[0].objects.iter().map(|o| o.findings).sum();
    assert!(closed > 0 && m4.deleted_items[0].carried == 0, "{closed}");
    assert_eq!(asked_about_gone(&smaller), 1, "{:?}", smaller.request_log());
    smaller.reset_traffic();
    let fifth = run(&store, &c, api_key(&smaller)).await.unwrap();
    assert!(fifth.complete, "{:?}", fifth.problems);
    assert_eq!(
        asked_about_gone(&smaller),
        0,
        "nothing of it open: not asked"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A ledger of the last committed run damaged at rest (cut off halfway): its asset fails, its
/// ledger goes forward as stored and nothing of it closes, while every other asset is reconciled
/// and the run commits, each run, until the copy the message names is deleted; then the asset
/// starts afresh. Before, finalize failed on the ledger, so every run failed, each reconciling
/// against the same committed run.
#[tokio::test]
async fn a_ledger_damaged_at_rest_fails_its_asset_not_every_run() {
    let (store, dir) = temp_store("damaged-ledger");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut c = connection(&emulator, "damaged-ledger", ConnectorKind::Sast);
    c.config.close_deleted_items = true;
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store, &first.manifest).await;
    let damaged = &m1.items[0];
    let ledger_of = |run_id: &str| {
        dir.join(format!(
            "connections/damaged-ledger/runs/{run_id}/ledger/{}.json.gz",
            damaged.item
        ))
    };
    let whole = std::fs::read(ledger_of(&m1.run_id)).unwrap();
    let cut = whole[..whole.len() / 2].to_vec();
    std::fs::write(ledger_of(&m1.run_id), &cut).unwrap();

    let mut previous = m1.run_id.clone();
    for round in ["run 2", "run 3"] {
        let summary = run(&store, &c, api_key(&emulator))
            .await
            .unwrap_or_else(|e| panic!("{round}: {e}"));
        assert!(!summary.complete, "{round}");
        let m = manifest(&store, &summary.manifest).await;
        let copy = format!(
            "connections/damaged-ledger/runs/{}/ledger/{}.json.gz",
            m.run_id, damaged.item
        );
        let item = m.items.iter().find(|i| i.item == damaged.item).unwrap();
        assert_eq!(item.status, ItemStatus::Failed, "{round}");
        let reason = item.reason.as_deref().unwrap();
        assert!(
            reason.starts_with("its ledger cannot be read")
                && reason.contains(&format!("to start the asset afresh, delete {copy}")),
            "{round}: said once, with what to do: {reason}"
        );
        assert!(
            m.problems
                .iter()
                .any(|p| p.starts_with(&format!("{}: its ledger cannot be read", item.name))),
            "{round}: {:?}",
            m.problems
        );
        assert_eq!(
            std::fs::read(ledger_of(&m.run_id)).unwrap(),
            cut,
            "{round}: carried as stored"
        );
        assert!(m.deleted_items.is_empty(), "{round}");
        assert_eq!(closed_findings(&m), 0, "{round}: nothing is closed");
        nothing_new_or_reopened(&m, round);
        assert_eq!(
            m.items
                .iter()
                .filter(|i| i.status == ItemStatus::Complete)
                .count(),
            m1.items.len() - 1,
            "{round}: every other asset is reconciled"
        );
        previous = m.run_id.clone();
    }

    // Mended as the message says: the asset starts afresh, its open findings NEW again.
    std::fs::remove_file(ledger_of(&previous)).unwrap();
    let fourth = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(fourth.complete, "{:?}", fourth.problems);
    let m4 = manifest(&store, &fourth.manifest).await;
    let item = m4.items.iter().find(|i| i.item == damaged.item).unwrap();
    assert_eq!(item.status, ItemStatus::Complete);
    assert_eq!(
        item.figures.lifecycle.get(&Lifecycle::New).copied(),
        Some(damaged.figures.findings_out),
        "{:?}",
        item.figures.lifecycle
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A damaged ledger of a project the tenant no longer lists, under `close_deleted_items`: what
/// it holds is not known, so it is neither reported deleted nor closed; it goes forward as stored,
/// and the run says so and how to let it go.
#[tokio::test]
async fn a_damaged_ledger_of_a_deleted_project_is_carried_not_closed() {
    let (store, dir) = temp_store("damaged-deleted");
    let before = emulator(shape(PROJECTS, 1)).await;
    let closing = |emulator: &Emulator| {
        let mut c = connection(emulator, "damaged-deleted", ConnectorKind::Sast);
        c.config.close_deleted_items = true;
        c
    };
    let first = run(&store, &closing(&before), api_key(&before))
        .await
        .unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    let gone = &before.expected().projects[PROJECTS as usize - 1].id;
    let item = &m1.items.iter().find(|i| &i.vendor_id == gone).unwrap().item;
    let ledger_of = |run_id: &str| {
        dir.join(format!(
            "connections/damaged-deleted/runs/{run_id}/ledger/{item}.json.gz"
        ))
    };
    std::fs::write(ledger_of(&m1.run_id), b"\x1f\x8b not a ledger").unwrap();

    let after = emulator(shape(PROJECTS - 1, 1)).await;
    let second = run(&store, &closing(&after), api_key(&after))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(!m2.complete);
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    assert!(
        m2.problems.iter().any(
            |p| p.starts_with(&format!("{item}: its ledger cannot be read"))
                && p.contains("to let the asset go, delete")
        ),
        "{:?}",
        m2.problems
    );
    assert_eq!(
        std::fs::read(ledger_of(&m2.run_id)).unwrap(),
        b"\x1f\x8b not a ledger",
        "carried as stored"
    );
    nothing_new_or_reopened(&m2, "run 2");
    std::fs::remove_dir_all(dir).ok();
}

/// A tenant that lists nothing where the last committed run delivered assets: under
/// `close_deleted_items` that read as every project (environment, branch) deleted and closed
/// every finding, though a credential that lost its access is answered the same. Now a problem:
/// the run is partial, nothing reported deleted or closed; with the assets back, nothing is new.
#[tokio::test]
async fn a_tenant_that_lists_nothing_closes_nothing() {
    for (kind, each_branch) in [
        (ConnectorKind::Sast, false),
        (ConnectorKind::Dast, false),
        (ConnectorKind::Sast, true),
    ] {
        let id = format!("lists-nothing-{kind:?}-{each_branch}").to_lowercase();
        let (store, dir) = temp_store(&id);
        let tenant = |assets: u32| TenantShape {
            dast_environments: if kind.on_projects() { 0 } else { assets },
            branches_per_project: if each_branch { 2 } else { 1 },
            ..shape(if kind.on_projects() { assets } else { 0 }, 1)
        };
        let closing = |emulator: &Emulator| {
            let mut c = connection(emulator, &id, kind);
            c.config.close_deleted_items = true;
            if each_branch {
                c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
            }
            c.config.clone().validate().unwrap()
        };
        let full = emulator(tenant(4)).await;
        let m1 = first_complete_run(&store, &closing(&full), &full).await;
        let open_before = m1.totals.findings_out - m1.totals.fixed;
        assert!(open_before > 0 && m1.items.len() >= 4, "{id}");
        let empty = emulator(tenant(0)).await;
        let second = run(&store, &closing(&empty), api_key(&empty))
            .await
            .unwrap();
        let m2 = manifest(&store, &second.manifest).await;
        assert!(!m2.complete, "{id}");
        let said = format!("run {} left assets with findings open", m1.run_id);
        assert!(
            m2.problems
                .iter()
                .any(|p| p.starts_with("the tenant lists no") && p.contains(&said)),
            "{id}: {:?}",
            m2.problems
        );
        assert!(m2.deleted_items.is_empty(), "{id}: {:?}", m2.deleted_items);
        assert_eq!(closed_findings(&m2), 0, "{id}");
        assert_eq!(m2.carried_forward, open_before, "{id}");
        let third = run(&store, &closing(&full), api_key(&full)).await.unwrap();
        let m3 = manifest(&store, &third.manifest).await;
        assert!(m3.complete, "{id}: {:?}", m3.problems);
        nothing_new_or_reopened(&m3, "the assets back");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A credential that loses its access to part of the tenant (removed from some groups; emulator
/// fault `visible`) is answered, as far as the API tells, as those projects' (environments')
/// deletion would be. Under
/// `close_deleted_items`, a run that would close more assets than the connection's
/// `deletion_limit` allows (by default 5, or 10% of the assets) closes none of them: it commits
/// partial, naming the count, the limit and what to do, and carries their findings. Fewer close
/// as before; with the limit raised, the next run closes them.
#[tokio::test]
async fn more_deletions_than_the_limit_close_nothing() {
    // The assets of `before` with findings out that `after` does not hold.
    fn gone(before: &Manifest, after: &Manifest) -> usize {
        let kept: BTreeSet<&str> = after.items.iter().map(|i| i.item.as_str()).collect();
        let with_findings = (before.items.iter())
            .filter(|i| i.figures.findings_out > i.figures.fixed || i.carried_forward > 0);
        with_findings
            .filter(|i| !kept.contains(i.item.as_str()))
            .count()
    }
    for (kind, each_branch) in [
        (ConnectorKind::Sast, false),
        (ConnectorKind::Dast, false),
        (ConnectorKind::Sast, true),
    ] {
        let id = format!("deletion-limit-{kind:?}-{each_branch}").to_lowercase();
        let (store, dir) = temp_store(&id);
        let tenant = |assets: u32| TenantShape {
            dast_environments: if kind.on_projects() { 0 } else { assets },
            branches_per_project: if each_branch { 2 } else { 1 },
            ..shape(if kind.on_projects() { assets } else { 0 }, 1)
        };
        let closing = |emulator: &Emulator, percent: u8| {
            let mut c = connection(emulator, &id, kind);
            c.config.close_deleted_items = true;
            c.config.deletion_limit.percent = percent;
            if each_branch {
                c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
            }
            c.config.clone().validate().unwrap()
        };
        let full = emulator(tenant(20)).await;
        let m1 = first_complete_run(&store, &closing(&full, 10), &full).await;
        // Two gone: within the limit (5 assets).
        let fewer = emulator(tenant(18)).await;
        let second = run(&store, &closing(&fewer, 10), api_key(&fewer)).await;
        let m2 = manifest(&store, &second.unwrap().manifest).await;
        assert!(m2.complete, "{id}: {:?}", m2.problems);
        assert!(m2.deleted_items.iter().all(|d| d.closed), "{id}");
        assert_eq!(m2.deleted_items.len(), gone(&m1, &m2), "{id}");
        assert!(!m2.deleted_items.is_empty(), "{id}");
        // The credential removed from the groups of all but 8: over it.
        let few = fewer;
        let endpoint = match kind {
            ConnectorKind::Dast => Endpoint::DastEnvironments,
            _ => Endpoint::Projects,
        };
        let visible = FaultSpec {
            visible: Some(8),
            ..FaultSpec::default()
        };
        few.set_fault(endpoint, visible);
        let third = run(&store, &closing(&few, 10), api_key(&few)).await;
        let m3 = manifest(&store, &third.unwrap().manifest).await;
        assert!(!m3.complete, "{id}");
        let lost = gone(&m2, &m3);
        assert!(lost > 5, "{id}: {lost}");
        let said = format!(
            "the tenant no longer lists {lost} assets whose findings run {} left open",
            m2.run_id
        );
        assert!(
            m3.problems
                .iter()
                .any(|p| p.starts_with(&said) && p.contains("deletion_limit.percent to 100")),
            "{id}: {:?}",
            m3.problems
        );
        assert!(m3.deleted_items.is_empty(), "{id}: {:?}", m3.deleted_items);
        let kept: BTreeSet<&str> = m3.items.iter().map(|i| i.item.as_str()).collect();
        let lost_open: u64 = (m2.items.iter())
            .filter(|i| !kept.contains(i.item.as_str()))
            .map(|i| i.figures.findings_out - i.figures.fixed)
            .sum();
        assert!(m3.carried_forward >= lost_open && lost_open > 0, "{id}");
        // The limit raised: the run after closes them, against the partial run's ledgers.
        let fourth = run(&store, &closing(&few, 100), api_key(&few)).await;
        let m4 = manifest(&store, &fourth.unwrap().manifest).await;
        assert!(m4.complete, "{id}: {:?}", m4.problems);
        // (The one deleted before is reported again, nothing left open.)
        let closing_now = m4.deleted_items.iter().filter(|d| d.open_findings > 0);
        assert!(closing_now.clone().all(|d| d.closed), "{id}");
        assert_eq!(closing_now.count(), lost, "{id}");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// The limit's share is of the assets with findings open, those still listed and those that
/// would close: with `assets` 0, a credential that sees 12 of 20 projects (7 with findings gone,
/// 11 still listed with findings open: 18) closes nothing at 30% (5 of 18) and all 7 at 40% (7,
/// exactly as many as would close).
#[tokio::test]
async fn the_deletion_limit_takes_its_share_of_the_assets_with_findings_open() {
    let emulator = emulator(shape(20, 1)).await;
    let (store, dir) = temp_store("deletion-share");
    let limited = |percent: u8| {
        let mut c = connection(&emulator, "deletion-share", ConnectorKind::Sast);
        c.config.close_deleted_items = true;
        c.config.deletion_limit = cxone_etm::pipeline::DeletionLimit { assets: 0, percent };
        c.config.validate().unwrap()
    };
    first_complete_run(&store, &limited(30), &emulator).await;
    let visible = FaultSpec {
        visible: Some(12),
        ..FaultSpec::default()
    };
    emulator.set_fault(Endpoint::Projects, visible);
    let refused = run(&store, &limited(30), api_key(&emulator)).await;
    let m2 = manifest(&store, &refused.unwrap().manifest).await;
    let said = "beside 11 assets with findings open it still lists: more than the connection's deletion_limit lets one run close as deleted (5: 0 assets, or 30% of 18)";
    assert!(
        m2.problems.iter().any(|p| p.contains(said)),
        "{:?}",
        m2.problems
    );
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    let allowed = run(&store, &limited(40), api_key(&emulator)).await;
    let m3 = manifest(&store, &allowed.unwrap().manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    assert_eq!(m3.deleted_items.iter().filter(|d| d.closed).count(), 7);
    std::fs::remove_dir_all(dir).ok();
}

/// Under `each_branch`, projects still listed whose scans the tenant no longer answers (their
/// scans deleted, or a role that lost sight of them; emulator fault `last-scan:visible`) have no
/// branch planned, and each of their branch assets would close. A listed project exempts its
/// branch assets from the deletion limit only when this run pulls a scan of it: over the limit,
/// nothing closes, and the run names the assets.
#[tokio::test]
async fn branches_of_listed_projects_without_a_scan_count_toward_the_deletion_limit() {
    let emulator = emulator(TenantShape {
        branches_per_project: 2,
        ..shape(20, 2)
    })
    .await;
    let (store, dir) = temp_store("unscanned-branches");
    let mut c = connection(&emulator, "unscanned-branches", ConnectorKind::Sast);
    c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
    c.config.close_deleted_items = true;
    let c = c.config.validate().unwrap();
    let m1 = first_complete_run(&store, &c, &emulator).await;
    let projects = emulator.expected().projects;
    let unscanned: BTreeSet<&str> = projects[8..].iter().map(|p| p.id.as_str()).collect();
    let gone = (m1.items.iter())
        .filter(|i| unscanned.contains(i.vendor_id.as_str()))
        .filter(|i| i.figures.findings_out > i.figures.fixed)
        .count();
    assert!(gone > 5, "{gone}");
    let visible = FaultSpec {
        visible: Some(8),
        ..FaultSpec::default()
    };
    emulator.set_fault(Endpoint::LastScan, visible);
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(!m2.complete);
    let said = format!(
        "the tenant no longer lists {gone} assets whose findings run {} left open (",
        m1.run_id
    );
    let problem = m2.problems.iter().find(|p| p.starts_with(&said));
    let named = problem.and_then(|p| p[said.len()..].split_once("), beside "));
    let named: Vec<&str> = named.map_or(vec![], |(n, _)| n.split(", ").collect());
    // The first five branch assets (`<project>@<branch>`) named, then an ellipsis.
    assert_eq!(named.len(), 6, "{:?}", m2.problems);
    let project = |id: &str| id.rsplit_once('@').map(|(p, _)| p.to_string());
    assert!(
        (named[..5].iter()).all(|id| project(id).is_some_and(|p| unscanned.contains(p.as_str())))
            && named[5] == "…",
        "{named:?}"
    );
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    nothing_new_or_reopened(&m2, "m2");
    std::fs::remove_dir_all(dir).ok();
}

/// A connection whose config is pointed at another tenant, or made to pull DAST environments
/// instead of projects, under the same id: every asset of its last committed run would be
/// unlisted, reported deleted and, under `close_deleted_items`, closed while the first tenant
/// still has its findings. The plan refuses the run, naming the field and what to do; nothing is
/// committed, and the config put back runs on against the first run, closing nothing.
#[tokio::test]
async fn a_connection_pointed_at_another_tenant_or_kind_is_refused_and_closes_nothing() {
    let (store, dir) = temp_store("scope");
    let acme = emulator(shape(PROJECTS, 1)).await;
    let globex = emulator_with(cxone_emulator::EmulatorConfig {
        shape: shape(PROJECTS, 1),
        tenant: "globex".into(),
        ..cxone_emulator::EmulatorConfig::default()
    })
    .await;
    let closing = |emulator: &Emulator, kind| {
        let mut c = connection(emulator, "scope", kind);
        c.config.close_deleted_items = true;
        c
    };
    let m1 = first_complete_run(&store, &closing(&acme, ConnectorKind::Sast), &acme).await;
    for (c, credential, field) in [
        (
            closing(&globex, ConnectorKind::Sast),
            api_key(&globex),
            "vendor.tenant",
        ),
        (closing(&acme, ConnectorKind::Dast), api_key(&acme), "kind"),
    ] {
        let refused = run(&store, &c, credential).await.expect_err(field);
        let StepError::BadConfig { errors, .. } = &refused else {
            panic!("{field}: {refused}");
        };
        assert_eq!(errors[0].field.as_deref(), Some(field), "{refused}");
        let text = refused.to_string();
        assert!(
            text.contains(&m1.run_id) && text.contains("a connection of its own (another id)"),
            "{text}"
        );
    }
    let state = cxone_etm::pipeline::read_state(&store, "scope")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.last_committed_run.as_deref(),
        Some(m1.run_id.as_str())
    );

    let back = run(&store, &closing(&acme, ConnectorKind::Sast), api_key(&acme))
        .await
        .unwrap();
    assert!(back.complete, "{:?}", back.problems);
    let m = manifest(&store, &back.manifest).await;
    assert!(m.deleted_items.is_empty(), "{:?}", m.deleted_items);
    assert_eq!(closed_findings(&m), 0);
    nothing_new_or_reopened(&m, "the config put back");
    std::fs::remove_dir_all(dir).ok();
}

/// The shipped SAST map, but for `externalAssetId`: the project's name, not its id.
fn sast_assets_by_name() -> cxone_etm::mapping::TransformMap {
    assets_by_name(cxone_etm::Engine::Sast)
}

/// A transform map that gives assets another `externalAssetId` (the project's name instead of
/// its id): ETM holds the open findings on the old asset, which the connection will never name
/// again. They close there, each once, saying why, and every finding is sent NEW on the new
/// asset; the run after is steady. Before, the closures went to the new asset (where ETM had
/// none of them) and the old asset's findings stayed open for good.
#[tokio::test]
async fn a_map_that_renames_assets_closes_their_findings_on_the_old_asset() {
    let (store, dir) = temp_store("rekeyed");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let by_id = connection(&emulator, "rekeyed", ConnectorKind::Sast);
    let m1 = first_complete_run(&store, &by_id, &emulator).await;
    // (asset, id) of every finding run 1 sent, and of those it left open (the vendor's FIXED
    // ones close as they are sent).
    let (mut sent_before, mut open_before) = (BTreeSet::new(), BTreeSet::new());
    for item in &m1.items {
        for (line, finding) in findings_in(&store, &item.objects).await {
            let key = (
                line["externalAssetId"].as_str().unwrap().to_string(),
                finding["externalFindingId"].as_str().unwrap().to_string(),
            );
            if finding["findingStatus"] != "FIXED" {
                open_before.insert(key.clone());
            }
            sent_before.insert(key.1);
        }
    }
    assert!(!open_before.is_empty());

    let mut by_name = by_id.config.clone();
    by_name.transform_map = Some(sast_assets_by_name());
    let by_name = by_name.validate().unwrap();
    let second = run(&store, &by_name, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store, &second.manifest).await;
    let names: BTreeMap<String, String> = emulator
        .expected()
        .projects
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let (mut closed, mut sent) = (BTreeSet::new(), BTreeSet::new());
    for item in &m2.items {
        // The old asset's closures and the new asset's lines (every line, those without
        // findings too) are numbered as one item's lines of their engine: no (engine, part) twice.
        let mut parts = BTreeSet::new();
        for object in &item.objects {
            for line in checked_lines(&store, object).await {
                let part = (line["engine"].to_string(), line["part"].as_u64().unwrap());
                assert!(
                    parts.insert(part.clone()),
                    "{part:?} of {} twice",
                    item.item
                );
            }
        }
        for object in &item.objects {
            let closures = object.key.ends_with(CLOSURES);
            for (line, finding) in findings_in(&store, [object]).await {
                let asset = line["externalAssetId"].as_str().unwrap().to_string();
                let id = finding["externalFindingId"].as_str().unwrap().to_string();
                if closures {
                    assert!(
                        finding["closedReason"]
                            .as_str()
                            .is_some_and(|r| r.contains("another externalAssetId")),
                        "{finding}"
                    );
                    assert!(closed.insert((asset, id)), "closed once");
                } else {
                    assert!(
                        !["ACTIVE", "REOPENED"]
                            .contains(&finding["lifecycleStatus"].as_str().unwrap()),
                        "the new asset starts afresh: {finding}"
                    );
                    assert_eq!(Some(&asset), names.get(&item.vendor_id));
                    sent.insert(id);
                }
            }
        }
    }
    assert_eq!(
        closed, open_before,
        "every open finding closes on the asset ETM has it on"
    );
    assert_eq!(
        sent, sent_before,
        "and every finding is sent on the new one"
    );
    let fixed_by_vendor = sent_before.len() - open_before.len();
    assert_eq!(
        m2.totals
            .lifecycle
            .get(&Lifecycle::Fixed)
            .copied()
            .unwrap_or(0),
        (open_before.len() + fixed_by_vendor) as u64
    );

    let third = run(&store, &by_name, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "the run after");
    assert_eq!(closed_findings(&m3), 0);
    std::fs::remove_dir_all(dir).ok();
}

/// The (asset, id) of every finding closed in `objects`, and of every other finding sent there.
async fn closed_and_sent(
    store: &LocalStore,
    objects: &[cxone_etm::pipeline::ObjectEntry],
) -> (BTreeSet<(String, String)>, BTreeSet<(String, String)>) {
    let (mut closed, mut sent) = (BTreeSet::new(), BTreeSet::new());
    for object in objects {
        for (line, finding) in findings_in(store, [object]).await {
            let key = (
                line["externalAssetId"].as_str().unwrap().to_string(),
                finding["externalFindingId"].as_str().unwrap().to_string(),
            );
            if object.key.ends_with(CLOSURES) {
                assert!(closed.insert(key), "closed once");
            } else {
                sent.insert(key);
            }
        }
    }
    (closed, sent)
}

/// A map that moves assets, in a run where one asset's pull has a record rejected: the rejected
/// record may be any finding open on the old asset, and moving would close that one there
/// unseen (and send it nowhere). That asset does not move this run: its item fails naming why,
/// nothing of it closes, its findings are carried; the others move. The next clean pull moves it:
/// every finding open on the old asset closes there, and the new asset gets every one.
#[tokio::test]
async fn a_moved_asset_whose_pull_rejects_a_record_moves_on_the_next_clean_pull() {
    let fault = FaultSpec {
        malformed_rate: 1.0,
        max: Some(1),
        ..FaultSpec::default()
    };
    a_moved_asset_waits_for_a_clean_pull(
        "rekeyed-rejected",
        fault,
        100,
        "1 record(s) of its pull were rejected",
    )
    .await;
}

/// The same where a finding of the asset's pull came twice with other bytes (the list moved
/// while it was paged): the record it pushed back one place went unseen.
#[tokio::test]
async fn a_moved_asset_whose_list_moves_while_it_is_paged_moves_on_the_next_clean_pull() {
    let fault = FaultSpec {
        first_moved_to_end: true,
        ..FaultSpec::default()
    };
    a_moved_asset_waits_for_a_clean_pull(
        "rekeyed-repeated",
        fault,
        7,
        "a finding of its pull came twice with other bytes",
    )
    .await;
}

/// A map that moves SAST's and KICS's findings to the project's name, in a run where the vendor
/// renamed KICS's record type in one project's scan (`kics` served as `iac`): its pull holds no
/// KICS record, so KICS's findings may all be there under the new name. KICS stays on the old
/// asset that run, its findings held open there (`heldForUnknownRecordTypes`), while SAST moves
/// and the run is complete; the next clean run moves KICS: its findings close on the old asset,
/// each once, and go NEW on the new one.
#[tokio::test]
async fn a_moved_engine_whose_record_type_was_renamed_stays_until_its_records_come_back() {
    use cxone_etm::Engine;
    a_renamed_engine_stays(
        "rekeyed-renamed",
        vec![Engine::Sast, Engine::Kics],
        SecondRun::Whole,
    )
    .await;
}

/// The same with KICS the connection's only engine: every engine of the item stays, so the
/// transform writes the item's ledger from the stayed part alone. Without it, the next run would
/// find no ledger and close nothing on the old asset.
#[tokio::test]
async fn an_item_whose_every_moved_engine_stays_keeps_its_ledger_for_the_next_run() {
    use cxone_etm::Engine;
    a_renamed_engine_stays("rekeyed-all-stay", vec![Engine::Kics], SecondRun::Whole).await;
}

/// The same with the transform's process killed right after it wrote the item's moved closures:
/// the object was written once, after the pull, and never held the closures of KICS, which
/// stays (before, a first version written before the pull held them, rewritten without them
/// after it: an attempt cut off between the two, or a second attempt's first version landing
/// after the first's rewrite, left a run to commit closures of findings held open); the state
/// machine's retry starts over from the last committed ledger and ends as an attempt never killed.
#[tokio::test]
async fn a_transform_killed_after_writing_moved_closures_never_wrote_a_staying_engines() {
    use cxone_etm::Engine;
    a_renamed_engine_stays(
        "rekeyed-killed",
        vec![Engine::Sast, Engine::Kics],
        SecondRun::KilledAfterTheWrite,
    )
    .await;
}

/// How run 2 of [`a_renamed_engine_stays`] runs.
#[derive(Clone, Copy, PartialEq)]
enum SecondRun {
    /// As the runner runs it.
    Whole,
    /// Step by step, as the state machine runs it, the process of the transform that writes
    /// the moved closures killed right after it wrote them; that transform retried.
    KilledAfterTheWrite,
}

/// Run 1 by project id, of `engines` (KICS among them); run 2 by project name (`second`), with
/// one project's KICS records served as `iac`: KICS stays on that project's old asset, held, and
/// the other engines move; run 3, clean, moves KICS.
async fn a_renamed_engine_stays(id: &str, engines: Vec<cxone_etm::Engine>, second: SecondRun) {
    use cxone_etm::Engine;
    let (local, dir) = temp_store(id);
    let store = CrashingStore::new(local);
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut config = connection(&emulator, id, ConnectorKind::Sast).config;
    config.engines = Some(engines.clone());
    let m1 = first_complete_run(&store.inner, &config.clone().validate().unwrap(), &emulator).await;
    let victim = emulator
        .expected()
        .projects
        .into_iter()
        .find(|p| p.main_branch_sast_scan.is_some())
        .unwrap();
    let before = m1.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    let open_kics: BTreeSet<(String, String, String)> = findings_in(&store.inner, &before.objects)
        .await
        .into_iter()
        .filter(|(line, f)| line["engine"] == "kics" && f["findingStatus"] != "FIXED")
        .map(|(_, f)| {
            let id = f["externalFindingId"].as_str().unwrap().to_string();
            ("kics".to_string(), victim.id.clone(), id)
        })
        .collect();
    assert!(!open_kics.is_empty());

    config.transform_maps = engines.iter().map(|e| assets_by_name(*e)).collect();
    let by_name = config.validate().unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            record_type_renamed: Some(("kics".into(), "iac".into())),
            only_matching: victim.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    let m2 = match second {
        SecondRun::Whole => {
            let second = run(&store.inner, &by_name, api_key(&emulator))
                .await
                .unwrap();
            manifest(&store.inner, &second.manifest).await
        }
        SecondRun::KilledAfterTheWrite => killed_after_the_write(&store, &by_name, &emulator).await,
    };
    emulator.clear_faults();
    assert!(m2.complete, "{:?}", m2.problems);
    let stayed = m2.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    // The item's moved closures are there exactly where the manifest lists them: where every
    // engine that moved stays, none is written.
    let run2 = cxone_etm::pipeline::RunRef {
        connection_id: id.into(),
        run_id: m2.run_id.clone(),
    };
    let moved_closures = run2.moved_closures(&stayed.item);
    assert_eq!(
        store.inner.get(&moved_closures).await.unwrap().is_some(),
        stayed.objects.iter().any(|o| o.key == moved_closures),
        "{:?}",
        stayed.objects
    );
    let (closed, sent) = by_engine(&store.inner, &stayed.objects).await;
    assert!(
        closed
            .iter()
            .all(|(engine, asset, _)| engine != "kics" && asset == &victim.id),
        "{closed:?}"
    );
    assert_eq!(
        !closed.is_empty(),
        engines.contains(&Engine::Sast),
        "SAST moved"
    );
    assert!(
        sent.keys()
            .all(|(engine, asset, _)| engine != "kics" && asset == &victim.name),
        "{sent:?}"
    );
    // An item's figures are told by engine only where the connection has more than one.
    let kics = stayed
        .by_engine
        .get(&Engine::Kics)
        .unwrap_or(&stayed.figures);
    assert_eq!(
        kics.held_for_unknown_record_types,
        open_kics.len() as u64,
        "{kics:?}"
    );
    assert_eq!(
        stayed.carried_forward, 0,
        "held, not carried: KICS was pulled"
    );

    let third = run(&store.inner, &by_name, api_key(&emulator))
        .await
        .unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(&store.inner, &third.manifest).await;
    let moved = m3.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    let (closed, sent) = by_engine(&store.inner, &moved.objects).await;
    assert_eq!(
        closed, open_kics,
        "KICS's findings close on the old asset once seen"
    );
    all_sent_on(&sent, &closed, &victim.name, "kics");
    std::fs::remove_dir_all(dir).ok();
}

/// A run step by step as the state machine runs it, where the one transform that writes an
/// item's moved closures is killed right after the write and retried.
async fn killed_after_the_write(
    store: &CrashingStore,
    c: &cxone_etm::pipeline::Connection,
    emulator: &Emulator,
) -> Manifest {
    use cxone_etm::pipeline::{VendorAccess, begin_run, collect, finalize, plan, transform};
    let run = begin_run(
        store,
        &c.config.id,
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let vendor = VendorAccess::new(
        c.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(emulator)),
    )
    .await
    .unwrap();
    let groups = plan(store, &vendor, c, &run, 1).await.unwrap();
    store.crash_after(cxone_etm::layout::MOVED_CLOSURES, 1);
    let mut killed = 0;
    for item in groups.iter().flat_map(|g| &g.items) {
        collect(store, &vendor, c, item, None).await.unwrap();
        if let Err(error) = transform(store, c, item).await {
            assert!(matches!(error, StepError::Store(_)), "{error}");
            let moved_closures = run.moved_closures(&item.item);
            let written = store
                .get(&moved_closures)
                .await
                .unwrap()
                .expect("killed right after the write");
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&written[..]),
                &mut text,
            )
            .unwrap();
            let engines: BTreeSet<String> = text
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap()["engine"].to_string())
                .collect();
            assert_eq!(
                engines,
                BTreeSet::from(["\"sast\"".to_string()]),
                "only the engine that moves closes on the old asset, in every version written"
            );
            killed += 1;
            store.revive();
            transform(store, c, item).await.unwrap();
        }
    }
    assert_eq!(killed, 1, "one item's moved closures were written again");
    finalize(store, c, &run).await.unwrap()
}

/// Run 1 by project id; run 2 by project name with `fault` on the results of one project's
/// scan, in pages of `page_size`: that project's asset waits (`why` in its reason), the others
/// move; run 3, clean, moves it.
async fn a_moved_asset_waits_for_a_clean_pull(
    id: &str,
    mut fault: FaultSpec,
    page_size: u32,
    why: &str,
) {
    let (store, dir) = temp_store(id);
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut by_id = connection(&emulator, id, ConnectorKind::Sast).config;
    by_id.vendor.results_page_size = page_size;
    let by_id = by_id.validate().unwrap();
    let m1 = first_complete_run(&store, &by_id, &emulator).await;
    let victim = emulator
        .expected()
        .projects
        .into_iter()
        .find(|p| p.main_branch_sast_scan.is_some())
        .unwrap();
    let before = m1.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    let (_, sent_before) = closed_and_sent(&store, &before.objects).await;
    let open_before: BTreeSet<(String, String)> = findings_in(&store, &before.objects)
        .await
        .into_iter()
        .filter(|(_, finding)| finding["findingStatus"] != "FIXED")
        .map(|(line, finding)| {
            (
                line["externalAssetId"].as_str().unwrap().to_string(),
                finding["externalFindingId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!open_before.is_empty());

    let mut by_name = by_id.config.clone();
    by_name.transform_map = Some(sast_assets_by_name());
    let by_name = by_name.validate().unwrap();
    fault.only_matching = victim.main_branch_sast_scan.clone();
    emulator.set_fault(Endpoint::Results, fault);
    let second = run(&store, &by_name, api_key(&emulator)).await.unwrap();
    assert!(!second.complete);
    let m2 = manifest(&store, &second.manifest).await;
    let waited = m2.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    assert_eq!(waited.status, ItemStatus::Failed, "{waited:?}");
    let reason = waited.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(why)
            && reason.contains(&format!(
                "sast's findings another externalAssetId ({}; ETM holds them open on {})",
                victim.name, victim.id
            ))
            && reason.contains("they move in the first run whose pull shows every record"),
        "{reason}"
    );
    // Nothing of it is left beside the failure's record (no page, no closures).
    let run_ref = cxone_etm::layout::RunRef {
        connection_id: id.to_string(),
        run_id: m2.run_id.clone(),
    };
    let left = store.list(&run_ref.etm_prefix(&waited.item)).await.unwrap();
    assert_eq!(left, vec![run_ref.transform_record(&waited.item)]);
    assert_eq!(waited.carried_forward, open_before.len() as u64);
    // The others moved.
    let moved = m2
        .items
        .iter()
        .filter(|i| i.vendor_id != victim.id)
        .filter(|i| i.objects.iter().any(|o| o.key.ends_with(CLOSURES)))
        .count();
    assert_eq!(moved, m2.items.len() - 1);

    emulator.clear_faults();
    let third = run(&store, &by_name, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(&store, &third.manifest).await;
    let now = m3.items.iter().find(|i| i.vendor_id == victim.id).unwrap();
    let (closed, sent) = closed_and_sent(&store, &now.objects).await;
    assert_eq!(closed, open_before, "closed on the old asset, each once");
    let on_the_new_asset: BTreeSet<(String, String)> = sent_before
        .into_iter()
        .map(|(_, id)| (victim.name.clone(), id))
        .collect();
    assert_eq!(sent, on_the_new_asset, "every finding on the new asset");
    std::fs::remove_dir_all(dir).ok();
}

/// The (engine, asset, id) of every finding closed in `objects`, and of every other finding sent
/// there with its lifecycle status.
async fn by_engine(
    store: &LocalStore,
    objects: &[cxone_etm::pipeline::ObjectEntry],
) -> (
    BTreeSet<(String, String, String)>,
    BTreeMap<(String, String, String), String>,
) {
    let (mut closed, mut sent) = (BTreeSet::new(), BTreeMap::new());
    for object in objects {
        for (line, finding) in findings_in(store, [object]).await {
            let key = (
                line["engine"].as_str().unwrap().to_string(),
                line["externalAssetId"].as_str().unwrap().to_string(),
                finding["externalFindingId"].as_str().unwrap().to_string(),
            );
            if object.key.ends_with(CLOSURES) {
                assert!(closed.insert(key), "closed once");
            } else {
                let lifecycle = finding["lifecycleStatus"].as_str().unwrap().to_string();
                sent.insert(key, lifecycle);
            }
        }
    }
    (closed, sent)
}

/// Every finding of `sent` (as [`by_engine`] answers) is on `asset`: NEW (or FIXED) where its
/// engine is `moved`, which starts afresh there, ACTIVE (or FIXED) for the engines already there;
/// and every `moved` finding `closed` on the old asset is among them.
fn all_sent_on(
    sent: &BTreeMap<(String, String, String), String>,
    closed: &BTreeSet<(String, String, String)>,
    asset: &str,
    moved: &str,
) {
    let ids = |keys: &mut dyn Iterator<Item = &(String, String, String)>| -> BTreeSet<String> {
        keys.filter(|(engine, _, _)| engine == moved)
            .map(|(_, _, id)| id.clone())
            .collect()
    };
    let closed_moved = ids(&mut closed.iter());
    assert!(!closed_moved.is_empty(), "{moved} had findings to move");
    let sent_moved = ids(&mut sent.keys());
    assert!(
        closed_moved.is_subset(&sent_moved),
        "each {moved} finding closed on the old asset is sent on the new one: closed {closed_moved:?}, sent {sent_moved:?}"
    );
    for ((engine, on, id), lifecycle) in sent {
        assert_eq!(on, asset, "{engine} {id}");
        let expected = if engine == moved {
            ["NEW", "FIXED"]
        } else {
            ["ACTIVE", "FIXED"]
        };
        assert!(
            expected.contains(&lifecycle.as_str()),
            "{engine} {id}: {lifecycle}"
        );
    }
}

/// A map change of one engine alone (SAST keyed by the project's name, SCA still by its id):
/// SAST's findings move, each closed once on the old asset and sent NEW on the new one; SCA's
/// stay where they are, ACTIVE, none closed. The next run is steady. Before, no asset was taken
/// as moved where two engines' maps differed: SAST's findings went on the new asset as ACTIVE
/// (ETM had none of them there) and stayed open for good on the old one.
#[tokio::test]
async fn a_map_change_of_one_engine_moves_that_engines_findings_alone() {
    let (store, dir) = temp_store("rekeyed-one-engine");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut both = connection(&emulator, "rekeyed-one-engine", ConnectorKind::Sast).config;
    both.engines = Some(vec![cxone_etm::Engine::Sast, cxone_etm::Engine::Sca]);
    let m1 = first_complete_run(&store, &both.clone().validate().unwrap(), &emulator).await;
    let project = &emulator.expected().projects[0];
    let before = m1.items.iter().find(|i| i.vendor_id == project.id).unwrap();
    let (_, sent_before) = by_engine(&store, &before.objects).await;
    let open_sast: BTreeSet<(String, String, String)> = findings_in(&store, &before.objects)
        .await
        .into_iter()
        .filter(|(line, f)| line["engine"] == "sast" && f["findingStatus"] != "FIXED")
        .map(|(line, f)| {
            (
                "sast".to_string(),
                line["externalAssetId"].as_str().unwrap().to_string(),
                f["externalFindingId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!open_sast.is_empty());
    assert!(sent_before.keys().any(|(engine, ..)| engine == "sca"));

    both.transform_map = Some(sast_assets_by_name());
    let both = both.validate().unwrap();
    let second = run(&store, &both, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store, &second.manifest).await;
    let now = m2.items.iter().find(|i| i.vendor_id == project.id).unwrap();
    let (closed, sent) = by_engine(&store, &now.objects).await;
    assert_eq!(
        closed, open_sast,
        "SAST's open findings close on the old asset"
    );
    for ((engine, asset, id), lifecycle) in &sent {
        match engine.as_str() {
            "sast" => {
                assert_eq!(asset, &project.name, "{id}");
                assert!(
                    ["NEW", "FIXED"].contains(&lifecycle.as_str()),
                    "{id}: {lifecycle}"
                );
            }
            _ => {
                assert_eq!(asset, &project.id, "{engine} {id}");
                assert!(
                    ["ACTIVE", "FIXED"].contains(&lifecycle.as_str()),
                    "{id}: {lifecycle}"
                );
            }
        }
    }
    assert_eq!(
        sent.len(),
        sent_before.len(),
        "every finding sent, on its engine's asset"
    );
    let third = run(&store, &both, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "the run after");
    assert_eq!(closed_findings(&m3), 0);
    std::fs::remove_dir_all(dir).ok();
}

/// The map moves the assets in a run that does not pull one engine (SCA taken off the connection
/// for that run): SCA's findings were not seen, so they stay open on the old asset (the ledger's
/// `engineAssets`), and move when SCA's scan is next pulled: closed there once, sent NEW on the
/// new asset. A project deleted meanwhile closes each engine's findings on the asset ETM holds
/// them on. Before, the move closed SCA's findings on the old asset in the run that did not pull
/// them.
#[tokio::test]
async fn an_engine_not_pulled_when_the_asset_moves_keeps_its_findings_until_its_scan_is_pulled() {
    use cxone_etm::Engine;
    let (store, dir) = temp_store("rekeyed-unpulled");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let mut config = connection(&emulator, "rekeyed-unpulled", ConnectorKind::Sast).config;
    config.engines = Some(vec![Engine::Sast, Engine::Sca]);
    config.close_deleted_items = true;
    let m1 = first_complete_run(&store, &config.clone().validate().unwrap(), &emulator).await;
    let projects = emulator.expected().projects;
    // `staying` moves; `deleted` is deleted in run 3 (the credential sees every project but it).
    let (staying, deleted) = (&projects[0], &projects[PROJECTS as usize - 1]);
    let mut open = BTreeMap::new();
    for project in [staying, deleted] {
        let item = m1.items.iter().find(|i| i.vendor_id == project.id).unwrap();
        for (line, f) in findings_in(&store, &item.objects).await {
            if f["findingStatus"] != "FIXED" {
                let engine = line["engine"].as_str().unwrap().to_string();
                let id = f["externalFindingId"].as_str().unwrap().to_string();
                open.entry((project.id.clone(), engine))
                    .or_insert_with(BTreeSet::new)
                    .insert(id);
            }
        }
    }
    let open_of =
        |project: &str, engine: &str| open[&(project.to_string(), engine.to_string())].clone();
    for project in [staying, deleted] {
        assert!(
            !open_of(&project.id, "sast").is_empty() && !open_of(&project.id, "sca").is_empty()
        );
    }
    let ids_of = |closed: &BTreeSet<(String, String, String)>, engine: &str, asset: &str| {
        closed
            .iter()
            .filter(|(e, a, _)| e == engine && a == asset)
            .map(|(_, _, id)| id.clone())
            .collect::<BTreeSet<String>>()
    };

    // Run 2: the SAST map by name, SCA not delivered.
    let mut sast_only = config.clone();
    sast_only.engines = Some(vec![Engine::Sast]);
    sast_only.transform_map = Some(assets_by_name(Engine::Sast));
    let second = run(&store, &sast_only.validate().unwrap(), api_key(&emulator))
        .await
        .unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store, &second.manifest).await;
    let now = m2.items.iter().find(|i| i.vendor_id == staying.id).unwrap();
    let (closed, _) = by_engine(&store, &now.objects).await;
    assert_eq!(
        ids_of(&closed, "sast", &staying.id),
        open_of(&staying.id, "sast")
    );
    assert_eq!(
        closed.len(),
        open_of(&staying.id, "sast").len(),
        "nothing of SCA closed: {closed:?}"
    );
    assert_eq!(
        now.carried_forward,
        open_of(&staying.id, "sca").len() as u64
    );

    // Run 3: both maps by name, SCA pulled again; one project deleted.
    config.transform_maps = vec![assets_by_name(Engine::Sast), assets_by_name(Engine::Sca)];
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            visible: Some(PROJECTS - 1),
            ..FaultSpec::default()
        },
    );
    let third = run(&store, &config.validate().unwrap(), api_key(&emulator))
        .await
        .unwrap();
    emulator.clear_faults();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(&store, &third.manifest).await;
    let now = m3.items.iter().find(|i| i.vendor_id == staying.id).unwrap();
    let (closed, sent) = by_engine(&store, &now.objects).await;
    assert_eq!(
        ids_of(&closed, "sca", &staying.id),
        open_of(&staying.id, "sca"),
        "SCA's findings close on the old asset once pulled"
    );
    assert_eq!(
        closed.len(),
        open_of(&staying.id, "sca").len(),
        "{closed:?}"
    );
    all_sent_on(&sent, &closed, &staying.name, "sca");
    let gone = m3
        .deleted_items
        .iter()
        .find(|d| d.vendor_id == deleted.id)
        .unwrap();
    assert!(gone.closed, "{gone:?}");
    let (closed, _) = by_engine(&store, &gone.objects).await;
    // Its SAST findings went NEW on its new asset in run 2 (those the vendor had not fixed).
    assert_eq!(
        ids_of(&closed, "sast", &deleted.name),
        open_of(&deleted.id, "sast")
    );
    assert_eq!(
        ids_of(&closed, "sca", &deleted.id),
        open_of(&deleted.id, "sca")
    );
    assert_eq!(
        closed.len(),
        open_of(&deleted.id, "sast").len() + open_of(&deleted.id, "sca").len(),
        "{closed:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The last committed run's manifest damaged at rest: the plan reads it only for the sizes of
/// the scans to split, so the next run pulls every scan whole and reconciles as ever. Before, the
/// plan failed on it, and so did every run after.
#[tokio::test]
async fn a_manifest_damaged_at_rest_does_not_stop_the_next_runs() {
    let (store, dir) = temp_store("damaged-manifest");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let c = connection(&emulator, "damaged-manifest", ConnectorKind::Sast);
    assert!(c.config.split_scans_above > 0, "the sizes are read");
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    std::fs::write(dir.join(&first.manifest), b"{\"items\": [").unwrap();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store, &second.manifest).await;
    assert_eq!(m2.items.len(), m1.items.len());
    nothing_new_or_reopened(&m2, "run 2");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_main_branch_policy_falls_back_to_any_branch_only_when_asked() {
    // With two scans on two branches, project 4's newest scan (on main) is still running: its main
    // branch has no completed scan, only the feature branch has.
    let emulator = emulator(TenantShape {
        branches_per_project: 2,
        ..shape(PROJECTS, 2)
    })
    .await;
    let project = emulator.expected().projects[4].clone();
    let feature_scan = project.scans[0].clone();
    assert_ne!(feature_scan.branch, project.main_branch);
    for (fallback_to_any, expected) in [(false, ItemStatus::NoScan), (true, ItemStatus::Complete)] {
        let (store, dir) = temp_store(&format!("main-branch-{fallback_to_any}"));
        let mut c = connection(&emulator, "main-branch", ConnectorKind::Sast);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::Main { fallback_to_any };
        let c = c.config.validate().unwrap();
        let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
        let m = manifest(&store, &summary.manifest).await;
        let item = m.items.iter().find(|i| i.vendor_id == project.id).unwrap();
        assert_eq!(item.status, expected, "fallback_to_any = {fallback_to_any}");
        if fallback_to_any {
            assert_eq!(item.scan_id.as_ref(), Some(&feature_scan.id));
        }
        for other in m.items.iter().filter(|i| i.vendor_id != project.id) {
            assert_eq!(
                other.status,
                ItemStatus::Complete,
                "{}: main has a completed scan",
                other.name
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A connection whose pulls of `project` answer 503 every time, retried once: its collect never
/// finishes.
fn never_finished(
    emulator: &Emulator,
    project: &cxone_emulator::ExpectedProject,
    id: &str,
) -> cxone_etm::pipeline::Connection {
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            only_matching: project.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    let mut quick = connection(emulator, id, ConnectorKind::Sast);
    quick.vendor.retry.max_retries = 1;
    quick
}

#[tokio::test]
async fn an_item_whose_collect_never_finished_keeps_its_ledger_for_the_next_run() {
    let (store, dir) = temp_store("unfinished");
    let emulator = emulator(shape(PROJECTS, 3)).await;
    let c = connection(&emulator, "unfinished", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    let broken = emulator.expected().projects[0].clone();
    let open_before = m1
        .items
        .iter()
        .find(|i| i.vendor_id == broken.id)
        .unwrap()
        .figures
        .lifecycle[&Lifecycle::New];

    // Run 2: the project's results answer 503 every time, so its collect never finishes.
    let quick = never_finished(&emulator, &broken, "unfinished");
    let second = run(&store, &quick, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    let item = m2.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.carried_forward, open_before);

    // Run 3: the project is back; its findings are the same ones, still open (ACTIVE), not NEW.
    emulator.clear_faults();
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    let item = m3.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    assert_eq!(
        item.figures.lifecycle.get(&Lifecycle::New),
        None,
        "{:?}",
        item.figures.lifecycle
    );
    assert_eq!(item.figures.lifecycle[&Lifecycle::Active], open_before);
    std::fs::remove_dir_all(dir).ok();
}

/// Under `each_branch` a project's assets are its branches. A project the filters leave out keeps
/// its branches' findings as they were, even with `close_deleted_items`: it is not deleted, and
/// nothing of it is closed or reported as deleted. Three projects left out are six branch assets,
/// more than the deletion limit's five: they do not count toward it, and the run is complete.
#[tokio::test]
async fn projects_left_out_by_name_keep_every_branch_asset_under_each_branch() {
    let emulator = emulator(TenantShape {
        branches_per_project: 2,
        ..shape(8, 2)
    })
    .await;
    let (store, dir) = temp_store("each-branch-filtered");
    let projects = emulator.expected().projects;
    // Every project but those `left_out`, by name.
    let each_branch = |left_out: &[&str]| {
        let mut c = connection(&emulator, "each-branch-filtered", ConnectorKind::Sast);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
        c.config.close_deleted_items = true;
        if !left_out.is_empty() {
            c.config.filters.project_names = projects
                .iter()
                .filter(|p| !left_out.contains(&p.id.as_str()))
                .map(|p| globset::escape(&p.name).parse().unwrap())
                .collect();
        }
        c.config.validate().unwrap()
    };
    let first = run(&store, &each_branch(&[]), api_key(&emulator))
        .await
        .unwrap();
    let m1 = manifest(&store, &first.manifest).await;
    let left_out: Vec<&str> = projects
        .iter()
        .filter(|p| {
            (m1.items.iter())
                .filter(|i| i.vendor_id == p.id && i.figures.findings_out > 0)
                .count()
                == 2
        })
        .map(|p| p.id.as_str())
        .take(3)
        .collect();
    assert_eq!(
        left_out.len(),
        3,
        "three projects with findings on two branches"
    );

    let second = run(&store, &each_branch(&left_out), api_key(&emulator))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(m2.filtered_items.len(), 3);
    assert!(
        m2.deleted_items.is_empty(),
        "a filtered project's branches are not deleted: {:?}",
        m2.deleted_items
    );
    assert!(m2.carried_forward > 0, "its branches' findings are carried");

    let third = run(&store, &each_branch(&[]), api_key(&emulator))
        .await
        .unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    nothing_new_or_reopened(&m3, "m3");
    std::fs::remove_dir_all(dir).ok();
}

/// Three projects of 25 branches, each branch with scans.
fn branches_25() -> TenantShape {
    TenantShape {
        branches_per_project: 25,
        ..shape(3, 25)
    }
}

/// A connection to `emulator` under `each_branch` that closes the findings of deleted items.
fn closing_each_branch(emulator: &Emulator, id: &str) -> cxone_etm::pipeline::Connection {
    let mut c = connection(emulator, id, ConnectorKind::Sast);
    c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
    c.config.close_deleted_items = true;
    c.config.validate().unwrap()
}

/// The manifest of a run that is complete.
async fn first_complete_run(
    store: &LocalStore,
    c: &cxone_etm::pipeline::Connection,
    emulator: &Emulator,
) -> Manifest {
    let first = run(store, c, api_key(emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    manifest(store, &first.manifest).await
}

/// A server that caps the branch listing's pages at its documented default page (20) where 100
/// are asked: every project's 25 branches are listed all the same, under `each_branch` with
/// `close_deleted_items` none is reported deleted, and nothing is closed. One that also ignores
/// `offset` leaves the lists in doubt: the run is partial and closes nothing.
#[tokio::test]
async fn branch_pages_capped_by_the_server_still_list_every_branch() {
    let emulator = emulator(branches_25()).await;
    let (store, dir) = temp_store("each-branch-capped");
    let c = closing_each_branch(&emulator, "each-branch-capped");
    let m1 = first_complete_run(&store, &c, &emulator).await;
    assert!(
        m1.items.len() > 3 * 20,
        "more branches with a completed scan than one capped page holds: {}",
        m1.items.len()
    );

    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            page_cap: Some(20),
            ..FaultSpec::default()
        },
    );
    emulator.reset_traffic();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let traffic = emulator.traffic();
    emulator.clear_faults();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store, &second.manifest).await;
    assert!(
        m2.deleted_items.is_empty(),
        "no branch is deleted: {:?}",
        m2.deleted_items
    );
    let items = |m: &Manifest| {
        m.items
            .iter()
            .map(|i| i.item.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(items(&m2), items(&m1));
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    assert_eq!(
        traffic.requests["branches"],
        3 * 3,
        "each project's first 20 names, then listed again: 20 and the last 5"
    );

    // A server that also ignores `offset`: each project's second page is its first again. The
    // lists may be short: the run says so and closes nothing, reports nothing deleted.
    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            page_cap: Some(20),
            position_ignored: true,
            ..FaultSpec::default()
        },
    );
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(!m3.complete);
    // The lists in doubt carry every unlisted branch already: none is asked about alone.
    assert_eq!(m3.problems.len(), 3, "{:?}", m3.problems);
    assert!(
        m3.problems[0].contains("may be short: page 2 of its branch names repeats 20"),
        "{:?}",
        m3.problems
    );
    assert!(m3.deleted_items.is_empty(), "{:?}", m3.deleted_items);
    assert_eq!(closed_findings(&m3), 0, "nothing is closed");
    assert!(
        m3.carried_forward > 0,
        "the branches it did not list are carried"
    );

    let fourth = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m4 = manifest(&store, &fourth.manifest).await;
    assert!(m4.complete, "{:?}", m4.problems);
    nothing_new_or_reopened(&m4, "m4");
    std::fs::remove_dir_all(dir).ok();
}

/// A server that caps its branch pages at 10, below the documented default of 20: the first page
/// of 10 reads as the whole list, so branches 11 to 25 of each project go unlisted and unplanned.
/// Before finalize may close them, the plan asks for each such branch's latest completed scan
/// alone: the first found makes the run partial, so nothing is reported deleted or closed.
#[tokio::test]
async fn branches_a_short_listing_missed_are_asked_for_alone_and_never_closed() {
    let emulator = emulator(branches_25()).await;
    let (store, dir) = temp_store("each-branch-cap-10");
    let c = closing_each_branch(&emulator, "each-branch-cap-10");
    let m1 = first_complete_run(&store, &c, &emulator).await;

    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            page_cap: Some(10),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.clear_faults();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(!m2.complete);
    let unplanned = m1.items.len() - m2.items.len();
    assert!(
        unplanned >= 3 * 10,
        "{} of {}",
        m2.items.len(),
        m1.items.len()
    );
    assert_eq!(m2.problems.len(), 1, "{:?}", m2.problems);
    assert!(
        m2.problems[0].contains("yet asked for that branch alone the tenant has one")
            && m2.problems[0].contains(&format!(
                "the {unplanned} branch assets of listed projects it did not plan, and every \
                 other item it did not list, are carried"
            )),
        "{:?}",
        m2.problems
    );
    assert!(m2.deleted_items.is_empty(), "{:?}", m2.deleted_items);
    assert_eq!(closed_findings(&m2), 0, "nothing is closed");
    assert!(m2.carried_forward > 0, "the unlisted branches are carried");

    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "m3");
    std::fs::remove_dir_all(dir).ok();
}

/// Branches the tenant deleted are asked for alone, found gone, and closed under
/// `close_deleted_items`: one question each, and none the run after, their findings closed.
#[tokio::test]
async fn branches_the_tenant_deleted_are_asked_for_alone_and_closed() {
    let before = emulator(branches_25()).await;
    let (store, dir) = temp_store("each-branch-deleted");
    let each_branch = |emulator: &Emulator| closing_each_branch(emulator, "each-branch-deleted");
    let m1 = first_complete_run(&store, &each_branch(&before), &before).await;

    let after = emulator(TenantShape {
        branches_per_project: 22,
        ..branches_25()
    })
    .await;
    // The question about one branch gone refused (403): a problem, not the plan's failure; the
    // run delivers what it planned, partial, and closes nothing it did not plan.
    let names = |emulator: &Emulator| -> BTreeSet<String> {
        let projects = emulator.expected().projects;
        projects
            .iter()
            .flat_map(|p| p.scans.iter().map(|s| s.branch.clone()))
            .collect()
    };
    let gone_name = names(&before).difference(&names(&after)).last().cloned();
    let gone_tail = gone_name
        .as_deref()
        .and_then(|n| n.rsplit('/').next())
        .unwrap();
    after.set_fault(
        Endpoint::LastScan,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(gone_tail.to_string()),
            ..FaultSpec::default()
        },
    );
    let refused = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    after.clear_faults();
    after.reset_traffic();
    let m = manifest(&store, &refused.manifest).await;
    assert!(
        !refused.complete
            && m.problems
                .iter()
                .any(|p| p.contains("asking for that branch alone failed")),
        "{:?}",
        m.problems
    );
    assert!(m.deleted_items.is_empty(), "{:?}", m.deleted_items);
    let second = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(m2.complete, "{:?}", m2.problems);
    let gone = m1.items.len() - m2.items.len();
    assert!(gone >= 3, "{} of {}", m2.items.len(), m1.items.len());
    assert_eq!(m2.deleted_items.len(), gone, "{:?}", m2.deleted_items);
    assert!(
        m2.deleted_items
            .iter()
            .all(|d| d.open_findings > 0 && d.closed && !d.objects.is_empty()),
        "{:?}",
        m2.deleted_items
    );
    let asked = |emulator: &Emulator| emulator.traffic().requests["last-scan"];
    let (plan_calls, alone) = (22, gone as u64);
    assert_eq!(
        asked(&after),
        plan_calls + alone,
        "one call per branch name for every project that has it, then each branch gone alone"
    );
    after.reset_traffic();
    let third = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    assert_eq!(
        asked(&after),
        plan_calls,
        "the branches closed are not asked for again"
    );

    // The last manifest damaged at rest: the plan cannot tell which branches it closed, so it
    // asks about each again, and the run goes on (before, the plan failed, and every run after).
    std::fs::write(dir.join(&third.manifest), b"{\"deletedItems\": [").unwrap();
    after.reset_traffic();
    let fourth = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    assert!(fourth.complete, "{:?}", fourth.problems);
    nothing_new_or_reopened(&manifest(&store, &fourth.manifest).await, "run 4");
    assert_eq!(asked(&after), plan_calls + alone);
    std::fs::remove_dir_all(dir).ok();
}

/// Under `each_branch`, projects whose ids are too long for a key to hold whole: their branch
/// assets' keys hold a hash, so the plan reads which branch each is from its ledger. A gone
/// branch of project 0 is asked for alone and closed, as one of project 2 (a short id) is; the
/// gone branch of project 1, whose ledger was damaged at rest, names no branch to ask about: the
/// plan goes on, and that ledger is carried as stored, neither reported deleted nor closed.
#[tokio::test]
async fn branches_of_long_project_ids_are_read_from_their_ledgers_and_a_damaged_one_is_carried() {
    let long_id = |n: u32| format!("{}{n}", "a-very-long-project-id-".repeat(5));
    let shaped = |branches_per_project| TenantShape {
        branches_per_project,
        hostile_ids: vec![long_id(0), long_id(1)],
        ..shape(3, 6)
    };
    let before = emulator(shaped(6)).await;
    let (store, dir) = temp_store("each-branch-long-ids");
    let each_branch = |emulator: &Emulator| closing_each_branch(emulator, "each-branch-long-ids");
    let m1 = first_complete_run(&store, &each_branch(&before), &before).await;

    let after = emulator(shaped(5)).await;
    let scanned_after: BTreeSet<String> = after
        .expected()
        .projects
        .iter()
        .flat_map(|p| {
            p.scans
                .iter()
                .filter(|s| s.status == "Completed")
                .map(move |s| format!("{} @ {}", p.name, s.branch))
        })
        .collect();
    let gone: Vec<_> = m1
        .items
        .iter()
        .filter(|i| !scanned_after.contains(&i.name))
        .collect();
    let gone_of = |project: &str| -> Vec<&str> {
        let gone = gone.iter().filter(|i| i.vendor_id == project);
        gone.map(|i| i.item.as_str()).collect()
    };
    let projects = before.expected().projects;
    let (long, damaged, short) = (
        gone_of(&long_id(0)),
        gone_of(&long_id(1)),
        gone_of(&projects[2].id),
    );
    assert!(
        !long.is_empty() && damaged.len() == 1 && !short.is_empty(),
        "{gone:?}"
    );
    assert!(
        long.iter().chain(&damaged).all(|item| item.contains("~~")),
        "the long ids' keys hold a hash: {long:?} {damaged:?}"
    );
    let damaged = damaged[0];
    let ledger_of = |run_id: &str| {
        dir.join(format!(
            "connections/each-branch-long-ids/runs/{run_id}/ledger/{damaged}.json.gz"
        ))
    };
    std::fs::write(ledger_of(&m1.run_id), b"\x1f\x8b not a ledger").unwrap();

    let second = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(!m2.complete, "the damaged ledger's asset fails");
    let closed: BTreeSet<&str> = m2
        .deleted_items
        .iter()
        .filter(|d| d.closed && d.open_findings > 0)
        .map(|d| d.item.as_str())
        .collect();
    let want: BTreeSet<&str> = long.iter().chain(&short).copied().collect();
    assert_eq!(closed, want, "{:?}", m2.deleted_items);
    assert_eq!(m2.deleted_items.len(), want.len(), "{:?}", m2.deleted_items);
    assert!(
        m2.problems.iter().any(
            |p| p.starts_with(&format!("{damaged}: its ledger cannot be read"))
                && p.contains("to let the asset go, delete")
        ),
        "{:?}",
        m2.problems
    );
    assert_eq!(
        std::fs::read(ledger_of(&m2.run_id)).unwrap(),
        b"\x1f\x8b not a ledger",
        "carried as stored"
    );
    let expected_after = after.expected();
    let scans_after = expected_after.projects.iter().flat_map(|p| &p.scans);
    let branch_names: BTreeSet<&str> = scans_after.map(|s| s.branch.as_str()).collect();
    let plan_calls = branch_names.len() as u64;
    assert_eq!(
        after.traffic().requests["last-scan"],
        plan_calls + want.len() as u64,
        "each gone branch whose ledger names it is asked for alone; the damaged one is not"
    );
    nothing_new_or_reopened(&m2, "run 2");
    std::fs::remove_dir_all(dir).ok();
}

/// A connection of SAST and SCA under `each_branch`: project 1's main branch is left with one
/// completed scan, a KICS re-scan (an engine the connection does not deliver). The plan keeps no
/// asset for it; asked for alone, once for each engine the connection delivers, the branch has no
/// such scan: its findings close, and the run is complete (asked for a scan of any engine, the
/// KICS scan would hold every run partial).
#[tokio::test]
async fn a_branch_left_with_another_engines_scan_alone_closes() {
    let shaped = |rescan_engine| TenantShape {
        branches_per_project: 3,
        rescan_engine,
        ..shape(3, 3)
    };
    let before = emulator(shaped(None)).await;
    let (store, dir) = temp_store("each-branch-engines");
    let each_branch = |emulator: &Emulator| {
        let mut c = connection(emulator, "each-branch-engines", ConnectorKind::Sast);
        c.config.engines = Some(vec![cxone_etm::Engine::Sast, cxone_etm::Engine::Sca]);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
        c.config.close_deleted_items = true;
        c.config.validate().unwrap()
    };
    let m1 = first_complete_run(&store, &each_branch(&before), &before).await;

    let after = emulator(shaped(Some(ResultType::Kics))).await;
    let second = run(&store, &each_branch(&after), api_key(&after))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(m2.items.len() + 1, m1.items.len());
    let project = &after.expected().projects[1].id;
    assert_eq!(m2.deleted_items.len(), 1, "{:?}", m2.deleted_items);
    let deleted = &m2.deleted_items[0];
    assert!(
        deleted.vendor_id.starts_with(&format!("{project}@")) && deleted.closed,
        "{deleted:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// An engine taken off a connection under `each_branch` and `close_deleted_items`: project 1's
/// main branch, whose one completed scan is a KICS re-scan, was an asset of KICS findings. With
/// KICS taken off, the plan finds no scan of the engines the connection delivers there, and the
/// branch is reported deleted; its KICS findings, which the tenant still has, are carried, not
/// closed (before, every one was closed as FIXED).
#[tokio::test]
async fn an_engine_taken_off_a_connection_closes_none_of_its_findings_on_a_branch_it_alone_scanned()
{
    let tenant = emulator(TenantShape {
        branches_per_project: 3,
        rescan_engine: Some(ResultType::Kics),
        ..shape(3, 3)
    })
    .await;
    let (store, dir) = temp_store("each-branch-engine-off");
    let delivering = |engines: Vec<cxone_etm::Engine>| {
        let mut c = connection(&tenant, "each-branch-engine-off", ConnectorKind::Sast);
        c.config.engines = Some(engines);
        c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
        c.config.close_deleted_items = true;
        c.config.validate().unwrap()
    };
    use cxone_etm::Engine::{Kics, Sast};
    let m1 = first_complete_run(&store, &delivering(vec![Sast, Kics]), &tenant).await;
    let second = run(&store, &delivering(vec![Sast]), api_key(&tenant))
        .await
        .unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(m2.deleted_items.len(), 1, "{:?}", m2.deleted_items);
    let deleted = &m2.deleted_items[0];
    let project = &tenant.expected().projects[1].id;
    assert!(
        deleted.vendor_id.starts_with(&format!("{project}@")),
        "{deleted:?}"
    );
    let was = m1.items.iter().find(|i| i.item == deleted.item).unwrap();
    let kics_open = was.by_engine[&Kics].findings_out;
    assert!(
        kics_open > 0 && deleted.open_findings == kics_open,
        "{deleted:?}"
    );
    let closed: u64 = deleted.objects.iter().map(|o| o.findings).sum();
    assert_eq!(closed, 0, "none of the KICS findings closes");
    assert!(
        deleted.closed && deleted.carried == kics_open,
        "{deleted:?}"
    );
    let fixed = |figures: &cxone_etm::mapping::Figures| {
        figures
            .lifecycle
            .get(&Lifecycle::Fixed)
            .copied()
            .unwrap_or(0)
    };
    let fixed_of_items: u64 = m2.items.iter().map(|i| fixed(&i.figures)).sum();
    assert_eq!(
        fixed(&m2.totals),
        fixed_of_items,
        "no closure of the deleted branch counts"
    );
    assert!(m2.carried_forward >= kics_open, "{}", m2.carried_forward);

    // KICS delivered again: the branch is an asset again, its findings as they were.
    let third = run(&store, &delivering(vec![Sast, Kics]), api_key(&tenant))
        .await
        .unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert!(m3.complete, "{:?}", m3.problems);
    nothing_new_or_reopened(&m3, "KICS delivered again");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn every_branch_is_its_own_asset_and_stays_stable_across_runs() {
    // Eight projects, two branches each (main, or master where the project names no main branch,
    // and a feature branch); project 3's feature-branch scan failed, so only its main branch has
    // a completed scan.
    let emulator = emulator(TenantShape {
        branches_per_project: 2,
        ..shape(8, 3)
    })
    .await;
    let expected = emulator.expected();
    let mut want: BTreeMap<(String, String), (String, u64)> = BTreeMap::new();
    for p in expected.projects.iter().filter(|p| p.has_sast) {
        for s in p.scans.iter().rev().filter(|s| s.status == "Completed") {
            let sast = s.by_type.get(&ResultType::Sast).copied().unwrap_or(0);
            want.entry((p.id.clone(), s.branch.clone()))
                .or_insert((s.id.clone(), sast));
        }
    }
    let branch_names: BTreeSet<&str> = expected
        .projects
        .iter()
        .flat_map(|p| p.scans.iter().map(|s| s.branch.as_str()))
        .collect();
    assert!(want.len() > expected.projects.len() && branch_names.len() >= 3);

    let (store, dir) = temp_store("each-branch");
    let mut c = connection(&emulator, "each-branch", ConnectorKind::Sast);
    c.config.branches = cxone_etm::pipeline::BranchPolicy::EachBranch;
    let c = c.config.validate().unwrap();
    emulator.reset_traffic();
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let traffic = emulator.traffic();
    assert_eq!(
        traffic.requests["branches"],
        expected.projects.len() as u64,
        "one branch listing per project"
    );
    // One batched call per branch name, and one more for a name whose answer left out projects
    // (those without a completed scan on that branch are asked again, in case it was capped).
    let names = branch_names.len() as u64;
    assert!(
        (names..=2 * names).contains(&traffic.requests["last-scan"]),
        "{} last-scan calls for {names} branch names",
        traffic.requests["last-scan"]
    );

    let m1 = manifest(&store, &first.manifest).await;
    for ((project_id, branch), (scan, sast)) in &want {
        let project = expected
            .projects
            .iter()
            .find(|p| &p.id == project_id)
            .unwrap();
        let item = m1
            .items
            .iter()
            .find(|i| i.vendor_id == *project_id && i.name.ends_with(&format!(" @ {branch}")))
            .unwrap_or_else(|| panic!("{} has an asset for {branch}", project.name));
        assert_eq!(item.status, ItemStatus::Complete);
        assert_eq!(item.name, format!("{} @ {branch}", project.name));
        assert_eq!(item.scan_id.as_ref(), Some(scan));
        assert_eq!(item.figures.findings_out + item.figures.rejected, *sast);
    }
    assert_eq!(
        m1.items
            .iter()
            .filter(|i| i.status == ItemStatus::Complete)
            .count(),
        want.len()
    );
    let items: BTreeSet<&str> = m1.items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(items.len(), m1.items.len(), "item keys are unique");
    let committed = committed_findings(&store, &m1).await;
    let assets: BTreeSet<String> = committed.iter().map(|(a, _)| a.clone()).collect();
    let want_assets: BTreeSet<String> = want
        .iter()
        .filter(|(_, (_, sast))| *sast > 0)
        .map(|((p, b), _)| format!("{p}@{b}"))
        .collect();
    assert_eq!(assets, want_assets, "one ETM asset per project branch");

    // The same tenant again: every asset keeps its findings; nothing is new and nothing closes.
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let m2 = manifest(&store, &second.manifest).await;
    assert_eq!(
        m2.totals.lifecycle.get(&Lifecycle::New),
        None,
        "{:?}",
        m2.totals.lifecycle
    );
    assert_eq!(m2.totals.lifecycle.get(&Lifecycle::Reopened), None);
    assert_eq!(
        m2.totals.lifecycle.get(&Lifecycle::Active),
        m1.totals.lifecycle.get(&Lifecycle::New)
    );
    assert_eq!(committed_findings(&store, &m2).await, committed);

    // Back to one asset per project, closing what the tenant no longer lists: the branch assets
    // are reported deleted, and the plan asks `last-scan` about none of them as a project (a
    // branch asset's key names no project id; before, `<project>@<branch>-<hash>` was asked).
    let mut per_project = c.config.clone();
    per_project.branches = cxone_etm::pipeline::BranchPolicy::Main {
        fallback_to_any: false,
    };
    per_project.close_deleted_items = true;
    let per_project = per_project.validate().unwrap();
    emulator.reset_traffic();
    let third = run(&store, &per_project, api_key(&emulator)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    assert_eq!(m3.deleted_items.len(), m2.items.len(), "{:?}", m3.problems);
    let asked: Vec<String> = emulator
        .request_log()
        .into_iter()
        .filter(|(endpoint, _)| *endpoint == Endpoint::LastScan)
        .map(|(_, target)| target)
        .collect();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|t| !t.contains('@') && !t.contains("%40")),
        "{asked:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A directory store whose process "dies" right after a chosen write: every write after it fails,
/// as nothing more reaches the bucket once a process is killed. Reads go on working, so the
/// runner's own error path is exercised too.
#[derive(Clone)]
struct CrashingStore {
    inner: LocalStore,
    crash: std::sync::Arc<std::sync::Mutex<Crash>>,
}

#[derive(Default)]
struct Crash {
    /// Dies after this many more successful writes of a key ending so.
    after: Option<(String, usize)>,
    /// Instead of dying there, refuses only the next write (a transient failure).
    stumble: bool,
    refuse_next: bool,
    /// The keys of the writes refused so.
    refused: Vec<String>,
    /// Dies partway through the next streamed write of a key ending so.
    midway: Option<String>,
    /// Whether a streamed write was cut off.
    cut: bool,
    dead: bool,
}

impl CrashingStore {
    fn new(inner: LocalStore) -> Self {
        Self {
            inner,
            crash: Default::default(),
        }
    }

    /// Dies after the `nth` (1-based) write of a key ending with `suffix` from now on.
    fn crash_after(&self, suffix: &str, nth: usize) {
        *self.crash.lock().unwrap() = Crash {
            after: Some((suffix.to_string(), nth)),
            ..Crash::default()
        };
    }

    /// Refuses the one write that follows the `nth` (1-based) write of a key ending with `suffix`
    /// from now on, as a store failing once; the writes after it succeed.
    fn stumble_after(&self, suffix: &str, nth: usize) {
        *self.crash.lock().unwrap() = Crash {
            after: Some((suffix.to_string(), nth)),
            stumble: true,
            ..Crash::default()
        };
    }

    /// Dies partway through the next object written as a stream under a key ending with
    /// `suffix`, after its first 64 bytes.
    fn crash_midway(&self, suffix: &str) {
        *self.crash.lock().unwrap() = Crash {
            midway: Some(suffix.to_string()),
            ..Crash::default()
        };
    }

    fn was_cut(&self) -> bool {
        self.crash.lock().unwrap().cut
    }

    fn revive(&self) {
        *self.crash.lock().unwrap() = Crash::default();
    }

    fn check(&self, key: &str) -> Result<(), StoreError> {
        let mut crash = self.crash.lock().unwrap();
        if crash.dead {
            return Err(StoreError::Failed {
                location: key.to_string(),
                problem: "the process was killed".into(),
            });
        }
        if std::mem::take(&mut crash.refuse_next) {
            crash.refused.push(key.to_string());
            return Err(StoreError::Failed {
                location: key.to_string(),
                problem: "InternalError: We encountered an internal error (HTTP 500)".into(),
            });
        }
        Ok(())
    }

    fn wrote(&self, key: &str) {
        let mut crash = self.crash.lock().unwrap();
        if let Some((suffix, left)) = &mut crash.after
            && key.ends_with(suffix.as_str())
            && *left > 0
        {
            *left -= 1;
            if *left == 0 {
                if crash.stumble {
                    crash.refuse_next = true;
                } else {
                    crash.dead = true;
                }
            }
        }
    }
}

impl ObjectStore for CrashingStore {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put(key, body).await?;
        self.wrote(key);
        Ok(())
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.check(key)?;
        let written = self.inner.put_if_absent(key, body).await?;
        self.wrote(key);
        Ok(written)
    }
    async fn put_written<W>(&self, key: &str, write: W) -> Result<(), StoreError>
    where
        W: FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send,
    {
        self.check(key)?;
        let midway = {
            let crash = self.crash.lock().unwrap();
            crash
                .midway
                .as_ref()
                .is_some_and(|s| key.ends_with(s.as_str()))
        };
        if !midway {
            self.inner.put_written(key, write).await?;
            self.wrote(key);
            return Ok(());
        }
        let cut = self
            .inner
            .put_written(key, |out| write(&mut CutOff { out, left: 64 }))
            .await;
        let mut crash = self.crash.lock().unwrap();
        crash.dead = true;
        crash.cut = cut.is_err();
        cut
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.delete(key).await
    }
}

/// A writer that takes `left` bytes, then fails as a process killed mid-write would.
struct CutOff<'a> {
    out: &'a mut dyn std::io::Write,
    left: usize,
}

impl std::io::Write for CutOff<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("the process was killed mid-write"));
        }
        let written = self.out.write(&buf[..buf.len().min(self.left)])?;
        self.left -= written;
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

async fn run_through(
    store: &CrashingStore,
    c: &cxone_etm::pipeline::Connection,
    emulator: &Emulator,
) -> Result<RunSummary, cxone_etm::pipeline::StepError> {
    cxone_etm::pipeline::run_connection(
        store,
        c,
        cxone_etm::secret::SecretSource::provided(api_key(emulator)),
        cxone_etm::pipeline::Trigger::Local,
        &|_| {},
        &|_| {},
    )
    .await
}

/// The one run of `connection` besides `first`.
fn the_other_run(dir: &std::path::Path, connection: &str, first: &str) -> String {
    let runs: Vec<String> = std::fs::read_dir(dir.join(format!("connections/{connection}/runs")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|r| r != first)
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn previous_run_of(dir: &std::path::Path, connection: &str, run: &str) -> Option<String> {
    let record: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("connections/{connection}/runs/{run}/run.json"))).unwrap(),
    )
    .unwrap();
    record["previousRun"].as_str().map(str::to_string)
}

/// Finalize killed at each of its crash points; the run after it must reconcile against the run
/// the commit markers say was last committed, and a committed run is never marked Failed.
#[tokio::test]
async fn a_crash_at_each_point_of_finalize_never_makes_the_next_run_reconcile_against_the_wrong_run()
 {
    // (the crash point, the write it follows and which one (`CLAIM`: the claim on the commit
    // after run 1), whether finalize is retried, whether run 2 committed)
    const CLAIM: &str = "the commit claim";
    let points = [
        ("before the claim", "manifest.json", 1, false, false),
        ("after the claim", CLAIM, 1, false, true),
        ("after the claim, finalize retried", CLAIM, 1, true, true),
        ("after the marker", "_COMMITTED", 1, false, true),
        (
            "after the marker, finalize retried",
            "_COMMITTED",
            1,
            true,
            true,
        ),
        ("after the state", "state.json", 3, true, true),
    ];
    for (point, suffix, nth, retry_finalize, committed) in points {
        let (local, dir) = temp_store(&format!("crash-{}", point.replace([' ', ','], "-")));
        let store = CrashingStore::new(local);
        // Run 1 on two scans per project; runs 2 and 3 on a newer third scan: run 2 has NEW and
        // FIXED findings against run 1, run 3 none against run 2.
        let before = emulator(shape(PROJECTS, 2)).await;
        let after = emulator(shape(PROJECTS, 3)).await;
        let c1 = connection(&before, "crash", ConnectorKind::Sast);
        let c2 = connection(&after, "crash", ConnectorKind::Sast);
        let first = run_through(&store, &c1, &before).await.unwrap();

        let claim = format!("/commits/after-{}.json", first.run_id);
        store.crash_after(if suffix == CLAIM { &claim } else { suffix }, nth);
        let crashed = run_through(&store, &c2, &after).await;
        assert!(crashed.is_err(), "{point}: the run went on after the crash");
        store.revive();
        let second = the_other_run(&dir, "crash", &first.run_id);
        let second_ref = cxone_etm::pipeline::RunRef {
            connection_id: "crash".into(),
            run_id: second.clone(),
        };
        let marked = store
            .get(&second_ref.commit_marker())
            .await
            .unwrap()
            .is_some();
        assert_eq!(marked, committed && suffix != CLAIM, "{point}");
        if retry_finalize {
            // Step Functions retries a failed finalize: it completes what followed the marker.
            cxone_etm::pipeline::finalize(&store, &c2, &second_ref)
                .await
                .unwrap();
            assert!(
                store.get("connections/crash/lock").await.unwrap().is_none(),
                "{point}: the retried finalize released the lock"
            );
        } else {
            // The killed runner's lock outlives it until its lease ends; the lease ends here.
            store.delete("connections/crash/lock").await.unwrap();
        }
        let record: Value =
            serde_json::from_slice(&store.get(&second_ref.run_record()).await.unwrap().unwrap())
                .unwrap();
        if committed {
            assert_ne!(
                record["state"], "Failed",
                "{point}: a committed run marked Failed"
            );
        }

        let third = run_through(&store, &c2, &after).await.unwrap();
        let expected_previous = if committed { &second } else { &first.run_id };
        assert_eq!(
            previous_run_of(&dir, "crash", &third.run_id).as_ref(),
            Some(expected_previous),
            "{point}"
        );
        let record: Value =
            serde_json::from_slice(&store.get(&second_ref.run_record()).await.unwrap().unwrap())
                .unwrap();
        let marked = store
            .get(&second_ref.commit_marker())
            .await
            .unwrap()
            .is_some();
        assert_eq!(marked, committed, "{point}: run 2's marker");
        // A claim without its marker is finished by the next run's plan; a run killed after its
        // marker, by the takeover of its lock (deleted by hand here) or its retried finalize.
        if committed && (retry_finalize || suffix == CLAIM) {
            assert_eq!(record["state"], "Processed", "{point}: run 2's record");
        } else {
            assert_ne!(record["state"], "Failed", "{point}: run 2's record");
        }
        let m3 = manifest(&store.inner, &third.manifest).await;
        if committed {
            nothing_new_or_reopened(&m3, point);
            assert_eq!(
                m3.totals
                    .lifecycle
                    .get(&Lifecycle::Fixed)
                    .copied()
                    .unwrap_or(0),
                m3.totals.fixed,
                "{point}: only what the vendor reports fixed"
            );
        } else {
            assert!(
                m3.totals.lifecycle.contains_key(&Lifecycle::New),
                "{point}: run 2 never committed"
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }
}

/// The connection's state lost between two runs (`state.json` deleted by hand): the next run
/// finds the last committed run by the commit markers and reconciles against it, as a run whose
/// state stood does. Before, it had no previous run: every open finding was sent NEW again and
/// none fixed since was closed (found by a review, 2026-12-07).
#[tokio::test]
async fn a_run_after_the_state_was_lost_reconciles_against_the_last_committed_run() {
    let before = emulator(shape(PROJECTS, 2)).await;
    let after = emulator(shape(PROJECTS, 3)).await;
    let mut totals = Vec::new();
    for lost in [false, true] {
        let id = if lost { "state-lost" } else { "state-kept" };
        let (store, dir) = temp_store(id);
        let first = run(
            &store,
            &connection(&before, id, ConnectorKind::Sast),
            api_key(&before),
        )
        .await
        .unwrap();
        if lost {
            store
                .delete(&cxone_etm::pipeline::state_key(id))
                .await
                .unwrap();
        }
        let second = run(
            &store,
            &connection(&after, id, ConnectorKind::Sast),
            api_key(&after),
        )
        .await
        .unwrap();
        assert!(second.complete, "{:?}", second.problems);
        let m2 = manifest(&store, &second.manifest).await;
        assert_eq!(
            previous_run_of(&dir, id, &second.run_id).as_deref(),
            Some(first.run_id.as_str())
        );
        assert!(
            closed_findings(&m2) > 0,
            "what the newer scans fixed closes"
        );
        totals.push(m2.totals);
        std::fs::remove_dir_all(dir).ok();
    }
    assert_eq!(totals[0], totals[1], "as if the state had stood");
}

/// The state lost after two committed runs, then written again before the next run that
/// commits: by a config put (`record_registration`, as `cxone-etm connection put` writes it) and
/// by a run that committed nothing (every item's results refused). The markers still decide: the
/// newest committed run, not the oldest nor the failed one, is reconciled against, and the same
/// scans again find nothing new.
#[tokio::test]
async fn after_the_state_was_lost_and_written_again_the_newest_committed_run_is_found() {
    let id = "state-rewritten";
    let TwoRuns {
        store,
        dir,
        after,
        c_after,
        second,
        ..
    } = two_committed_runs(id).await;
    store
        .delete(&cxone_etm::pipeline::state_key(id))
        .await
        .unwrap();
    cxone_etm::pipeline::record_registration(&store, id, false)
        .await
        .unwrap();
    after.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            ..FaultSpec::default()
        },
    );
    let mut quick = c_after.clone();
    quick.vendor.retry.max_retries = 1;
    assert!(
        run(&store, &quick, api_key(&after)).await.is_err(),
        "nothing committed"
    );
    after.clear_faults();
    let third = run(&store, &c_after, api_key(&after)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    assert_eq!(
        previous_run_of(&dir, id, &third.run_id).as_deref(),
        Some(second.run_id.as_str())
    );
    let m3 = manifest(&store, &third.manifest).await;
    assert_eq!(
        m3.totals.lifecycle.get(&Lifecycle::New),
        None,
        "{:?}",
        m3.totals
    );
    assert_eq!(closed_findings(&m3), 0);
    std::fs::remove_dir_all(dir).ok();
}

/// A local run whose finalize failed after its commit marker (the store refused the one write
/// after it, the run record's), or after its commit claim (the marker's write refused), is
/// committed: the runner's failure path finishes it (the marker written from the claim, the run
/// and the connection Processed, the lock released) and answers the committed run, not the error.
#[tokio::test]
async fn a_local_run_whose_finalize_failed_after_its_commit_answers_the_committed_run() {
    // (the write the refused one follows, and which write is refused)
    let points = [
        ("/_COMMITTED", "run.json"),
        ("/commits/after-none.json", "_COMMITTED"),
    ];
    for (after, refused) in points {
        let (local, dir) = temp_store("stumble");
        let store = CrashingStore::new(local);
        let emulator = emulator(shape(PROJECTS, 2)).await;
        let c = connection(&emulator, "stumble", ConnectorKind::Sast);
        store.stumble_after(after, 1);
        let summary = run_through(&store, &c, &emulator)
            .await
            .expect("the committed run is answered");
        assert!(summary.complete, "{:?}", summary.problems);
        assert!(summary.findings > 0);
        let run = cxone_etm::pipeline::RunRef {
            connection_id: "stumble".into(),
            run_id: summary.run_id.clone(),
        };
        let refused_writes = store.crash.lock().unwrap().refused.clone();
        assert_eq!(refused_writes.len(), 1, "{refused_writes:?}");
        assert!(refused_writes[0].ends_with(refused), "{refused_writes:?}");
        assert!(store.get(&run.commit_marker()).await.unwrap().is_some());
        let record: Value =
            serde_json::from_slice(&store.get(&run.run_record()).await.unwrap().unwrap()).unwrap();
        assert_eq!(record["state"], "Processed", "{record}");
        let state = cxone_etm::pipeline::read_state(&store, "stumble")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.last_committed_run.as_deref(),
            Some(run.run_id.as_str())
        );
        assert!(
            store
                .get("connections/stumble/lock")
                .await
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Finalize killed right after it carried an unfinished item's ledger forward: the retried
/// finalize still counts that item's open findings as carried, not as a ledger this run's
/// transform wrote.
#[tokio::test]
async fn a_finalize_retried_after_carrying_a_ledger_still_counts_it_carried() {
    let (local, dir) = temp_store("carried-retry");
    let store = CrashingStore::new(local);
    let emulator = emulator(shape(PROJECTS, 3)).await;
    let c = connection(&emulator, "carried", ConnectorKind::Sast);
    let first = run_through(&store, &c, &emulator).await.unwrap();
    let m1 = manifest(&store.inner, &first.manifest).await;
    let broken = emulator.expected().projects[0].clone();
    let before = m1.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    let open_before = before.figures.lifecycle[&Lifecycle::New];
    assert!(open_before > 0);

    // Run 2: the project's collect never finishes; finalize dies right after carrying its ledger.
    let quick = never_finished(&emulator, &broken, "carried");
    store.crash_after(&format!("/ledger/{}.json.gz", before.item), 1);
    assert!(run_through(&store, &quick, &emulator).await.is_err());
    store.revive();
    let second = std::fs::read_dir(dir.join("connections/carried/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|r| *r != first.run_id)
        .unwrap();
    let second_ref = cxone_etm::pipeline::RunRef {
        connection_id: "carried".into(),
        run_id: second,
    };
    let m2 = cxone_etm::pipeline::finalize(&store, &quick, &second_ref)
        .await
        .unwrap();
    let item = m2.items.iter().find(|i| i.vendor_id == broken.id).unwrap();
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.carried_forward, open_before);
    assert_eq!(m2.carried_forward, open_before);
    std::fs::remove_dir_all(dir).ok();
}

/// What a [`Hooked`] store's hook answers for a write instead of the store (`true`: written),
/// or `None` to let it through.
type WriteAnswer = Option<Result<bool, StoreError>>;

/// A directory store whose writes first pass `hook(key, conditional)`.
struct Hooked<H> {
    inner: LocalStore,
    hook: H,
}

impl<H: Fn(&str, bool) -> WriteAnswer + Send + Sync> ObjectStore for Hooked<H> {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        match (self.hook)(key, false) {
            Some(answer) => answer.map(drop),
            None => self.inner.put(key, body).await,
        }
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        match (self.hook)(key, true) {
            Some(answer) => answer,
            None => self.inner.put_if_absent(key, body).await,
        }
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// A connection's state left unreadable (a directory store after a power loss: the file empty or
/// cut) is written afresh by the next run, which reconciles against the run the commit markers
/// name. Before, every later run failed reading it, until it was deleted by hand.
#[tokio::test]
async fn a_state_left_cut_off_is_written_afresh_and_one_of_another_shape_is_refused() {
    let (store, dir) = temp_store("state-unreadable");
    let emulator = emulator(shape(2, 2)).await;
    let c = connection(&emulator, "state-unreadable", ConnectorKind::Sast);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let key = "connections/state-unreadable/state.json";
    for damaged in [&b""[..], &b"{\"state\": \"Proce"[..]] {
        store.put(key, damaged.to_vec().into()).await.unwrap();
        let next = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(next.complete, "{:?}", next.problems);
        let m = manifest(&store, &next.manifest).await;
        nothing_new_or_reopened(&m, "reconciled against the last commit");
        let state = cxone_etm::pipeline::read_state(&store, "state-unreadable")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            state.last_committed_run.as_deref(),
            Some(next.run_id.as_str())
        );
    }
    // A whole document of another shape (a newer binary's, met by an older one) is refused and
    // left as it is, never written over.
    let other_shape = br#"{"state": "Archived", "schema": 9}"#;
    store.put(key, other_shape.to_vec().into()).await.unwrap();
    let runs = "connections/state-unreadable/runs/";
    let runs_before = store.list(runs).await.unwrap();
    let refused = run(&store, &c, api_key(&emulator))
        .await
        .expect_err("a state of another shape");
    assert!(
        refused.to_string().contains("state.json")
            && refused.to_string().contains("move the file aside"),
        "names the file and what to do: {refused}"
    );
    assert_eq!(
        store.get(key).await.unwrap().as_deref(),
        Some(&other_shape[..])
    );
    // Refused before anything was taken or written: no lock, no run folder.
    assert_eq!(
        store
            .get("connections/state-unreadable/lock")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.list(runs).await.unwrap(), runs_before);
    std::fs::remove_dir_all(dir).ok();
}

/// A store on which every conditional write lands and is then answered as taken (S3's 409 to the
/// SDK's retry of a PutObject whose first answer was lost while it landed): each write meets
/// its own object.
#[derive(Clone)]
struct MeetsItsOwnWrites(LocalStore);

impl ObjectStore for MeetsItsOwnWrites {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.0.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.0.put_if_absent(key, body).await?;
        Ok(false)
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await
    }
}

/// Runs on a store where each conditional write meets its own object (the lock, the plan, each
/// collect outcome and transform record, the commit claim and marker) commit as on any store:
/// a write that finds its own bytes is its own. Before, the lock read back was taken for a live
/// holder (the run refused as already running, under its own id), and a plan that found its own
/// plan deleted the work list it names (finalize then failed for it).
#[tokio::test]
async fn runs_whose_every_conditional_write_meets_itself_commit() {
    let (local, dir) = temp_store("meets-itself");
    let emulator = emulator(shape(3, 2)).await;
    let c = connection(&emulator, "meets-itself", ConnectorKind::Sast);
    let store = MeetsItsOwnWrites(local);
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let m1 = manifest(&store.0, &first.manifest).await;
    assert!(m1.items.iter().all(|i| i.status == ItemStatus::Complete));
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let m2 = manifest(&store.0, &second.manifest).await;
    // Reconciled against the first: nothing reads as new.
    nothing_new_or_reopened(&m2, "run 2");
    // A stale lock left by a runner that stopped: its takeover record meets itself too.
    let stale = serde_json::json!({
        "runId": "20261201T000000Z-dead00",
        "acquiredAt": "2026-12-01T00:00:00Z",
        "expiresAt": 0
    });
    store
        .0
        .put(
            "connections/meets-itself/lock",
            serde_json::to_vec(&stale).unwrap().into(),
        )
        .await
        .unwrap();
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_store_throttle_during_collect_is_retried_not_a_failed_item() {
    let (local, dir) = temp_store("throttled");
    let emulator = emulator(shape(2, 1)).await;
    let c = connection(&emulator, "throttled", ConnectorKind::Sast);
    let run = cxone_etm::pipeline::begin_run(
        &local,
        "throttled",
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let vendor = cxone_etm::pipeline::VendorAccess::new(
        c.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(&emulator)),
    )
    .await
    .unwrap();
    let groups = cxone_etm::pipeline::plan(&local, &vendor, &c, &run, 1)
        .await
        .unwrap();
    let item = groups
        .iter()
        .flat_map(|g| &g.items)
        .find(|i| i.scan_id.is_some())
        .unwrap();
    // Writes of raw result pages fail as S3 fails them under load.
    let store = Hooked {
        inner: local,
        hook: |key: &str, _| {
            (key.contains("/raw/") && key.ends_with("/0.json.zst")).then(|| {
                Err(StoreError::Failed {
                    location: key.to_string(),
                    problem: "SlowDown: Please reduce your request rate (HTTP 503)".into(),
                })
            })
        },
    };
    let error = cxone_etm::pipeline::collect(&store, &vendor, &c, item, None)
        .await
        .expect_err("the page could not be stored");
    assert!(
        matches!(error, StepError::Store(_)) && error.is_retryable(),
        "a store throttle is a transient store error: {error}"
    );
    assert!(error.to_string().contains("SlowDown"), "{error}");
    let recorded = store
        .get(&item.run.collect_outcome(&item.item))
        .await
        .unwrap();
    assert!(
        recorded.is_none(),
        "no Failed outcome recorded for a retryable store error"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Two plan attempts of one run that overlap (Step Functions retried the plan on a lost answer
/// while it still ran), each listing the tenant at its own moment: the first before a project was
/// created, the second after. The plan that stands is the first written: the second attempt
/// answers its groups without listing again, so the map collects and transforms the first's
/// items, and finalize reads the same list (attempts that list at once meet at `plan.json`:
/// `a_second_plan_attempt_goes_on_with_the_plan_that_stands`, `pipeline::plan`). The run record's run to reconcile against was written back without it (an
/// overlapping attempt's start, a read and a write of the record, around the plan's record):
/// finalize reconciles against the plan's. Before (every attempt wrote every plan object over
/// the other's), the map could run one attempt's list and finalize read the other's: a ledger
/// of the created project was committed with no manifest line sending its findings, so the next
/// run took them for sent (ACTIVE) while ETM never had them.
#[tokio::test]
async fn overlapping_plan_attempts_go_on_with_the_plan_that_stands() {
    let (store, dir) = temp_store("plan-overlap");
    let before = emulator(shape(3, 1)).await;
    let after = emulator(shape(4, 1)).await;
    let (c_before, c) = (
        connection(&before, "plan-overlap", ConnectorKind::Sast),
        connection(&after, "plan-overlap", ConnectorKind::Sast),
    );
    let first = run(&store, &c_before, api_key(&before)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let created = cxone_etm::layout::item_key(&after.expected().projects[3].id);
    let vendor = |(emulator, c): (&Emulator, &cxone_etm::pipeline::Connection)| {
        cxone_etm::pipeline::VendorAccess::new(
            c.vendor.clone(),
            cxone_etm::secret::SecretSource::provided(api_key(emulator)),
        )
    };
    let run2 = cxone_etm::pipeline::begin_run(
        &store,
        &c.config.id,
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let early = vendor((&before, &c_before)).await.unwrap();
    let standing = cxone_etm::pipeline::plan(&store, &early, &c_before, &run2, 1)
        .await
        .unwrap();
    let late = vendor((&after, &c)).await.unwrap();
    after.reset_traffic();
    let groups = cxone_etm::pipeline::plan(&store, &late, &c, &run2, 1)
        .await
        .unwrap();
    let listed: Vec<_> = after
        .request_log()
        .into_iter()
        .filter(|(endpoint, _)| *endpoint != Endpoint::Token)
        .collect();
    assert!(listed.is_empty(), "it lists nothing again: {listed:?}");
    assert_eq!(
        groups, standing,
        "the second attempt answers the plan that stands"
    );
    let planned: Vec<&str> = groups
        .iter()
        .flat_map(|g| &g.items)
        .map(|i| i.item.as_str())
        .collect();
    assert_eq!(planned.len(), 3);
    assert!(!planned.contains(&created.as_str()), "{planned:?}");
    for item in groups.iter().flat_map(|g| &g.items) {
        cxone_etm::pipeline::collect(&store, &late, &c, item, None)
            .await
            .unwrap();
        cxone_etm::pipeline::transform(&store, &c, item)
            .await
            .unwrap();
    }
    let record_key = run2.run_record();
    let mut record: Value =
        serde_json::from_slice(&store.get(&record_key).await.unwrap().unwrap()).unwrap();
    assert_eq!(record["previousRun"], first.run_id.as_str());
    let planned = record.clone();
    for written_back in ["previousRun", "scope", "items"] {
        record[written_back] = Value::Null;
    }
    store
        .put(&record_key, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    let m2 = cxone_etm::pipeline::finalize(&store, &c, &run2)
        .await
        .unwrap();
    assert!(m2.complete, "{:?}", m2.problems);
    assert_eq!(m2.items.len(), 3);
    assert!(m2.deleted_items.is_empty());
    assert_eq!(
        m2.totals
            .lifecycle
            .get(&Lifecycle::New)
            .copied()
            .unwrap_or(0),
        0,
        "reconciled against the first run: {:?}",
        m2.totals.lifecycle
    );
    assert!(store.get(&run2.ledger(&created)).await.unwrap().is_none());
    let record: Value =
        serde_json::from_slice(&store.get(&record_key).await.unwrap().unwrap()).unwrap();
    for written_back in ["previousRun", "scope", "items"] {
        assert_eq!(
            record[written_back], planned[written_back],
            "{written_back} put back from the plan"
        );
    }
    let third = run(&store, &c, api_key(&after)).await.unwrap();
    let m3 = manifest(&store, &third.manifest).await;
    let item = m3.items.iter().find(|i| i.item == created).unwrap();
    assert_eq!(
        item.figures.lifecycle.get(&Lifecycle::New).copied(),
        Some(item.figures.findings_out - item.figures.fixed),
        "{:?}",
        item.figures.lifecycle
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A plan whose run loses its lock while it plans (its lease ran out and another run took it
/// over): it answers `LostLock` and writes nothing of its plan into the run record.
#[tokio::test]
async fn a_plan_whose_run_loses_its_lock_while_it_plans_records_nothing() {
    let (local, dir) = temp_store("plan-lost-lock");
    let emulator = emulator(shape(3, 1)).await;
    let c = connection(&emulator, "plan-lost-lock", ConnectorKind::Sast);
    let run = cxone_etm::pipeline::begin_run(
        &local,
        &c.config.id,
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let lock = dir.join(format!("connections/{}/lock", c.config.id));
    assert!(lock.exists());
    let store = Hooked {
        inner: local.clone(),
        hook: move |key: &str, _| {
            if key.ends_with("/plan.json") {
                std::fs::remove_file(&lock).unwrap();
            }
            None
        },
    };
    let vendor = cxone_etm::pipeline::VendorAccess::new(
        c.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(&emulator)),
    )
    .await
    .unwrap();
    let error = cxone_etm::pipeline::plan(&store, &vendor, &c, &run, 1)
        .await
        .unwrap_err();
    assert!(matches!(error, StepError::LostLock { .. }), "{error}");
    let record: Value =
        serde_json::from_slice(&local.get(&run.run_record()).await.unwrap().unwrap()).unwrap();
    assert!(
        record.get("items").is_none_or(Value::is_null),
        "nothing of the plan recorded: {record}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A transform attempt that outlives its run (Step Functions retried it on a Lambda service error
/// while it still ran, and finalize committed without it, the item's ledger carried): it finds
/// the run's lock gone, writes neither the ledger nor a record (the record is finalize's) and
/// deletes the batch objects it wrote. Before, it replaced the committed ledger with one in which
/// the findings it closed were closed, closures no manifest names, so the next run took them as
/// sent and ETM never had them.
#[tokio::test]
async fn a_transform_that_outlives_its_run_leaves_the_committed_ledger_alone() {
    let late_one = late_transform("late").await;
    let (store, c, run2, item) = (&late_one.store, &late_one.c, &late_one.run2, &late_one.item);
    let m2 = cxone_etm::pipeline::finalize(store, c, run2).await.unwrap();
    let reason = |of: &cxone_etm::pipeline::WorkItem| {
        let line = m2.items.iter().find(|i| i.item == of.item).unwrap();
        line.reason.clone()
    };
    assert_eq!(reason(item).as_deref(), Some("transform did not finish"));
    assert_eq!(reason(&late_one.on_time), None);
    let ledger = store.get(&run2.ledger(&item.item)).await.unwrap().unwrap();

    let late = cxone_etm::pipeline::transform(store, c, item).await;
    assert!(matches!(late, Err(StepError::LostLock { .. })), "{late:?}");
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap().unwrap(),
        ledger,
        "the committed ledger stands"
    );
    let record: cxone_etm::pipeline::TransformRecord = serde_json::from_slice(
        &store
            .get(&run2.transform_record(&item.item))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        record.given_up && record.objects.is_empty(),
        "the record is finalize's, not the late attempt's: {record:?}"
    );
    assert_eq!(
        store.list(&run2.etm_prefix(&item.item)).await.unwrap(),
        vec![run2.transform_record(&item.item)],
        "the batch objects the late attempt wrote before it was refused are gone"
    );

    // The next run reconciles against the committed ledger and closes what was fixed.
    let third = run(store, c, api_key(&late_one.after)).await.unwrap();
    let m3 = manifest(store, &third.manifest).await;
    assert!(third.complete, "{:?}", third.problems);
    assert!(
        closed_findings(&m3) > 0,
        "what the newer scan fixed closes now"
    );
    std::fs::remove_dir_all(&late_one.dir).ok();
}

/// A transform attempt that comes after the item's record (Step Functions' retry of one whose
/// answer was lost, or an attempt that outlived its run) answers that record and writes nothing
/// over what the run committed. Before, it wrote the item's batch objects again before it found
/// the lock gone (and, where an engine stayed on a moved asset, deleted its moved closures first).
#[tokio::test]
async fn a_transform_after_the_items_record_answers_it_and_writes_nothing() {
    let (store, dir) = temp_store("recorded");
    let emulator = emulator(shape(2, 1)).await;
    let c = connection(&emulator, "recorded", ConnectorKind::Sast);
    let m = first_complete_run(&store, &c, &emulator).await;
    let run = cxone_etm::pipeline::RunRef {
        connection_id: "recorded".into(),
        run_id: m.run_id.clone(),
    };
    let (items, _) = cxone_etm::pipeline::read_work_list(&store, &run)
        .await
        .unwrap();
    let item = items
        .iter()
        .find(|i| {
            m.items
                .iter()
                .any(|d| d.item == i.item && !d.objects.is_empty())
        })
        .expect("an item with batch objects");
    let recorded: cxone_etm::pipeline::TransformRecord = serde_json::from_slice(
        &store
            .get(&run.transform_record(&item.item))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let written = std::sync::Mutex::new(Vec::new());
    let watched = Hooked {
        inner: store.clone(),
        hook: |key: &str, _| {
            written.lock().unwrap().push(key.to_string());
            None
        },
    };
    let again = cxone_etm::pipeline::transform(&watched, &c, item)
        .await
        .unwrap();
    assert_eq!(again, recorded);
    assert_eq!(
        written.lock().unwrap().len(),
        0,
        "{:?}",
        written.lock().unwrap()
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A transform attempt that began before the item's record and reaches its moved closures after
/// another attempt recorded the item (Step Functions retried one that still ran) writes no moved
/// closures, and answers the record that stands; what it wrote before (its batch objects) is byte
/// for byte what the run holds.
#[tokio::test]
async fn a_transform_that_finds_the_item_recorded_before_its_moved_closures_writes_none() {
    use cxone_etm::pipeline::{collect, finalize, transform};
    // The emulator answers while bound.
    let MovingRun {
        store,
        dir,
        emulator: _emulator,
        by_name,
        run2,
        vendor,
        items,
    } = moving_run("late-move").await;
    // Run 2 step by step: every item transformed once, the run not yet finalized.
    let mut moving = None;
    for item in &items {
        collect(&store, &vendor, &by_name, item, None)
            .await
            .unwrap();
        let record = transform(&store, &by_name, item).await.unwrap();
        if record
            .objects
            .iter()
            .any(|o| o.key == run2.moved_closures(&item.item))
        {
            moving = Some(item);
        }
    }
    let item = moving.expect("an item whose asset moved");
    let record_key = run2.transform_record(&item.item);
    let recorded = store.get(&record_key).await.unwrap().unwrap();
    let mut held = BTreeMap::new();
    for key in store
        .list(&run2.etm_prefix(&item.item))
        .await
        .unwrap()
        .into_iter()
        .chain([run2.ledger(&item.item)])
    {
        let bytes = store.get(&key).await.unwrap().unwrap();
        held.insert(key, bytes);
    }
    let late = LateRecord {
        inner: store.clone(),
        record_key: record_key.clone(),
        hidden_once: std::sync::atomic::AtomicBool::new(false),
        written: Default::default(),
    };
    let answered = transform(&late, &by_name, item).await.unwrap();
    assert!(late.hidden_once.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(serde_json::to_vec(&answered).unwrap(), {
        let standing: cxone_etm::pipeline::TransformRecord =
            serde_json::from_slice(&recorded).unwrap();
        serde_json::to_vec(&standing).unwrap()
    });
    let written = late.written.lock().unwrap().clone();
    assert!(
        !written.contains(&run2.moved_closures(&item.item)),
        "{written:?}"
    );
    for key in written.iter().filter(|k| k.contains(&item.item)) {
        assert_eq!(
            store.get(key).await.unwrap().as_ref(),
            held.get(key),
            "{key} as the run holds it"
        );
    }
    let m2 = finalize(&store, &by_name, &run2).await.unwrap();
    assert!(m2.complete, "{:?}", m2.problems);
    let line = m2.items.iter().find(|i| i.item == item.item).unwrap();
    for object in &line.objects {
        checked_lines(&store, object).await;
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The moved closures are counted before the pull and written after it from the committed
/// ledger read again: a ledger that reads otherwise the second time (here gone) fails the item,
/// naming it, rather than commit closures the item's lines were not numbered for.
#[tokio::test]
async fn a_committed_ledger_that_reads_otherwise_after_the_pull_fails_the_moving_item() {
    use cxone_etm::pipeline::{collect, transform};
    let MovingRun {
        store,
        dir,
        emulator,
        by_name,
        run2,
        vendor,
        items,
    } = moving_run("ledger-rereads").await;
    let item = items
        .iter()
        .find(|i| i.previous_run.is_some())
        .expect("an item with a committed ledger");
    collect(&store, &vendor, &by_name, item, None)
        .await
        .unwrap();
    let ledger = run2
        .sibling(item.previous_run.as_deref().unwrap())
        .ledger(&item.item);
    let rereads = ReadsOtherwise {
        inner: store.clone(),
        key: ledger.clone(),
        reads: Default::default(),
    };
    let failed = transform(&rereads, &by_name, item).await.unwrap();
    let reason = failed.failed.unwrap_or_default();
    assert!(
        reason.starts_with(&ledger) && reason.contains("changed while the transform ran"),
        "{reason}"
    );
    assert!(rereads.reads.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // The run commits without the item, its findings carried; the next moves it.
    for other in items.iter().filter(|i| *i != item) {
        collect(&store, &vendor, &by_name, other, None)
            .await
            .unwrap();
        transform(&store, &by_name, other).await.unwrap();
    }
    let m2 = cxone_etm::pipeline::finalize(&store, &by_name, &run2)
        .await
        .unwrap();
    let line = m2.items.iter().find(|i| i.item == item.item).unwrap();
    assert!(
        line.objects.is_empty() && line.carried_forward > 0,
        "{line:?}"
    );
    let third = run(&store, &by_name, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(&store, &third.manifest).await;
    let moved = m3.items.iter().find(|i| i.item == item.item).unwrap();
    let run3 = run2.sibling(&m3.run_id);
    assert!(
        moved
            .objects
            .iter()
            .any(|o| o.key == run3.moved_closures(&item.item)),
        "{:?}",
        moved.objects
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Run 1 of two projects keyed by id, committed; run 2 begun and planned with a map that keys
/// them by name (each asset moves), nothing of it collected yet.
struct MovingRun {
    store: LocalStore,
    dir: std::path::PathBuf,
    emulator: Emulator,
    by_name: cxone_etm::pipeline::Connection,
    run2: cxone_etm::pipeline::RunRef,
    vendor: cxone_etm::pipeline::VendorAccess,
    items: Vec<cxone_etm::pipeline::WorkItem>,
}

async fn moving_run(id: &str) -> MovingRun {
    use cxone_etm::pipeline::{VendorAccess, begin_run, plan};
    let (store, dir) = temp_store(id);
    let emulator = emulator(shape(2, 1)).await;
    let mut config = connection(&emulator, id, ConnectorKind::Sast).config;
    first_complete_run(&store, &config.clone().validate().unwrap(), &emulator).await;
    config.transform_maps = vec![assets_by_name(cxone_etm::Engine::Sast)];
    let by_name = config.validate().unwrap();
    let run2 = begin_run(
        &store,
        id,
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let vendor = VendorAccess::new(
        by_name.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(&emulator)),
    )
    .await
    .unwrap();
    let groups = plan(&store, &vendor, &by_name, &run2, 1).await.unwrap();
    let items = groups.into_iter().flat_map(|g| g.items).collect();
    MovingRun {
        store,
        dir,
        emulator,
        by_name,
        run2,
        vendor,
        items,
    }
}

/// A store where one object reads absent the second time it is read (and as it is otherwise).
struct ReadsOtherwise<S = LocalStore> {
    inner: S,
    key: String,
    reads: std::sync::atomic::AtomicUsize,
}

impl<S: ObjectStore> ObjectStore for ReadsOtherwise<S> {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        if key == self.key
            && self
                .reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                == 1
        {
            return Ok(None);
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// A directory store whose item record reads absent the first time (the attempt began before
/// another recorded it), and that logs the keys written.
struct LateRecord {
    inner: LocalStore,
    record_key: String,
    hidden_once: std::sync::atomic::AtomicBool,
    written: std::sync::Mutex<Vec<String>>,
}

impl ObjectStore for LateRecord {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.written.lock().unwrap().push(key.to_string());
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.written.lock().unwrap().push(key.to_string());
        self.inner.put_if_absent(key, body).await
    }
    async fn put_written<W>(&self, key: &str, write: W) -> Result<(), StoreError>
    where
        W: FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send,
    {
        self.written.lock().unwrap().push(key.to_string());
        self.inner.put_written(key, write).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        if key == self.record_key
            && !self
                .hidden_once
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(None);
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.written.lock().unwrap().push(format!("delete {key}"));
        self.inner.delete(key).await
    }
}

/// A late transform refused after the commit whose take-back fails at the ledger (a store error,
/// or cut off there) leaves the committed run's ledger as finalize carried it: the take-back puts
/// the previous ledger over it, never after a delete. Before, it deleted the committed ledger
/// first, and a failed put left the run without one: the next run sent every open finding NEW
/// again and never closed those fixed since.
#[tokio::test]
async fn a_take_back_that_fails_after_the_commit_leaves_the_committed_ledger() {
    let late_one = late_transform("late-failed").await;
    let (c, run2, item) = (&late_one.c, &late_one.run2, &late_one.item);
    cxone_etm::pipeline::finalize(&late_one.store, c, run2)
        .await
        .unwrap();
    let ledger_key = run2.ledger(&item.item);
    let committed = late_one.store.get(&ledger_key).await.unwrap().unwrap();
    assert_eq!(committed, late_one.previous_ledger, "finalize carried it");
    let failing = Hooked {
        inner: late_one.store.clone(),
        hook: |key: &str, _| {
            (key == ledger_key).then(|| {
                Err(StoreError::Failed {
                    location: key.to_string(),
                    problem: "InternalError: We encountered an internal error (HTTP 500)".into(),
                })
            })
        },
    };
    let late = cxone_etm::pipeline::transform(&failing, c, item).await;
    assert!(matches!(late, Err(StepError::Store(_))), "{late:?}");
    assert_eq!(
        late_one.store.get(&ledger_key).await.unwrap(),
        Some(committed),
        "the committed ledger stands"
    );
    std::fs::remove_dir_all(&late_one.dir).ok();
}

/// A late transform that overlaps finalize: it passed its checks and wrote its batch and next
/// ledger; then finalize gave up on it (the item "transform did not finish", what it wrote
/// deleted, the previous ledger carried) and committed. When it records, it finds finalize's
/// record first: it takes back what it wrote (the carried ledger put back, its batch objects
/// gone) and answers `GivenUp`. The committed ledger is the previous run's, and the next run
/// closes what the newer scan fixed. (One whose ledger write comes after finalize carried is
/// refused at that write: `a_late_transform_that_dies_before_it_records_leaves_the_carried_ledger`.)
#[tokio::test]
async fn a_transform_that_overlaps_finalize_takes_back_what_it_wrote() {
    let LateTransform {
        store,
        dir,
        after,
        c,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform("overlap").await;
    let item = &item;

    // Finalize runs, whole, just before the late attempt records: on a thread and runtime of its
    // own, as another process would.
    let record_key = run2.transform_record(&item.item);
    let fired = std::sync::atomic::AtomicBool::new(false);
    let finalizing = store.clone();
    let overlapping = Hooked {
        inner: store,
        hook: |key: &str, _| {
            finalize_the_first_time(key == record_key, &fired, &finalizing, &c, &run2);
            None
        },
    };
    let late = cxone_etm::pipeline::transform(&overlapping, &c, item).await;
    assert!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        "finalize ran in between"
    );
    assert!(matches!(late, Err(StepError::GivenUp { .. })), "{late:?}");
    let store = overlapping.inner;
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap().unwrap(),
        previous_ledger,
        "the ledger finalize carried is back"
    );
    let left: Vec<String> = store.list(&run2.etm_prefix(&item.item)).await.unwrap();
    assert_eq!(
        left,
        vec![run2.transform_record(&item.item)],
        "only finalize's record is left of the item"
    );
    let m2 = manifest(
        &store,
        &format!("connections/overlap/runs/{}/manifest.json", run2.run_id),
    )
    .await;
    let line = m2.items.iter().find(|i| i.item == item.item).unwrap();
    assert_eq!(line.reason.as_deref(), Some("transform did not finish"));

    the_next_run_closes_what_the_newer_scan_fixed(&store, &c, &after, item).await;
    std::fs::remove_dir_all(dir).ok();
}

/// A collect that lands after finalize's pass over its item (an attempt Step Functions retried on
/// a lost answer, still running), then that item's transform, whole, while finalize still holds
/// the lock (just before its manifest): finalize gave the item up as it carried its ledger, so the
/// transform answers `GivenUp` and the committed ledger is the previous run's. Before, finalize
/// gave up only items whose collect it had seen complete: the transform wrote its ledger over the
/// carried one and recorded success, and the committed run held closures no manifest names (found
/// by a review, 2026-12-07).
#[tokio::test]
async fn a_collect_and_transform_that_land_after_finalize_passed_the_item_commit_nothing() {
    let LateTransform {
        store,
        dir,
        after,
        c,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform("late-collect").await;
    let item = &item;
    let collect_key = run2.collect_outcome(&item.item);
    let collected = store.get(&collect_key).await.unwrap().unwrap();
    store.delete(&collect_key).await.unwrap();
    let manifest_key = run2.manifest();
    let fired = std::sync::atomic::AtomicBool::new(false);
    let late = std::sync::Mutex::new(None);
    let finalizing = Hooked {
        inner: store.clone(),
        hook: |key: &str, _| {
            if key == manifest_key && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let transformed = elsewhere(|| async {
                    store.put(&collect_key, collected.clone()).await.unwrap();
                    cxone_etm::pipeline::transform(&store, &c, item).await
                });
                *late.lock().unwrap() = Some(transformed);
            }
            None
        },
    };
    let m2 = cxone_etm::pipeline::finalize(&finalizing, &c, &run2)
        .await
        .unwrap();
    let late = late.into_inner().unwrap().expect("the late transform ran");
    assert!(matches!(late, Err(StepError::GivenUp { .. })), "{late:?}");
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap().unwrap(),
        previous_ledger,
        "the ledger finalize carried stands"
    );
    let line = m2.items.iter().find(|i| i.item == item.item).unwrap();
    assert_eq!(line.reason.as_deref(), Some("collect did not finish"));
    the_next_run_closes_what_the_newer_scan_fixed(&store, &c, &after, item).await;
    std::fs::remove_dir_all(dir).ok();
}

/// A late transform whose ledger write comes after finalize gave the item up and carried the
/// previous run's ledger, and that dies before it records (its record write fails): the ledger is
/// written only where none is, so the carried one stands. Before, the late attempt wrote over it,
/// and, dying before it could find finalize's record and take it back, left it as the committed
/// run's: the next run took its closures as sent.
#[tokio::test]
async fn a_late_transform_that_dies_before_it_records_leaves_the_carried_ledger() {
    a_late_transform_dies_as_it_records("late-dies", |_, _, _| {}).await;
}

/// As above, but another attempt of the transform recorded the item failed just before (one
/// Step Functions retried after the run's deadline for transforms, or refused a page), so
/// finalize carried the previous ledger writing no record of its own. The late attempt is
/// refused by the failed record as by finalize's `givenUp`. Before, only `givenUp` refused it,
/// so it wrote its ledger over the committed one, closures no manifest names.
#[tokio::test]
async fn a_late_transform_after_another_attempt_recorded_the_item_failed_leaves_the_carried_ledger()
{
    a_late_transform_dies_as_it_records("late-after-failed", |store, run2, item| {
        let failed = cxone_etm::pipeline::TransformRecord {
            item: item.item.clone(),
            failed: Some("not started: the run's items start only until …".into()),
            ..Default::default()
        };
        let failed = bytes::Bytes::from(serde_json::to_vec(&failed).unwrap());
        let key = run2.transform_record(&item.item);
        elsewhere(|| store.put(&key, failed)).unwrap();
    })
    .await;
}

/// Run 2's late transform of its first item, as it comes to write its ledger: `meanwhile` runs
/// (another process's doing), then finalize runs whole, on a thread and runtime of their own, as
/// another process would; the attempt dies as it records. The ledger finalize carried stands, and
/// the next run closes what the newer scan fixed.
async fn a_late_transform_dies_as_it_records(
    id: &str,
    meanwhile: impl Fn(&LocalStore, &cxone_etm::pipeline::RunRef, &cxone_etm::pipeline::WorkItem)
    + Send
    + Sync,
) {
    let LateTransform {
        store,
        dir,
        after,
        c,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform(id).await;
    let item = &item;
    let (ledger_key, record_key) = (run2.ledger(&item.item), run2.transform_record(&item.item));
    let fired = std::sync::atomic::AtomicBool::new(false);
    let finalizing = store.clone();
    let dying = Hooked {
        inner: store,
        hook: |key: &str, _| {
            if key == ledger_key && !fired.load(std::sync::atomic::Ordering::SeqCst) {
                meanwhile(&finalizing, &run2, item);
            }
            finalize_the_first_time(key == ledger_key, &fired, &finalizing, &c, &run2);
            (key == record_key).then(|| {
                Err(StoreError::Failed {
                    location: key.to_string(),
                    problem: "the process died".into(),
                })
            })
        },
    };
    let late = cxone_etm::pipeline::transform(&dying, &c, item).await;
    assert!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        "finalize ran in between"
    );
    assert!(late.is_err(), "{late:?}");
    let store = dying.inner;
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap().unwrap(),
        previous_ledger,
        "the ledger finalize carried stands"
    );
    the_next_run_closes_what_the_newer_scan_fixed(&store, &c, &after, item).await;
    std::fs::remove_dir_all(dir).ok();
}

/// A late transform of an item whose asset moves: an earlier attempt wrote the item's ledger and
/// died before it recorded; this one passes its checks, and as it puts its ledger over the
/// earlier one's, finalize gives up on the item (carrying the previous ledger) and commits. Its
/// put lands over the carried ledger; at its moved closures it finds the item given up, and
/// takes back what it wrote: the committed run keeps the previous ledger. Before, the refusal
/// there was not a give-up, nothing was taken back, and the committed run kept this attempt's
/// ledger (its absent findings closed there, their closures deleted: open in ETM for good).
#[tokio::test]
async fn a_late_moving_transform_finalize_gave_up_on_takes_back_its_ledger() {
    let LateTransform {
        store,
        dir,
        after,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform("late-moving").await;
    let item = &item;
    let mut moving = connection(&after, "late-moving", ConnectorKind::Sast).config;
    moving.transform_maps = vec![assets_by_name(cxone_etm::Engine::Sast)];
    let c = moving.validate().unwrap();
    let (ledger_key, record_key) = (run2.ledger(&item.item), run2.transform_record(&item.item));
    // The earlier attempt: its ledger written, its process dead as it records.
    let dying = Hooked {
        inner: store.clone(),
        hook: |key: &str, _| {
            (key == record_key).then(|| {
                Err(StoreError::Failed {
                    location: key.to_string(),
                    problem: "the process died".into(),
                })
            })
        },
    };
    assert!(
        cxone_etm::pipeline::transform(&dying, &c, item)
            .await
            .is_err()
    );
    assert!(store.get(&ledger_key).await.unwrap().is_some());
    let fired = std::sync::atomic::AtomicBool::new(false);
    let finalizing = store.clone();
    let late = Hooked {
        inner: store,
        hook: |key: &str, conditional: bool| {
            finalize_the_first_time(
                key == ledger_key && !conditional,
                &fired,
                &finalizing,
                &c,
                &run2,
            );
            None
        },
    };
    let answered = cxone_etm::pipeline::transform(&late, &c, item).await;
    assert!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        "finalize ran in between"
    );
    assert!(
        matches!(answered, Err(StepError::GivenUp { .. })),
        "{answered:?}"
    );
    let store = late.inner;
    assert_eq!(
        store.get(&ledger_key).await.unwrap().unwrap(),
        previous_ledger,
        "the ledger finalize carried stands"
    );
    assert_eq!(
        store.list(&run2.etm_prefix(&item.item)).await.unwrap(),
        vec![record_key.clone()],
        "nothing of the late attempt beside the record"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A transform of a moving item that fails for another reason at its moved closures (the
/// committed ledger reads otherwise there: the item fails) just as finalize gives up on the item:
/// finalize runs as the moved closures are put, after its check for a record, and its failure
/// record meets finalize's. What it wrote after finalize discarded the item's objects (the moved
/// closures) is taken back: the folder holds the record alone, and the ledger is the one finalize
/// carried. Before, that path answered the give-up without taking anything back.
#[tokio::test]
async fn a_moving_transform_that_fails_as_finalize_gives_up_takes_back_what_it_wrote() {
    let LateTransform {
        store,
        dir,
        after,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform("moving-fails").await;
    let item = &item;
    let mut moving = connection(&after, "moving-fails", ConnectorKind::Sast).config;
    moving.transform_maps = vec![assets_by_name(cxone_etm::Engine::Sast)];
    let c = moving.validate().unwrap();
    let (moved_key, record_key) = (
        run2.moved_closures(&item.item),
        run2.transform_record(&item.item),
    );
    let fired = std::sync::atomic::AtomicBool::new(false);
    let finalizing = store.clone();
    let late = ReadsOtherwise {
        inner: Hooked {
            inner: store,
            hook: |key: &str, _| {
                finalize_the_first_time(key == moved_key, &fired, &finalizing, &c, &run2);
                None
            },
        },
        key: run2
            .sibling(item.previous_run.as_deref().unwrap())
            .ledger(&item.item),
        reads: Default::default(),
    };
    let answered = cxone_etm::pipeline::transform(&late, &c, item).await;
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    assert!(late.reads.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(
        matches!(answered, Err(StepError::GivenUp { .. })),
        "{answered:?}"
    );
    let store = late.inner.inner;
    assert_eq!(
        store.list(&run2.etm_prefix(&item.item)).await.unwrap(),
        vec![record_key],
        "nothing of the attempt beside finalize's record"
    );
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap().unwrap(),
        previous_ledger,
        "the ledger finalize carried stands"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Two attempts of finalize at once (Step Functions retried one whose answer it lost): one
/// commits while the other, past its check for the commit marker, carries the previous ledger of
/// an item given up, and fails as it puts it. The committed run keeps the item's ledger: the
/// carried one is put over what a transform left, never after a delete. Before, the attempt
/// deleted the committed ledger first, and the next run sent every open finding NEW again and
/// never closed those fixed since.
#[tokio::test]
async fn a_finalize_that_fails_carrying_a_ledger_after_another_committed_leaves_it() {
    let LateTransform {
        store,
        dir,
        after,
        c,
        run2,
        item,
        previous_ledger,
        ..
    } = late_transform("finalize-twice").await;
    let item = &item;
    let (ledger_key, record_key) = (run2.ledger(&item.item), run2.transform_record(&item.item));
    let fired = std::sync::atomic::AtomicBool::new(false);
    let finalizing = store.clone();
    let failing = Hooked {
        inner: store,
        hook: |key: &str, conditional| {
            let gives_up = key == record_key && conditional;
            finalize_the_first_time(gives_up, &fired, &finalizing, &c, &run2);
            (key == ledger_key && !conditional).then(|| {
                Err(StoreError::Failed {
                    location: key.to_string(),
                    problem: "InternalError: We encountered an internal error (HTTP 500)".into(),
                })
            })
        },
    };
    let second = cxone_etm::pipeline::finalize(&failing, &c, &run2).await;
    assert!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        "the other attempt committed in between"
    );
    assert!(matches!(second, Err(StepError::Store(_))), "{second:?}");
    let store = failing.inner;
    assert!(store.get(&run2.commit_marker()).await.unwrap().is_some());
    assert_eq!(
        store.get(&ledger_key).await.unwrap(),
        Some(previous_ledger),
        "the committed run keeps the item's ledger"
    );
    the_next_run_closes_what_the_newer_scan_fixed(&store, &c, &after, item).await;
    std::fs::remove_dir_all(dir).ok();
}

/// A commit marker whose conditional write the store refuses for another write in flight (S3's
/// 409; here the other write never lands, its attempt killed mid-request): finalize answers a
/// retryable error, and the run is not recorded committed; the next attempt commits it. Before,
/// a refused marker read as committed: the state named the run as the last committed one with no
/// marker, and the next run reconciled against a run that never committed.
#[tokio::test]
async fn a_commit_marker_refused_for_a_write_in_flight_is_not_taken_as_committed() {
    let LateTransform {
        store,
        dir,
        c,
        run2,
        ..
    } = late_transform("marker-in-flight").await;
    let marker_key = run2.commit_marker();
    let in_flight = Hooked {
        inner: store.clone(),
        hook: |key: &str, conditional| (key == marker_key && conditional).then_some(Ok(false)),
    };
    let refused = cxone_etm::pipeline::finalize(&in_flight, &c, &run2)
        .await
        .unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    assert!(refused.to_string().contains("_COMMITTED"), "{refused}");
    assert!(store.get(&marker_key).await.unwrap().is_none());
    let state = cxone_etm::pipeline::read_state(&store, &c.config.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        state.last_committed_run.as_deref(),
        Some(run2.run_id.as_str()),
        "not recorded committed"
    );

    cxone_etm::pipeline::finalize(&store, &c, &run2)
        .await
        .unwrap();
    assert!(store.get(&marker_key).await.unwrap().is_some());
    let state = cxone_etm::pipeline::read_state(&store, &c.config.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.last_committed_run.as_deref(),
        Some(run2.run_id.as_str())
    );
    std::fs::remove_dir_all(dir).ok();
}

/// An attempt of run 2's finalize that runs on after its lock was released (another attempt's
/// failure, caught, released it while Step Functions' retry of a lost answer still ran), and
/// commits after run 3 was planned against run 1. Run 3 commits nothing: it reconciled against
/// an older run than the last committed one (`Superseded`), and is marked Failed; run 2 is the
/// connection's last committed run, and run 4 reconciles against it, finding nothing NEW or
/// REOPENED. Before, run 3 committed against run 1, sending again what run 2 had sent, and run 2,
/// its state left to run 3, was never the run reconciled against.
///
/// The same with the connection's state written back to name run 1 after run 2 committed, as a
/// begin that read the state before run 2's commit writes it (the state is written without a
/// condition): run 2's commit claim on run 1 still refuses run 3, and run 4 still reconciles
/// against run 2. Before the claims, run 3 then committed against run 1 beside run 2.
// Two workers: the store's hook blocks one while run 3 is planned against the emulator, which
// answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_planned_before_an_older_one_committed_commits_nothing() {
    for written_back in [false, true] {
        planned_before_an_older_run_committed(written_back).await;
    }
}

async fn planned_before_an_older_run_committed(state_written_back: bool) {
    let id = if state_written_back {
        "superseded-written-back"
    } else {
        "superseded"
    };
    let (store, dir) = temp_store(id);
    let (before, after) = (emulator(shape(2, 3)).await, emulator(shape(2, 4)).await);
    let (run2, items, first) = collected_not_transformed(&store, &before, &after, id).await;
    let c = connection(&after, id, ConnectorKind::Sast);
    for item in &items {
        cxone_etm::pipeline::transform(&store, &c, item)
            .await
            .unwrap();
    }
    // As run 2's finalize writes its manifest, its lock goes (another attempt failed for good)
    // and run 3 begins and is planned, elsewhere.
    let manifest_key = run2.manifest();
    let run3 = std::sync::Mutex::new(None);
    let finalizing = store.clone();
    let overtaken = Hooked {
        inner: store,
        hook: |key: &str, _| {
            let mut run3 = run3.lock().unwrap();
            if key == manifest_key && run3.is_none() {
                *run3 = Some(elsewhere(|| async {
                    cxone_etm::pipeline::fail_run(&finalizing, &run2, "finalize: failed for good")
                        .await
                        .unwrap();
                    planned_run(&finalizing, &c, &after, 1).await
                }));
            }
            None
        },
    };
    cxone_etm::pipeline::finalize(&overtaken, &c, &run2)
        .await
        .expect("the attempt that ran on commits run 2");
    let store = overtaken.inner;
    let (run3, vendor, items3) = run3.into_inner().unwrap().expect("run 3 was planned");
    let planned: cxone_etm::pipeline::RunRecord =
        serde_json::from_slice(&store.get(&run3.run_record()).await.unwrap().unwrap()).unwrap();
    assert_eq!(planned.previous_run.as_deref(), Some(first.as_str()));
    let state = cxone_etm::pipeline::read_state(&store, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.last_committed_run.as_deref(),
        Some(run2.run_id.as_str())
    );
    if state_written_back {
        name_last_committed(&store, id, &first, None).await;
    }

    for item in &items3 {
        cxone_etm::pipeline::collect(&store, &vendor, &c, item, None)
            .await
            .unwrap();
        cxone_etm::pipeline::transform(&store, &c, item)
            .await
            .unwrap();
    }
    let refused = cxone_etm::pipeline::finalize(&store, &c, &run3)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StepError::Superseded { committed, .. } if *committed == run2.run_id),
        "{refused}"
    );
    assert!(store.get(&run3.commit_marker()).await.unwrap().is_none());
    let failed: cxone_etm::pipeline::RunRecord =
        serde_json::from_slice(&store.get(&run3.run_record()).await.unwrap().unwrap()).unwrap();
    assert_eq!(failed.state, cxone_etm::pipeline::RunState::Failed);

    let fourth = run(&store, &c, api_key(&after))
        .await
        .expect("the lock is free");
    assert!(fourth.complete, "{:?}", fourth.problems);
    let m4 = manifest(&store, &fourth.manifest).await;
    nothing_new_or_reopened(&m4, "run 4, against run 2");
    assert_eq!(
        closed_findings(&m4),
        0,
        "run 2 closed what the newer scan fixed"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Writes the connection's state back to name `run` its last committed run (and, given, `last_run`
/// its last run), as a run's begin that read the state before a later commit writes it.
async fn name_last_committed(
    store: &LocalStore,
    connection: &str,
    run: &str,
    last_run: Option<&str>,
) {
    let key = cxone_etm::pipeline::state_key(connection);
    let mut state: Value =
        serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
    state["lastCommittedRun"] = Value::from(run);
    if let Some(last_run) = last_run {
        state["lastRun"] = Value::from(last_run);
    }
    store
        .put(&key, serde_json::to_vec(&state).unwrap().into())
        .await
        .unwrap();
}

/// Connection `id`'s first two runs, both complete: run 1 on two scans a project, run 2 on a
/// third (findings fixed, so run 2 closes some), `after` the tenant of run 2 and `c_after` its
/// connection.
struct TwoRuns {
    store: LocalStore,
    dir: std::path::PathBuf,
    after: Emulator,
    c_after: cxone_etm::pipeline::Connection,
    first: cxone_etm::pipeline::RunSummary,
    second: cxone_etm::pipeline::RunSummary,
}

async fn two_committed_runs(id: &str) -> TwoRuns {
    let before = emulator(shape(PROJECTS, 2)).await;
    let after = emulator(shape(PROJECTS, 3)).await;
    let (store, dir) = temp_store(id);
    let c_after = connection(&after, id, ConnectorKind::Sast);
    let first = run(
        &store,
        &connection(&before, id, ConnectorKind::Sast),
        api_key(&before),
    )
    .await
    .unwrap();
    let second = run(&store, &c_after, api_key(&after)).await.unwrap();
    assert!(first.complete && second.complete);
    assert!(closed_findings(&manifest(&store, &second.manifest).await) > 0);
    TwoRuns {
        store,
        dir,
        after,
        c_after,
        first,
        second,
    }
}

/// The connection's state written back to name run 1 after run 2 committed (a begin that read it
/// before run 2's commit): run 3 still reconciles against run 2, the newest commit the claims
/// lead to, and finds nothing new. Before, it reconciled against run 1 and committed beside run
/// 2: what run 2 had sent was sent NEW again, and what run 2 opened and the vendor fixed since
/// was never closed.
#[tokio::test]
async fn a_run_begun_on_a_state_written_back_reconciles_against_the_newest_commit() {
    let id = "written-back";
    let TwoRuns {
        store,
        dir,
        after,
        c_after,
        first,
        second,
    } = two_committed_runs(id).await;
    // The begin of run 3 read the state before run 2 committed: both name run 1.
    name_last_committed(&store, id, &first.run_id, Some(&first.run_id)).await;
    let third = run(&store, &c_after, api_key(&after)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    assert_eq!(
        previous_run_of(&dir, id, &third.run_id).as_deref(),
        Some(second.run_id.as_str())
    );
    let m3 = manifest(&store, &third.manifest).await;
    nothing_new_or_reopened(&m3, "run 3, against run 2");
    assert_eq!(closed_findings(&m3), 0);
    std::fs::remove_dir_all(dir).ok();
}

/// The future `make` makes, run to its end on a thread and runtime of its own, as another process
/// would.
fn elsewhere<F: std::future::Future>(make: impl FnOnce() -> F + Send) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(make())
            })
            .join()
            .unwrap()
    })
}

/// Run 2 of connection `id` against a newer scan (some findings fixed, so a transform of run 2
/// would close them), collected: its second item transformed in time, its first not, as when
/// that item's transform attempt is still running late.
struct LateTransform {
    store: LocalStore,
    dir: std::path::PathBuf,
    after: Emulator,
    c: cxone_etm::pipeline::Connection,
    run2: cxone_etm::pipeline::RunRef,
    item: cxone_etm::pipeline::WorkItem,
    on_time: cxone_etm::pipeline::WorkItem,
    /// The first item's ledger in run 1 (what finalize of run 2 carries).
    previous_ledger: bytes::Bytes,
}

async fn late_transform(id: &str) -> LateTransform {
    let (store, dir) = temp_store(id);
    let (before, after) = (emulator(shape(2, 3)).await, emulator(shape(2, 4)).await);
    let (run2, items, first) = collected_not_transformed(&store, &before, &after, id).await;
    let c = connection(&after, id, ConnectorKind::Sast);
    let (item, on_time) = (items[0].clone(), items[1].clone());
    cxone_etm::pipeline::transform(&store, &c, &on_time)
        .await
        .unwrap();
    let previous_ledger = store
        .get(&run2.sibling(&first).ledger(&item.item))
        .await
        .unwrap()
        .unwrap();
    LateTransform {
        store,
        dir,
        after,
        c,
        run2,
        item,
        on_time,
        previous_ledger,
    }
}

/// From within a store's hook: when `now` holds, the first time, finalize of `run` runs whole
/// on a thread and runtime of its own, as another process would.
fn finalize_the_first_time(
    now: bool,
    fired: &std::sync::atomic::AtomicBool,
    store: &LocalStore,
    c: &cxone_etm::pipeline::Connection,
    run: &cxone_etm::pipeline::RunRef,
) {
    if now && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
        finalize_elsewhere(store, c, run);
    }
}

/// Finalize of `run`, run whole on a thread and runtime of its own, as another process would.
fn finalize_elsewhere(
    store: &LocalStore,
    c: &cxone_etm::pipeline::Connection,
    run: &cxone_etm::pipeline::RunRef,
) {
    elsewhere(|| cxone_etm::pipeline::finalize(store, c, run)).expect("finalize commits");
}

/// The run after a late transform of `item` was refused: complete, and closing what the newer
/// scan fixed (the committed ledger was the previous run's).
async fn the_next_run_closes_what_the_newer_scan_fixed(
    store: &LocalStore,
    c: &cxone_etm::pipeline::Connection,
    after: &Emulator,
    item: &cxone_etm::pipeline::WorkItem,
) {
    let third = run(store, c, api_key(after)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let m3 = manifest(store, &third.manifest).await;
    let closed = m3
        .items
        .iter()
        .find(|i| i.item == item.item)
        .and_then(|i| i.figures.lifecycle.get(&Lifecycle::Fixed).copied());
    assert!(closed > Some(0), "what the newer scan fixed closes now");
}

/// Run 1 of connection `id` committed against `before`, then run 2 planned and collected against
/// `after`, nothing of it transformed: run 2, its items and run 1's id.
async fn collected_not_transformed(
    store: &LocalStore,
    before: &Emulator,
    after: &Emulator,
    id: &str,
) -> (
    cxone_etm::pipeline::RunRef,
    Vec<cxone_etm::pipeline::WorkItem>,
    String,
) {
    let first = run(
        store,
        &connection(before, id, ConnectorKind::Sast),
        api_key(before),
    )
    .await
    .unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let c = connection(after, id, ConnectorKind::Sast);
    let run2 = cxone_etm::pipeline::begin_run(
        store,
        id,
        cxone_etm::pipeline::Trigger::Api,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let vendor = cxone_etm::pipeline::VendorAccess::new(
        c.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(after)),
    )
    .await
    .unwrap();
    let groups = cxone_etm::pipeline::plan(store, &vendor, &c, &run2, 1)
        .await
        .unwrap();
    let items: Vec<_> = groups.iter().flat_map(|g| g.items.clone()).collect();
    let (collected, unfinished) = cxone_etm::pipeline::collect_group(
        store,
        &vendor,
        &c,
        &items,
        cxone_etm::pipeline::TimeBudget::until(None),
    )
    .await;
    assert!(unfinished.is_none() && collected.len() == items.len());
    (run2, items, first.run_id)
}

/// Two attempts of one item's transform at once, the first to record failing (say, a config
/// put between them): the item is the failed record's, and the attempt that succeeded takes back
/// the ledger it wrote, so nothing of the item is committed by either.
#[tokio::test]
async fn a_transform_that_loses_to_a_failed_attempt_takes_back_its_ledger() {
    let (store, dir) = temp_store("lost-to-failed");
    let emulator = emulator(shape(2, 3)).await;
    let (run2, items, first) =
        collected_not_transformed(&store, &emulator, &emulator, "lost").await;
    let item = &items[0];
    let failed = cxone_etm::pipeline::TransformRecord {
        item: item.item.clone(),
        failed: Some("the other attempt's refusal".into()),
        ..Default::default()
    };
    store
        .put(
            &run2.transform_record(&item.item),
            serde_json::to_vec(&failed).unwrap().into(),
        )
        .await
        .unwrap();
    let c = connection(&emulator, "lost", ConnectorKind::Sast);
    let answered = cxone_etm::pipeline::transform(&store, &c, item)
        .await
        .unwrap();
    assert_eq!(answered, failed, "the record written first is the item's");
    let previous = cxone_etm::pipeline::RunRef {
        connection_id: "lost".into(),
        run_id: first,
    };
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap(),
        store.get(&previous.ledger(&item.item)).await.unwrap(),
        "the previous run's ledger, not the one this attempt wrote"
    );
    assert_eq!(
        store.list(&run2.etm_prefix(&item.item)).await.unwrap(),
        vec![run2.transform_record(&item.item)]
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A transform that records just as finalize would give up on its item (after finalize read
/// that it had no record, and after it listed the run's ledgers): finalize's record is not
/// written, the item is read again and committed as transformed, its batches and ledger kept.
#[tokio::test]
async fn a_transform_that_records_as_finalize_gives_up_is_committed() {
    let (store, dir) = temp_store("records-in-time");
    let (before, after) = (emulator(shape(2, 3)).await, emulator(shape(2, 4)).await);
    let (run2, items, first) = collected_not_transformed(&store, &before, &after, "in-time").await;
    let c = connection(&after, "in-time", ConnectorKind::Sast);
    let (item, on_time) = (&items[0], &items[1]);
    cxone_etm::pipeline::transform(&store, &c, on_time)
        .await
        .unwrap();
    // The transform runs, whole, as finalize writes its record that it gave up.
    let (record_key, fired) = (
        run2.transform_record(&item.item),
        std::sync::atomic::AtomicBool::new(false),
    );
    let transforming = store.clone();
    let racing = Hooked {
        inner: store,
        hook: |key: &str, conditional| {
            if conditional
                && key == record_key
                && !fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let runtime = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .unwrap();
                            runtime.block_on(cxone_etm::pipeline::transform(
                                &transforming,
                                &c,
                                item,
                            ))
                        })
                        .join()
                        .unwrap()
                })
                .expect("the transform records");
            }
            None
        },
    };
    let m2 = cxone_etm::pipeline::finalize(&racing, &c, &run2)
        .await
        .unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    let store = racing.inner;
    let line = m2.items.iter().find(|i| i.item == item.item).unwrap();
    assert_eq!(line.status, ItemStatus::Complete, "{:?}", line.reason);
    assert!(!line.objects.is_empty());
    for object in &line.objects {
        assert!(
            store.get(&object.key).await.unwrap().is_some(),
            "{}",
            object.key
        );
    }
    let previous = cxone_etm::pipeline::RunRef {
        connection_id: "in-time".into(),
        run_id: first,
    };
    assert_ne!(
        store.get(&run2.ledger(&item.item)).await.unwrap(),
        store.get(&previous.ledger(&item.item)).await.unwrap(),
        "the transform's ledger, not the previous run's carried"
    );
    assert!(m2.complete, "{:?}", m2.problems);
    std::fs::remove_dir_all(dir).ok();
}

/// An attempt cut off while it took back its writes (its ledger over the carried one, a batch
/// object left): the group's next attempt, meeting finalize's record, takes them back.
#[tokio::test]
async fn a_take_back_cut_off_is_finished_by_the_groups_next_attempt() {
    let (store, dir) = temp_store("take-back-again");
    let emulator = emulator(shape(2, 3)).await;
    let (run2, items, first) =
        collected_not_transformed(&store, &emulator, &emulator, "again").await;
    let item = &items[0];
    let given_up = cxone_etm::pipeline::TransformRecord {
        item: item.item.clone(),
        given_up: true,
        ..Default::default()
    };
    let put = |key: String, body: Vec<u8>| {
        let store = store.clone();
        async move { store.put(&key, body.into()).await.unwrap() }
    };
    put(
        run2.transform_record(&item.item),
        serde_json::to_vec(&given_up).unwrap(),
    )
    .await;
    put(
        run2.ledger(&item.item),
        b"the late attempt's ledger".to_vec(),
    )
    .await;
    let stray = format!("{}0.ndjson.gz", run2.etm_prefix(&item.item));
    put(stray, b"a batch of the late attempt".to_vec()).await;

    let c = connection(&emulator, "again", ConnectorKind::Sast);
    let (done, unfinished) = cxone_etm::pipeline::transform_group(
        &store,
        &c,
        std::slice::from_ref(item),
        cxone_etm::pipeline::TimeBudget::until(None),
    )
    .await;
    assert!(unfinished.is_none(), "{unfinished:?}");
    assert_eq!(done, vec![given_up]);
    let previous = cxone_etm::pipeline::RunRef {
        connection_id: "again".into(),
        run_id: first,
    };
    assert_eq!(
        store.get(&run2.ledger(&item.item)).await.unwrap(),
        store.get(&previous.ledger(&item.item)).await.unwrap()
    );
    assert_eq!(
        store.list(&run2.etm_prefix(&item.item)).await.unwrap(),
        vec![run2.transform_record(&item.item)]
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A record write that finds another in flight and no record yet is retried by the step, not
/// written over what may land (finalize's record that it gave up).
#[tokio::test]
async fn a_transform_record_write_that_meets_another_in_flight_is_retried() {
    let (store, dir) = temp_store("record-in-flight");
    let emulator = emulator(shape(2, 3)).await;
    let (run2, items, _) =
        collected_not_transformed(&store, &emulator, &emulator, "in-flight").await;
    let c = connection(&emulator, "in-flight", ConnectorKind::Sast);
    // A conditional write of a transform record answered as S3 does while another write of it is
    // in flight (409: not written), the record not there yet.
    let in_flight = Hooked {
        inner: store,
        hook: |key: &str, conditional| {
            (conditional && key.ends_with("/transform.json")).then_some(Ok(false))
        },
    };
    let error = cxone_etm::pipeline::transform(&in_flight, &c, &items[0])
        .await
        .expect_err("not written");
    assert!(
        error.is_retryable() && error.to_string().contains("in flight"),
        "{error}"
    );
    assert!(
        in_flight
            .inner
            .get(&run2.transform_record(&items[0].item))
            .await
            .unwrap()
            .is_none()
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Every finding closed in a manifest's closures objects, as (asset, id), checked against their
/// manifest entries; fails on any closed twice.
async fn closed_in(store: &LocalStore, m: &Manifest) -> BTreeSet<(String, String)> {
    let closures = m
        .items
        .iter()
        .flat_map(|i| &i.objects)
        .chain(m.deleted_items.iter().flat_map(|d| &d.objects))
        .filter(|o| o.key.ends_with(CLOSURES));
    let mut closed = BTreeSet::new();
    for (line, finding) in findings_in(store, closures).await {
        assert_eq!(finding["lifecycleStatus"], "FIXED");
        let fresh = closed.insert((
            line["externalAssetId"].as_str().unwrap().to_string(),
            finding["externalFindingId"].as_str().unwrap().to_string(),
        ));
        assert!(fresh, "closed twice: {finding}");
    }
    closed
}

/// The transform killed partway through writing the closures of findings absent from a complete
/// pull: nothing of that run commits, and the run after closes exactly what it would have closed,
/// each once.
#[tokio::test]
async fn a_transform_killed_while_writing_closures_closes_each_absent_finding_once_after() {
    let before = emulator(shape(PROJECTS, 2)).await;
    let after = emulator(shape(PROJECTS, 3)).await;
    let c1 = connection(&before, "cut", ConnectorKind::Sast);
    let c2 = connection(&after, "cut", ConnectorKind::Sast);

    let (uncut, uncut_dir) = temp_store("closures-uncut");
    let uncut = CrashingStore::new(uncut);
    run_through(&uncut, &c1, &before).await.unwrap();
    let second = run_through(&uncut, &c2, &after).await.unwrap();
    let expected = closed_in(
        &uncut.inner,
        &manifest(&uncut.inner, &second.manifest).await,
    )
    .await;
    assert!(
        !expected.is_empty(),
        "the newer scans leave findings absent"
    );

    let (local, dir) = temp_store("closures-cut");
    let store = CrashingStore::new(local);
    let first = run_through(&store, &c1, &before).await.unwrap();
    store.crash_midway(CLOSURES);
    assert!(run_through(&store, &c2, &after).await.is_err());
    assert!(
        store.was_cut(),
        "the closures were cut off, not written whole"
    );
    store.revive();
    store.delete("connections/cut/lock").await.unwrap();
    let third = run_through(&store, &c2, &after).await.unwrap();
    assert!(third.complete);
    assert_eq!(
        previous_run_of(&dir, "cut", &third.run_id),
        Some(first.run_id),
        "the cut run never committed"
    );
    let m3 = manifest(&store.inner, &third.manifest).await;
    assert_eq!(closed_in(&store.inner, &m3).await, expected);
    std::fs::remove_dir_all(uncut_dir).ok();
    std::fs::remove_dir_all(dir).ok();
}

/// Finalize killed partway through writing a deleted project's closures: the retried finalize
/// closes every open finding of every deleted project once, and the run after closes none again.
#[tokio::test]
async fn a_finalize_killed_while_closing_a_deleted_project_closes_each_finding_once_when_retried() {
    let (local, dir) = temp_store("deleted-cut");
    let store = CrashingStore::new(local);
    let before = emulator(shape(PROJECTS, 2)).await;
    // Another tenant under the same connection: every project of the first is gone.
    let gone = emulator(TenantShape {
        seed: TenantShape::default().seed + 1,
        ..shape(1, 1)
    })
    .await;
    let mut c1 = connection(&before, "deleted", ConnectorKind::Sast);
    c1.config.close_deleted_items = true;
    let mut c2 = connection(&gone, "deleted", ConnectorKind::Sast);
    c2.config.close_deleted_items = true;
    let first = run_through(&store, &c1, &before).await.unwrap();
    let m1 = manifest(&store.inner, &first.manifest).await;
    let with_ledgers = m1
        .items
        .iter()
        .filter(|i| i.status == ItemStatus::Complete)
        .count();

    store.crash_midway(CLOSURES);
    assert!(run_through(&store, &c2, &gone).await.is_err());
    assert!(
        store.was_cut(),
        "the closures were cut off, not written whole"
    );
    store.revive();
    let second = cxone_etm::pipeline::RunRef {
        connection_id: "deleted".into(),
        run_id: the_other_run(&dir, "deleted", &first.run_id),
    };
    assert!(
        store.get(&second.commit_marker()).await.unwrap().is_none(),
        "nothing committed before the closures were whole"
    );
    // Step Functions retries the failed finalize.
    cxone_etm::pipeline::finalize(&store, &c2, &second)
        .await
        .unwrap();
    let m2 = manifest(&store.inner, &second.manifest()).await;
    assert_eq!(m2.deleted_items.len(), with_ledgers);
    assert!(
        m2.deleted_items
            .iter()
            .all(|d| d.closed && d.open_findings > 0)
    );
    let open_before: u64 = m2.deleted_items.iter().map(|d| d.open_findings).sum();
    let closed = closed_in(&store.inner, &m2).await;
    assert_eq!(
        closed.len() as u64,
        open_before,
        "every open finding closed, once"
    );

    let third = run_through(&store, &c2, &gone).await.unwrap();
    let m3 = manifest(&store.inner, &third.manifest).await;
    assert!(
        closed_in(&store.inner, &m3).await.is_empty(),
        "closed again"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Secrets Manager as the functions see it: the first read gives `first`; every later read fails,
/// as `passing` says.
struct SecretsThatStopAnswering {
    first: String,
    reads: std::sync::atomic::AtomicUsize,
    passing: cxone_etm::secret::Passing,
}

impl cxone_etm::secret::SecretsManager for SecretsThatStopAnswering {
    fn secret_string<'a>(
        &'a self,
        _id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<String, cxone_etm::secret::SecretUnread>> {
        let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer = match read {
            0 => Ok(self.first.clone()),
            _ => Err(cxone_etm::secret::SecretUnread {
                problem: "cannot read the secret (ThrottlingException: Rate exceeded)".into(),
                passing: self.passing,
            }),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// The vendor refuses the credential (its key was rotated), and Secrets Manager does not give
/// the secret again for now: the step fails Retryable (a later attempt may read the rotated key),
/// not as a refused credential. A secret refused for good leaves the vendor's refusal, Fatal.
#[tokio::test]
async fn a_refused_credential_whose_secret_cannot_be_read_again_for_now_is_retried() {
    use cxone_etm::secret::Passing;
    let emulator = emulator(shape(2, 1)).await;
    let c = connection(&emulator, "renewal", ConnectorKind::Sast);
    for (passing, retryable) in [(Passing::MayPass, true), (Passing::Lasting, false)] {
        let (store, dir) = temp_store(&format!("renewal-{passing:?}"));
        let run2 = cxone_etm::pipeline::begin_run(
            &store,
            "renewal",
            cxone_etm::pipeline::Trigger::Api,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let secrets = SecretsThatStopAnswering {
            first: r#"{"api_key": "rotated-away"}"#.into(),
            reads: Default::default(),
            passing,
        };
        let secret = cxone_etm::secret::SecretSource::with_secrets_manager(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:cx-AbCdEf",
            std::sync::Arc::new(secrets),
        );
        let vendor = cxone_etm::pipeline::VendorAccess::new(c.vendor.clone(), secret)
            .await
            .unwrap();
        let error = cxone_etm::pipeline::plan(&store, &vendor, &c, &run2, 1)
            .await
            .expect_err("the vendor refuses the key");
        assert_eq!(error.is_retryable(), retryable, "{passing:?}: {error}");
        assert_eq!(
            error
                .to_string()
                .contains("re-reading the secret failed for now"),
            retryable,
            "{error}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    // A group of items collected while the secret cannot be read: each item meets the refusal,
    // and the secret is read again once for all of them (within the minute, the outcome stands).
    let (store, dir) = temp_store("renewal-group");
    let (_, _, items) = planned_run(&store, &c, &emulator, 1).await;
    assert!(items.len() >= 2);
    let secrets = std::sync::Arc::new(SecretsThatStopAnswering {
        first: r#"{"api_key": "rotated-away"}"#.into(),
        reads: Default::default(),
        passing: Passing::MayPass,
    });
    let secret = cxone_etm::secret::SecretSource::with_secrets_manager(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:cx-AbCdEf",
        secrets.clone(),
    );
    let refused = cxone_etm::pipeline::VendorAccess::new(c.vendor.clone(), secret)
        .await
        .unwrap();
    let (_, unfinished) = cxone_etm::pipeline::collect_group(
        &store,
        &refused,
        &c,
        &items,
        cxone_etm::pipeline::TimeBudget::until(None),
    )
    .await;
    let unfinished = unfinished.expect("no item is collected");
    assert!(unfinished.is_retryable(), "{unfinished}");
    let reads = || secrets.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reads(), 2, "read once to begin, once again for every item");
    // The step's next attempt (Step Functions waits seconds) reads the secret again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, again) = cxone_etm::pipeline::collect_group(
        &store,
        &refused,
        &c,
        &items[..1],
        cxone_etm::pipeline::TimeBudget::until(None),
    )
    .await;
    assert!(again.is_some_and(|e| e.is_retryable()));
    assert_eq!(
        reads(),
        3,
        "a secret not read for now is not held against the next attempt"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Two finalize attempts at once (Step Functions retried one whose answer it lost) both write
/// `manifest.json`; the first marker stands, and the other attempt's manifest, written after it,
/// differs from the one its hash names by `finishedAt` alone. The finalize that finds the marker
/// (the attempt that lost the race, or any run again) puts the committed manifest back, byte for
/// byte: the manifest's `finishedAt` is the marker's `committedAt`. Before, the two disagreed for
/// good, and a reader checking the hash refused the committed run.
#[tokio::test]
async fn a_manifest_written_over_the_committed_one_is_put_back() {
    let (store, dir) = temp_store("manifest-over");
    let emulator = emulator(shape(PROJECTS, 1)).await;
    let c = connection(&emulator, "manifest-over", ConnectorKind::Sast);
    let summary = run(&store, &c, api_key(&emulator)).await.unwrap();
    let run_ref = cxone_etm::pipeline::RunRef {
        connection_id: "manifest-over".into(),
        run_id: summary.run_id.clone(),
    };
    let marker: Value =
        serde_json::from_slice(&store.get(&run_ref.commit_marker()).await.unwrap().unwrap())
            .unwrap();
    let digest = |body: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
    let committed = store.get(&run_ref.manifest()).await.unwrap().unwrap();
    assert_eq!(
        serde_json::json!(digest(&committed)),
        marker["manifestSha256"]
    );
    let mut theirs: cxone_etm::pipeline::Manifest = serde_json::from_slice(&committed).unwrap();
    assert_eq!(serde_json::json!(theirs.finished_at), marker["committedAt"]);
    theirs.finished_at = "2026-12-06T23:59:59Z".into();
    store
        .put(
            &run_ref.manifest(),
            serde_json::to_vec_pretty(&theirs).unwrap().into(),
        )
        .await
        .unwrap();

    let answered = cxone_etm::pipeline::finalize(&store, &c, &run_ref)
        .await
        .unwrap();
    assert_eq!(answered.items, theirs.items);
    assert_eq!(
        store.get(&run_ref.manifest()).await.unwrap().unwrap(),
        committed,
        "the manifest the marker names"
    );
    std::fs::remove_dir_all(dir).ok();
}
