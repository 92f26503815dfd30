//! `cxone-emulator`: serves a generated Checkmarx One tenant on loopback. Prints one JSON line
//! (where to connect and the test credentials) to stdout, then logs to stderr only.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use cxone_emulator::faults::parse_flag;
use cxone_emulator::{Emulator, EmulatorConfig, OffsetMode, ResultMix, ResultType, TenantShape};

#[derive(Parser, Debug)]
#[command(
    name = "cxone-emulator",
    version,
    about = "A Checkmarx One emulator: IAM, projects, scans, results and DAST over HTTP(S), with switchable faults",
    after_help = "FAULTS\n  --fault <endpoint|all>:<key=value,...>  (repeatable)\n  endpoints: token, projects, last-scan, branches, scans, results, sast-results, dast-environments, dast-scans, dast-results\n  keys: latency-ms=N jitter-ms=N 429=RATE retry-after=SECS|date:SECS|none 5xx=RATE status=5NN 403=RATE\n        reset=RATE truncate=RATE malformed=RATE untyped=RATE drift=N claim-total=N ignore-position=true move-first-to-end=true\n        replace-first=true ignore-filters=true ignore-sort=true past-end=400|404 list-main-branch=NAME retype=OLD:NEW shrink-to=N page-cap=N expire-tokens-after=SECS visible=N max=N match=TEXT\n  example: --fault 'results:429=0.2,retry-after=date:1,max=10' --fault 'all:latency-ms=20'\n  a server that caps result pages at 7: --fault 'results:page-cap=7' --fault 'sast-results:page-cap=7'\n\nCONTROL (on the API host)\n  GET /_emulator/stats            expected totals, requests per endpoint, peak in flight, faults fired\n  PUT /_emulator/faults/<ep|all>  JSON fault spec;  DELETE /_emulator/faults clears all\n  POST /_emulator/revoke-tokens   every issued access token answers 401 from now on\n  POST /_emulator/stats/reset     zero the request counters"
)]
struct Args {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the API host (0 = any free port).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// Port of the IAM host (0 = any free port).
    #[arg(long, default_value_t = 0)]
    iam_port: u16,
    /// Tenant (realm) name.
    #[arg(long, default_value = "acme")]
    tenant: String,
    /// Seed of the generated tenant: the same seed and sizes give the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    projects: u32,
    #[arg(long, default_value_t = 2)]
    branches_per_project: u32,
    #[arg(long, default_value_t = 3)]
    scans_per_project: u32,
    /// Results in every completed scan (all engine types together).
    #[arg(long, default_value_t = 100)]
    results_per_scan: u64,
    /// Per-project results per scan, cycled over the projects (overrides --results-per-scan), e.g. 0,1,4999,5000,5001.
    #[arg(long, value_delimiter = ',')]
    project_results: Vec<u64>,
    /// Percent of sast,kics,sca,containers results; must add up to 100.
    #[arg(long, value_parser = parse_mix, default_value = "60,15,20,5")]
    result_mix: ResultMix,
    /// Percent of a project's findings replaced from one scan to the next.
    #[arg(long, default_value_t = 5)]
    churn_percent: u32,
    #[arg(long, default_value_t = 3)]
    dast_environments: u32,
    #[arg(long, default_value_t = 2)]
    dast_scans_per_environment: u32,
    #[arg(long, default_value_t = 50)]
    dast_results_per_scan: u64,
    /// Per-environment DAST results per scan, cycled (overrides --dast-results-per-scan).
    #[arg(long, value_delimiter = ',')]
    environment_results: Vec<u64>,
    /// Ids that replace the generated ones of the first projects and environments, in order
    /// (repeat the flag), to try clients with hostile ids such as `a/b`, `..` or very long ones.
    #[arg(long = "hostile-id")]
    hostile_ids: Vec<String>,
    /// Percent of SAST findings that share their id with another finding of the scan.
    #[arg(long, default_value_t = 0)]
    repeated_result_ids_percent: u32,
    /// Every third project's KICS findings take numeric ids from its SAST findings' sequence, so
    /// that a KICS finding leaving a scan leaves its id to a SAST finding new in it.
    #[arg(long)]
    kics_ids_reused_by_sast: bool,
    /// The newest scan of every third project ran this engine alone (sast, kics, sca or containers).
    #[arg(long, value_parser = parse_engine)]
    rescan_engine: Option<ResultType>,
    /// Leave each scan's `engines` out of `last-scan` answers.
    #[arg(long)]
    last_scan_without_engines: bool,
    /// Tags added to the first project's record (100-character values): 3,000 make a record of
    /// about 400 KiB, larger than a Step Functions payload.
    #[arg(long, default_value_t = 0)]
    first_project_extra_tags: u32,
    /// Access token lifetime in seconds (the `expires_in` and `exp` the token endpoint gives).
    #[arg(long, default_value_t = 1800)]
    token_lifetime: u64,
    /// How /api/results reads `offset`: page (0-based page index, the default) or item (items to skip).
    #[arg(long, value_enum, default_value_t = OffsetMode::Page)]
    results_offset: OffsetMode,
    /// The `azp` claim of the issued API keys (the client id a key must be presented with).
    #[arg(long, default_value = "ast-app")]
    api_key_client_id: String,
    /// Serve HTTPS with a freshly generated certificate authority.
    #[arg(long)]
    tls: bool,
    /// With --tls: write the CA certificate (PEM) here for clients to trust.
    #[arg(long, requires = "tls")]
    tls_ca_out: Option<PathBuf>,
    /// A fault to inject from the start; see FAULTS below.
    #[arg(long = "fault", value_parser = parse_flag)]
    faults: Vec<(Vec<cxone_emulator::Endpoint>, cxone_emulator::FaultSpec)>,
}

fn parse_engine(text: &str) -> Result<ResultType, String> {
    ResultType::ALL
        .into_iter()
        .find(|t| t.as_str() == text)
        .ok_or_else(|| format!("'{text}' is not an engine; use sast, kics, sca or containers"))
}

fn parse_mix(text: &str) -> Result<ResultMix, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("'{p}' is not a whole percent"))
        })
        .collect::<Result<_, _>>()?;
    let [sast, kics, sca, containers] = parts[..] else {
        return Err(format!(
            "expected four percentages sast,kics,sca,containers, got {}",
            parts.len()
        ));
    };
    Ok(ResultMix {
        sast,
        kics,
        sca,
        containers,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = EmulatorConfig {
        host: args.host,
        api_port: args.api_port,
        iam_port: args.iam_port,
        tenant: args.tenant,
        shape: TenantShape {
            seed: args.seed,
            projects: args.projects,
            branches_per_project: args.branches_per_project,
            scans_per_project: args.scans_per_project,
            results_per_scan: args.results_per_scan,
            project_results: args.project_results,
            result_mix: args.result_mix,
            churn_percent: args.churn_percent,
            dast_environments: args.dast_environments,
            dast_scans_per_environment: args.dast_scans_per_environment,
            dast_results_per_scan: args.dast_results_per_scan,
            environment_results: args.environment_results,
            hostile_ids: args.hostile_ids,
            repeated_result_ids_percent: args.repeated_result_ids_percent,
            kics_ids_reused_by_sast: args.kics_ids_reused_by_sast,
            rescan_engine: args.rescan_engine,
            last_scan_without_engines: args.last_scan_without_engines,
            first_project_extra_tags: args.first_project_extra_tags,
        },
        token_lifetime_secs: args.token_lifetime,
        results_offset: args.results_offset,
        projects: Default::default(),
        api_key_client_id: args.api_key_client_id,
        tls: args.tls,
        faults: args
            .faults
            .into_iter()
            .flat_map(|(endpoints, spec)| endpoints.into_iter().map(move |e| (e, spec.clone())))
            .collect(),
    };
    let emulator = Emulator::start(config).await?;
    let mut line = emulator.startup_line();
    if let (Some(path), Some(pem)) = (&args.tls_ca_out, &emulator.ca_pem) {
        std::fs::write(path, pem)
            .with_context(|| format!("writing the CA certificate to {}", path.display()))?;
        line["ca_file"] = serde_json::json!(path.display().to_string());
    }
    println!("{line}");
    let expected = emulator.expected().totals;
    tracing::info!(
        api = %emulator.api_url,
        iam = %emulator.iam_url,
        projects = expected.projects,
        results = expected.results,
        dast_results = expected.dast_results,
        "emulator ready; stop with Ctrl-C"
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
