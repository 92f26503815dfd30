//! `bench`: a full SAST + DAST pull against the bundled emulator on loopback, with each run in its
//! own `cxone-etm run` process so its peak RSS and its start-up time are the connector's alone (the
//! emulator stays in this process). Reports wall time, findings/s, vendor MB/s, per-stage times,
//! requests beside the minimum the API allows, peak RSS, one 100,000-result project on its own, and
//! the function binaries' sizes, each against its budget.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cxone_emulator::{
    Emulator, EmulatorConfig, Endpoint, ExpectedScan, ExpectedTotals, FaultSpec, ResultType,
    TenantShape,
};
use cxone_etm::cxone::VendorSettings;
use cxone_etm::pipeline::ConnectionConfig;
use cxone_etm::{ConnectorKind, Engine};
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
    /// Items at once (the state machine's MaxConcurrency default).
    #[arg(long, default_value_t = 10)]
    pub item_concurrency: usize,
    #[arg(long)]
    pub json: bool,
}

/// A run of `cxone-etm run` in its own process, with what the emulator saw of it.
struct ChildRun {
    summary: Value,
    wall: Duration,
    first_request_ms: Option<f64>,
    requests: u64,
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

/// Runs one connection in a child process and waits for its JSON summary.
async fn run_child(
    emulator: &Emulator,
    work: &Path,
    id: &str,
    kind: ConnectorKind,
    engines: Option<Vec<Engine>>,
    item_concurrency: usize,
) -> anyhow::Result<ChildRun> {
    let mut vendor =
        VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
    vendor.allow_insecure_local = true;
    let config = ConnectionConfig {
        item_concurrency,
        engines,
        ..ConnectionConfig::new(id, kind, vendor, &format!("env:{SECRET_VAR}"))
    };
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
    let started = SystemTime::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running cxone-etm run")?;
    let wall = started.elapsed().unwrap_or_default();
    if !output.status.success() {
        bail!(
            "the {id} run exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
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
    })
}

/// The fewest requests the API allows for this tenant: one token, project (or environment) pages,
/// last-scan batches, and per item the scan lookup (DAST), the result pages (at least one) and,
/// for SAST (severities before triage, on by default), the pages of the slim `sast-results` pull.
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
                    Some(pages(scan.results, RESULTS_PAGE) + pages(sast, RESULTS_PAGE))
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
                    Some(pages(scan.results, DAST_PAGE))
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
            results += pages(scan.results, RESULTS_PAGE);
            if p.main_branch_scan_by_engine.get(&ResultType::Sast) == Some(&scan.id) {
                let sast = scan.by_type.get(&ResultType::Sast).copied().unwrap_or(0);
                results += pages(sast, RESULTS_PAGE);
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
    let emulator = start_emulator(shape, args.latency_ms).await?;
    let expected = emulator.expected();
    let mut runs = Vec::new();
    let (mut findings, mut bytes, mut wall, mut requests, mut minimum) = (0u64, 0u64, 0.0, 0, 0);
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
        let run = run_child(&emulator, work, id, kind, None, args.item_concurrency).await?;
        let s = &run.summary;
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
        }));
    }
    // The same projects with every engine of their scans delivered: the same pulls, more
    // findings (kept out of the end-to-end figures, which stay comparable run to run).
    eprintln!("bench: bench-engines (sast, sca, kics, containers) ...");
    let every = run_child(
        &emulator,
        work,
        "bench-engines",
        ConnectorKind::Sast,
        Some(Engine::PROJECT_ENGINES.to_vec()),
        args.item_concurrency,
    )
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
    let one = run_child(&single, work, "bench-one", ConnectorKind::Sast, None, 1).await?;
    let one_rss = one.summary["peakRssBytes"].as_u64().unwrap_or(0);
    let one_ms = ms(&one.summary, "collect") + ms(&one.summary, "transform");

    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = binary_sizes(&workspace);
    let findings_per_second = findings as f64 / wall;
    let slowest_start = first_request.iter().copied().fold(0.0, f64::max);
    let mut budgets = vec![
        json!({"budget": "end to end >= 50,000 findings/s", "value": findings_per_second.round(), "met": findings_per_second >= 50_000.0}),
        json!({"budget": "vendor requests <= 1.05 x minimum", "value": format!("{requests} / {minimum}"), "met": requests as f64 <= 1.05 * minimum as f64}),
        json!({"budget": "every engine: vendor requests <= 1.05 x minimum, every finding", "value": format!("{} / {engines_min}", every.requests),
            "met": every.requests as f64 <= 1.05 * engines_min as f64 && by_engine.iter().all(|e| e["findings"] == e["emulatorHolds"])}),
        json!({"budget": "one 100,000-result project < 128 MiB peak RSS", "value": format!("{:.1} MiB", mib(one_rss as f64)), "met": one_rss < 128 * 1024 * 1024}),
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
        "endToEnd": {
            "findings": findings, "wallSeconds": wall, "findingsPerSecond": findings_per_second,
            "vendorMiBPerSecond": mib(bytes as f64) / wall, "requests": requests,
            "minimumRequests": minimum, "peakRssMiB": mib(peak_rss as f64),
        },
        "runs": runs,
        "everyEngine": engines,
        "singleProject": {
            "results": args.single_project_results,
            "findings": one.summary["findings"], "collectPlusTransformMs": one_ms,
            "peakRssMiB": mib(one_rss as f64), "vendorMiB": mib(one.summary["vendor"]["bytes"].as_f64().unwrap_or(0.0)),
        },
        "binaries": binaries.iter().map(|(n, s)| json!({"function": n, "bytes": s})).collect::<Vec<_>>(),
        "budgets": budgets,
    }))
}

fn print_table(report: &Value) {
    let e = &report["endToEnd"];
    println!(
        "end to end: {} findings in {:.1} s = {:.0} findings/s, vendor JSON {:.1} MiB/s, {} requests (minimum {}), peak RSS {:.1} MiB",
        e["findings"],
        e["wallSeconds"].as_f64().unwrap_or(0.0),
        e["findingsPerSecond"].as_f64().unwrap_or(0.0),
        e["vendorMiBPerSecond"].as_f64().unwrap_or(0.0),
        e["requests"],
        e["minimumRequests"],
        e["peakRssMiB"].as_f64().unwrap_or(0.0)
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
