//! The connection test of the spec: five checks in order (network reachability, TLS handshake,
//! credential, authorization scope, data fetch); all must pass. Each reports pass / fail /
//! skipped, its duration, and on failure the cause and the fix in plain words.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use url::Url;

use super::client::CxOneClient;
use super::error::{AuthError, VendorError};
use super::paging::LastScanQuery;
use super::transport::resolve_allowed;
pub use crate::ConnectorKind;

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

/// Runs the five checks in order; after a failure the rest are skipped.
pub async fn test_connection(client: &CxOneClient, kind: ConnectorKind) -> ConnectionReport {
    let mut checks = Vec::new();
    let mut failed = false;
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
        let step = match index {
            0 => network(client).await,
            1 => tls(client).await,
            2 => credential(client).await,
            3 => scope(client, kind).await,
            _ => data(client, kind).await,
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
        kind,
        passed: !failed,
        checks,
    }
}

fn hosts(client: &CxOneClient) -> [&Url; 2] {
    let endpoints = &client.config().endpoints;
    [&endpoints.iam, &endpoints.api]
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

async fn network(client: &CxOneClient) -> Step {
    let config = client.config();
    let mut seen = Vec::new();
    for url in hosts(client) {
        let (host, port) = host_port(url);
        let fix = || {
            format!(
                "check the region (for example https://deu.ast.checkmarx.net for DEU) and that outbound HTTPS to {host}:{port} is allowed from here"
            )
        };
        let addresses = resolve_allowed(&host, port, config.policy)
            .await
            .map_err(|e| (format!("cannot resolve {host}: {e}"), fix()))?;
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

async fn tls(client: &CxOneClient) -> Step {
    let config = client.config();
    if hosts(client).iter().all(|u| u.scheme() == "http") {
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
    for url in hosts(client) {
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

async fn credential(client: &CxOneClient) -> Step {
    match client.authenticate().await {
        Ok(()) => Ok((
            CheckStatus::Pass,
            format!(
                "the token endpoint of tenant '{}' issued an access token",
                client.config().tenant
            ),
        )),
        Err(VendorError::Auth(auth)) => {
            let fix = match &auth {
                AuthError::BadApiKey { .. } | AuthError::KeyClientMismatch { .. } => {
                    "create a new API key (Settings > Identity and Access Management > API Keys) and store it in the secret"
                }
                AuthError::BadClientCredentials { .. } => {
                    "check the OAuth client id and secret in the secret; regenerate the secret if unsure"
                }
                AuthError::UnknownTenant { .. } => {
                    "set the tenant name exactly as Checkmarx One shows it"
                }
                AuthError::WrongRegion { .. } | AuthError::KeyForOtherRealm { .. } => {
                    "set the region the tenant lives in (the host in your Checkmarx One login URL)"
                }
                AuthError::Unexpected { .. } => "check the credential, tenant and region",
            };
            Err((auth.to_string(), fix.to_string()))
        }
        Err(other) => Err((
            other.to_string(),
            "check the region and network, then retry".to_string(),
        )),
    }
}

fn scope_failure(error: VendorError) -> (String, String) {
    let fix = match &error {
        VendorError::Forbidden { role_hint, .. } => format!(
            "give the credential the role {role_hint} (read access to projects, scans and results)"
        ),
        _ => "retry; if it persists, check the region and the vendor's status".to_string(),
    };
    (error.to_string(), fix)
}

async fn scope(client: &CxOneClient, kind: ConnectorKind) -> Step {
    match kind {
        ConnectorKind::Sast => {
            let projects = client
                .probe("projects", "/api/projects", &[("limit", "1".into())])
                .await
                .map_err(scope_failure)?;
            client
                .probe("scans", "/api/scans", &[("limit", "1".into())])
                .await
                .map_err(scope_failure)?;
            let first = first_id(&projects, "projects", "id");
            let Some(project) = first else {
                return Ok((
                    CheckStatus::Pass,
                    "can read projects and scans; the tenant has no project to probe results with"
                        .into(),
                ));
            };
            let scans = client
                .last_scans(&[project], &LastScanQuery::completed_sast())
                .await
                .map_err(scope_failure)?;
            let Some(scan) = scans.values().next() else {
                return Ok((
                    CheckStatus::Pass,
                    "can read projects and scans; no completed SAST scan to probe results with"
                        .into(),
                ));
            };
            client
                .probe(
                    "results",
                    "/api/results",
                    &[("scan-id", scan.id.clone()), ("limit", "1".into())],
                )
                .await
                .map_err(scope_failure)?;
            Ok((
                CheckStatus::Pass,
                "can read projects, scans and results".into(),
            ))
        }
        ConnectorKind::Dast => {
            client
                .probe(
                    "dast-environments",
                    "/api/dast/scans/environments",
                    &[("from", "0".into()), ("to", "1".into())],
                )
                .await
                .map_err(scope_failure)?;
            Ok((CheckStatus::Pass, "can read DAST environments".into()))
        }
    }
}

fn first_id(body: &serde_json::Value, list: &str, key: &str) -> Option<String> {
    body[list]
        .get(0)
        .and_then(|item| item[key].as_str())
        .map(str::to_string)
}

async fn data(client: &CxOneClient, kind: ConnectorKind) -> Step {
    let failure = |e: VendorError| {
        (
            e.to_string(),
            "retry; if it persists, check the vendor's status".to_string(),
        )
    };
    match kind {
        ConnectorKind::Sast => {
            let page = client
                .probe("projects", "/api/projects", &[("limit", "10".into())])
                .await
                .map_err(failure)?;
            let total = page["filteredTotalCount"].as_u64().unwrap_or(0);
            let ids: Vec<String> = page["projects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect();
            let scans = client
                .last_scans(&ids, &LastScanQuery::completed_sast())
                .await
                .map_err(failure)?;
            Ok((
                CheckStatus::Pass,
                format!(
                    "{total} projects; {} of the first {} have a completed SAST scan",
                    scans.len(),
                    ids.len()
                ),
            ))
        }
        ConnectorKind::Dast => {
            let page = client
                .probe(
                    "dast-environments",
                    "/api/dast/scans/environments",
                    &[("from", "0".into()), ("to", "10".into())],
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
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, VendorError> {
        let url = self.api_url(path, query);
        self.get_checked(endpoint, &url, |body| {
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
