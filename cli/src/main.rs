//! `cxone-etm`: the connector's command line. Only wiring: each command calls the library.

mod bench;
mod runs;

use cxone_etm_cli::report;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cxone_etm::field_error::FieldError;
use cxone_etm::mapping::{
    AssetTypes, DEFAULT_SCORING, Scoring, TransformContext, TransformMap, TransformOptions,
    replay_dir,
};
use cxone_etm::pipeline::Schedule;
use cxone_etm::{ConnectorKind, Engine};

#[derive(Parser)]
#[command(
    name = "cxone-etm",
    version,
    about = "Checkmarx One → Qualys ETM connector tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The engine a transform map is for.
#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Sast,
    Sca,
    Kics,
    Containers,
    Dast,
}

impl From<Kind> for Engine {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Sast => Engine::Sast,
            Kind::Sca => Engine::Sca,
            Kind::Kics => Engine::Kics,
            Kind::Containers => Engine::Containers,
            Kind::Dast => Engine::Dast,
        }
    }
}

impl Kind {
    /// The connector a replay's lines say they come from.
    fn connector(self) -> ConnectorKind {
        match self {
            Kind::Sca => ConnectorKind::Sca,
            Kind::Dast => ConnectorKind::Dast,
            Kind::Sast | Kind::Kics | Kind::Containers => ConnectorKind::Sast,
        }
    }
}

#[derive(Subcommand)]
enum ConnectionAction {
    /// Validate a connection (config, map and scoring), run the five connection checks, and only
    /// when all pass store it as connections/<id>/config.json (exit 1, nothing stored, otherwise).
    /// On a deployed stack the store is s3://<BucketName>/; scheduled runs then use it unchanged.
    Put {
        /// A directory, or the deployed stack's bucket (s3://bucket/, its root: where the functions read).
        #[arg(long)]
        store: String,
        /// The connection config (JSON or YAML).
        #[arg(long)]
        config: PathBuf,
        /// A transform map (`export-map` gives the default to edit); replaces the config's map of
        /// the same engine, and keeps another engine's.
        #[arg(long)]
        map: Option<PathBuf>,
        /// A scoring table (`export-scoring` gives the default to edit); replaces the config's.
        #[arg(long)]
        scoring: Option<PathBuf>,
        /// Into a bucket: a copy of the certificates `vendor.ca_bundle` names (a path the
        /// functions read on AWS), to check the connection with from this machine.
        #[arg(long)]
        check_ca_bundle: Option<PathBuf>,
        /// One JSON document on stdout (`{"error": …}` if the command fails).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a SAST and a DAST connection end to end against the bundled emulator (no account needed).
    Demo {
        /// Where batches, manifests and commit markers go.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        projects: u32,
        #[arg(long, default_value_t = 500)]
        results_per_scan: u64,
        #[arg(long, default_value_t = 5)]
        dast_environments: u32,
        #[arg(long, default_value_t = 200)]
        dast_results_per_scan: u64,
        /// One JSON object on stdout: per connection, the emulator's totals and the committed
        /// totals; `{"error": …}` if the command fails.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Run a connection from its config file (exit 0: complete, 2: committed but partial, 1: failed).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// A directory or s3://bucket/prefix.
        #[arg(long, default_value = "out")]
        store: String,
        /// One JSON document on stdout (`{"error": …}` if the command fails).
        #[arg(long)]
        json: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Full SAST + DAST pull against the bundled emulator with each budget checked (exit 2 when
    /// one is not met); docs/performance.md holds the figures.
    Bench(bench::BenchArgs),
    /// A run's report as Markdown or a self-contained HTML page (counts by severity and lifecycle
    /// status, a chart, each item's outcome, rejected records, retries, slowest items).
    Report {
        /// The connection id.
        #[arg(value_parser = key_segment)]
        connection: String,
        /// The run id; the connection's last committed run when left out.
        #[arg(value_parser = key_segment)]
        run: Option<String>,
        /// A directory or s3://bucket/prefix.
        #[arg(long, default_value = "out")]
        store: String,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A connection's state (Registered, Scheduled, Processing, Processed complete or partial,
    /// Failed with the reason), its last and last committed runs, and its next scheduled run.
    Status {
        /// The connection id.
        #[arg(value_parser = key_segment)]
        connection: String,
        /// A directory or s3://bucket/prefix.
        #[arg(long, default_value = "out")]
        store: String,
        /// One JSON document on stdout (`{"error": …}` if the command fails).
        #[arg(long)]
        json: bool,
    },
    /// The schedule's days for `sam deploy --parameter-overrides`: from today (or --start) in the
    /// time zone, to five years on, by the product's own rules.
    ScheduleDates {
        /// The IANA time zone (the stack's ScheduleTimezone).
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// YYYY-MM-DD; today in the time zone when left out.
        #[arg(long)]
        start: Option<String>,
    },
    /// Create or change a connection where a deployed stack reads it.
    Connection {
        #[command(subcommand)]
        action: ConnectionAction,
    },
    /// The five connection checks for a connection config file.
    TestConnection {
        #[arg(long)]
        config: PathBuf,
        /// One JSON document on stdout (`{"error": …}` if the command fails).
        #[arg(long)]
        json: bool,
    },
    /// Print the default transform map of an engine (to edit and point a connection at).
    ExportMap {
        kind: Kind,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the default scoring table.
    ExportScoring {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a transform map or scoring file and print each error.
    Validate {
        #[arg(value_enum)]
        what: Validated,
        file: PathBuf,
    },
    /// Re-run the transform over stored raw pages (no vendor calls) with a map and scoring table.
    Transform {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Raw pages: one directory per item holding 0.json.zst, 1.json.zst, … (or .json.gz, as older runs wrote them) and the record, in collect.json (as a run writes it) or item.json
        #[arg(long)]
        raw: PathBuf,
        /// Where to write <item>/<page>.ndjson.gz, outside the store (a run's folder is refused);
        /// an earlier replay's pages of the same items are replaced.
        #[arg(long)]
        out: PathBuf,
        /// Transform map file (default: the kind's shipped map).
        #[arg(long)]
        map: Option<PathBuf>,
        /// Scoring file (default: the shipped table).
        #[arg(long)]
        scoring: Option<PathBuf>,
        #[arg(long, default_value = "replay", value_parser = key_segment)]
        connection_id: String,
        #[arg(long, default_value = "replay", value_parser = key_segment)]
        run_id: String,
        /// SAST asset types to emit.
        #[arg(long, value_delimiter = ',', default_values = ["generic-application", "code-repository"])]
        asset_types: Vec<AssetTypeArg>,
        #[arg(long, default_value_t = 1_000)]
        max_findings_per_line: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Markdown,
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum Validated {
    Map,
    Scoring,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AssetTypeArg {
    GenericApplication,
    CodeRepository,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_or_print(out: Option<PathBuf>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            match writeln!(std::io::stdout().lock(), "{text}") {
                // A reader that stopped early (`| head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing to stdout"),
            }
        }
    }
}

fn errors_to_exit(what: &str, errors: Vec<FieldError>) -> ExitCode {
    eprintln!("{what} has {} error(s):", errors.len());
    for error in errors {
        eprintln!("  - {}", error.in_document());
    }
    ExitCode::FAILURE
}

/// A connection or run id as the argument gives it, refused before it becomes a key.
fn key_segment(id: &str) -> Result<String, String> {
    cxone_etm::pipeline::check_key_segment(id).map(|()| id.to_string())
}

fn main() -> anyhow::Result<ExitCode> {
    cxone_etm::process::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    // A usage error exits 1 (failed), not clap's 2, which `run` says means committed but partial.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help into a closed pipe (`| head`) is no failure.
            let _ = error.print();
            return Ok(if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    let json = cli.command.reports_json();
    let outcome = execute(cli.command).await;
    if let (true, Err(error)) = (json, &outcome) {
        // A script reading `--json` from stdout gets one document on failure too; the message
        // also goes to stderr, as without `--json`.
        let document = serde_json::json!({ "error": format!("{error:#}") });
        // A reader gone (`| head`) loses it; the message is on stderr all the same.
        let _ = writeln!(std::io::stdout(), "{document}");
    }
    outcome
}

impl Command {
    /// Whether the command was asked for a JSON report on stdout.
    fn reports_json(&self) -> bool {
        match self {
            Command::Demo { json, .. }
            | Command::Run { json, .. }
            | Command::Status { json, .. }
            | Command::TestConnection { json, .. }
            | Command::Connection {
                action: ConnectionAction::Put { json, .. },
            } => *json,
            Command::Bench(args) => args.json,
            Command::Report { .. }
            | Command::ScheduleDates { .. }
            | Command::ExportMap { .. }
            | Command::ExportScoring { .. }
            | Command::Validate { .. }
            | Command::Transform { .. } => false,
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo {
            out,
            projects,
            results_per_scan,
            dast_environments,
            dast_results_per_scan,
            json,
            quiet,
        } => {
            let size = runs::DemoSize {
                projects,
                results_per_scan,
                dast_environments,
                dast_results_per_scan,
            };
            return runs::demo(&out, size, runs::Output { json, quiet }).await;
        }
        Command::Run {
            config,
            store,
            json,
            quiet,
        } => return runs::run(&config, &store, runs::Output { json, quiet }).await,
        Command::Bench(args) => return bench::bench(args).await,
        Command::Report {
            connection,
            run,
            store,
            format,
            out,
        } => {
            let (manifest, record) = runs::load_run(&store, &connection, run.as_deref()).await?;
            let text = match format {
                ReportFormat::Markdown => report::markdown(&manifest, &record),
                ReportFormat::Html => report::html(&manifest, &record),
            };
            write_or_print(out, &text)?;
        }
        Command::Status {
            connection,
            store,
            json,
        } => runs::status(&store, &connection, json).await?,
        Command::ScheduleDates { timezone, start } => {
            let zone = jiff::tz::TimeZone::get(&timezone).unwrap_or(jiff::tz::TimeZone::UTC);
            let today = jiff::Timestamp::now().to_zoned(zone).date().to_string();
            let schedule = Schedule {
                expression: "rate(1 day)".into(),
                timezone: timezone.clone(),
                start_date: start.unwrap_or(today),
                end_date: None,
            };
            match schedule.parse() {
                Ok(parsed) => println!(
                    "ScheduleTimezone={timezone} ScheduleStartDate={} ScheduleEndDate={}",
                    schedule.start_date,
                    parsed.end_date()
                ),
                Err(errors) => return Ok(errors_to_exit("the schedule", errors)),
            }
        }
        Command::Connection {
            action:
                ConnectionAction::Put {
                    store,
                    config,
                    map,
                    scoring,
                    check_ca_bundle,
                    json,
                },
        } => {
            let parts = runs::ConnectionParts {
                config,
                map,
                scoring,
                check_ca_bundle,
            };
            return runs::put_connection(&store, &parts, runs::Output { json, quiet: false }).await;
        }
        Command::TestConnection { config, json } => {
            return runs::check(&config, runs::Output { json, quiet: false }).await;
        }
        Command::ExportMap { kind, out } => {
            let map = TransformMap::default_for(kind.into());
            write_or_print(out, &serde_json::to_string_pretty(&map)?)?;
        }
        Command::ExportScoring { out } => write_or_print(out, DEFAULT_SCORING.trim_end())?,
        Command::Validate {
            what: Validated::Map,
            file,
        } => match TransformMap::parse(&read(&file)?) {
            Ok(plan) => println!(
                "{}: valid {} map '{}'",
                file.display(),
                plan.kind,
                plan.name
            ),
            Err(errors) => return Ok(errors_to_exit(&file.display().to_string(), errors)),
        },
        Command::Validate {
            what: Validated::Scoring,
            file,
        } => match Scoring::parse(&read(&file)?) {
            Ok(_) => println!("{}: valid scoring table", file.display()),
            Err(errors) => return Ok(errors_to_exit(&file.display().to_string(), errors)),
        },
        Command::Transform {
            kind,
            raw,
            out,
            map,
            scoring,
            connection_id,
            run_id,
            asset_types,
            max_findings_per_line,
        } => {
            let map_text = match &map {
                Some(path) => read(path)?,
                None => serde_json::to_string(&TransformMap::default_for(kind.into()))?,
            };
            let plan = match TransformMap::parse(&map_text) {
                Ok(plan) if plan.kind == Engine::from(kind) => plan,
                Ok(plan) => anyhow::bail!(
                    "the map is for {} results, not {}",
                    plan.kind,
                    Engine::from(kind)
                ),
                Err(errors) => return Ok(errors_to_exit("the map", errors)),
            };
            let scoring = match Scoring::parse(
                &scoring
                    .as_ref()
                    .map(read)
                    .transpose()?
                    .unwrap_or_else(|| DEFAULT_SCORING.to_string()),
            ) {
                Ok(scoring) => scoring,
                Err(errors) => return Ok(errors_to_exit("the scoring table", errors)),
            };
            let context = TransformContext {
                connection_id,
                run_id,
                connector_kind: kind.connector(),
                produced_at: cxone_etm::pipeline::now_rfc3339(),
            };
            let options = TransformOptions {
                asset_types: AssetTypes {
                    generic_application: asset_types.contains(&AssetTypeArg::GenericApplication),
                    code_repository: asset_types.contains(&AssetTypeArg::CodeRepository),
                },
                max_findings_per_line,
                ..TransformOptions::default()
            };
            let summary = replay_dir(&raw, &out, &plan, &scoring, &context, &options)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
