//! `bench`: a full SAST + DAST pull against the bundled emulator on loopback, with each run in its
//! own `cxone-etm run` process so its peak RSS, CPU time and start-up time are the connector's
//! alone (the emulator stays in this process). Each run is measured against its limit in the same
//! bench: the plain download of exactly the requests it made, at the same concurrency and latency.
//! Reports the ratio to that download (whole run and per stage), findings/s, CPU-seconds per
//! million findings, requests beside the minimum the API allows, peak RSS, what the run would cost
//! on AWS under the template's settings, one 100,000-result project for memory and one
//! 1,000,000-result project against its download, and the function binaries' sizes.

mod cost;
mod download;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cost::{Deployment, RunWork};
use cxone_emulator::{
    Emulator, EmulatorConfig, Endpoint, ExpectedScan, ExpectedTotals, FaultSpec, ResultType,
    TenantShape,
};
use cxone_etm::cxone::VendorSettings;
use cxone_etm::pipeline::{ConnectionConfig, Manifest};
use cxone_etm::{ConnectorKind, Engine};
use download::download;
use serde_json::{Value, json};

const SECRET_VAR: &str = "CXONE_ETM_BENCH_CREDENTIAL";
/// The largest page sizes the API is known to accept (docs/vendor-client.md), which are the
/// connector's defaults: projects and last-scan batches of 100, results 10,000, DAST 100.
const PROJECTS_PAGE: u64 = 100;
const LAST_SCAN_BATCH: u64 = 100;
const RESULTS_PAGE: u64 = 10_000;
const DAST_PAGE: u64 = 100;
const FUNCTIONS: [&str; 4] = [
    "cxone-etm-trigger",
    "cxone-etm-collect",
    "cxone-etm-transform",
    "cxone-etm-finalize",
];

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1_000)]
    pub projects: u32,
    #[arg(long, default_value_t = 1_000)]
    pub results_per_scan: u64,
    #[arg(long, default_value_t = 100)]
    pub dast_environments: u32,
    #[arg(long, default_value_t = 200)]
    pub dast_results_per_scan: u64,
    /// Added to every vendor answer.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Results of the project collected and transformed on its own for the memory budget.
    #[arg(long, default_value_t = 100_000)]
    pub single_project_results: u64,
    /// Results of the one huge project measured against its plain download.
    #[arg(long, default_value_t = 1_000_000)]
    pub huge_project_results: u64,
    /// Items at once (the state machine's MaxConcurrency default).
    #[arg(long, default_value_t = 10)]
    pub item_concurrency: usize,
    /// One JSON document on stdout (`{"error": …}` if the bench fails).
    #[arg(long)]
    pub json: bool,
}

/// A run of `cxone-etm run` in its own process, with what the emulator saw of it.
struct ChildRun {
    summary: Value,
    wall: Duration,
    first_request_ms: Option<f64>,
    requests: u64,
    /// Every request the run made, in order.
    log: Vec<(Endpoint, String)>,
    objects_written: u64,
    /// The vendor client's requests in flight at most (the connection's `concurrency`).
    connections: usize,
    /// CPU the bench process spent while the run went on: the emulator answering it, on the
    /// same cores as the connector (`None` where the process's CPU time could not be read).
    emulator_cpu_seconds: Option<f64>,
}

/// Endpoints the plan calls before any item starts; the rest are the items'.
const PLAN_ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Projects,
    Endpoint::LastScan,
    Endpoint::Branches,
    Endpoint::DastEnvironments,
];

/// Files under `dir`, at any depth (a directory store writes one file per object).
fn files_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => files_under(&e.path()),
                Ok(_) => 1,
                Err(_) => 0,
            })
            .sum()
    })
}

fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn start_emulator(shape: TenantShape, latency_ms: u64) -> anyhow::Result<Emulator> {
    let emulator = Emulator::start(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await
    .context("starting the emulator")?;
    for endpoint in Endpoint::ALL {
        emulator.set_fault(
            endpoint,
            FaultSpec {
                latency_ms,
                ..FaultSpec::default()
            },
        );
    }
    Ok(emulator)
}

/// Runs one connection in a child process and waits for its JSON summary; `configure` sets what
/// differs from the defaults.
async fn run_child(
    emulator: &Emulator,
    work: &Path,
    id: &str,
    kind: ConnectorKind,
    configure: impl FnOnce(&mut ConnectionConfig),
) -> anyhow::Result<ChildRun> {
    let mut vendor =
        VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
    vendor.allow_insecure_local = true;
    let mut config = ConnectionConfig::new(id, kind, vendor, &format!("env:{SECRET_VAR}"));
    configure(&mut config);
    let connections = config.vendor.concurrency;
    let config_file = work.join(format!("{id}.json"));
    std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
    let credential = match kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            json!({"api_key": emulator.credentials.api_key})
        }
        ConnectorKind::Dast => json!({
            "client_id": emulator.credentials.client_id,
            "client_secret": emulator.credentials.client_secret,
        }),
    };
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["run", "--json", "--quiet", "--config"])
        .arg(&config_file)
        .arg("--store")
        .arg(work.join("store"))
        .env(SECRET_VAR, credential.to_string());
    emulator.reset_traffic();
    let objects_before = files_under(&work.join("store"));
    let started = SystemTime::now();
    let bench_cpu_before = crate::runs::cpu_seconds();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running cxone-etm run")?;
    let wall = started.elapsed().unwrap_or_default();
    let emulator_cpu_seconds = bench_cpu_before
        .zip(crate::runs::cpu_seconds())
        .map(|(before, after)| after - before);
    if !output.status.success() {
        // An incomplete run still prints its summary: its problems say why.
        bail!(
            "the {id} run exited with {}: {}\nits summary: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let summary: Value =
        serde_json::from_slice(&output.stdout).context("reading the run's JSON summary")?;
    let traffic = emulator.traffic();
    Ok(ChildRun {
        summary,
        wall,
        first_request_ms: traffic
            .first_request_unix_us
            .map(|us| us.saturating_sub(unix_us(started)) as f64 / 1000.0),
        requests: traffic.requests.values().sum(),
        log: emulator.request_log(),
        objects_written: files_under(&work.join("store")) - objects_before,
        connections,
        emulator_cpu_seconds,
    })
}

/// A run's CPU floor: the connector's and the emulator's CPU-seconds over the cores, and that
/// beside the download's seconds; null where any of the three could not be read.
fn cpu_floor(
    connector: Option<f64>,
    emulator: Option<f64>,
    cores: Option<f64>,
    download_seconds: f64,
) -> Value {
    match (connector, emulator, cores) {
        (Some(connector), Some(emulator), Some(cores)) => {
            let seconds = (connector + emulator) / cores;
            json!({"connectorCpuSeconds": connector, "emulatorCpuSeconds": emulator,
                "cores": cores, "seconds": seconds, "ratio": seconds / download_seconds})
        }
        _ => Value::Null,
    }
}

/// The floors of runs one after another, summed: unknown if any run's is.
fn summed_floor(sum: Option<f64>, run_floor: &Value) -> Option<f64> {
    sum.zip(run_floor["seconds"].as_f64())
        .map(|(sum, seconds)| sum + seconds)
}

/// A run's CPU floor, as printed: the least time its CPU and the emulator's allow on these cores.
fn floor_line(floor: &Value) -> String {
    if floor.is_null() {
        return "CPU floor not measured (a process's CPU time could not be read)".into();
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    format!(
        "CPU floor {:.2} x the download ((connector {:.1} + emulator {:.1} CPU-s) / {} cores = {:.1} s)",
        f(&floor["ratio"]),
        f(&floor["connectorCpuSeconds"]),
        f(&floor["emulatorCpuSeconds"]),
        floor["cores"],
        f(&floor["seconds"])
    )
}

/// A CPU floor's ratio in a budget's row, or that it was not measured.
fn floor_ratio(ratio: Option<f64>) -> String {
    ratio.map_or("CPU floor not measured".into(), |r| {
        format!("CPU floor {r:.2} x")
    })
}

/// The cores this process may run on (its affinity and CPU quota, a fractional quota rounded
/// down), if known.
fn cores() -> Option<usize> {
    std::thread::available_parallelism().ok().map(|n| n.get())
}

/// The cores a CPU floor divides by: [`cores`], or a fractional cgroup CPU quota where it is more
/// (1.5 CPUs reads as one core there, which would put the floor above what the run can do). Never
/// fewer than the run may use, so the floor stays a lower bound.
fn floor_cores() -> Option<f64> {
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|text| {
            let (quota, period) = text.trim().split_once(' ')?;
            Some(quota.parse::<f64>().ok()? / period.parse::<f64>().ok()?)
        });
    let cores = cores()? as f64;
    Some(quota.map_or(cores, |quota| cores.max(quota)))
}

/// The findings a run closed because their asset was deleted, from its manifest: every open
/// finding of every deleted asset, or an error.
fn closed_as_deleted(store: &Path, summary: &Value) -> anyhow::Result<u64> {
    let key = summary["manifest"]
        .as_str()
        .context("the run's summary names no manifest")?;
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(store.join(key)).with_context(|| format!("reading {key}"))?,
    )?;
    let open: u64 = manifest.deleted_items.iter().map(|d| d.open_findings).sum();
    let closed: u64 = manifest
        .deleted_items
        .iter()
        .filter(|d| d.closed)
        .flat_map(|d| &d.objects)
        .map(|o| o.findings)
        .sum();
    if open == 0 || closed != open {
        bail!(
            "the run after the huge project was deleted closed {closed} of the {open} open findings of {} deleted item(s)",
            manifest.deleted_items.len()
        );
    }
    Ok(closed)
}

/// A run beside its limit: the plain download of the same requests, all at once and per stage
/// (the plan's requests, then the items').
async fn against_download(emulator: &Emulator, run: &ChildRun) -> anyhow::Result<Value> {
    let (plan, items): (Vec<_>, Vec<_>) = run
        .log
        .iter()
        .cloned()
        .partition(|(endpoint, _)| PLAN_ENDPOINTS.contains(endpoint));
    let all = download(emulator, &run.log, run.connections).await?;
    let plan = download(emulator, &plan, run.connections).await?;
    let items = download(emulator, &items, run.connections).await?;
    let wall_ms = run.wall.as_secs_f64() * 1000.0;
    let plan_ms = ms(&run.summary, "plan") as f64;
    // The items' stage is what the run spent after the plan and before finalize.
    let items_ms = wall_ms - plan_ms - ms(&run.summary, "finalize") as f64;
    let stage = |connector_ms: f64, download: &download::Download| {
        let download_ms = download.wall.as_secs_f64() * 1000.0;
        json!({"connectorMs": connector_ms.round(), "downloadMs": download_ms.round(),
            "ratio": connector_ms / download_ms, "requests": download.requests})
    };
    // The least time the run could take on these cores, were they never idle: the connector's
    // CPU and the emulator's (which the download needs too) shared out. A ratio budget below
    // this floor is out of reach without less CPU, whatever the overlap.
    let download_seconds = all.wall.as_secs_f64();
    let floor = cpu_floor(
        run.summary["cpuSeconds"].as_f64(),
        run.emulator_cpu_seconds,
        floor_cores(),
        download_seconds,
    );
    Ok(json!({
        "connections": run.connections,
        "downloadSeconds": download_seconds,
        "downloadMiB": mib(all.bytes as f64),
        "ratio": run.wall.as_secs_f64() / download_seconds,
        "stages": {"plan": stage(plan_ms, &plan), "items": stage(items_ms, &items)},
        "cpuFloor": floor,
    }))
}

/// What the run would cost deployed with the template's settings.
fn run_cost(deployment: &Deployment, run: &ChildRun) -> Value {
    let s = &run.summary;
    let work = RunWork {
        findings: s["findings"].as_u64().unwrap_or(0),
        child_executions: s["childExecutions"].as_u64().unwrap_or(0),
        plan_ms: ms(s, "plan"),
        collect_ms: ms(s, "collect"),
        transform_ms: ms(s, "transform"),
        finalize_ms: ms(s, "finalize"),
        objects_written: run.objects_written,
    };
    let items = s["items"].as_u64().unwrap_or(0);
    let mut cost = serde_json::to_value(cost::cost(deployment, &work)).unwrap_or_default();
    cost["transitionsPerItem"] =
        json!(cost["stateTransitions"].as_f64().unwrap_or(0.0) / items.max(1) as f64);
    // The same run with each item its own child, as the work list was before items were grouped.
    let one_per_item = cost::cost(
        deployment,
        &RunWork {
            child_executions: items,
            ..work
        },
    );
    cost["oneChildPerItem"] = json!({
        "stateTransitions": one_per_item.state_transitions,
        "dollars": one_per_item.dollars,
        "dollarsPerMillionFindings": one_per_item.dollars_per_million_findings,
    });
    cost
}

/// The pages of a list of `n` results at `size` a page (at least one), and the page after a full
/// last one: the connector asks for it to prove the reported total (docs/reliability.md, "a total
/// reported short of the results"), a request it makes by design, not one wasted.
fn result_pages(n: u64, size: u64) -> u64 {
    n.div_ceil(size).max(1) + u64::from(n > 0 && n.is_multiple_of(size))
}

/// The fewest requests the API allows for this tenant: one token, project (or environment) pages,
/// last-scan batches, and per item the scan lookup (DAST), the result pages ([`result_pages`])
/// and, for SAST (severities before triage, on by default), the pages of the slim `sast-results`
/// pull.
fn minimum_requests(expected: &ExpectedTotals, kind: ConnectorKind) -> u64 {
    let pages = |n: u64, size: u64| n.div_ceil(size).max(1);
    match kind {
        ConnectorKind::Sca => unreachable!("the bench runs SAST and DAST connections"),
        ConnectorKind::Sast => {
            let projects = expected.projects.len() as u64;
            let results: u64 = expected
                .projects
                .iter()
                .filter_map(|p| {
                    let id = p.main_branch_sast_scan.as_ref()?;
                    let scan = p.scans.iter().find(|s| &s.id == id)?;
                    let sast = scan.by_type.get(&ResultType::Sast).copied().unwrap_or(0);
                    Some(
                        result_pages(scan.results, RESULTS_PAGE) + result_pages(sast, RESULTS_PAGE),
                    )
                })
                .sum();
            1 + pages(projects, PROJECTS_PAGE) + pages(projects, LAST_SCAN_BATCH) + results
        }
        ConnectorKind::Dast => {
            let environments = expected.environments.len() as u64;
            let results: u64 = expected
                .environments
                .iter()
                .filter_map(|e| {
                    let id = e.latest_completed_scan.as_ref()?;
                    let scan = e.scans.iter().find(|s| &s.id == id)?;
                    Some(result_pages(scan.results, DAST_PAGE))
                })
                .sum();
            1 + pages(environments, DAST_PAGE) + environments + results
        }
    }
}

/// The fewest requests for a project connection that delivers every engine: as for SAST, plus
/// one `last-scan` batch per engine for the projects whose latest scan did not run it, and each
/// distinct scan's result pages once (a project whose latest scan ran every engine costs what it
/// costs a SAST-only pull).
fn minimum_requests_every_engine(expected: &ExpectedTotals) -> u64 {
    let pages = |n: u64, size: u64| n.div_ceil(size).max(1);
    let projects = expected.projects.len() as u64;
    let mut lacking: BTreeMap<ResultType, u64> = BTreeMap::new();
    let mut results = 0;
    for p in &expected.projects {
        let on_main = |s: &&ExpectedScan| {
            s.status == "Completed" && (p.main_branch.is_empty() || s.branch == p.main_branch)
        };
        let Some(latest) = p.scans.iter().rev().find(on_main) else {
            continue;
        };
        for t in ResultType::ALL {
            if !latest.by_type.contains_key(&t) {
                *lacking.entry(t).or_default() += 1;
            }
        }
        let scans: BTreeSet<&String> = p.main_branch_scan_by_engine.values().collect();
        for scan in p.scans.iter().filter(|s| scans.contains(&s.id)) {
            results += result_pages(scan.results, RESULTS_PAGE);
            if p.main_branch_scan_by_engine.get(&ResultType::Sast) == Some(&scan.id) {
                let sast = scan.by_type.get(&ResultType::Sast).copied().unwrap_or(0);
                results += result_pages(sast, RESULTS_PAGE);
            }
        }
    }
    let follow_ups: u64 = lacking.values().map(|n| n.div_ceil(LAST_SCAN_BATCH)).sum();
    1 + pages(projects, PROJECTS_PAGE) + pages(projects, LAST_SCAN_BATCH) + follow_ups + results
}

/// Each function's release binary as `cargo lambda build --release --arm64` leaves it.
fn binary_sizes(workspace: &Path) -> Vec<(String, Option<u64>)> {
    FUNCTIONS
        .iter()
        .map(|name| {
            let path = workspace.join("target/lambda").join(name).join("bootstrap");
            (
                name.to_string(),
                std::fs::metadata(path).ok().map(|m| m.len()),
            )
        })
        .collect()
}

/// The machine the figures were measured on: CPU model, cores and the date (UTC).
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = cores().unwrap_or(0);
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    json!({"cpu": cpu, "cores": cores, "date": date})
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn ms(summary: &Value, stage: &str) -> u64 {
    summary["stageMs"][stage].as_u64().unwrap_or(0)
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let work = std::env::temp_dir().join(format!("cxone-etm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&args, &work).await;
    std::fs::remove_dir_all(&work).ok();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let all_met = report["budgets"]
        .as_array()
        .is_some_and(|b| b.iter().all(|b| b["met"] != false));
    Ok(if all_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::runs::EXIT_PARTIAL)
    })
}

async fn measure(args: &BenchArgs, work: &Path) -> anyhow::Result<Value> {
    let shape = TenantShape {
        projects: args.projects,
        results_per_scan: args.results_per_scan,
        dast_environments: args.dast_environments,
        dast_results_per_scan: args.dast_results_per_scan,
        ..TenantShape::default()
    };
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let deployment = Deployment::from_template(&workspace.join("infra/template.yaml"))?;
    let emulator = start_emulator(shape, args.latency_ms).await?;
    let expected = emulator.expected();
    let mut runs = Vec::new();
    let (mut findings, mut bytes, mut wall, mut requests, mut minimum) = (0u64, 0u64, 0.0, 0, 0);
    let (mut download_wall, mut cpu, mut transitions, mut items) = (0.0, 0.0, 0.0, 0.0);
    let mut end_to_end_floor = Some(0.0);
    let mut peak_rss = 0u64;
    let mut first_request = Vec::new();
    for (id, kind) in [
        ("bench-sast", ConnectorKind::Sast),
        ("bench-dast", ConnectorKind::Dast),
    ] {
        eprintln!(
            "bench: {id} against {} projects / {} environments ...",
            args.projects, args.dast_environments
        );
        let run = run_child(&emulator, work, id, kind, |c| {
            c.item_concurrency = args.item_concurrency;
        })
        .await?;
        let limit = against_download(&emulator, &run).await?;
        let cost = run_cost(&deployment, &run);
        let s = &run.summary;
        let run_cpu = s["cpuSeconds"].as_f64().unwrap_or(0.0);
        download_wall += limit["downloadSeconds"].as_f64().unwrap_or(0.0);
        end_to_end_floor = summed_floor(end_to_end_floor, &limit["cpuFloor"]);
        cpu += run_cpu;
        transitions += cost["stateTransitions"].as_f64().unwrap_or(0.0);
        items += s["items"].as_f64().unwrap_or(0.0);
        let min = minimum_requests(&expected, kind);
        let run_findings = s["findings"].as_u64().unwrap_or(0);
        let run_bytes = s["vendor"]["bytes"].as_u64().unwrap_or(0);
        let secs = run.wall.as_secs_f64();
        findings += run_findings;
        bytes += run_bytes;
        wall += secs;
        requests += run.requests;
        minimum += min;
        peak_rss = peak_rss.max(s["peakRssBytes"].as_u64().unwrap_or(0));
        first_request.extend(run.first_request_ms);
        runs.push(json!({
            "connection": id,
            "complete": s["complete"],
            "items": s["items"],
            "findings": run_findings,
            "wallSeconds": secs,
            "findingsPerSecond": run_findings as f64 / secs,
            "vendorMiB": mib(run_bytes as f64),
            "vendorMiBPerSecond": mib(run_bytes as f64) / secs,
            "stageMs": s["stageMs"],
            "requests": run.requests,
            "minimumRequests": min,
            "retries": s["vendor"]["retries"],
            "peakRssMiB": mib(s["peakRssBytes"].as_f64().unwrap_or(0.0)),
            "firstRequestMs": run.first_request_ms,
            "childExecutions": s["childExecutions"],
            "cpuSeconds": run_cpu,
            "cpuSecondsPerMillionFindings": run_cpu * 1e6 / run_findings.max(1) as f64,
            "download": limit,
            "cost": cost,
        }));
    }
    // The same projects with every engine of their scans delivered: the same pulls, more
    // findings (kept out of the end-to-end figures, which stay comparable run to run).
    eprintln!("bench: bench-engines (sast, sca, kics, containers) ...");
    let every = run_child(&emulator, work, "bench-engines", ConnectorKind::Sast, |c| {
        c.engines = Some(Engine::PROJECT_ENGINES.to_vec());
        c.item_concurrency = args.item_concurrency;
    })
    .await?;
    let engines_min = minimum_requests_every_engine(&expected);
    let by_engine: Vec<Value> = Engine::PROJECT_ENGINES
        .iter()
        .map(|engine| {
            let holds = ResultType::ALL
                .into_iter()
                .find(|t| t.as_str() == engine.as_str())
                .and_then(|t| expected.totals.by_engine.get(&t).copied())
                .unwrap_or(0);
            let committed = every.summary["byEngine"][engine.as_str()]["findings"]
                .as_u64()
                .unwrap_or(0);
            json!({"engine": engine, "findings": committed, "emulatorHolds": holds})
        })
        .collect();
    let every_secs = every.wall.as_secs_f64();
    let every_findings = every.summary["findings"].as_u64().unwrap_or(0);
    let engines = json!({
        "findings": every_findings, "wallSeconds": every_secs,
        "findingsPerSecond": every_findings as f64 / every_secs,
        "requests": every.requests, "minimumRequests": engines_min,
        "peakRssMiB": mib(every.summary["peakRssBytes"].as_f64().unwrap_or(0.0)),
        "byEngine": by_engine,
    });
    drop(emulator);

    eprintln!(
        "bench: one project of {} results ...",
        args.single_project_results
    );
    let single = start_emulator(
        TenantShape {
            projects: 1,
            project_results: vec![args.single_project_results],
            dast_environments: 0,
            ..TenantShape::default()
        },
        args.latency_ms,
    )
    .await?;
    let one = run_child(&single, work, "bench-one", ConnectorKind::Sast, |c| {
        c.item_concurrency = 1;
    })
    .await?;
    let one_rss = one.summary["peakRssBytes"].as_u64().unwrap_or(0);
    let one_ms = ms(&one.summary, "collect") + ms(&one.summary, "transform");
    drop(single);

    eprintln!(
        "bench: one project of {} results against its download ...",
        args.huge_project_results
    );
    let huge_tenant = start_emulator(
        TenantShape {
            projects: 1,
            project_results: vec![args.huge_project_results],
            dast_environments: 0,
            ..TenantShape::default()
        },
        args.latency_ms,
    )
    .await?;
    let huge_shape = |c: &mut ConnectionConfig| {
        c.item_concurrency = 1;
        c.close_deleted_items = true;
    };
    let run_huge = async || {
        run_child(
            &huge_tenant,
            work,
            "bench-huge",
            ConnectorKind::Sast,
            huge_shape,
        )
        .await
    };
    let huge = run_huge().await?;
    let huge_limit = against_download(&huge_tenant, &huge).await?;
    let huge_ratio = huge_limit["ratio"].as_f64().unwrap_or(f64::INFINITY);
    // The run after: every finding reconciled against the first run's ledger, as every
    // scheduled run after the first is.
    let huge_next = run_huge().await?;
    drop(huge_tenant);
    // The run after the project is deleted: the tenant lists another project, and finalize
    // closes every open finding of the one gone.
    let gone_tenant = start_emulator(
        TenantShape {
            seed: TenantShape::default().seed + 1,
            projects: 1,
            project_results: vec![10],
            dast_environments: 0,
            ..TenantShape::default()
        },
        args.latency_ms,
    )
    .await?;
    let huge_gone = run_child(
        &gone_tenant,
        work,
        "bench-huge",
        ConnectorKind::Sast,
        huge_shape,
    )
    .await?;
    drop(gone_tenant);
    let huge_closed = closed_as_deleted(&work.join("store"), &huge_gone.summary)?;
    let huge_rss = [&huge, &huge_next, &huge_gone]
        .iter()
        .map(|r| r.summary["peakRssBytes"].as_u64().unwrap_or(u64::MAX))
        .max()
        .unwrap_or(u64::MAX);

    let binaries = binary_sizes(&workspace);
    let findings_per_second = findings as f64 / wall;
    let ratio = wall / download_wall;
    let cpu_floor_ratio = end_to_end_floor.map(|floor| floor / download_wall);
    let transitions_per_item = transitions / items.max(1.0);
    let slowest_start = first_request.iter().copied().fold(0.0, f64::max);
    let mut budgets = vec![
        json!({"budget": "end to end <= 1.25 x the plain download of the same requests", "value": format!("{ratio:.2} x ({wall:.1} s / {download_wall:.1} s); {}", floor_ratio(cpu_floor_ratio)), "met": ratio <= 1.25}),
        json!({"budget": format!("one {}-result project <= 1.5 x its plain download", args.huge_project_results), "value": format!("{huge_ratio:.2} x ({:.1} s / {:.1} s); {}", huge.wall.as_secs_f64(), huge_limit["downloadSeconds"].as_f64().unwrap_or(0.0), floor_ratio(huge_limit["cpuFloor"]["ratio"].as_f64())), "met": huge_ratio <= 1.5}),
        json!({"budget": "Step Functions transitions per item <= 0.3 (a tenth of a child per item)", "value": format!("{transitions_per_item:.3}"), "met": transitions_per_item <= 0.3}),
        json!({"budget": "vendor requests <= 1.05 x minimum", "value": format!("{requests} / {minimum}"), "met": requests as f64 <= 1.05 * minimum as f64}),
        json!({"budget": "every engine: vendor requests <= 1.05 x minimum, every finding", "value": format!("{} / {engines_min}", every.requests),
            "met": every.requests as f64 <= 1.05 * engines_min as f64 && by_engine.iter().all(|e| e["findings"] == e["emulatorHolds"])}),
        json!({"budget": "one 100,000-result project < 128 MiB peak RSS", "value": format!("{:.1} MiB", mib(one_rss as f64)), "met": one_rss < 128 * 1024 * 1024}),
        json!({"budget": format!("one {}-result project, first run, the next and its deletion, <= 256 MiB peak RSS", args.huge_project_results), "value": format!("{:.1} MiB", mib(huge_rss as f64)), "met": huge_rss <= 256 * 1024 * 1024}),
        json!({"budget": "process start to first vendor request < 50 ms", "value": format!("{slowest_start:.1} ms"), "met": slowest_start < 50.0}),
    ];
    for (name, size) in &binaries {
        budgets.push(match size {
            Some(size) => json!({"budget": format!("{name} arm64 binary < 10 MB"), "value": format!("{:.2} MB", *size as f64 / 1e6), "met": *size < 10_000_000}),
            None => json!({"budget": format!("{name} arm64 binary < 10 MB"), "value": "not built (cargo lambda build --release --arm64)", "met": Value::Null}),
        });
    }
    Ok(json!({
        "tenant": {
            "projects": args.projects, "resultsPerScan": args.results_per_scan,
            "environments": args.dast_environments, "dastResultsPerScan": args.dast_results_per_scan,
            "latencyMs": args.latency_ms, "itemConcurrency": args.item_concurrency,
        },
        "machine": machine(),
        "endToEnd": {
            "findings": findings, "wallSeconds": wall, "findingsPerSecond": findings_per_second,
            "downloadSeconds": download_wall, "ratioToDownload": ratio,
            "cpuFloorRatio": cpu_floor_ratio,
            "cpuSecondsPerMillionFindings": cpu * 1e6 / findings.max(1) as f64,
            "vendorMiBPerSecond": mib(bytes as f64) / wall, "requests": requests,
            "minimumRequests": minimum, "peakRssMiB": mib(peak_rss as f64),
            "stateTransitionsPerItem": transitions_per_item,
        },
        "runs": runs,
        "everyEngine": engines,
        "singleProject": {
            "results": args.single_project_results,
            "findings": one.summary["findings"], "collectPlusTransformMs": one_ms,
            "peakRssMiB": mib(one_rss as f64), "vendorMiB": mib(one.summary["vendor"]["bytes"].as_f64().unwrap_or(0.0)),
        },
        "hugeProject": {
            "results": args.huge_project_results, "findings": huge.summary["findings"],
            "wallSeconds": huge.wall.as_secs_f64(), "download": huge_limit,
            "cpuSeconds": huge.summary["cpuSeconds"],
            "peakRssMiB": mib(huge.summary["peakRssBytes"].as_f64().unwrap_or(0.0)),
            "nextRun": {
                "findings": huge_next.summary["findings"],
                "wallSeconds": huge_next.wall.as_secs_f64(),
                "cpuSeconds": huge_next.summary["cpuSeconds"],
                "peakRssMiB": mib(huge_next.summary["peakRssBytes"].as_f64().unwrap_or(0.0)),
            },
            "deleted": {
                "closed": huge_closed,
                "wallSeconds": huge_gone.wall.as_secs_f64(),
                "finalizeMs": huge_gone.summary["stageMs"]["finalize"],
                "peakRssMiB": mib(huge_gone.summary["peakRssBytes"].as_f64().unwrap_or(0.0)),
            },
        },
        "binaries": binaries.iter().map(|(n, s)| json!({"function": n, "bytes": s})).collect::<Vec<_>>(),
        "budgets": budgets,
    }))
}

fn print_table(report: &Value) {
    let m = &report["machine"];
    println!(
        "machine: {}, {} cores, {}",
        m["cpu"].as_str().unwrap_or_default(),
        m["cores"],
        m["date"].as_str().unwrap_or_default()
    );
    let e = &report["endToEnd"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "end to end: {} findings in {:.1} s = {:.2} x the plain download of the same requests ({:.1} s; {}); {:.0} findings/s, {:.1} CPU-s per million findings, vendor JSON {:.1} MiB/s, {} requests (minimum {}), peak RSS {:.1} MiB",
        e["findings"],
        f(&e["wallSeconds"]),
        f(&e["ratioToDownload"]),
        f(&e["downloadSeconds"]),
        floor_ratio(e["cpuFloorRatio"].as_f64()),
        f(&e["findingsPerSecond"]),
        f(&e["cpuSecondsPerMillionFindings"]),
        f(&e["vendorMiBPerSecond"]),
        e["requests"],
        e["minimumRequests"],
        f(&e["peakRssMiB"])
    );
    for run in report["runs"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} findings, {:.1} s, {:.0} findings/s, {:.1} MiB/s vendor JSON; stages (ms) {}; {} requests (minimum {}), {} retries; peak RSS {:.1} MiB; first request {:.1} ms after start",
            run["connection"].as_str().unwrap_or_default(),
            run["findings"],
            run["wallSeconds"].as_f64().unwrap_or(0.0),
            run["findingsPerSecond"].as_f64().unwrap_or(0.0),
            run["vendorMiBPerSecond"].as_f64().unwrap_or(0.0),
            run["stageMs"],
            run["requests"],
            run["minimumRequests"],
            run["retries"],
            run["peakRssMiB"].as_f64().unwrap_or(0.0),
            run["firstRequestMs"].as_f64().unwrap_or(f64::NAN)
        );
        let d = &run["download"];
        let stage = |name: &str| {
            let s = &d["stages"][name];
            format!(
                "{name} {:.0} ms / {:.0} ms = {:.2} x",
                f(&s["connectorMs"]),
                f(&s["downloadMs"]),
                f(&s["ratio"])
            )
        };
        println!(
            "    against the plain download ({} connections, {:.1} MiB): {:.2} x ({:.1} s); {}; {}; {:.1} CPU-s per million findings; {}",
            d["connections"],
            f(&d["downloadMiB"]),
            f(&d["ratio"]),
            f(&d["downloadSeconds"]),
            stage("plan"),
            stage("items"),
            f(&run["cpuSecondsPerMillionFindings"]),
            floor_line(&d["cpuFloor"])
        );
        let c = &run["cost"];
        let before = &c["oneChildPerItem"];
        println!(
            "    deployed: {} child executions, {} state transitions ({:.3} per item; {} with a child per item), {} Lambda invocations, {:.0} GB-s, {} S3 PUTs: ${:.4} (Step Functions ${:.4} instead of ${:.4}, Lambda ${:.4}, S3 ${:.4}) = ${:.4} per million findings",
            run["childExecutions"],
            c["stateTransitions"],
            f(&c["transitionsPerItem"]),
            before["stateTransitions"],
            c["lambdaInvocations"],
            f(&c["lambdaGbSeconds"]),
            c["s3Puts"],
            f(&c["dollars"]["total"]),
            f(&c["dollars"]["stepFunctions"]),
            f(&before["dollars"]["stepFunctions"]),
            f(&c["dollars"]["lambda"]),
            f(&c["dollars"]["s3"]),
            f(&c["dollarsPerMillionFindings"])
        );
    }
    let every = &report["everyEngine"];
    let per_engine: Vec<String> = every["byEngine"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {} of {}",
                e["engine"].as_str().unwrap_or_default(),
                e["findings"],
                e["emulatorHolds"]
            )
        })
        .collect();
    println!(
        "every engine of the same scans: {} findings ({}), {:.1} s, {:.0} findings/s, {} requests (minimum {}), peak RSS {:.1} MiB",
        every["findings"],
        per_engine.join(", "),
        every["wallSeconds"].as_f64().unwrap_or(0.0),
        every["findingsPerSecond"].as_f64().unwrap_or(0.0),
        every["requests"],
        every["minimumRequests"],
        every["peakRssMiB"].as_f64().unwrap_or(0.0)
    );
    let h = &report["hugeProject"];
    println!(
        "one project of {} results: {} findings in {:.1} s = {:.2} x its plain download ({:.1} s), {} CPU-s, peak RSS {:.1} MiB",
        h["results"],
        h["findings"],
        f(&h["wallSeconds"]),
        f(&h["download"]["ratio"]),
        f(&h["download"]["downloadSeconds"]),
        h["cpuSeconds"],
        f(&h["peakRssMiB"])
    );
    println!("  {}", floor_line(&h["download"]["cpuFloor"]));
    let next = &h["nextRun"];
    println!(
        "  its next run, against the first run's ledger: {:.1} s, {} CPU-s, peak RSS {:.1} MiB",
        f(&next["wallSeconds"]),
        next["cpuSeconds"],
        f(&next["peakRssMiB"])
    );
    let gone = &h["deleted"];
    println!(
        "  the run after it is deleted, closing its {} open findings: {:.1} s (finalize {} ms), peak RSS {:.1} MiB",
        gone["closed"],
        f(&gone["wallSeconds"]),
        gone["finalizeMs"],
        f(&gone["peakRssMiB"])
    );
    let one = &report["singleProject"];
    println!(
        "one project of {} results: {} findings, collect + transform {} ms, peak RSS {:.1} MiB",
        one["results"],
        one["findings"],
        one["collectPlusTransformMs"],
        one["peakRssMiB"].as_f64().unwrap_or(0.0)
    );
    println!("\n| Budget | Measured | Met |\n|---|---|---|");
    for b in report["budgets"].as_array().into_iter().flatten() {
        let met = match b["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        println!(
            "| {} | {} | {met} |",
            b["budget"].as_str().unwrap_or_default(),
            b["value"]
                .as_str()
                .map_or_else(|| b["value"].to_string(), str::to_string)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_last_page_counts_the_page_after_it() {
        let counted: Vec<u64> = [(0, 10), (5, 10), (10, 10), (25, 10), (200, 100)]
            .iter()
            .map(|&(n, size)| result_pages(n, size))
            .collect();
        assert_eq!(counted, [1, 1, 2, 3, 3]);
    }

    #[test]
    fn a_cpu_floor_is_the_cpu_over_the_cores_and_unknown_when_any_part_is() {
        let floor = cpu_floor(Some(11.5), Some(3.9), Some(2.0), 6.1);
        assert_eq!(floor["seconds"], 7.7);
        assert!((floor["ratio"].as_f64().unwrap() - 7.7 / 6.1).abs() < 1e-9);
        assert_eq!(
            floor_line(&floor),
            "CPU floor 1.26 x the download ((connector 11.5 + emulator 3.9 CPU-s) / 2.0 cores = 7.7 s)"
        );
        for (connector, emulator, cores) in [
            (None, Some(3.9), Some(2.0)),
            (Some(11.5), None, Some(2.0)),
            (Some(11.5), Some(3.9), None),
        ] {
            let unknown = cpu_floor(connector, emulator, cores, 6.1);
            assert!(unknown.is_null(), "{connector:?} {emulator:?} {cores:?}");
            assert_eq!(
                floor_line(&unknown),
                "CPU floor not measured (a process's CPU time could not be read)"
            );
            // The end-to-end floor is not the other run's alone.
            let sum = summed_floor(summed_floor(Some(0.0), &floor), &unknown);
            assert_eq!(sum, None);
            assert_eq!(floor_ratio(sum), "CPU floor not measured");
        }
        assert_eq!(
            summed_floor(summed_floor(Some(0.0), &floor), &floor),
            Some(15.4)
        );
    }
}
