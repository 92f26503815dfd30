//! The connection test of the spec: five checks in order (network reachability, TLS handshake,
//! credential, authorization scope, data fetch); all must pass. Each reports pass / fail /
//! skipped, its duration, and on failure the cause and the fix in plain words.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use url::Url;

use super::client::CxOneClient;
use super::config::VendorConfig;
use super::error::VendorError;
use super::paging::LastScanQuery;
use super::transport::resolve_allowed;
pub use crate::ConnectorKind;
use crate::secret::Credential;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckOutcome {
    pub name: &'static str,
    pub status: CheckStatus,
    pub duration_ms: u64,
    /// What was checked and seen, or the cause of the failure.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionReport {
    pub kind: ConnectorKind,
    pub passed: bool,
    pub checks: Vec<CheckOutcome>,
}

const CHECKS: [&str; 5] = [
    "Network reachability",
    "TLS handshake",
    "Credential check",
    "Authorization scope",
    "Data fetch",
];

type Step = Result<(CheckStatus, String), (String, String)>;

/// What a connection's runs call beyond the basics, so the scope check probes exactly the
/// endpoints a run will need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCalls {
    pub kind: ConnectorKind,
    /// Projects: the engines the connection delivers (their latest scans are what it reads).
    pub engines: Vec<crate::Engine>,
    /// SAST: `/api/sast-results`, the severities before triage (`original_severity`).
    pub severities_before_triage: bool,
    /// SAST: `/api/projects/branches` (the `each_branch` policy).
    pub branches: bool,
}

impl RunCalls {
    /// The calls of a connection of `kind` with the default settings.
    pub fn defaults(kind: ConnectorKind) -> Self {
        Self {
            kind,
            engines: kind.default_engines(),
            severities_before_triage: kind == ConnectorKind::Sast,
            branches: false,
        }
    }
}

/// Runs the five checks in order; after a failure the rest are skipped. Always a report: a
/// credential that cannot be read or used (a key issued for another tenant or region) fails the
/// credential check, after the network and TLS checks have run.
pub async fn test_connection(
    config: &VendorConfig,
    credential: Result<Credential, String>,
    calls: RunCalls,
) -> ConnectionReport {
    run_checks(config, credential, calls, None).await
}

/// [`test_connection`] within `limit`: the check still running when it is spent fails, naming
/// the limit, and the rest are skipped. For a caller that ends the request sooner than a slow
/// tenant's retries would (API Gateway: 30 s).
pub async fn test_connection_within(
    config: &VendorConfig,
    credential: Result<Credential, String>,
    calls: RunCalls,
    limit: Duration,
) -> ConnectionReport {
    test_connection_until(
        config,
        credential,
        calls,
        tokio::time::Instant::now(),
        limit,
    )
    .await
}

/// [`test_connection_within`] of a test that began at `started` (the credential read before it
/// counts in its `limit`).
pub async fn test_connection_until(
    config: &VendorConfig,
    credential: Result<Credential, String>,
    calls: RunCalls,
    started: tokio::time::Instant,
    limit: Duration,
) -> ConnectionReport {
    run_checks(config, credential, calls, Some((started + limit, limit))).await
}

/// A check's step, failed if it has not answered by the deadline.
async fn within<T>(
    deadline: Option<(tokio::time::Instant, Duration)>,
    step: impl Future<Output = Result<T, (String, String)>>,
) -> Result<T, (String, String)> {
    let Some((at, limit)) = deadline else {
        return step.await;
    };
    tokio::time::timeout_at(at, step).await.unwrap_or_else(|_| {
        Err((
            format!(
                "no answer within the {} s this test may take",
                limit.as_secs()
            ),
            "the tenant answers slowly or not at all from here (its retries wait for it); try \
             again, or run `cxone-etm test-connection` with the connection's config, which waits \
             as long as a run does"
                .into(),
        ))
    })
}

async fn run_checks(
    config: &VendorConfig,
    credential: Result<Credential, String>,
    calls: RunCalls,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> ConnectionReport {
    let mut checks = Vec::new();
    let mut failed = false;
    let mut client: Option<CxOneClient> = None;
    for (index, name) in CHECKS.into_iter().enumerate() {
        if failed {
            checks.push(CheckOutcome {
                name,
                status: CheckStatus::Skipped,
                duration_ms: 0,
                detail: "an earlier check failed".into(),
                fix: None,
            });
            continue;
        }
        let started = Instant::now();
        let step = match (index, &client) {
            (0, _) => within(deadline, network(config)).await,
            (1, _) => within(deadline, tls(config)).await,
            (2, _) => match within(deadline, signed_in(config, &credential)).await {
                Ok((signed_in, detail)) => {
                    client = Some(signed_in);
                    Ok((CheckStatus::Pass, detail))
                }
                Err(failure) => Err(failure),
            },
            (3, Some(client)) => within(deadline, scope(client, calls.clone())).await,
            (_, Some(client)) => within(deadline, data(client, &calls)).await,
            (_, None) => unreachable!("the credential check passed and kept its client"),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        checks.push(match step {
            Ok((status, detail)) => CheckOutcome {
                name,
                status,
                duration_ms,
                detail,
                fix: None,
            },
            Err((cause, fix)) => {
                failed = true;
                CheckOutcome {
                    name,
                    status: CheckStatus::Fail,
                    duration_ms,
                    detail: cause,
                    fix: Some(fix),
                }
            }
        });
    }
    ConnectionReport {
        kind: calls.kind,
        passed: !failed,
        checks,
    }
}

fn hosts(config: &VendorConfig) -> [&Url; 2] {
    [&config.endpoints.iam, &config.endpoints.api]
}

fn host_port(url: &Url) -> (String, u16) {
    (
        url.host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        url.port_or_known_default().unwrap_or(443),
    )
}

async fn network(config: &VendorConfig) -> Step {
    let mut seen = Vec::new();
    for url in hosts(config) {
        let (host, port) = host_port(url);
        let fix = || {
            format!(
                "check the region (for example https://deu.ast.checkmarx.net for DEU) and that outbound HTTPS to {host}:{port} is allowed from here"
            )
        };
        // The resolver's message names the host already.
        let addresses = resolve_allowed(&host, port, config.policy)
            .await
            .map_err(|e| (e, fix()))?;
        let connect = tokio::time::timeout(
            config.connect_timeout,
            tokio::net::TcpStream::connect(&addresses[..]),
        );
        match connect.await {
            Ok(Ok(_)) => seen.push(format!("{host}:{port}")),
            Ok(Err(e)) => return Err((format!("cannot connect to {host}:{port}: {e}"), fix())),
            Err(_) => {
                return Err((
                    format!(
                        "no answer from {host}:{port} within {:?}",
                        config.connect_timeout
                    ),
                    fix(),
                ));
            }
        }
    }
    Ok((CheckStatus::Pass, format!("reached {}", seen.join(" and "))))
}

async fn tls(config: &VendorConfig) -> Step {
    if hosts(config).iter().all(|u| u.scheme() == "http") {
        return Ok((
            CheckStatus::Skipped,
            "plain HTTP to a local emulator (allow_insecure_local)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra: Vec<CertificateDer<'static>> = config
        .ca_pem
        .as_deref()
        .map(|pem| {
            CertificateDer::pem_slice_iter(pem)
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default();
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).map_err(
            |e| {
                (
                    format!("cannot load trusted certificates: {e}"),
                    "check ca_bundle".to_string(),
                )
            },
        )?;
    let tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (e.to_string(), "report this as a bug".to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let mut seen = Vec::new();
    for url in hosts(config) {
        let (host, port) = host_port(url);
        let fix = || {
            "if a proxy or a private CA sits in front of Checkmarx One, add its CA certificate with ca_bundle; otherwise check the region URL".to_string()
        };
        let addresses = resolve_allowed(&host, port, config.policy)
            .await
            .map_err(|e| (e, fix()))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| (format!("{host} is not a valid TLS server name: {e}"), fix()))?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(&addresses[..]).await?;
            connector.connect(name, tcp).await
        };
        match tokio::time::timeout(config.connect_timeout, handshake).await {
            Ok(Ok(stream)) => {
                let version = stream
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                seen.push(format!("{host} ({version})"));
            }
            Ok(Err(e)) => return Err((format!("TLS handshake with {host} failed: {e}"), fix())),
            Err(_) => return Err((format!("TLS handshake with {host} timed out"), fix())),
        }
    }
    Ok((
        CheckStatus::Pass,
        format!("verified certificates of {}", seen.join(" and ")),
    ))
}

fn vendor_failure(error: VendorError) -> (String, String) {
    match error {
        VendorError::Auth(auth) => (auth.to_string(), auth.fix().to_string()),
        other => (
            other.to_string(),
            "check the region and network, then retry".to_string(),
        ),
    }
}

/// The credential check: the secret is read, the client built with it (an API key names the
/// tenant and region it was issued for), and an access token asked for.
async fn signed_in(
    config: &VendorConfig,
    credential: &Result<Credential, String>,
) -> Result<(CxOneClient, String), (String, String)> {
    let credential = credential.as_ref().map_err(|problem| {
        (
            problem.clone(),
            "store the credential where the connection's `secret` points: {\"api_key\": \"…\"} or {\"client_id\": \"…\", \"client_secret\": \"…\"}; if it is there, see that whoever runs the test can read it (the function's role, Secrets Manager reachable from it and not throttling) and try again".to_string(),
        )
    })?;
    let client = CxOneClient::new(config.clone(), credential).map_err(vendor_failure)?;
    client.authenticate().await.map_err(vendor_failure)?;
    let detail = format!(
        "the token endpoint of tenant '{}' issued an access token",
        config.tenant
    );
    Ok((client, detail))
}

/// The scope check: each endpoint a run of this connection calls, called once. Every refusal is
/// listed with the role that call needs, not only the first.
async fn scope(client: &CxOneClient, calls: RunCalls) -> Step {
    let mut probe = Probe {
        client,
        read: Vec::new(),
        refused: Vec::new(),
    };
    match calls.kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            let projects = probe
                .call("projects", "/api/projects", &[("limit", "1".into())])
                .await?;
            if let Some(project) = projects.and_then(|p| first_id(&p, "projects", "id")) {
                let last_scan = LastScanQuery::completed(calls.engines.first().copied());
                let scan = probe
                    .call(
                        "last-scan",
                        "/api/projects/last-scan",
                        &[
                            ("project-ids", project.clone()),
                            ("scan-status", "Completed".into()),
                            ("engine", last_scan.engine.clone().unwrap_or_default()),
                            ("limit", "1".into()),
                        ],
                    )
                    .await?
                    .and_then(|answer| answer[&project]["id"].as_str().map(str::to_string));
                if calls.branches {
                    probe
                        .call(
                            "branches",
                            "/api/projects/branches",
                            &[("project-id", project.clone()), ("limit", "1".into())],
                        )
                        .await?;
                }
                if let Some(scan) = scan {
                    probe
                        .call(
                            "results",
                            "/api/results",
                            &[("scan-id", scan.clone()), ("limit", "1".into())],
                        )
                        .await?;
                    if calls.severities_before_triage {
                        probe
                            .call(
                                "sast-results",
                                "/api/sast-results",
                                &[
                                    ("scan-id", scan),
                                    ("apply-predicates", "false".into()),
                                    ("include-nodes", "false".into()),
                                    ("limit", "1".into()),
                                ],
                            )
                            .await?;
                    }
                }
            }
        }
        ConnectorKind::Dast => {
            let environments = probe
                .call(
                    "dast-environments",
                    "/api/dast/scans/environments",
                    &[("from", "0".into()), ("to", "1".into())],
                )
                .await?;
            if let Some(environment) =
                environments.and_then(|e| first_id(&e, "environments", "environmentId"))
            {
                let scan = probe
                    .call(
                        "dast-scans",
                        "/api/dast/scans/scans",
                        &[
                            ("environmentId", environment),
                            ("from", "0".into()),
                            ("to", "1".into()),
                        ],
                    )
                    .await?
                    .and_then(|s| first_id(&s, "scans", "scanId"));
                if let Some(scan) = scan {
                    let url = client
                        .dast_results_url(&scan, &[("page", "1".into()), ("per_page", "1".into())])
                        .map_err(|refused| {
                            (
                                refused.to_string(),
                                "the tenant's DAST scans list gave an id no request can name; report it to Checkmarx".to_string(),
                            )
                        })?;
                    probe.call_url("dast-results", url).await?;
                }
            }
        }
    }
    probe.verdict()
}

/// The scope check's calls so far: what was read and what was refused (403).
struct Probe<'c> {
    client: &'c CxOneClient,
    read: Vec<&'static str>,
    refused: Vec<(&'static str, String, &'static str)>,
}

impl Probe<'_> {
    /// One call: its answer, `None` when it was refused (listed), or the check's failure for any
    /// other error.
    async fn call(
        &mut self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<serde_json::Value>, (String, String)> {
        self.call_url(endpoint, self.client.api_url(path, query))
            .await
    }

    /// [`Self::call`] of a URL made whole.
    async fn call_url(
        &mut self,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Option<serde_json::Value>, (String, String)> {
        let path = url.path().to_string();
        match self.client.probe(endpoint, &url).await {
            Ok(answer) => {
                self.read.push(endpoint);
                Ok(Some(answer))
            }
            Err(VendorError::Forbidden { role_hint, .. }) => {
                self.refused
                    .push((endpoint, format!("GET {path}"), role_hint));
                Ok(None)
            }
            Err(other) => Err((
                format!("{endpoint}: {other}"),
                "retry; if it persists, check the region and the vendor's status".to_string(),
            )),
        }
    }

    fn verdict(self) -> Step {
        if self.refused.is_empty() {
            return Ok((
                CheckStatus::Pass,
                format!("can read everything a run reads: {}", self.read.join(", ")),
            ));
        }
        let calls: Vec<String> = self
            .refused
            .iter()
            .map(|(_, call, _)| format!("{call} (403)"))
            .collect();
        let mut roles: Vec<&str> = self.refused.iter().map(|(_, _, role)| *role).collect();
        roles.dedup();
        Err((
            format!(
                "the credential may not read what a run reads: {}",
                calls.join(", ")
            ),
            format!("give the credential {}", roles.join(" and ")),
        ))
    }
}

fn first_id(body: &serde_json::Value, list: &str, key: &str) -> Option<String> {
    body[list]
        .get(0)
        .and_then(|item| item[key].as_str())
        .map(str::to_string)
}

async fn data(client: &CxOneClient, calls: &RunCalls) -> Step {
    let failure = |e: VendorError| {
        (
            e.to_string(),
            "retry; if it persists, check the vendor's status".to_string(),
        )
    };
    match calls.kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            let page = client
                .probe(
                    "projects",
                    &client.api_url("/api/projects", &[("limit", "10".into())]),
                )
                .await
                .map_err(failure)?;
            let total = page["filteredTotalCount"].as_u64().unwrap_or(0);
            let ids: Vec<String> = page["projects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect();
            let mut found = Vec::new();
            for engine in &calls.engines {
                let scans = client
                    .last_scans(&ids, &LastScanQuery::completed(Some(*engine)))
                    .await
                    .map_err(failure)?;
                found.push(format!("{} a completed {engine} scan", scans.scans.len()));
                for (project, why) in &scans.unreadable {
                    found.push(format!(
                        "project {project}'s {engine} scan unreadable ({why})"
                    ));
                }
            }
            Ok((
                CheckStatus::Pass,
                format!(
                    "{total} projects; of the first {}: {}",
                    ids.len(),
                    found.join(", ")
                ),
            ))
        }
        ConnectorKind::Dast => {
            let page = client
                .probe(
                    "dast-environments",
                    &client.api_url(
                        "/api/dast/scans/environments",
                        &[("from", "0".into()), ("to", "10".into())],
                    ),
                )
                .await
                .map_err(failure)?;
            let total = page["totalItems"].as_u64().unwrap_or(0);
            let Some(environment) = first_id(&page, "environments", "environmentId") else {
                return Ok((
                    CheckStatus::Pass,
                    "the tenant has no DAST environment".into(),
                ));
            };
            let scan = client
                .latest_completed_dast_scan(&environment)
                .await
                .map_err(failure)?;
            Ok((
                CheckStatus::Pass,
                format!(
                    "{total} DAST environments; the first {} a completed scan",
                    if scan.is_some() { "has" } else { "has no" }
                ),
            ))
        }
    }
}

impl CxOneClient {
    /// One small authenticated GET, parsed as JSON (for checks).
    async fn probe(
        &self,
        endpoint: &'static str,
        url: &Url,
    ) -> Result<serde_json::Value, VendorError> {
        self.get_checked(endpoint, url, |body| {
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        })
        .await
    }
}

impl ConnectionReport {
    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<22} {:<8} {:>8}  {}\n",
            "CHECK", "RESULT", "TIME", "DETAIL"
        );
        for c in &self.checks {
            let status = match c.status {
                CheckStatus::Pass => "pass",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skipped => "skipped",
            };
            out.push_str(&format!(
                "{:<22} {:<8} {:>6}ms  {}\n",
                c.name, status, c.duration_ms, c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("{:<22} {:<8} {:>8}  fix: {fix}\n", "", "", ""));
            }
        }
        out.push_str(if self.passed {
            "connection test passed\n"
        } else {
            "connection test FAILED\n"
        });
        out
    }
}
