//! A Checkmarx One emulator for tests and demos: IAM (both token flows), projects, last scans,
//! scans, all-scanner and SAST results, and DAST, over real HTTP(S), with a tenant generated
//! lazily from a seed and faults that can be switched per endpoint.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let emulator = cxone_emulator::Emulator::start(cxone_emulator::EmulatorConfig::default()).await?;
//! println!("{} {}", emulator.api_url, emulator.credentials.api_key);
//! # Ok(()) }
//! ```

mod api;
mod app;
mod auth;
mod catalog;
mod endpoint;
mod error;
mod expected;
pub mod faults;
mod ids;
mod mistakes;
mod query;
mod server;
mod stats;
mod tenant;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::{OffsetMode, ProjectsQuirks};
pub use auth::Credentials;
pub use endpoint::Endpoint;
pub use expected::{
    ExpectedDastScan, ExpectedEnvironment, ExpectedProject, ExpectedScan, ExpectedTotals, Totals,
};
pub use faults::{FaultSpec, RetryAfter};
pub use mistakes::Mistake;
pub use stats::TrafficSnapshot;
pub use tenant::{ResultMix, ResultType, TenantShape};

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub api_port: u16,
    pub iam_port: u16,
    pub tenant: String,
    pub shape: TenantShape,
    pub token_lifetime_secs: u64,
    pub results_offset: OffsetMode,
    /// How `/api/projects` departs from documented paging.
    pub projects: ProjectsQuirks,
    /// The `azp` claim of issued API keys: the client id a key must be presented with.
    pub api_key_client_id: String,
    pub tls: bool,
    pub faults: Vec<(Endpoint, FaultSpec)>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 0,
            iam_port: 0,
            tenant: "acme".to_string(),
            shape: TenantShape::default(),
            token_lifetime_secs: 1800,
            results_offset: OffsetMode::Page,
            projects: ProjectsQuirks::default(),
            api_key_client_id: "ast-app".to_string(),
            tls: false,
            faults: Vec::new(),
        }
    }
}

/// A running emulator; dropping it stops both listeners and closes their connections.
pub struct Emulator {
    /// Base of the API host (`/api/...`).
    pub api_url: String,
    /// Base of the IAM host (`/auth/realms/...`).
    pub iam_url: String,
    pub tenant: String,
    pub credentials: Credentials,
    /// The CA certificate to trust when serving HTTPS.
    pub ca_pem: Option<String>,
    state: app::Shared,
    shutdown: CancellationToken,
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Self> {
        validate(&config)?;
        let api_listener = TcpListener::bind(SocketAddr::new(config.host, config.api_port))
            .await
            .with_context(|| {
                format!(
                    "binding the API listener on {}:{}",
                    config.host, config.api_port
                )
            })?;
        let iam_listener = TcpListener::bind(SocketAddr::new(config.host, config.iam_port))
            .await
            .with_context(|| {
                format!(
                    "binding the IAM listener on {}:{}",
                    config.host, config.iam_port
                )
            })?;
        let tls = if config.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = |listener: &TcpListener| -> anyhow::Result<String> {
            let addr = listener.local_addr()?;
            Ok(match addr.ip() {
                IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", addr.port()),
                IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", addr.port()),
            })
        };
        let (api_url, iam_url) = (url(&api_listener)?, url(&iam_listener)?);
        let auth = auth::Auth::new(
            config.shape.seed,
            &config.tenant,
            &iam_url,
            &api_url,
            config.token_lifetime_secs,
            &config.api_key_client_id,
        );
        let credentials = auth.credentials();
        let state = Arc::new(app::AppState {
            tenant: tenant::Tenant::new(config.shape.clone()),
            auth,
            faults: faults::FaultControl::default(),
            stats: stats::Stats::default(),
            results_offset: config.results_offset,
            projects: config.projects.clone(),
        });
        for (endpoint, spec) in &config.faults {
            state.faults.set(*endpoint, spec.clone());
        }
        let shutdown = CancellationToken::new();
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        server::spawn(
            api_listener,
            acceptor.clone(),
            app::api_router(state.clone()),
            shutdown.clone(),
        );
        server::spawn(
            iam_listener,
            acceptor,
            app::iam_router(state.clone()),
            shutdown.clone(),
        );
        Ok(Self {
            api_url,
            iam_url,
            tenant: config.tenant.clone(),
            credentials,
            ca_pem: tls.map(|t| t.ca_pem),
            state,
            shutdown,
        })
    }

    /// `{iam_url}/auth/realms/{tenant}/protocol/openid-connect/token`
    pub fn token_url(&self) -> String {
        format!(
            "{}/auth/realms/{}/protocol/openid-connect/token",
            self.iam_url, self.tenant
        )
    }

    pub fn set_fault(&self, endpoint: Endpoint, spec: FaultSpec) {
        self.state.faults.set(endpoint, spec);
    }

    pub fn clear_faults(&self) {
        self.state.faults.clear_all();
    }

    pub fn traffic(&self) -> TrafficSnapshot {
        self.state.stats.snapshot(&self.state.faults)
    }

    /// Every request since start or the last `reset_traffic`, in arrival order, as its endpoint
    /// and path with query.
    pub fn request_log(&self) -> Vec<(Endpoint, String)> {
        self.state.stats.requests()
    }

    pub fn reset_traffic(&self) {
        self.state.stats.reset();
    }

    pub fn expected(&self) -> ExpectedTotals {
        expected::expected_totals(&self.state.tenant)
    }

    /// Invalidates every access token issued so far; the next API call with one answers 401.
    pub fn revoke_tokens(&self) {
        self.state.auth.revoke_all();
    }

    /// The one JSON line the binary prints on start: where to connect and the test credentials.
    pub fn startup_line(&self) -> serde_json::Value {
        let mut line = serde_json::json!({
            "url": self.api_url,
            "iam_url": self.iam_url,
            "tenant": self.tenant,
        });
        if let (Some(map), serde_json::Value::Object(creds)) = (
            line.as_object_mut(),
            serde_json::to_value(&self.credentials).unwrap_or_default(),
        ) {
            map.extend(creds);
        }
        line
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn validate(config: &EmulatorConfig) -> anyhow::Result<()> {
    let mix = config.shape.result_mix;
    let sum = mix.sast + mix.kics + mix.sca + mix.containers;
    anyhow::ensure!(
        sum == 100,
        "result mix must add up to 100 percent (sast,kics,sca,containers), got {sum}"
    );
    anyhow::ensure!(
        config.shape.churn_percent <= 100,
        "churn percent must be 0..=100, got {}",
        config.shape.churn_percent
    );
    anyhow::ensure!(
        !config.tenant.is_empty()
            && config
                .tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "tenant name must be non-empty letters, digits, '-' or '_', got '{}'",
        config.tenant
    );
    anyhow::ensure!(
        config.token_lifetime_secs > 0,
        "token lifetime must be at least 1 second"
    );
    let dast_per_scan = config.shape.dast_results_per_scan.max(
        config
            .shape
            .environment_results
            .iter()
            .copied()
            .max()
            .unwrap_or(0),
    );
    anyhow::ensure!(
        u64::from(config.shape.dast_scans_per_environment) * dast_per_scan < u64::from(u32::MAX),
        "DAST results per scan × scans per environment must stay below 2^32"
    );
    Ok(())
}
