//! The exact totals the tenant holds, so tests can assert that a client fetched everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tenant::{ResultType, ScanInfo, Tenant};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedTotals {
    pub projects: Vec<ExpectedProject>,
    pub environments: Vec<ExpectedEnvironment>,
    pub totals: Totals,
}

impl ExpectedTotals {
    /// Every project's id, in the order `/api/projects` lists them.
    pub fn project_ids(&self) -> Vec<String> {
        self.projects.iter().map(|p| p.id.clone()).collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedProject {
    pub id: String,
    pub name: String,
    pub main_branch: String,
    pub has_sast: bool,
    /// Oldest first.
    pub scans: Vec<ExpectedScan>,
    /// What `last-scan?scan-status=Completed&engine=sast` answers (any branch).
    pub latest_completed_sast_scan: Option<String>,
    /// What the same call answers with `use-main-branch=true`: the latest completed SAST scan on
    /// the project's main branch, or of any branch when the project names no main branch. This
    /// is the scan a connection takes under its default branch policy.
    pub main_branch_sast_scan: Option<String>,
    /// Per engine (result type), the scan a connection delivering it takes under the default
    /// branch policy: the latest completed scan on the main branch that ran the engine.
    pub main_branch_scan_by_engine: BTreeMap<ResultType, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedScan {
    pub id: String,
    pub branch: String,
    pub status: String,
    pub results: u64,
    pub by_type: BTreeMap<ResultType, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedEnvironment {
    pub id: String,
    pub domain: String,
    pub url: String,
    /// Whether it is scanned behind a login (`hasAuth`).
    #[serde(default)]
    pub has_login: bool,
    pub scans: Vec<ExpectedDastScan>,
    pub latest_completed_scan: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedDastScan {
    pub id: String,
    pub status: String,
    pub results: u64,
}

/// Sums over what a full pull under the connector's default policy takes: each project's latest
/// completed SAST-engine scan on its main branch and each environment's latest completed scan.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub projects: u64,
    pub projects_with_main_branch_sast_scan: u64,
    pub results: u64,
    pub by_type: BTreeMap<ResultType, u64>,
    /// Per engine, its results in each project's `main_branch_scan_by_engine` scan: what a
    /// connection delivering that engine commits.
    pub by_engine: BTreeMap<ResultType, u64>,
    pub environments: u64,
    pub environments_with_completed_scan: u64,
    pub dast_results: u64,
}

pub fn expected_totals(tenant: &Tenant) -> ExpectedTotals {
    let mut totals = Totals {
        projects: u64::from(tenant.shape.projects),
        environments: u64::from(tenant.shape.dast_environments),
        ..Totals::default()
    };
    let projects = (0..tenant.shape.projects)
        .map(|p| {
            let scans = tenant.scans(p);
            let main = tenant.project_main_branch(p);
            let completed_sast =
                |s: &&ScanInfo| s.status == "Completed" && s.engines.contains(&"sast");
            let latest = scans.iter().rev().find(completed_sast);
            let on_main = scans
                .iter()
                .rev()
                .filter(completed_sast)
                .find(|s| main.is_empty() || s.branch == main);
            if let Some(scan) = on_main {
                totals.projects_with_main_branch_sast_scan += 1;
                totals.results += tenant.scan_result_count(scan);
                for (t, n) in tenant.scan_type_counts(scan) {
                    *totals.by_type.entry(t).or_default() += n;
                }
            }
            let mut main_branch_scan_by_engine = BTreeMap::new();
            for t in ResultType::ALL {
                let ran =
                    |s: &&ScanInfo| s.status == "Completed" && s.engines.contains(&t.as_str());
                let scan = scans
                    .iter()
                    .rev()
                    .filter(ran)
                    .find(|s| main.is_empty() || s.branch == main);
                if let Some(scan) = scan {
                    let n = tenant.scan_type_counts(scan).get(&t).copied().unwrap_or(0);
                    *totals.by_engine.entry(t).or_default() += n;
                    main_branch_scan_by_engine.insert(t, scan.id.clone());
                }
            }
            ExpectedProject {
                main_branch_scan_by_engine,
                id: tenant.project_id(p),
                name: tenant.project_name(p),
                main_branch: tenant.project_main_branch(p).to_string(),
                has_sast: tenant.project_has_sast(p),
                latest_completed_sast_scan: latest.map(|s| s.id.clone()),
                main_branch_sast_scan: on_main.map(|s| s.id.clone()),
                scans: scans
                    .iter()
                    .map(|s| ExpectedScan {
                        id: s.id.clone(),
                        branch: s.branch.clone(),
                        status: s.status.to_string(),
                        results: tenant.scan_type_counts(s).values().sum(),
                        by_type: tenant
                            .scan_type_counts(s)
                            .into_iter()
                            .filter(|(_, n)| *n > 0)
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    for t in ResultType::ALL {
        totals.by_type.entry(t).or_default();
        totals.by_engine.entry(t).or_default();
    }
    let environments = (0..tenant.shape.dast_environments)
        .map(|e| {
            let scans = tenant.dast_scans(e);
            let latest = scans.iter().rev().find(|s| s.status == "Completed");
            if let Some(scan) = latest {
                totals.environments_with_completed_scan += 1;
                totals.dast_results += tenant.dast_scan_result_count(scan);
            }
            ExpectedEnvironment {
                id: tenant.environment_id(e),
                domain: tenant.environment_domain(e),
                url: tenant.environment_url(e),
                has_login: tenant.environment_has_login(e),
                latest_completed_scan: latest.map(|s| s.id.clone()),
                scans: scans
                    .iter()
                    .map(|s| ExpectedDastScan {
                        id: s.id.clone(),
                        status: s.status.to_string(),
                        results: tenant.dast_scan_result_count(s),
                    })
                    .collect(),
            }
        })
        .collect();
    ExpectedTotals {
        projects,
        environments,
        totals,
    }
}
