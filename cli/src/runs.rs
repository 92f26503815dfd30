//! `demo`, `run`, `status`, `connection put` and `test-connection`: the local runner over a directory or S3, with a progress
//! bar for people, `--json` for scripts, and exit codes that tell success, partial and failure apart.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cxone_emulator::{Emulator, EmulatorConfig, ResultType, TenantShape};
use cxone_etm::cxone::{CaBundleAt, ConnectionReport, VendorSettings, test_connection};
use cxone_etm::field_error::{Described, FieldError};
use cxone_etm::mapping::{DEFAULT_SCORING, TransformMap};
use cxone_etm::pipeline::{
    Connection, ConnectionConfig, Manifest, RunRecord, RunRef, RunState, RunSummary, Trigger,
    config_key, connection_status, record_registration, run_connection_until,
};
use cxone_etm::secret::{Credential, SecretSource};
use cxone_etm::store::{AnyStore, LocalStore, Location, ObjectStore};
use cxone_etm::{ConnectorKind, Engine};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

pub const EXIT_PARTIAL: u8 = 2;

pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

fn progress(output: &Output, label: &str) -> Arc<ProgressBar> {
    let bar = if output.json || output.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} items {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    Arc::new(bar)
}

/// Refuses connection `id` where the store holds a connection whose id differs from it only in
/// letter case: on a case-insensitive disk (macOS's and Windows's defaults) the two name one
/// folder, and one would write over the other's config and reconcile against its ledgers.
async fn refuse_a_case_twin(store: &impl ObjectStore, id: &str) -> anyhow::Result<()> {
    let stored = store.list_folders("connections/").await?;
    match stored
        .iter()
        .find(|other| *other != id && other.eq_ignore_ascii_case(id))
    {
        Some(other) => anyhow::bail!(
            "connection '{id}' differs from the stored connection '{other}' only in letter case: on a case-insensitive disk the two share one folder (one's config, runs and ledgers the other's); nothing stored: choose an id that differs in more than case"
        ),
        None => Ok(()),
    }
}

/// The first Ctrl-C (SIGINT) or SIGTERM the process gets, by name. The signals' default action
/// comes back then: a second one ends the process at once, should recording the stop take long
/// (a transform holding every thread finishes its item first).
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    let terminated = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => terminate.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    let name = tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => "Ctrl-C (SIGINT)",
        Some(()) = terminated => "SIGTERM",
        // Neither can be listened for: the run is not stopped this way.
        else => std::future::pending().await,
    };
    #[cfg(unix)]
    // SAFETY: `signal` with the default action takes no handler of ours, and only replaces the
    // one this process's runtime installed.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    name
}

/// Where a local run's config goes besides the run's own copy (`runs/<run>/config.json`).
enum StoredConfig {
    /// Into `connections/<id>/config.json`, for `status` (a directory store: the local runner's).
    Written,
    /// Nowhere: a bucket's stored config is the deployed functions', put only by `connection put`,
    /// which checks it as they would run it.
    LeftAlone,
}

/// What a local run into a bucket may set otherwise than the connection's deployed config: how it
/// reads its credential and paces itself, not what it delivers. (Of `vendor`, only the tenant
/// and the deployment count: [`delivery`].)
const LOCAL_MAY_DIFFER: [&str; 6] = [
    "secret",
    "name",
    "description",
    "schedule",
    "item_concurrency",
    "split_scans_above",
];

/// What a config delivers, as fields: of its vendor settings the tenant and the deployment
/// (region or API URL: another deployment's tenant of the same name is another tenant), its
/// engines as the kind's when it names none, each engine's map (`transform_maps`, the shipped
/// one where it has none of its own, wherever it holds it), and its scoring (the shipped table
/// where it has none), so that two configs that deliver alike compare alike.
fn delivery(
    config: &ConnectionConfig,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let serde_json::Value::Object(mut fields) = serde_json::to_value(config)? else {
        anyhow::bail!("a connection config did not serialize as an object");
    };
    let engines = (config.engines.clone()).unwrap_or_else(|| config.kind.default_engines());
    let maps: Vec<TransformMap> = engines.iter().map(|e| config.map_for(*e)).collect();
    let scoring = match &config.scoring {
        Some(scoring) => serde_json::to_value(scoring)?,
        None => serde_json::from_str(DEFAULT_SCORING)?,
    };
    fields.remove("transform_map");
    let vendor = &config.vendor;
    // The API's URL as the region or URL resolves, however written; as written where it does not.
    let deployment = match vendor.endpoints() {
        Ok(endpoints) => json!({"tenant": vendor.tenant.trim(), "api": endpoints.api.as_str()}),
        Err(_) => {
            json!({"tenant": vendor.tenant, "region": vendor.region, "custom_api_url": vendor.custom_api_url})
        }
    };
    fields.insert("vendor".into(), deployment);
    fields.insert("engines".into(), json!(engines));
    fields.insert("transform_maps".into(), serde_json::to_value(maps)?);
    fields.insert("scoring".into(), scoring);
    Ok(fields)
}

/// The fields, outside [`LOCAL_MAY_DIFFER`], in which `given` delivers otherwise than `stored`:
/// engines, maps, scoring, filters, branches, triage, and the rest of what a run delivers.
fn delivery_differences(
    given: &ConnectionConfig,
    stored: &ConnectionConfig,
) -> anyhow::Result<Vec<String>> {
    let (given, stored) = (delivery(given)?, delivery(stored)?);
    let fields: std::collections::BTreeSet<&String> = given.keys().chain(stored.keys()).collect();
    Ok(fields
        .into_iter()
        .filter(|field| !LOCAL_MAY_DIFFER.contains(&field.as_str()))
        .filter(|field| given.get(*field) != stored.get(*field))
        .cloned()
        .collect())
}

async fn run_one(
    store: &(impl ObjectStore + Clone + 'static),
    connection: &Connection,
    secret: SecretSource,
    output: &Output,
    stored: StoredConfig,
) -> anyhow::Result<RunSummary> {
    refuse_a_case_twin(store, &connection.config.id).await?;
    let key = config_key(&connection.config.id);
    match stored {
        StoredConfig::Written => store
            .put(&key, serde_json::to_vec_pretty(&connection.config)?.into())
            .await
            .context("writing the connection config")?,
        StoredConfig::LeftAlone => {
            // A stored config that cannot be read does not stop the run (the functions cannot run
            // it either); one that delivers otherwise does.
            let stored = store.get(&key).await;
            let stored_config = match &stored {
                Ok(Some(bytes)) => Some(
                    std::str::from_utf8(bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|text| {
                            ConnectionConfig::parse(text).map_err(|errors| errors.described("; "))
                        })
                        .map_err(|why| {
                            anyhow::anyhow!(
                                "the deployed config at {key} does not read here ({why}): whether this run's config delivers as it does cannot be told, and a run that delivers otherwise would become the base the scheduled runs reconcile against; nothing run: use a cxone-etm that reads it, or put this config with `cxone-etm connection put`"
                            )
                        })?,
                ),
                _ => None,
            };
            if let Some(stored_config) = &stored_config {
                let differing = delivery_differences(&connection.config, stored_config)?;
                if !differing.is_empty() {
                    anyhow::bail!(
                        "the config given delivers otherwise than the deployed one at {key} ({}): this run would become the base the scheduled runs reconcile against, and each run after would close and send again what the difference changes; nothing run: put it with `cxone-etm connection put` first, or give the deployed config, changed only in {}",
                        differing.join(", "),
                        LOCAL_MAY_DIFFER.join(", ")
                    );
                }
            }
            let given = serde_json::to_value(&connection.config)?;
            let said = match stored {
                Ok(Some(stored))
                    if serde_json::from_slice::<serde_json::Value>(&stored).ok() == Some(given) =>
                {
                    None
                }
                Ok(Some(_)) => Some(format!(
                    "{key} is left as it is: this run uses the config given, and the deployed functions the one stored there, which `cxone-etm connection put` replaces (after checking it as they would run it)"
                )),
                Ok(None) => Some(format!(
                    "no config is stored at {key}, and this run stores none there (it keeps its own copy with the run): `cxone-etm connection put` stores one, after checking it as the deployed functions would run it, and `status` reads it"
                )),
                Err(error) => Some(format!(
                    "{key} could not be read ({error}); it is left as it is"
                )),
            };
            // To stderr, so a `--json` report on stdout stays one document.
            if let Some(said) = said.filter(|_| !output.quiet) {
                eprintln!("{said}");
            }
        }
    }
    let bar = progress(output, &connection.config.id);
    let (planned, done) = (bar.clone(), bar.clone());
    let summary = run_connection_until(
        store,
        connection,
        secret,
        Trigger::Local,
        &move |n| planned.set_length(n),
        &move |_| done.inc(1),
        stop_signal(),
    )
    .await;
    bar.finish_and_clear();
    Ok(summary?)
}

fn print_summary(summary: &RunSummary, expected: Option<&[(Engine, u64)]>) {
    println!(
        "connection {}  run {}",
        summary.connection_id, summary.run_id
    );
    println!(
        "  items        {} {:?}",
        summary.items, summary.items_by_status
    );
    println!("  records in   {}", summary.records_in);
    let by_severity: Vec<String> = summary
        .findings_by_severity
        .iter()
        .map(|(severity, n)| format!("{} {n}", severity.as_str()))
        .collect();
    println!(
        "  findings     {} ({}; {} of them fixed)",
        summary.findings,
        by_severity.join(", "),
        summary.fixed
    );
    println!("  rejected     {}", summary.rejected);
    println!("  skipped      {}", summary.skipped);
    println!("  batches      {}", summary.batches);
    for (engine, done) in &summary.by_engine {
        let holds = expected.and_then(|e| e.iter().find(|(x, _)| x == engine).map(|(_, n)| *n));
        match holds {
            Some(n) => println!(
                "  {:<12} {} findings, {} rejected; the emulator holds {n} (latest completed main-branch scans)",
                engine.as_str(),
                done.findings,
                done.rejected,
            ),
            None => println!(
                "  {:<12} {} findings, {} rejected",
                engine.as_str(),
                done.findings,
                done.rejected
            ),
        }
    }
    println!("  duration     {:.1}s", summary.duration_ms as f64 / 1000.0);
    println!("  manifest     {}", summary.manifest);
    println!(
        "  {}",
        if summary.complete {
            "complete: committed".to_string()
        } else {
            format!("PARTIAL: {}", summary.problems.join("; "))
        }
    );
}

pub struct DemoSize {
    pub projects: u32,
    pub results_per_scan: u64,
    pub dast_environments: u32,
    pub dast_results_per_scan: u64,
}

/// Starts the bundled emulator and runs a SAST (API key) and a DAST (OAuth client) connection.
pub async fn demo(out: &Path, size: DemoSize, output: Output) -> anyhow::Result<ExitCode> {
    let shown = out.to_string_lossy();
    anyhow::ensure!(
        matches!(Location::parse(&shown), Ok(Location::Folder(_))),
        "--out {shown} is not a folder: the demo writes into a local folder (it runs against the bundled emulator, not a deployed stack); give one, e.g. --out out"
    );
    let shape = TenantShape {
        projects: size.projects,
        results_per_scan: size.results_per_scan,
        dast_environments: size.dast_environments,
        dast_results_per_scan: size.dast_results_per_scan,
        ..TenantShape::default()
    };
    let emulator = Emulator::start(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await?;
    let expected = emulator.expected().totals;
    let store = LocalStore::new(out);
    let mut reports = Vec::new();
    let mut all_complete = true;
    // The project connection delivers every engine of a scan; the emulator holds each one's
    // results in the latest completed main-branch scan that ran it.
    let project_engines: Vec<(Engine, u64)> = Engine::PROJECT_ENGINES
        .into_iter()
        .map(|engine| {
            let holds = ResultType::ALL
                .into_iter()
                .find(|t| t.as_str() == engine.as_str())
                .and_then(|t| expected.by_engine.get(&t).copied())
                .unwrap_or(0);
            (engine, holds)
        })
        .collect();
    for kind in [ConnectorKind::Sast, ConnectorKind::Dast] {
        let (id, credential, holds) = match kind {
            ConnectorKind::Sast | ConnectorKind::Sca => (
                "demo-sast",
                Credential::ApiKey(emulator.credentials.api_key.clone().into()),
                project_engines.clone(),
            ),
            ConnectorKind::Dast => (
                "demo-dast",
                Credential::OAuthClient {
                    client_id: emulator.credentials.client_id.clone(),
                    client_secret: emulator.credentials.client_secret.clone().into(),
                },
                vec![(Engine::Dast, expected.dast_results)],
            ),
        };
        let mut vendor =
            VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
        vendor.allow_insecure_local = true;
        let config = ConnectionConfig {
            name: format!("Demo {kind:?} connection (bundled emulator)"),
            description: Some("cxone-etm demo".into()),
            engines: Some(holds.iter().map(|(engine, _)| *engine).collect()),
            // The demo hands the emulator's test credential over in process; nothing is stored.
            ..ConnectionConfig::new(id, kind, vendor, "env:CXONE_ETM_DEMO_CREDENTIAL")
        };
        let connection = config
            .validate()
            .map_err(|errors| anyhow::anyhow!(errors.described("\n")))?;
        let summary = run_one(
            &store,
            &connection,
            SecretSource::provided(credential),
            &output,
            StoredConfig::Written,
        )
        .await?;
        let engines: Vec<serde_json::Value> = holds
            .iter()
            .map(|(engine, holds)| {
                let done = summary.by_engine.get(engine).cloned().unwrap_or_default();
                json!({"engine": engine, "emulatorHolds": holds, "committed": done.findings + done.rejected})
            })
            .collect();
        let all_committed = engines.iter().all(|e| e["committed"] == e["emulatorHolds"]);
        all_complete &= summary.complete && all_committed;
        if !output.json && !output.quiet {
            print_summary(&summary, Some(&holds));
        }
        reports.push(json!({"kind": kind, "engines": engines, "summary": summary}));
    }
    if output.json {
        println!(
            "{}",
            json!({"out": out.display().to_string(), "connections": reports})
        );
    } else if !output.quiet {
        println!(
            "batches, manifests and commit markers are under {}",
            out.display()
        );
    }
    Ok(if all_complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn load(config: &Path) -> anyhow::Result<Connection> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    ConnectionConfig::load(&text).map_err(|errors| {
        anyhow::anyhow!(
            "{} is not a valid connection:\n  - {}",
            config.display(),
            errors.described("\n  - ")
        )
    })
}

/// Runs a connection from its config file into a directory or `s3://bucket/prefix`.
pub async fn run(config: &Path, store: &str, output: Output) -> anyhow::Result<ExitCode> {
    let connection = load(config)?;
    let stored = if store.starts_with("s3://") {
        StoredConfig::LeftAlone
    } else {
        StoredConfig::Written
    };
    let store = AnyStore::open(store).await?;
    let secret = SecretSource::new(connection.secret.clone()).await;
    let summary = run_one(&store, &connection, secret, &output, stored).await?;
    if output.json {
        let mut report = serde_json::to_value(&summary)?;
        report["peakRssBytes"] = json!(peak_rss_bytes());
        report["cpuSeconds"] = json!(cpu_seconds());
        println!("{}", serde_json::to_string(&report)?);
    } else if !output.quiet {
        print_summary(&summary, None);
    }
    Ok(if summary.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

/// The five checks of a connection, always as a report: a credential that cannot be read fails
/// the credential check rather than ending the command.
async fn check_connection(connection: &Connection) -> ConnectionReport {
    let credential = SecretSource::new(connection.secret.clone())
        .await
        .credential()
        .await
        .map_err(|e| e.to_string());
    test_connection(&connection.vendor, credential, connection.run_calls()).await
}

/// The five checks of the spec for a connection file.
pub async fn check(config: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let connection = load(config)?;
    let report = check_connection(&connection).await;
    if output.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A connection's files: the config and, optionally, a map and a scoring table to fold into it.
pub struct ConnectionParts {
    pub config: std::path::PathBuf,
    pub map: Option<std::path::PathBuf>,
    pub scoring: Option<std::path::PathBuf>,
    /// A copy of the certificates the config's `vendor.ca_bundle` names, to check the connection
    /// with from this machine: the functions read that path on AWS (their package or a layer).
    pub check_ca_bundle: Option<std::path::PathBuf>,
}

fn part<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a {what}: field `{}`: {}",
            path.display(),
            e.path(),
            e.inner()
        )
    })
}

/// `connection put`: validates the connection with its map and scoring, runs the five checks and
/// stores it only when every check passed, so a deployed stack never runs a connection that
/// cannot work.
pub async fn put_connection(
    store: &str,
    parts: &ConnectionParts,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let path = &parts.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let invalid = |errors: Vec<FieldError>| {
        anyhow::anyhow!(
            "{} is not a valid connection; nothing stored:\n  - {}",
            path.display(),
            errors.described("\n  - ")
        )
    };
    let mut config = ConnectionConfig::parse(&text).map_err(invalid)?;
    if let Some(map) = &parts.map {
        config.put_map(part(map, "transform map")?);
    }
    if let Some(scoring) = &parts.scoring {
        config.scoring = Some(part(scoring, "scoring table")?);
    }
    // A config in S3 is the deployed functions': what they refuse is not stored.
    let location = Location::parse(store)?;
    let into_bucket = matches!(location, Location::Bucket { .. });
    // The deployed functions read their connections at the bucket's root, where their grants are.
    if let Location::Bucket { bucket, prefix } = location
        && !prefix.trim_matches('/').is_empty()
    {
        anyhow::bail!(
            "{store} names a folder ({prefix}) in the bucket, but the deployed functions read connections at its root; nothing stored. Give s3://{bucket}/"
        );
    }
    let refused = match into_bucket {
        true => cxone_etm::lambda::refused_on_aws(&config),
        false => Vec::new(),
    };
    if !refused.is_empty() {
        return Err(invalid(refused));
    }
    let ca_at = ca_bundle_to_check_with(&config, parts, into_bucket)?;
    let connection = config.validate_with(ca_at).map_err(invalid)?;
    let store = AnyStore::open(store).await?;
    refuse_a_case_twin(&store, &connection.config.id).await?;
    let report = check_connection(&connection).await;
    let key = config_key(&connection.config.id);
    if report.passed {
        store
            .put(&key, serde_json::to_vec_pretty(&connection.config)?.into())
            .await
            .with_context(|| format!("storing {key}"))?;
        record_registration(&store, &connection.config.id, connection.schedule.is_some())
            .await
            .with_context(|| {
                format!("stored {key}, but recording the connection's state failed; put it again to record it")
            })?;
        let id = &connection.config.id;
        if into_bucket && connection.schedule.is_some() && !["sast", "dast"].contains(&id.as_str())
        {
            eprintln!(
                "note: on AWS a config's schedule sets no timer: the stack's two schedules run only the connections named `sast` and `dast`; start `{id}` through the API"
            );
        }
    }
    if output.json {
        println!(
            "{}",
            json!({"stored": report.passed, "key": key, "checks": report})
        );
    } else {
        print!("{}", report.to_table());
        if report.passed {
            println!("stored {key}");
        } else {
            eprintln!("a connection check failed; nothing stored");
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where `connection put` reads the CA bundle to check the connection with. The functions read
/// the config's `vendor.ca_bundle` on AWS, from their package or a layer (`/opt/…`), which this
/// machine may not have: `--check-ca-bundle` names a copy here.
fn ca_bundle_to_check_with<'a>(
    config: &ConnectionConfig,
    parts: &'a ConnectionParts,
    into_bucket: bool,
) -> anyhow::Result<CaBundleAt<'a>> {
    let named = config.vendor.ca_bundle.as_deref();
    match (parts.check_ca_bundle.as_deref(), named) {
        (Some(_), _) if !into_bucket => anyhow::bail!(
            "--check-ca-bundle is for a connection stored into a bucket (s3://…), which runs on AWS; a run on this machine reads vendor.ca_bundle itself, so point that at the file"
        ),
        (Some(_), None) => anyhow::bail!(
            "--check-ca-bundle is given, but {} names no vendor.ca_bundle: add the path the functions read it from (their package's /var/task/… or a layer's /opt/…), or leave the option out",
            parts.config.display()
        ),
        (Some(copy), Some(_)) => Ok(CaBundleAt::Here(copy)),
        (None, Some(named)) if into_bucket && !named.exists() => anyhow::bail!(
            "vendor.ca_bundle names {}, which the functions read on AWS and this machine does not have; nothing stored. To check the connection from here before storing it, give a copy of the same certificates with --check-ca-bundle <file>",
            named.display()
        ),
        (None, _) => Ok(CaBundleAt::Named),
    }
}

/// `status`: the connection's state and next scheduled run, from its stored config and state.
pub async fn status(store: &str, connection_id: &str, json: bool) -> anyhow::Result<()> {
    let store = AnyStore::open(store).await?;
    let key = config_key(connection_id);
    let text = store.get(&key).await?.with_context(|| {
        format!("connection {connection_id} is not stored here ({key} is missing); store it with `cxone-etm connection put` (or, in a directory, run it with `cxone-etm run`)")
    })?;
    // Its CA bundle is not read: nothing here calls the vendor, and a stored config's bundle is
    // a path on AWS.
    let connection = ConnectionConfig::parse(&String::from_utf8_lossy(&text))
        .and_then(|config| config.validate_with(CaBundleAt::Unread))
        .map_err(|errors| {
            anyhow::anyhow!(
                "{key} is not a valid connection:\n  - {}",
                errors.described("\n  - ")
            )
        })?;
    let stored = &connection.config.id;
    // On a case-insensitive disk, `CX-SAST` finds `cx-sast`'s files (the same config under the
    // other's key): the connection meant, whose config must not be deleted.
    let case_twin = stored != connection_id
        && stored.eq_ignore_ascii_case(connection_id)
        && store.get(&config_key(stored)).await?.as_ref() == Some(&text);
    anyhow::ensure!(
        !case_twin,
        "there is no connection '{connection_id}'; did you mean '{stored}'? (the ids differ in letter case, which this store does not tell apart)"
    );
    anyhow::ensure!(
        stored == connection_id,
        "{key} holds connection '{stored}', not '{connection_id}': delete it, or put a config whose id is '{connection_id}'"
    );
    let status = connection_status(&store, &connection, jiff::Timestamp::now()).await?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{}", status.to_text());
    }
    Ok(())
}

/// This process's peak resident set (VmHWM), where the system reports it (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this process has used, user and system, over all its threads (Linux).
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren);
    // utime and stime are the 14th and 15th fields, in clock ticks of 1/100 s on Linux.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A run's manifest and record: `run` (committed, or failed and saying why), or the connection's
/// last committed run (as its commit markers say, not only its state: a run cut off between its
/// marker and the state is the last committed one).
pub async fn load_run(
    store: &str,
    connection: &str,
    run: Option<&str>,
) -> anyhow::Result<(Manifest, RunRecord)> {
    let store = AnyStore::open(store).await?;
    let run_id = match run {
        Some(run) => run.to_string(),
        None => cxone_etm::pipeline::last_committed_run(&store, connection)
            .await?
            .with_context(|| {
                format!("connection {connection} has no committed run in this store")
            })?,
    };
    let run = RunRef {
        connection_id: connection.to_string(),
        run_id,
    };
    let record: RunRecord = match store.get(&run.run_record()).await? {
        Some(body) => serde_json::from_slice(&body)
            .with_context(|| format!("reading {}", run.run_record()))?,
        None => anyhow::bail!(
            "connection {connection} has no run {} in this store ({} is missing); run ids look like 20261122T204900Z-1a2b3c, and `cxone-etm status {connection}` names the last",
            run.run_id,
            run.run_record()
        ),
    };
    let Some(manifest) = store.get(&run.manifest()).await? else {
        anyhow::bail!(
            "run {} of connection {connection} has no manifest ({}): {}",
            run.run_id,
            run.manifest(),
            match (&record.state, &record.reason) {
                (RunState::Failed, Some(reason)) =>
                    format!("it failed and committed nothing: {reason}"),
                (RunState::Failed, None) => "it failed and committed nothing".to_string(),
                _ => "it has not reached its finalize (or is under way)".to_string(),
            }
        );
    };
    let manifest =
        serde_json::from_slice(&manifest).with_context(|| format!("reading {}", run.manifest()))?;
    // A manifest without its marker is a finalize's that did not finish (or is under way):
    // nothing of it counts, unless the run failed and says why.
    if record.state != RunState::Failed && store.get(&run.commit_marker()).await?.is_none() {
        anyhow::bail!(
            "run {} of connection {connection} is not committed: {} is missing (its finalize did not finish, or is under way), so its manifest counts for nothing; report the last committed run, or wait for this one",
            run.run_id,
            run.commit_marker()
        );
    }
    Ok((manifest, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ConnectionConfig {
        let vendor = serde_json::from_value(json!({"region": "EU", "tenant": "acme"})).unwrap();
        ConnectionConfig::new("sast", ConnectorKind::Sast, vendor, "env:CX_KEY")
    }

    fn renamed(mut map: TransformMap) -> TransformMap {
        map.name = "ours".into();
        map
    }

    /// Configs that deliver alike are not told apart however they say it; each field that
    /// changes what a run delivers is named.
    #[test]
    fn configs_differ_only_in_what_they_deliver() {
        let differ = |given: &ConnectionConfig, stored: &ConnectionConfig| {
            delivery_differences(given, stored).unwrap()
        };
        let stored = config();
        let shipped = TransformMap::default_for(Engine::Sast);
        let mut alike = config();
        alike.engines = Some(vec![Engine::Sast]);
        alike.transform_map = Some(shipped.clone());
        alike.scoring = Some(serde_json::from_str(DEFAULT_SCORING).unwrap());
        alike.secret = "arn:aws:secretsmanager:eu-west-1:1:secret:x-AbCdEf".into();
        alike.vendor.concurrency = 2;
        alike.split_scans_above = 0;
        alike.item_concurrency = 1;
        assert_eq!(differ(&alike, &stored), Vec::<String>::new());
        // One custom map, wherever the config holds it.
        let (mut here, mut there) = (config(), config());
        here.transform_map = Some(renamed(shipped.clone()));
        there.transform_maps = vec![renamed(shipped)];
        assert_eq!(differ(&here, &there), Vec::<String>::new());
        assert_eq!(differ(&here, &stored), ["transform_maps"]);
        let mut more = config();
        more.engines = Some(vec![Engine::Sast, Engine::Sca]);
        assert_eq!(differ(&more, &stored), ["engines", "transform_maps"]);
        let mut elsewhere = config();
        elsewhere.vendor.region = None;
        elsewhere.vendor.custom_api_url = Some("https://cx.other.example".into());
        assert_eq!(differ(&elsewhere, &stored), ["vendor"]);
        // One region, however written.
        for written in ["eu", "https://eu.ast.checkmarx.net/", " EU "] {
            let mut same = config();
            same.vendor.region = Some(written.into());
            assert_eq!(differ(&same, &stored), Vec::<String>::new(), "{written}");
        }
        let mut filtered = config();
        filtered.close_deleted_items = true;
        filtered.original_severity = false;
        assert_eq!(
            differ(&filtered, &stored),
            ["close_deleted_items", "original_severity"]
        );
    }
}
