//! The emulated tenant: projects, scans, results and DAST data, all computed on demand from the seed
//! and indices. Nothing is stored, so a tenant of millions of findings costs no memory, and the
//! exact totals can be computed in closed form for `/_emulator/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::*;
use crate::ids::{Kind, decode, encode, mix};

/// Fixed origin of generated time stamps (2026-01-05T00:00:00Z), so data does not depend on the clock.
const EPOCH: i64 = 1_767_571_200;
const DAY: i64 = 86_400;
const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"];

/// Every engine type `/api/results` mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultType {
    Sast,
    Kics,
    Sca,
    Containers,
}

impl ResultType {
    pub const ALL: [ResultType; 4] = [Self::Sast, Self::Kics, Self::Sca, Self::Containers];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sast => "sast",
            Self::Kics => "kics",
            Self::Sca => "sca",
            Self::Containers => "containers",
        }
    }
}

/// Percent of each result type in a scan; the four add up to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultMix {
    pub sast: u32,
    pub kics: u32,
    pub sca: u32,
    pub containers: u32,
}

impl Default for ResultMix {
    fn default() -> Self {
        Self {
            sast: 60,
            kics: 15,
            sca: 20,
            containers: 5,
        }
    }
}

/// The size and make-up of the generated tenant.
#[derive(Clone, Debug)]
pub struct TenantShape {
    pub seed: u64,
    pub projects: u32,
    pub branches_per_project: u32,
    pub scans_per_project: u32,
    pub results_per_scan: u64,
    /// When non-empty, project `p` has `project_results[p % len]` results per scan instead.
    pub project_results: Vec<u64>,
    pub result_mix: ResultMix,
    /// Percent of a project's findings replaced from one scan to the next.
    pub churn_percent: u32,
    pub dast_environments: u32,
    pub dast_scans_per_environment: u32,
    pub dast_results_per_scan: u64,
    /// When non-empty, environment `e` has `environment_results[e % len]` results per scan instead.
    pub environment_results: Vec<u64>,
    /// When non-empty, project `p` and environment `e` below its length take `hostile_ids[p]` and
    /// `hostile_ids[e]` as their ids instead of generated ones (`a/b`, `..`, 300 characters...).
    pub hostile_ids: Vec<String>,
    /// Percent of SAST findings that share their `id` with one other finding of the scan (pairs
    /// of findings, stable from scan to scan), as some tenants send: the id does not identify.
    pub repeated_result_ids_percent: u32,
    /// When set, the KICS findings of the projects whose SAST ids are numeric texts (every third:
    /// 0, 3, 6, …) take numeric ids too, from the same sequence, one scan's worth of results
    /// and one ahead: a KICS finding that leaves a scan leaves its id to a SAST finding new in
    /// it (some tenants number every engine's results from one sequence). Never two findings of
    /// one scan.
    pub kics_ids_reused_by_sast: bool,
    /// When set, the newest scan of every third project (1, 4, 7, …) ran this engine alone (an
    /// SCA re-scan after a dependency update, say): the latest scan is not the latest scan of
    /// the other engines.
    pub rescan_engine: Option<ResultType>,
    /// When set, `last-scan` answers leave out each scan's `engines` (the schema makes it
    /// optional).
    pub last_scan_without_engines: bool,
    /// Tags added to the first project's record, each with a 100-character value: a record of
    /// hundreds of KiB (a tenant that keeps data in tags), larger than a Step Functions payload.
    pub first_project_extra_tags: u32,
}

impl Default for TenantShape {
    fn default() -> Self {
        Self {
            seed: 1,
            projects: 10,
            branches_per_project: 2,
            scans_per_project: 3,
            results_per_scan: 100,
            project_results: Vec::new(),
            result_mix: ResultMix::default(),
            churn_percent: 5,
            dast_environments: 3,
            dast_scans_per_environment: 2,
            dast_results_per_scan: 50,
            environment_results: Vec::new(),
            hostile_ids: Vec::new(),
            repeated_result_ids_percent: 0,
            kics_ids_reused_by_sast: false,
            rescan_engine: None,
            last_scan_without_engines: false,
            first_project_extra_tags: 0,
        }
    }
}

/// Where results of one type sit in every block of 100 consecutive findings.
#[derive(Clone, Debug)]
struct SlotTable {
    slot_type: [ResultType; 100],
    /// `prefix[t][r]`: findings of type `t` among the first `r` slots of a block.
    prefix: [[u32; 101]; 4],
    /// `positions[t]`: the slots of type `t`, in order.
    positions: [Vec<u8>; 4],
}

impl SlotTable {
    fn new(mix: ResultMix) -> Self {
        let weights = [mix.sast, mix.kics, mix.sca, mix.containers];
        let mut slot_type = [ResultType::Sast; 100];
        for (q, slot) in slot_type.iter_mut().enumerate() {
            // 37 is coprime with 100: types interleave instead of coming in runs.
            let spread = (q as u32 * 37) % 100;
            let mut bound = 0;
            for (t, w) in weights.iter().enumerate() {
                bound += w;
                if spread < bound {
                    *slot = ResultType::ALL[t];
                    break;
                }
            }
        }
        let mut prefix = [[0u32; 101]; 4];
        let mut positions: [Vec<u8>; 4] = Default::default();
        for t in 0..4 {
            for q in 0..100 {
                let here = slot_type[q] == ResultType::ALL[t];
                prefix[t][q + 1] = prefix[t][q] + u32::from(here);
                if here {
                    positions[t].push(q as u8);
                }
            }
        }
        Self {
            slot_type,
            prefix,
            positions,
        }
    }

    fn type_of(&self, k: u64) -> ResultType {
        self.slot_type[(k % 100) as usize]
    }

    /// Findings of type `t` with index below `x`.
    fn before(&self, t: ResultType, x: u64) -> u64 {
        let t = t as usize;
        (x / 100) * u64::from(self.prefix[t][100]) + u64::from(self.prefix[t][(x % 100) as usize])
    }

    /// Index of the `r`-th finding of type `t` at or after `lo`.
    fn nth_from(&self, t: ResultType, lo: u64, r: u64) -> u64 {
        let per_block = u64::from(self.prefix[t as usize][100]);
        let rank = self.before(t, lo) + r;
        (rank / per_block) * 100
            + u64::from(self.positions[t as usize][(rank % per_block) as usize])
    }
}

pub struct Tenant {
    pub shape: TenantShape,
    pub tenant_id: String,
    with_sast: SlotTable,
    without_sast: SlotTable,
}

/// One scan of a project, as the generator sees it.
#[derive(Clone, Debug)]
pub struct ScanInfo {
    pub project: u32,
    pub index: u32,
    pub id: String,
    pub status: &'static str,
    pub branch: String,
    pub created_us: i64,
    pub updated_us: i64,
    pub engines: &'static [&'static str],
}

/// One DAST scan of an environment, as the generator sees it.
#[derive(Clone, Debug)]
pub struct DastScanInfo {
    pub environment: u32,
    pub index: u32,
    pub id: String,
    pub status: &'static str,
    pub created_us: i64,
    pub updated_us: i64,
}

const ENGINES_ALL: &[&str] = &["sast", "kics", "sca", "containers"];
const ENGINES_NO_SAST: &[&str] = &["kics", "sca", "containers"];

/// The engines of a scan that ran `t` alone.
fn alone(t: ResultType) -> &'static [&'static str] {
    match t {
        ResultType::Sast => &["sast"],
        ResultType::Kics => &["kics"],
        ResultType::Sca => &["sca"],
        ResultType::Containers => &["containers"],
    }
}

pub fn rfc3339(unix_us: i64, micros: bool) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_us.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if micros {
        format!("{base}.{:06}Z", unix_us.rem_euclid(1_000_000))
    } else {
        format!("{base}Z")
    }
}

fn pick<T: Copy>(list: &[T], h: u64) -> T {
    list[(h % list.len() as u64) as usize]
}

fn base64_hash(h: u64, salt: u64) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&h.to_le_bytes());
    bytes[8..16].copy_from_slice(&mix(&[h, salt]).to_le_bytes());
    bytes[16..].copy_from_slice(&(mix(&[salt, h]) as u32).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Tenant {
    pub fn new(shape: TenantShape) -> Self {
        let without = ResultMix {
            sast: 0,
            sca: shape.result_mix.sca + shape.result_mix.sast,
            ..shape.result_mix
        };
        Self {
            tenant_id: encode(shape.seed, Kind::Tenant, 0, 0),
            with_sast: SlotTable::new(shape.result_mix),
            without_sast: SlotTable::new(without),
            shape,
        }
    }

    fn seed(&self) -> u64 {
        self.shape.seed
    }

    // ---------------------------------------------------------------- projects

    pub fn project_id(&self, p: u32) -> String {
        self.hostile_id(p)
            .unwrap_or_else(|| encode(self.seed(), Kind::Project, p, 0))
    }

    pub fn project_index(&self, id: &str) -> Option<u32> {
        self.hostile_index(id)
            .or_else(|| decode(self.seed(), Kind::Project, id).map(|(p, _)| p))
            .filter(|p| *p < self.shape.projects && self.project_id(*p) == id)
    }

    fn hostile_id(&self, index: u32) -> Option<String> {
        self.shape.hostile_ids.get(index as usize).cloned()
    }

    fn hostile_index(&self, id: &str) -> Option<u32> {
        let index = self.shape.hostile_ids.iter().position(|h| h == id)?;
        u32::try_from(index).ok()
    }

    pub fn project_name(&self, p: u32) -> String {
        let h = mix(&[self.seed(), 11, p as u64]);
        format!("{}/{}-{}", pick(ORGS, h), pick(SERVICES, h >> 8), p)
    }

    /// Every tenth project has no SAST engine in its scans (SCA, KICS and containers only).
    pub fn project_has_sast(&self, p: u32) -> bool {
        p % 10 != 9
    }

    pub fn project_results(&self, p: u32) -> u64 {
        if self.shape.project_results.is_empty() {
            self.shape.results_per_scan
        } else {
            self.shape.project_results[p as usize % self.shape.project_results.len()]
        }
    }

    pub fn project_main_branch(&self, p: u32) -> &'static str {
        if p % 8 == 7 { "" } else { "main" }
    }

    pub fn project_repo_url(&self, p: u32) -> String {
        if p % 4 == 3 {
            String::new()
        } else {
            format!("https://github.com/{}", self.project_name(p))
        }
    }

    pub fn project_group(&self, p: u32) -> Option<String> {
        (p.is_multiple_of(3)).then(|| encode(self.seed(), Kind::Group, p % 4, 0))
    }

    pub fn project_tags(&self, p: u32) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        tags.insert("team".to_string(), pick(TEAMS, p as u64).to_string());
        if p.is_multiple_of(2) {
            tags.insert("pci".to_string(), String::new());
        }
        if p == 0 {
            for i in 0..self.shape.first_project_extra_tags {
                let value = format!("{:0>100}", mix(&[self.seed(), 13, u64::from(i)]));
                tags.insert(format!("label-{i:05}"), value);
            }
        }
        tags
    }

    fn project_created_us(&self, p: u32) -> i64 {
        (EPOCH - i64::from(self.shape.projects - p) * 3_600) * 1_000_000
            + (mix(&[self.seed(), 12, p as u64]) % 1_000_000) as i64
    }

    pub fn project_json(&self, p: u32) -> Value {
        let name = self.project_name(p);
        let repo = self.project_repo_url(p);
        let created = rfc3339(self.project_created_us(p), true);
        json!({
            "id": self.project_id(p),
            "name": name,
            "tenantId": self.tenant_id,
            "createdAt": created,
            "updatedAt": created,
            "groups": self.project_group(p).into_iter().collect::<Vec<_>>(),
            "tags": self.project_tags(p),
            "repoUrl": repo,
            "mainBranch": self.project_main_branch(p),
            "origin": if repo.is_empty() { "" } else { "GitHub" },
            "criticality": if p.is_multiple_of(5) { 3 } else { 0 },
            "privatePackage": false,
            "imported_proj_name": name,
            "scmRepoId": if repo.is_empty() { String::new() } else { format!("service-{p}") },
            "repoId": 20_000 + p,
            "applicationIds": if p.is_multiple_of(6) { vec![encode(self.seed(), Kind::Application, p % 7, 0)] } else { vec![] },
        })
    }

    // ---------------------------------------------------------------- scans

    pub fn branches(&self, p: u32) -> Vec<String> {
        let main = self.project_main_branch(p);
        let first = if main.is_empty() { "master" } else { main };
        // Past the catalogue's feature branches, numbered topic branches.
        std::iter::once(first.to_string())
            .chain(FEATURE_BRANCHES.iter().map(|b| b.to_string()))
            .chain((1..).map(|i| format!("feature/topic-{i}")))
            .take(self.shape.branches_per_project.max(1) as usize)
            .collect()
    }

    /// Scans of project `p`, oldest first. The newest is on the first branch; on every fifth
    /// project it is still running, and on some an older one failed, so "latest" and "latest
    /// completed" differ where they do in real tenants.
    pub fn scans(&self, p: u32) -> Vec<ScanInfo> {
        let n = self.shape.scans_per_project;
        let branches = self.branches(p);
        (0..n).map(|j| self.scan_info(p, j, n, &branches)).collect()
    }

    fn scan_info(&self, p: u32, j: u32, n: u32, branches: &[String]) -> ScanInfo {
        let status = if j + 1 == n && n >= 2 && p % 5 == 4 {
            "Running"
        } else if j + 2 == n && n >= 3 && p % 7 == 3 {
            "Failed"
        } else {
            "Completed"
        };
        let created_us = self.project_created_us(p) + i64::from(j + 1) * DAY * 1_000_000;
        ScanInfo {
            project: p,
            index: j,
            id: encode(self.seed(), Kind::Scan, p, j),
            status,
            branch: branches[((n - 1 - j) as usize) % branches.len()].clone(),
            created_us,
            updated_us: created_us + 193_036_220,
            engines: if let Some(t) = self
                .shape
                .rescan_engine
                .filter(|_| j + 1 == n && p % 3 == 1)
            {
                alone(t)
            } else if self.project_has_sast(p) {
                ENGINES_ALL
            } else {
                ENGINES_NO_SAST
            },
        }
    }

    pub fn scan_by_id(&self, id: &str) -> Option<ScanInfo> {
        let (p, j) = decode(self.seed(), Kind::Scan, id)?;
        let n = self.shape.scans_per_project;
        (p < self.shape.projects && j < n).then(|| self.scan_info(p, j, n, &self.branches(p)))
    }

    pub fn scan_json(&self, s: &ScanInfo) -> Value {
        let created = rfc3339(s.created_us, true);
        let updated = rfc3339(s.updated_us, true);
        let mut details = vec![
            json!({"name": "general", "status": s.status, "details": "", "startDate": created, "endDate": updated}),
        ];
        for engine in s.engines {
            let mut d = json!({"name": engine, "status": s.status, "details": "", "startDate": created, "endDate": updated});
            if *engine == "sast" {
                d["loc"] = json!(10_000 + s.project * 37);
            }
            details.push(d);
        }
        json!({
            "id": s.id,
            "status": s.status,
            "statusDetails": details,
            "branch": s.branch,
            "createdAt": created,
            "updatedAt": updated,
            "projectId": self.project_id(s.project),
            "projectName": self.project_name(s.project),
            "userAgent": "grpc-java-netty/1.75.0",
            "initiator": "ci-bot",
            "tags": {},
            "metadata": {
                "id": s.id,
                "type": "git",
                "Handler": {"GitHandler": {"branch": s.branch, "repo_url": self.project_repo_url(s.project), "credentials": {"type": "apiKey", "value": "*****", "username": "*****"}}},
                "configs": s.engines.iter().map(|e| json!({"type": e})).collect::<Vec<_>>(),
                "project": {"id": self.project_id(s.project)},
                "created_at": {"seconds": s.created_us / 1_000_000, "nanos": (s.created_us % 1_000_000) * 1_000},
            },
            "engines": s.engines,
            "sourceType": "github",
            "sourceOrigin": "Github Action",
        })
    }

    /// The smaller scan object `/api/projects/last-scan` returns.
    pub fn subset_scan_json(&self, s: &ScanInfo) -> Value {
        let mut scan = json!({
            "id": s.id,
            "createdAt": rfc3339(s.created_us, true),
            "updatedAt": rfc3339(s.updated_us, true),
            "status": s.status,
            "userAgent": "grpc-java-netty/1.75.0",
            "initiator": "ci-bot",
            "branch": s.branch,
            "engines": s.engines,
            "sourceType": "github",
            "sourceOrigin": "Github Action",
        });
        if self.shape.last_scan_without_engines
            && let Some(fields) = scan.as_object_mut()
        {
            fields.remove("engines");
        }
        scan
    }

    // ---------------------------------------------------------------- results

    fn slots(&self, p: u32) -> &SlotTable {
        if self.project_has_sast(p) {
            &self.with_sast
        } else {
            &self.without_sast
        }
    }

    /// Findings held by a scan: all of the project's for a completed scan, none otherwise.
    pub fn scan_result_count(&self, s: &ScanInfo) -> u64 {
        if s.status == "Completed" {
            self.project_results(s.project)
        } else {
            0
        }
    }

    fn churn(&self, per_scan: u64) -> u64 {
        per_scan * u64::from(self.shape.churn_percent) / 100
    }

    /// The finding index of the scan's `i`-th result: each scan drops the oldest `churn` findings
    /// and adds as many new ones.
    pub fn finding_index(&self, s: &ScanInfo, i: u64) -> u64 {
        u64::from(s.index) * self.churn(self.project_results(s.project)) + i
    }

    pub fn result_type(&self, s: &ScanInfo, i: u64) -> ResultType {
        self.slots(s.project).type_of(self.finding_index(s, i))
    }

    /// Results of each type in the scan (none of an engine the scan did not run).
    pub fn scan_type_counts(&self, s: &ScanInfo) -> BTreeMap<ResultType, u64> {
        let n = self.scan_result_count(s);
        let lo = self.finding_index(s, 0);
        let slots = self.slots(s.project);
        ResultType::ALL
            .iter()
            .map(|t| {
                let ran = s.engines.contains(&t.as_str());
                let count = slots.before(*t, lo + n) - slots.before(*t, lo);
                (*t, if ran { count } else { 0 })
            })
            .collect()
    }

    /// Whether the scan's `i`-th position holds a result the scan reports: one of an engine it
    /// ran (a scan that ran one engine alone reports that engine's positions only).
    pub fn scan_reports(&self, s: &ScanInfo, i: u64) -> bool {
        s.engines.contains(&self.result_type(s, i).as_str())
    }

    /// Whether the scan ran every engine its project's results come from.
    pub fn scan_ran_every_engine(&self, s: &ScanInfo) -> bool {
        s.engines.len() > 1
    }

    /// Position in the scan (`i`) of its `r`-th result of type `t`.
    pub fn nth_of_type(&self, s: &ScanInfo, t: ResultType, r: u64) -> u64 {
        let lo = self.finding_index(s, 0);
        self.slots(s.project).nth_from(t, lo, r) - lo
    }

    fn first_scan_of(&self, s: &ScanInfo, k: u64) -> u32 {
        let c = self.churn(self.project_results(s.project));
        let n = self.project_results(s.project);
        if c == 0 || k < n { 0 } else { (k - n) / c + 1 }.min(u64::from(s.index)) as u32
    }

    /// The attributes filters look at, cheaper than the full record.
    pub fn result_traits(&self, s: &ScanInfo, i: u64) -> ResultTraits {
        let k = self.finding_index(s, i);
        let h = mix(&[self.seed(), 21, s.project as u64, k]);
        let first = self.first_scan_of(s, k);
        let status = if h.is_multiple_of(50) {
            "FIXED"
        } else if first == s.index {
            "NEW"
        } else {
            "RECURRENT"
        };
        let state = match (h >> 8) % 100 {
            0..70 => "TO_VERIFY",
            70..78 => "NOT_EXPLOITABLE",
            78..84 => "PROPOSED_NOT_EXPLOITABLE",
            84..92 => "CONFIRMED",
            92..97 => "URGENT",
            _ => "Risk_Accepted_By_AppSec",
        };
        let severity = match (h >> 16) % 100 {
            0..5 => "CRITICAL",
            5..25 => "HIGH",
            25..55 => "MEDIUM",
            55..85 => "LOW",
            _ => "INFO",
        };
        // Triage (a predicate) changed the severity of a third of the triaged results: the
        // original is what `/api/sast-results?apply-predicates=false` shows.
        let original_severity = if state != "TO_VERIFY" && (h >> 40).is_multiple_of(3) {
            let at = SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0);
            SEVERITIES[(at + 1 + ((h >> 42) % 4) as usize) % SEVERITIES.len()]
        } else {
            severity
        };
        ResultTraits {
            k,
            h,
            first,
            status,
            state,
            severity,
            original_severity,
            kind: self.result_type(s, i),
        }
    }

    /// The result hashes of the scan's SAST results (what the result viewer's links name).
    pub fn sast_result_hashes<'a>(&'a self, s: &'a ScanInfo) -> impl Iterator<Item = String> + 'a {
        (0..self.scan_result_count(s))
            .filter(|&i| self.result_type(s, i) == ResultType::Sast)
            .map(|i| base64_hash(self.result_traits(s, i).h, 1))
    }

    /// Writes the scan's `i`-th result as `/api/results` sends it.
    pub fn write_result(&self, s: &ScanInfo, i: u64, dates: &ScanDates, out: &mut Vec<u8>) {
        let t = self.result_traits(s, i);
        let first_scan = &dates.first_scans[t.first as usize];
        let common = Common {
            status: t.status,
            state: t.state,
            severity: t.severity,
            created: &dates.found,
            first_found_at: &first_scan.1,
            found_at: &dates.found,
            first_scan_id: &first_scan.0,
        };
        let p = s.project;
        let h = t.h;
        let written = match t.kind {
            ResultType::Sast => {
                let (query, group, cwe, stem) = pick(SAST_QUERIES, h >> 24);
                let (lang, ext, root) = pick(LANGUAGES, mix(&[self.seed(), 13, p as u64]));
                let hash = base64_hash(h, 1);
                let file = format!("{root}/svc{p}/module{}/Handler{}.{ext}", t.k % 17, t.k % 53);
                let nodes_len = 2 + (h >> 40) % 3;
                let nodes = (0..nodes_len)
                    .map(|n| {
                        let nh = mix(&[h, n]);
                        let name = pick(NODE_NAMES, nh);
                        Node {
                            id: base64_hash(nh, 2),
                            line: 10 + (nh % 400) as u32,
                            name,
                            column: 1 + (nh >> 12) as u32 % 80,
                            length: 1 + (nh >> 20) as u32 % 12,
                            method: "handle",
                            node_id: (nh >> 32) as u32 % 100_000,
                            dom_type: pick(DOM_TYPES, nh >> 28),
                            file_name: &file,
                            full_name: format!("com.acme.svc{p}.Handler.handle.{name}"),
                            type_name: "String",
                            method_line: 8 + (nh % 400) as u32,
                            definitions: if n == 0 { "0" } else { "1" },
                        }
                    })
                    .collect();
                let description = (!(h >> 32).is_multiple_of(10))
                    .then(|| format!("{stem} The flaw is at line {} of {file}.", 10 + h % 400));
                let record = ResultRecord {
                    kind: "sast",
                    sca_type: None,
                    label: "sast",
                    id: if mix(&[self.seed(), 77, u64::from(p), t.k / 2]) % 100
                        < u64::from(self.shape.repeated_result_ids_percent)
                    {
                        // Findings 2m and 2m+1 share one id.
                        format!("{}", 900_000_000 + t.k / 2 + u64::from(p) * 1_000_000_000)
                    } else if p.is_multiple_of(3) {
                        format!("{}", 100_000_000 + t.k * 7 + u64::from(p) * 1_000_000_000)
                    } else {
                        hash.clone()
                    },
                    alternate_id: None,
                    similarity_id: format!("{}", (h >> 3) as i32),
                    common,
                    confidence_level: (p.is_multiple_of(2)).then_some(((h >> 44) % 100) as u32),
                    description_html: description.as_ref().map(|d| format!("<p>{d}</p>\n")),
                    description,
                    data: SastData {
                        // Real query ids use the full u64 range; most exceed i64::MAX.
                        query_id: h | (1 << 63),
                        query_name: query,
                        group: format!("{lang}_{group}"),
                        result_hash: hash,
                        language_name: lang,
                        nodes,
                    },
                    comments: Empty {},
                    vulnerability_details: SastDetails {
                        cwe_id: cwe,
                        cvss: Empty {},
                        compliances: COMPLIANCES,
                    },
                };
                serde_json::to_writer(&mut *out, &record)
            }
            ResultType::Kics => {
                let (query, group, platform, issue, expected, value) = pick(KICS_QUERIES, h >> 24);
                let record = ResultRecord {
                    kind: "kics",
                    sca_type: None,
                    label: "IaC Security",
                    id: if self.shape.kics_ids_reused_by_sast && p.is_multiple_of(3) {
                        // The id finding `k + results + 1` takes where it is SAST (its numeric
                        // form above): it enters the scan window as this one leaves it. Not
                        // `k + results`, which is always a KICS finding again (a finding's engine
                        // repeats every 100 indices).
                        let k = t.k + self.project_results(p) + 1;
                        format!("{}", 100_000_000 + k * 7 + u64::from(p) * 1_000_000_000)
                    } else {
                        base64_hash(h, 3)
                    },
                    alternate_id: None,
                    similarity_id: format!(
                        "{:016x}{:016x}{:016x}{:016x}",
                        h,
                        mix(&[h, 1]),
                        mix(&[h, 2]),
                        mix(&[h, 3])
                    ),
                    common,
                    confidence_level: None,
                    description: Some(format!("{query}: {expected}.")),
                    description_html: None,
                    data: KicsData {
                        query_id: format!(
                            "{} [Taken from query_id]",
                            encode(self.seed(), Kind::Application, (h >> 24) as u32 % 97, 99)
                        ),
                        query_name: query,
                        group,
                        line: 1 + (h % 200) as u32,
                        platform,
                        issue_type: issue,
                        expected_value: expected,
                        value,
                        filename: format!(
                            "/deploy/svc{p}/{}",
                            if platform == "Dockerfile" {
                                "Dockerfile"
                            } else {
                                "main.tf"
                            }
                        ),
                    },
                    comments: Empty {},
                    vulnerability_details: KicsDetails { cvss: Empty {} },
                };
                serde_json::to_writer(&mut *out, &record)
            }
            ResultType::Sca => {
                // Every two SCA findings share a CVE, each in its own package: ids are not unique
                // within a scan, as in real SCA data (one CVE, many packages).
                let rank = self.slots(p).before(ResultType::Sca, t.k);
                let pair = rank / 2;
                let (eco, name, version, fixed) =
                    PACKAGES[((pair * 3 + rank % 2) % PACKAGES.len() as u64) as usize];
                // The year cycles and the number climbs: no two pairs share a CVE, at any size.
                let cve = format!("CVE-{}-{}", 2016 + pair % 9, 10_000 + pair / 9);
                let identifier = format!("{eco}-{name}-{version}");
                let manifest = match eco {
                    "Npm" => "package.json",
                    "Maven" => "pom.xml",
                    _ => "requirements.txt",
                };
                let direct = !h.is_multiple_of(3);
                let root = format!("{eco}-svc{p}-1.0.0");
                let path = if direct {
                    vec![PathStep::new(&identifier, manifest)]
                } else {
                    vec![
                        PathStep::new(&root, manifest),
                        PathStep::new(&format!("{eco}-framework-4.2.0"), manifest),
                        PathStep::new(&identifier, manifest),
                    ]
                };
                let record = ResultRecord {
                    kind: "sca",
                    sca_type: Some("Vulnerability"),
                    label: "sca",
                    id: cve.clone(),
                    alternate_id: Some(base64_hash(h, 4)),
                    similarity_id: cve.clone(),
                    common,
                    confidence_level: Some(0),
                    description: Some(format!(
                        "Versions of {name} before {fixed} are vulnerable ({cve})."
                    )),
                    description_html: None,
                    data: ScaData {
                        sca_package_data: ScaPackageData {
                            id: identifier.clone(),
                            fix_link: format!("https://devhub.checkmarx.com/cve-details/{cve}"),
                            locations: vec![manifest],
                            dependency_paths: vec![path],
                            outdated: h.is_multiple_of(5),
                            supports_quick_fix: false,
                            is_direct_dependency: direct,
                            type_of_dependency: if direct {
                                "Direct Dependency"
                            } else {
                                "Transitive Dependency"
                            },
                        },
                        package_identifier: identifier,
                        package_data: vec![PackageRef {
                            kind: "Advisory",
                            url: format!("https://github.com/advisories/GHSA-{:04x}", h % 65_536),
                        }],
                        recommended_version: fixed,
                        published_at: format!(
                            "{}-{:02}-{:02}T00:00:00Z",
                            2016 + pair % 9,
                            1 + pair % 12,
                            1 + pair % 28
                        ),
                        // Checkmarx names the vulnerable methods a project calls, when it knows.
                        exploitable_methods: h.is_multiple_of(4).then(|| {
                            vec![ExploitableMethod {
                                full_name: format!("{name}.internal.Parser.parse"),
                                name: "parse",
                            }]
                        }),
                    },
                    comments: Empty {},
                    vulnerability_details: ScaDetails {
                        cwe_id: pick(SCA_CWES, h >> 30),
                        cvss_score: (h % 100) as f64 / 10.0,
                        cve_name: cve,
                        // Some SCA results carry no CVSS metrics at all.
                        cvss: (h % 10 != 7).then_some(Cvss {
                            version: 3,
                            attack_vector: "NETWORK",
                            availability: "HIGH",
                            confidentiality: "NONE",
                            attack_complexity: "LOW",
                        }),
                    },
                };
                serde_json::to_writer(&mut *out, &record)
            }
            ResultType::Containers => {
                // As for SCA, the two findings of a pair share a CVE, each in its own package.
                let rank = self.slots(p).before(ResultType::Containers, t.k);
                let pair = rank / 2;
                let (package, version, image, tag) = CONTAINER_PACKAGES
                    [((pair * 3 + rank % 2) % CONTAINER_PACKAGES.len() as u64) as usize];
                // Unique per pair, at any size: with the number wrapping, a large scan repeated whole
                // `sca-container` records (12 in 5,000,000 results), which no server sends.
                let cve = format!("CVE-{}-{}", 2019 + pair % 6, 3_000 + pair / 6);
                let details = ContainerDetails {
                    cvss_score: (h % 100) as f64 / 10.0,
                    cve_name: cve.clone(),
                    cwe_id: "",
                    cvss: (),
                };
                // One in five comes in the `sca-container` shape: the package and when the CVE
                // was published, no image.
                if h % 5 == 1 {
                    let record = ResultRecord {
                        kind: "sca-container",
                        sca_type: None,
                        label: "sca-container",
                        id: cve.clone(),
                        alternate_id: None,
                        similarity_id: cve.clone(),
                        common,
                        confidence_level: None,
                        description: Some(format!("{package} {version} is affected by {cve}.")),
                        description_html: None,
                        data: ScaContainerData {
                            package_name: package,
                            package_version: version,
                            published_at: format!("{}-06-01T00:00:00Z", 2019 + pair % 6),
                        },
                        comments: Empty {},
                        vulnerability_details: details,
                    };
                    serde_json::to_writer(&mut *out, &record)
                } else {
                    let record = ResultRecord {
                        kind: "containers",
                        sca_type: None,
                        label: "containers",
                        id: cve.clone(),
                        alternate_id: Some(format!(
                            "{}",
                            50_000_000 + t.k + u64::from(p) * 10_000_000
                        )),
                        similarity_id: cve.clone(),
                        common,
                        confidence_level: Some(0),
                        description: Some(format!(
                            "{package} {version} in {image}:{tag} is affected by {cve}."
                        )),
                        description_html: None,
                        data: ContainerData {
                            package_name: package,
                            package_version: version,
                            image_name: image,
                            image_tag: tag,
                            image_file_path: "Dockerfile",
                            image_origin: "Dockerfile",
                        },
                        comments: Empty {},
                        vulnerability_details: details,
                    };
                    serde_json::to_writer(&mut *out, &record)
                }
            }
        };
        written.expect("writing JSON to a Vec cannot fail");
    }

    /// Writes the scan's `i`-th result (a SAST one) in the flat `/api/sast-results` shape, as
    /// `view` asks: without predicates the severity and state are the ones before triage; with
    /// visible columns only those fields (the slim columns straight from the result's traits).
    pub fn write_sast_flat(
        &self,
        s: &ScanInfo,
        i: u64,
        dates: &ScanDates,
        view: &SastView,
        out: &mut Vec<u8>,
    ) {
        let t = self.result_traits(s, i);
        let (severity, state) = if view.apply_predicates {
            (t.severity, t.state)
        } else {
            (t.original_severity, "TO_VERIFY")
        };
        if !view.columns.is_empty()
            && view
                .columns
                .iter()
                .all(|c| SLIM_COLUMNS.contains(&c.as_str()))
        {
            let mut slim = serde_json::Map::new();
            for column in &view.columns {
                let (key, value) = match column.as_str() {
                    "result-hash" => ("resultHash", base64_hash(t.h, 1)),
                    "severity" => ("severity", severity.to_string()),
                    "state" => ("state", state.to_string()),
                    "scan-id" => ("scanID", s.id.clone()),
                    _ => ("status", t.status.to_string()),
                };
                slim.insert(key.into(), Value::String(value));
            }
            serde_json::to_writer(&mut *out, &slim).expect("writing JSON to a Vec cannot fail");
            return;
        }
        let include_nodes = view.include_nodes;
        let mut full = Vec::with_capacity(2048);
        self.write_result(s, i, dates, &mut full);
        let v: Value = serde_json::from_slice(&full).expect("own output parses");
        let d = &v["data"];
        let query_id = d["queryId"].as_u64().unwrap_or_default();
        let mut flat = json!({
            "ID": v["id"],
            "resultHash": d["resultHash"],
            "pathSystemID": d["resultHash"],
            "queryID": query_id,
            "queryIDStr": query_id.to_string(),
            "queryName": d["queryName"],
            "languageName": d["languageName"],
            "group": d["group"],
            "cweID": v["vulnerabilityDetails"]["cweId"],
            "severity": severity,
            "status": v["status"],
            "state": state,
            "similarityID": v["similarityId"].as_str().and_then(|x| x.parse::<i64>().ok()),
            "uniqueID": self.finding_index(s, i),
            "confidenceLevel": v.get("confidenceLevel").cloned().unwrap_or(json!(0)),
            "compliances": v["vulnerabilityDetails"]["compliances"],
            "firstScanID": v["firstScanId"],
            "firstFoundAt": v["firstFoundAt"],
            "foundAt": v["foundAt"],
            "scanID": s.id,
        });
        if include_nodes {
            flat["nodes"] = d["nodes"].clone();
        }
        serde_json::to_writer(&mut *out, &flat).expect("writing JSON to a Vec cannot fail");
    }

    /// Dates and ids every result of one scan refers to, formatted once per page.
    pub fn scan_dates(&self, s: &ScanInfo) -> ScanDates {
        let branches = self.branches(s.project);
        let n = self.shape.scans_per_project;
        ScanDates {
            found: rfc3339(s.created_us, false),
            first_scans: (0..=s.index)
                .map(|j| {
                    let first = self.scan_info(s.project, j, n, &branches);
                    (first.id, rfc3339(first.created_us, false))
                })
                .collect(),
        }
    }

    // ---------------------------------------------------------------- DAST

    pub fn environment_id(&self, e: u32) -> String {
        self.hostile_id(e)
            .unwrap_or_else(|| encode(self.seed(), Kind::Environment, e, 0))
    }

    pub fn environment_index(&self, id: &str) -> Option<u32> {
        self.hostile_index(id)
            .or_else(|| decode(self.seed(), Kind::Environment, id).map(|(e, _)| e))
            .filter(|e| *e < self.shape.dast_environments && self.environment_id(*e) == id)
    }

    pub fn environment_domain(&self, e: u32) -> String {
        format!(
            "{}{e}.example.com",
            pick(SERVICES, mix(&[self.seed(), 31, e as u64]))
        )
    }

    pub fn environment_url(&self, e: u32) -> String {
        format!("https://{}", self.environment_domain(e))
    }

    pub fn environment_scan_type(&self, e: u32) -> &'static str {
        if e % 5 == 4 { "DASTAPI" } else { "DAST" }
    }

    pub fn environment_results(&self, e: u32) -> u64 {
        if self.shape.environment_results.is_empty() {
            self.shape.dast_results_per_scan
        } else {
            self.shape.environment_results[e as usize % self.shape.environment_results.len()]
        }
    }

    fn environment_created_us(&self, e: u32) -> i64 {
        (EPOCH - i64::from(self.shape.dast_environments - e) * DAY) * 1_000_000 + 250_000
    }

    /// DAST scans of environment `e`, oldest first; every fourth environment's newest scan is
    /// still running and every sixth has a failed one before it.
    pub fn dast_scans(&self, e: u32) -> Vec<DastScanInfo> {
        let n = self.shape.dast_scans_per_environment;
        (0..n).map(|j| self.dast_scan_info(e, j, n)).collect()
    }

    fn dast_scan_info(&self, e: u32, j: u32, n: u32) -> DastScanInfo {
        let status = if j + 1 == n && n >= 2 && e % 4 == 3 {
            "Running"
        } else if j + 2 == n && n >= 3 && e % 6 == 5 {
            "Failed"
        } else {
            "Completed"
        };
        let created_us = self.environment_created_us(e) + i64::from(j + 1) * 3_600 * 1_000_000;
        DastScanInfo {
            environment: e,
            index: j,
            id: encode(self.seed(), Kind::DastScan, e, j),
            status,
            created_us,
            updated_us: created_us + 1_800 * 1_000_000,
        }
    }

    pub fn dast_scan_by_id(&self, id: &str) -> Option<DastScanInfo> {
        let (e, j) = decode(self.seed(), Kind::DastScan, id)?;
        let n = self.shape.dast_scans_per_environment;
        (e < self.shape.dast_environments && j < n).then(|| self.dast_scan_info(e, j, n))
    }

    pub fn dast_scan_result_count(&self, s: &DastScanInfo) -> u64 {
        if s.status == "Completed" {
            self.environment_results(s.environment)
        } else {
            0
        }
    }

    pub fn environment_json(&self, e: u32) -> Value {
        let scans = self.dast_scans(e);
        let last = scans.last();
        let counts = json!({"criticalCount": 0, "highCount": 1 + e % 3, "mediumCount": 2, "lowCount": 3, "infoCount": 4});
        json!({
            "environmentId": self.environment_id(e),
            "tunnelId": "",
            "created": rfc3339(self.environment_created_us(e), true),
            "creator": "appsec@acme.example",
            "domain": self.environment_domain(e),
            "url": self.environment_url(e),
            "scanType": self.environment_scan_type(e),
            "projectIds": if e.is_multiple_of(2) && self.shape.projects > 0 { vec![self.project_id(e % self.shape.projects)] } else { vec![] },
            "tags": if e.is_multiple_of(3) { vec!["prod"] } else { vec!["staging"] },
            "groups": [],
            "applications": [],
            "riskLevel": counts,
            "riskRating": if e.is_multiple_of(3) { "High risk" } else { "Low risk" },
            "alertRiskLevel": counts,
            "lastAlertRiskRating": "Medium risk",
            "lastScanID": last.map(|s| s.id.clone()).unwrap_or_default(),
            "lastScanTime": last.map(|s| rfc3339(s.updated_us, true)).unwrap_or_default(),
            "lastStatus": match last.map(|s| s.status) {
                Some("Completed") => "Finished@Scan finished successfully",
                Some("Running") => "Running@Scan in progress",
                Some(_) => "Failed@Scan failed",
                None => "New@",
            },
            "authSuccess": true,
            "lastAuthSuccess": true,
            "isPublic": e % 2 == 1,
            "hasAuth": self.environment_has_login(e),
            "authMethod": if self.environment_has_login(e) { "form" } else { "" },
            "tunnelState": "no_tunnel",
            "hasReport": last.is_some(),
            "settings": {},
            "scanConfig": {"ScanURL": self.environment_url(e)},
        })
    }

    /// Whether environment `e` is scanned behind a login (`hasAuth`): every second one.
    pub fn environment_has_login(&self, e: u32) -> bool {
        e.is_multiple_of(2)
    }

    pub fn dast_scan_json(&self, s: &DastScanInfo) -> Value {
        let counts = json!({"criticalCount": 0, "highCount": 1, "mediumCount": 2, "lowCount": 3, "infoCount": 4});
        json!({
            "scanId": s.id,
            "environmentId": self.environment_id(s.environment),
            "initiator": "appsec@acme.example",
            "scanType": self.environment_scan_type(s.environment),
            "lastStatus": s.status,
            "riskRating": "Medium risk",
            "alertRiskRating": "Medium risk",
            "created": rfc3339(s.created_us, true),
            "startTime": rfc3339(s.created_us, true),
            "updateTime": rfc3339(s.updated_us, true),
            "scanDuration": 1_800,
            "tags": [],
            "groups": [],
            "hasResults": s.status == "Completed",
            "riskLevel": counts,
            "alertRiskLevel": counts,
            "projectId": "",
            "statistics": "",
            "complianceData": {},
            "hasLog": true,
            "scannedPathsCount": 40 + s.environment,
            "settings": {},
            "source": "UI",
            "insights": [],
        })
    }

    /// Writes the DAST scan's `i`-th result (snake_case wire names, string CWE id).
    pub fn write_dast_result(&self, s: &DastScanInfo, i: u64, out: &mut Vec<u8>) {
        let e = s.environment;
        let per_scan = self.environment_results(e);
        let c = self.churn(per_scan);
        let k = u64::from(s.index) * c + i;
        let first = if c == 0 || k < per_scan {
            0
        } else {
            ((k - per_scan) / c + 1).min(u64::from(s.index))
        };
        let h = mix(&[self.seed(), 41, e as u64, k]);
        let (name, cwe, owasp, solution) = pick(DAST_ALERTS, h >> 8);
        let path = format!(
            "{}{}",
            pick(DAST_PATHS, h >> 16),
            if k.is_multiple_of(3) {
                format!("?q={k}")
            } else {
                String::new()
            }
        );
        let record = DastRecord {
            id: encode(self.seed(), Kind::DastResult, e, k as u32),
            severity: ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"][((h >> 24) % 5) as usize],
            state: [
                "To Verify",
                "To Verify",
                "Not Exploitable",
                "Proposed Not Exploitable",
                "Confirmed",
                "Urgent",
            ][((h >> 32) % 6) as usize],
            status: match h % 100 {
                0..3 => "Fixed",
                3..6 => "Resurfaced",
                6..10 => "Active",
                _ if first == u64::from(s.index) => "New",
                _ => "Recurrent",
            },
            name,
            description: format!("{name} was detected at {path}."),
            solution,
            url: format!("{}{path}", self.environment_url(e)),
            method: pick(HTTP_METHODS, h >> 40),
            path,
            cwe_id: cwe,
            environment_id: self.environment_id(e),
            owasp: [owasp],
            scan_type: self.environment_scan_type(e),
            notes_data: [],
            changelog_data: [],
        };
        serde_json::to_writer(&mut *out, &record).expect("writing JSON to a Vec cannot fail");
    }
}

/// The `visible-columns` the emulator serves without building the whole record.
const SLIM_COLUMNS: [&str; 5] = ["result-hash", "severity", "state", "status", "scan-id"];

/// How `/api/sast-results` was asked to show its results.
pub struct SastView {
    pub include_nodes: bool,
    pub apply_predicates: bool,
    /// `visible-columns`; empty means every field.
    pub columns: Vec<String>,
}

pub struct ResultTraits {
    pub k: u64,
    pub h: u64,
    pub first: u32,
    pub status: &'static str,
    pub state: &'static str,
    pub severity: &'static str,
    /// The severity before triage changed it (the same where triage did not).
    pub original_severity: &'static str,
    pub kind: ResultType,
}

pub struct ScanDates {
    found: String,
    /// (scan id, created) of every scan up to this one: where a finding was first found.
    first_scans: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Common<'a> {
    status: &'static str,
    state: &'static str,
    severity: &'static str,
    created: &'a str,
    first_found_at: &'a str,
    found_at: &'a str,
    first_scan_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultRecord<'a, D, V> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sca_type: Option<&'static str>,
    label: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    alternate_id: Option<String>,
    similarity_id: String,
    #[serde(flatten)]
    common: Common<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence_level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(rename = "descriptionHTML", skip_serializing_if = "Option::is_none")]
    description_html: Option<String>,
    data: D,
    comments: Empty,
    vulnerability_details: V,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SastData<'a> {
    query_id: u64,
    query_name: &'static str,
    group: String,
    result_hash: String,
    language_name: &'static str,
    nodes: Vec<Node<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node<'a> {
    id: String,
    line: u32,
    name: &'static str,
    column: u32,
    length: u32,
    method: &'static str,
    #[serde(rename = "nodeID")]
    node_id: u32,
    dom_type: &'static str,
    file_name: &'a str,
    full_name: String,
    type_name: &'static str,
    method_line: u32,
    definitions: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SastDetails {
    cwe_id: u32,
    cvss: Empty,
    compliances: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KicsData {
    query_id: String,
    query_name: &'static str,
    group: &'static str,
    line: u32,
    platform: &'static str,
    issue_type: &'static str,
    expected_value: &'static str,
    value: &'static str,
    filename: String,
}

#[derive(Serialize)]
struct KicsDetails {
    cvss: Empty,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaData {
    package_identifier: String,
    package_data: Vec<PackageRef>,
    sca_package_data: ScaPackageData,
    recommended_version: &'static str,
    published_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exploitable_methods: Option<Vec<ExploitableMethod>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaPackageData {
    id: String,
    fix_link: String,
    locations: Vec<&'static str>,
    dependency_paths: Vec<Vec<PathStep>>,
    outdated: bool,
    supports_quick_fix: bool,
    is_direct_dependency: bool,
    type_of_dependency: &'static str,
}

/// One package on a dependency path, from the project's own down to the vulnerable one.
#[derive(Serialize)]
struct PathStep {
    id: String,
    name: String,
    locations: Vec<&'static str>,
}

impl PathStep {
    fn new(identifier: &str, manifest: &'static str) -> Self {
        Self {
            id: identifier.to_string(),
            name: identifier.to_string(),
            locations: vec![manifest],
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExploitableMethod {
    full_name: String,
    name: &'static str,
}

#[derive(Serialize)]
struct PackageRef {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaDetails {
    cwe_id: &'static str,
    cvss_score: f64,
    cve_name: String,
    cvss: Option<Cvss>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cvss {
    version: u32,
    attack_vector: &'static str,
    availability: &'static str,
    confidentiality: &'static str,
    attack_complexity: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerData {
    package_name: &'static str,
    package_version: &'static str,
    image_name: &'static str,
    image_tag: &'static str,
    image_file_path: &'static str,
    image_origin: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaContainerData {
    package_name: &'static str,
    package_version: &'static str,
    published_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerDetails {
    cvss_score: f64,
    cve_name: String,
    cwe_id: &'static str,
    /// Real container results send `"cvss": null`.
    cvss: (),
}

#[derive(Serialize)]
struct DastRecord {
    id: String,
    severity: &'static str,
    state: &'static str,
    status: &'static str,
    name: &'static str,
    description: String,
    solution: &'static str,
    url: String,
    method: &'static str,
    path: String,
    cwe_id: &'static str,
    environment_id: String,
    owasp: [&'static str; 1],
    scan_type: &'static str,
    notes_data: [(); 0],
    changelog_data: [(); 0],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_table_counts_match_a_brute_force_count() {
        let table = SlotTable::new(ResultMix {
            sast: 55,
            kics: 20,
            sca: 17,
            containers: 8,
        });
        for (lo, hi) in [
            (0u64, 0u64),
            (0, 1),
            (3, 250),
            (99, 1001),
            (1234, 1234 + 777),
        ] {
            for t in ResultType::ALL {
                let brute = (lo..hi).filter(|k| table.type_of(*k) == t).count() as u64;
                assert_eq!(
                    table.before(t, hi) - table.before(t, lo),
                    brute,
                    "{t:?} in {lo}..{hi}"
                );
                for r in 0..brute.min(50) {
                    let k = table.nth_from(t, lo, r);
                    assert_eq!(table.type_of(k), t);
                    assert_eq!(table.before(t, k) - table.before(t, lo), r);
                }
            }
        }
    }

    #[test]
    fn timestamps_have_microseconds_for_projects_and_whole_seconds_for_results() {
        assert_eq!(
            rfc3339(EPOCH * 1_000_000 + 671_243, true),
            "2026-01-05T00:00:00.671243Z"
        );
        assert_eq!(
            rfc3339(EPOCH * 1_000_000 + 671_243, false),
            "2026-01-05T00:00:00Z"
        );
    }

    #[test]
    fn sast_results_carry_u64_query_ids_and_string_similarity_ids() {
        let tenant = Tenant::new(TenantShape {
            result_mix: ResultMix {
                sast: 100,
                kics: 0,
                sca: 0,
                containers: 0,
            },
            ..Default::default()
        });
        let scan = &tenant.scans(0)[0];
        let dates = tenant.scan_dates(scan);
        let mut out = Vec::new();
        tenant.write_result(scan, 0, &dates, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["data"]["queryId"].as_u64().unwrap() > i64::MAX as u64);
        assert!(v["similarityId"].is_string());
        assert!(v["vulnerabilityDetails"]["cweId"].is_u64());
    }

    #[test]
    fn sca_and_container_pairs_never_share_a_cve_however_large_the_scan() {
        // Pairs 0 and 90,000 shared a CVE (and a package) when the number wrapped: a scan of
        // millions of results then held byte-identical records.
        for (kind, field) in [
            (ResultType::Sca, "id"),
            (ResultType::Containers, "similarityId"),
        ] {
            let only = |t: ResultType| u32::from(t == kind) * 100;
            let tenant = Tenant::new(TenantShape {
                project_results: vec![200_000],
                result_mix: ResultMix {
                    sast: only(ResultType::Sast),
                    kics: only(ResultType::Kics),
                    sca: only(ResultType::Sca),
                    containers: only(ResultType::Containers),
                },
                ..Default::default()
            });
            let scan = &tenant.scans(0)[0];
            let dates = tenant.scan_dates(scan);
            let cve = |i: u64| {
                let mut out = Vec::new();
                tenant.write_result(scan, i, &dates, &mut out);
                let v: Value = serde_json::from_slice(&out).unwrap();
                v[field].as_str().unwrap().to_string()
            };
            assert_eq!(cve(0), cve(1), "{kind:?}: a pair shares its CVE");
            for far in [180_000, 180_001, 199_998] {
                assert_ne!(cve(0), cve(far), "{kind:?}: position {far}");
            }
        }
    }
}
