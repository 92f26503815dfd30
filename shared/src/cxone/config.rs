//! The client's settings as a user writes them, and the validated form the client runs on.
//! Validation happens once, at construction; every error names the field and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::region::{self, Endpoints, NetworkPolicy};

/// Vendor settings of a connection. Credentials are not here: they come from the secret source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSettings {
    /// A region name (US, US2, EU, EU2, DEU, ANZ, IND, SNG, UAE, IL-gov) or its URL.
    #[serde(default)]
    pub region: Option<String>,
    /// A private deployment's API base URL (instead of `region`).
    #[serde(default)]
    pub custom_api_url: Option<String>,
    /// A private deployment's IAM base URL; derived from `custom_api_url` when absent.
    #[serde(default)]
    pub custom_iam_url: Option<String>,
    pub tenant: String,
    /// Plain HTTP and loopback addresses, for a local emulator only.
    #[serde(default)]
    pub allow_insecure_local: bool,
    /// A port other than 443 on a custom deployment.
    #[serde(default)]
    pub allow_custom_port: bool,
    /// Extra CA certificates (PEM) to trust, for deployments behind a private CA or proxy.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Requests in flight at once, retries and token requests included.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    #[serde(default = "defaults::projects_page_size")]
    pub projects_page_size: u32,
    /// Project ids per `last-scan` call.
    #[serde(default = "defaults::last_scan_batch")]
    pub last_scan_batch: u32,
    #[serde(default = "defaults::results_page_size")]
    pub results_page_size: u32,
    #[serde(default = "defaults::dast_page_size")]
    pub dast_page_size: u32,
    #[serde(default)]
    pub retry: RetrySettings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay_ms: u64,
    pub max_delay_secs: u64,
    /// Bound on the total time one call may spend waiting between attempts.
    pub max_total_wait_secs: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 8,
            base_delay_ms: 500,
            max_delay_secs: 30,
            max_total_wait_secs: 300,
        }
    }
}

mod defaults {
    pub fn connect_timeout_secs() -> u64 {
        10
    }
    pub fn request_timeout_secs() -> u64 {
        120
    }
    pub fn concurrency() -> usize {
        8
    }
    pub fn projects_page_size() -> u32 {
        100
    }
    pub fn last_scan_batch() -> u32 {
        100
    }
    /// The largest page Checkmarx's own CLI asks for: fewest requests.
    pub fn results_page_size() -> u32 {
        10_000
    }
    pub fn dast_page_size() -> u32 {
        100
    }
}

impl VendorSettings {
    /// Settings for a region with every default.
    pub fn for_region(region: &str, tenant: &str) -> Self {
        Self {
            region: Some(region.to_string()),
            custom_api_url: None,
            custom_iam_url: None,
            tenant: tenant.to_string(),
            allow_insecure_local: false,
            allow_custom_port: false,
            ca_bundle: None,
            connect_timeout_secs: defaults::connect_timeout_secs(),
            request_timeout_secs: defaults::request_timeout_secs(),
            concurrency: defaults::concurrency(),
            projects_page_size: defaults::projects_page_size(),
            last_scan_batch: defaults::last_scan_batch(),
            results_page_size: defaults::results_page_size(),
            dast_page_size: defaults::dast_page_size(),
            retry: RetrySettings::default(),
        }
    }

    /// Settings for a custom deployment (for example the bundled emulator) with every default.
    pub fn for_custom(api_url: &str, iam_url: &str, tenant: &str) -> Self {
        Self {
            region: None,
            custom_api_url: Some(api_url.to_string()),
            custom_iam_url: Some(iam_url.to_string()),
            ..Self::for_region("", tenant)
        }
    }

    /// The endpoints the region or the custom URLs name, however written (a region's name, alias,
    /// any letter case or URL; a URL with or without its last `/`).
    pub fn endpoints(&self) -> Result<Endpoints, ConfigError> {
        region::resolve(
            self.region.as_deref(),
            self.custom_api_url.as_deref(),
            self.custom_iam_url.as_deref(),
            self.policy(),
        )
    }

    fn policy(&self) -> NetworkPolicy {
        NetworkPolicy {
            allow_insecure_local: self.allow_insecure_local,
            allow_custom_port: self.allow_custom_port,
        }
    }

    /// The settings checked, every problem named (not only the first), with the CA bundle read
    /// from where `ca_at` says.
    pub fn validate(&self, ca_at: CaBundleAt<'_>) -> Result<VendorConfig, Vec<ConfigError>> {
        let mut problems = Vec::new();
        let endpoints = self.endpoints().map_err(|e| problems.push(e)).ok();
        let tenant = self.tenant.trim();
        // A tenant of dots alone would make a dot segment of the realm's path (`realms/..`),
        // which a URL resolves away: the token request would go elsewhere on the IAM host.
        if tenant.chars().all(|c| c == '.')
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            problems.push(ConfigError::new(
                "tenant",
                format!("'{tenant}' is not a tenant name"),
                "use the tenant name shown in Checkmarx One (letters, digits, '-', '_', '.', not dots alone), e.g. acme-corp",
            ));
        }
        let ca_pem = match (&self.ca_bundle, ca_at) {
            (None, _) | (Some(_), CaBundleAt::Unread) => None,
            (Some(named), CaBundleAt::Named) => {
                read_ca_bundle(named, "").map_err(|e| problems.push(e)).ok()
            }
            (Some(_), CaBundleAt::Here(copy)) => {
                read_ca_bundle(copy, "the copy to check the connection with here, ")
                    .map_err(|e| problems.push(e))
                    .ok()
            }
        };
        let mut within = |field: &'static str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                problems.push(ConfigError::new(
                    field,
                    format!("{value} is out of range"),
                    format!("use a value from {min} to {max}"),
                ));
            }
        };
        within("connect_timeout_secs", self.connect_timeout_secs, 1, 300);
        within("request_timeout_secs", self.request_timeout_secs, 1, 900);
        within("concurrency", self.concurrency as u64, 1, 256);
        within(
            "projects_page_size",
            u64::from(self.projects_page_size),
            1,
            1_000,
        );
        within("last_scan_batch", u64::from(self.last_scan_batch), 1, 200);
        within(
            "results_page_size",
            u64::from(self.results_page_size),
            1,
            10_000,
        );
        within("dast_page_size", u64::from(self.dast_page_size), 1, 100);
        within(
            "retry.max_retries",
            u64::from(self.retry.max_retries),
            0,
            50,
        );
        within("retry.base_delay_ms", self.retry.base_delay_ms, 1, 60_000);
        within("retry.max_delay_secs", self.retry.max_delay_secs, 1, 3_600);
        within(
            "retry.max_total_wait_secs",
            self.retry.max_total_wait_secs,
            1,
            3_600,
        );
        // The backoff's bounds: a first delay past the longest one is no schedule (the retry
        // policy refuses it, and every request would fail before it is sent).
        if self.retry.base_delay_ms > self.retry.max_delay_secs.saturating_mul(1_000) {
            problems.push(ConfigError::new(
                "retry.base_delay_ms",
                format!(
                    "{} ms is longer than retry.max_delay_secs ({} s)",
                    self.retry.base_delay_ms, self.retry.max_delay_secs
                ),
                "make the first delay at most the longest one",
            ));
        }
        match endpoints {
            Some(endpoints) if problems.is_empty() => Ok(VendorConfig {
                endpoints,
                tenant: tenant.to_string(),
                policy: self.policy(),
                ca_pem,
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                concurrency: self.concurrency,
                projects_page_size: self.projects_page_size,
                last_scan_batch: self.last_scan_batch,
                results_page_size: self.results_page_size,
                dast_page_size: self.dast_page_size,
                retry: self.retry.clone(),
            }),
            _ => Err(problems),
        }
    }
}

/// Where [`VendorSettings::validate`] reads the CA bundle the settings name (`ca_bundle`).
#[derive(Clone, Copy, Debug)]
pub enum CaBundleAt<'a> {
    /// At the path the settings name: the client runs on this machine.
    Named,
    /// From another file with the same certificates: checking from the operator's machine a
    /// connection the functions run on AWS, where the named path is in their package or a layer.
    Here(&'a Path),
    /// Not read, and not trusted by a client built from the result: for reading a stored
    /// connection that runs elsewhere (its state and schedule) without calling the vendor.
    Unread,
}

/// The PEM file at `path`, refused unless it is a file of at most [`CA_BUNDLE_LIMIT`] holding a
/// certificate. `copy` names a file read in place of the one the settings name (empty: that one),
/// so that its problem is not taken for the config's.
fn read_ca_bundle(path: &Path, copy: &str) -> Result<Vec<u8>, ConfigError> {
    let fix = |what: &str| match copy {
        "" => format!("point `ca_bundle` at {what}"),
        _ => format!("give {what} as the copy; the config's path is left as it is"),
    };
    let unreadable = |e: std::io::Error| {
        ConfigError::new(
            "ca_bundle",
            format!("{copy}cannot read {} ({e})", path.display()),
            fix("a readable PEM file"),
        )
    };
    // A device, a pipe or a file that grows would be read without end: at most one byte past
    // the limit is read.
    let too_big = || {
        ConfigError::new(
            "ca_bundle",
            format!("{copy}{} is not a file of at most 1 MiB", path.display()),
            fix("a PEM file"),
        )
    };
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(too_big());
    }
    let pem = crate::read_at_most(path, CA_BUNDLE_LIMIT)
        .map_err(unreadable)?
        .ok_or_else(too_big)?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            "ca_bundle",
            format!("{copy}{} holds no PEM certificate", path.display()),
            fix("a PEM file with one or more -----BEGIN CERTIFICATE----- blocks"),
        ));
    }
    Ok(pem)
}

/// The largest CA bundle read (the system's own bundle is about 200 KiB).
const CA_BUNDLE_LIMIT: u64 = 1024 * 1024;

/// Validated settings: only a [`VendorConfig`] can build a client.
#[derive(Clone, Debug)]
pub struct VendorConfig {
    pub endpoints: Endpoints,
    pub tenant: String,
    pub policy: NetworkPolicy,
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub concurrency: usize,
    pub projects_page_size: u32,
    pub last_scan_batch: u32,
    pub results_page_size: u32,
    pub dast_page_size: u32,
    pub retry: RetrySettings,
}

impl VendorConfig {
    /// `{iam}/auth/realms/{tenant}`, the tenant lower-cased as Checkmarx One's clients ask it
    /// (Keycloak's realm names are case-sensitive, and a tenant's is lower-case).
    pub fn realm_url(&self) -> String {
        format!(
            "{}/auth/realms/{}",
            self.endpoints.iam.as_str().trim_end_matches('/'),
            self.tenant.to_ascii_lowercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VendorConfig, String> {
        let settings: VendorSettings = serde_json::from_str(json).map_err(|e| e.to_string())?;
        settings.validate(CaBundleAt::Named).map_err(|problems| {
            let described: Vec<String> = problems.iter().map(ToString::to_string).collect();
            described.join("\n")
        })
    }

    #[test]
    fn every_problem_is_named_not_only_the_first() {
        let message = parse(
            r#"{"region": "Mars", "tenant": "a/b", "concurrency": 0, "ca_bundle": "/nonexistent/ca.pem", "retry": {"base_delay_ms": 5000, "max_delay_secs": 1}}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = message
            .lines()
            .map(|line| line.split('`').nth(1).unwrap_or(line))
            .collect();
        assert_eq!(
            fields,
            [
                "region",
                "tenant",
                "ca_bundle",
                "concurrency",
                "retry.base_delay_ms"
            ],
            "{message}"
        );
    }

    #[test]
    fn the_ca_bundle_is_read_where_the_caller_says() {
        let copy = std::env::temp_dir().join(format!("cxone-ca-copy-{}.pem", std::process::id()));
        std::fs::write(&copy, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let settings: VendorSettings = serde_json::from_str(
            r#"{"region": "EU", "tenant": "acme", "ca_bundle": "/opt/cxone/ca.pem"}"#,
        )
        .unwrap();
        let named = settings.validate(CaBundleAt::Named).unwrap_err();
        assert!(
            named[0]
                .problem
                .starts_with("cannot read /opt/cxone/ca.pem"),
            "{named:?}"
        );
        let here = settings.validate(CaBundleAt::Here(&copy)).unwrap();
        assert_eq!(
            here.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\nMIIB\n"[..])
        );
        let unread = settings.validate(CaBundleAt::Unread).unwrap();
        assert_eq!(unread.ca_pem, None);
        std::fs::remove_file(&copy).unwrap();
        let gone = settings.validate(CaBundleAt::Here(&copy)).unwrap_err();
        assert!(
            gone[0]
                .problem
                .starts_with("the copy to check the connection with here, cannot read ")
                && gone[0].problem.contains("cxone-ca-copy-")
                && gone[0].fix.contains("the config's path is left as it is"),
            "{gone:?}"
        );
        let none: VendorSettings =
            serde_json::from_str(r#"{"region": "EU", "tenant": "acme"}"#).unwrap();
        assert_eq!(
            none.validate(CaBundleAt::Here(&copy)).unwrap().ca_pem,
            None,
            "settings naming no bundle trust none"
        );
    }

    #[test]
    fn defaults_fill_a_minimal_document() {
        let c = parse(r#"{"region": "EU", "tenant": "acme"}"#).unwrap();
        assert_eq!(c.endpoints.api.as_str(), "https://eu.ast.checkmarx.net/");
        assert_eq!(
            c.realm_url(),
            "https://eu.iam.checkmarx.net/auth/realms/acme"
        );
        assert_eq!(
            (c.concurrency, c.results_page_size, c.projects_page_size),
            (8, 10_000, 100)
        );
    }

    #[test]
    fn a_ca_bundle_over_its_limit_is_refused_after_reading_one_byte_past_it() {
        let path = std::env::temp_dir().join(format!("cxone-ca-{}.pem", std::process::id()));
        let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        pem.resize(CA_BUNDLE_LIMIT as usize + 1, b'A');
        std::fs::write(&path, &pem).unwrap();
        let json = format!(
            r#"{{"region": "EU", "tenant": "acme", "ca_bundle": "{}"}}"#,
            path.display()
        );
        let message = parse(&json).unwrap_err();
        assert!(
            message.contains("is not a file of at most 1 MiB"),
            "{message}"
        );
        pem.truncate(CA_BUNDLE_LIMIT as usize);
        std::fs::write(&path, &pem).unwrap();
        assert!(parse(&json).is_ok(), "a bundle of the limit is read");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            (r#"{"region": "EU", "tenant": ""}"#, "`tenant`"),
            (r#"{"region": "EU", "tenant": "a/b"}"#, "`tenant`"),
            (r#"{"region": "EU", "tenant": ".."}"#, "`tenant`"),
            (r#"{"region": "EU", "tenant": " . "}"#, "`tenant`"),
            (r#"{"region": "Mars", "tenant": "acme"}"#, "`region`"),
            (r#"{"tenant": "acme"}"#, "`region`"),
            (
                r#"{"region": "EU", "tenant": "acme", "concurrency": 0}"#,
                "`concurrency`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "results_page_size": 10001}"#,
                "`results_page_size`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "dast_page_size": 101}"#,
                "`dast_page_size`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "retry": {"max_retries": 99}}"#,
                "`retry.max_retries`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "retry": {"base_delay_ms": 5000, "max_delay_secs": 1}}"#,
                "`retry.base_delay_ms`: 5000 ms is longer than retry.max_delay_secs (1 s)",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "ca_bundle": "/nonexistent/ca.pem"}"#,
                "`ca_bundle`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "ca_bundle": "/dev/zero"}"#,
                "/dev/zero is not a file of at most 1 MiB",
            ),
            (
                r#"{"custom_api_url": "http://cx.example.com", "tenant": "acme"}"#,
                "`custom_api_url`",
            ),
            (
                r#"{"region": "EU", "tenant": "acme", "api_key": "x"}"#,
                "unknown field `api_key`",
            ),
        ];
        for (json, field) in cases {
            let message = parse(json).unwrap_err();
            assert!(message.contains(field), "{json}: {message}");
        }
        // A first delay as long as the longest is a schedule.
        parse(r#"{"region": "EU", "tenant": "acme", "retry": {"base_delay_ms": 1000, "max_delay_secs": 1}}"#)
            .unwrap();
    }
}
