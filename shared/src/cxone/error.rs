//! Errors of the vendor client. Each names what was wrong and what to do; none carries a secret
//! (token-endpoint answers are reduced to Keycloak's `error` / `error_description`, request bodies
//! and headers are never included).

use std::time::Duration;

/// A configuration value that cannot be used, with the field, the problem and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config field `{field}`: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    pub fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Why the credential was refused: what went wrong ([`Display`](std::fmt::Display)) and, apart,
/// what to do ([`AuthError::fix`]), so a report shows each once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the API key was rejected ({detail})")]
    BadApiKey { detail: String },
    #[error("the API key expired at {expired_at} (its `exp` claim)")]
    ExpiredApiKey { expired_at: String },
    #[error(
        "the API key was issued to another client than '{sent_client}' and carries no `azp` claim naming it"
    )]
    KeyClientMismatch { sent_client: String },
    #[error("the OAuth client id or secret was rejected ({detail})")]
    BadClientCredentials { detail: String },
    #[error("tenant '{tenant}' does not exist in this region")]
    UnknownTenant { tenant: String },
    #[error("the IAM host {host} does not serve Checkmarx One tokens ({detail})")]
    WrongRegion { host: String, detail: String },
    #[error(
        "the API key belongs to {key_realm}, but this connection is configured for {configured_realm}"
    )]
    KeyForOtherRealm {
        key_realm: String,
        configured_realm: String,
    },
    #[error("the token endpoint answered HTTP {status} ({detail})")]
    Unexpected { status: u16, detail: String },
}

impl AuthError {
    /// What the user does about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::BadApiKey { .. } => {
                "check that the secret holds the whole key of this tenant; if it was revoked, create a new API key (Settings > Identity and Access Management > API Keys) and store it in the secret"
            }
            Self::ExpiredApiKey { .. } | Self::KeyClientMismatch { .. } => {
                "create a new API key (Settings > Identity and Access Management > API Keys) and store it in the secret"
            }
            Self::BadClientCredentials { .. } => {
                "check the OAuth client id and secret in the secret and that the client is enabled; regenerate the secret if unsure"
            }
            Self::UnknownTenant { .. } => {
                "set the tenant name exactly as Checkmarx One shows it (Settings > Identity and Access Management), and check the region"
            }
            Self::WrongRegion { .. } | Self::KeyForOtherRealm { .. } => {
                "set the region and tenant the credential was issued for (the host and tenant in your Checkmarx One login URL), or use a credential of this tenant"
            }
            Self::Unexpected { .. } => "check the credential, tenant and region",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("authentication failed: {0}; {fix}", fix = .0.fix())]
    Auth(#[from] AuthError),
    #[error("{endpoint}: HTTP 403 Forbidden; the credential lacks {role_hint}")]
    Forbidden {
        endpoint: &'static str,
        role_hint: &'static str,
    },
    #[error("{endpoint}: HTTP 401 after a fresh token; the credential is no longer accepted")]
    Unauthorized { endpoint: &'static str },
    #[error("{endpoint}: {what} not found (HTTP 404)")]
    NotFound {
        endpoint: &'static str,
        what: String,
    },
    #[error("{endpoint}: HTTP {status}: {message}")]
    Rejected {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("{endpoint}: gave up after {attempts} attempts over {waited:?}: {last}")]
    RetriesExhausted {
        endpoint: &'static str,
        attempts: u32,
        waited: Duration,
        last: String,
    },
    #[error(
        "{endpoint}: the server asked to wait {asked:?} (Retry-After), beyond the remaining retry budget of {budget:?}"
    )]
    RetryAfterTooLong {
        endpoint: &'static str,
        asked: Duration,
        budget: Duration,
    },
    #[error("{endpoint}: unexpected response: {detail}")]
    Malformed {
        endpoint: &'static str,
        detail: String,
    },
    #[error("{endpoint}: the request started ahead of its turn stopped: {detail}")]
    Stopped {
        endpoint: &'static str,
        detail: String,
    },
    #[error("refused to connect to {host}: {reason}")]
    Refused { host: String, reason: String },
    #[error("HTTP client setup failed: {0}")]
    Setup(String),
    /// The vendor refused the credential, and the secret could not be read again for now (no
    /// answer, a throttle): a later attempt may read a rotated one.
    #[error("{refused}; re-reading the secret failed for now: {problem}")]
    SecretUnread { refused: String, problem: String },
}

impl VendorError {
    /// A request the server refused as asking for what is not there (HTTP 404, or another 4xx
    /// it does not retry or ask a credential for): how a server may answer a page past its end.
    pub(crate) fn refuses_a_page(&self) -> bool {
        matches!(self, Self::NotFound { .. })
            || matches!(self, Self::Rejected { status, .. } if (400..500).contains(status))
    }

    /// True when a later attempt (a Step Functions retry, the next run) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RetriesExhausted { .. }
                | Self::RetryAfterTooLong { .. }
                | Self::SecretUnread { .. }
        )
    }
}
