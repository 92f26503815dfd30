//! Credentials, typed so they cannot be printed: `Debug` shows only which kind it is, and the
//! secret parts are [`secrecy::SecretString`]s that are exposed only where a request is built.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;

/// How the connector authenticates to Checkmarx One.
#[derive(Clone)]
pub enum Credential {
    /// An API key (a Keycloak offline token).
    ApiKey(SecretString),
    /// An OAuth client (service account).
    OAuthClient {
        client_id: String,
        client_secret: SecretString,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("Credential::ApiKey(<redacted>)"),
            Self::OAuthClient { client_id, .. } => write!(
                f,
                "Credential::OAuthClient {{ client_id: {client_id:?}, client_secret: <redacted> }}"
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDocument {
    api_key: Option<SecretString>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

/// A secret document that cannot be used. The message names fields, never values.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential secret: {0}")]
pub struct CredentialError(String, Passing);

/// Whether a secret that could not be read may be read on a later attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Passing {
    /// The secret or its value is wrong, or access is refused: only a change makes it readable.
    #[default]
    Lasting,
    /// Secrets Manager did not answer, or answered that it was throttled or failed within.
    MayPass,
}

impl CredentialError {
    fn lasting(problem: String) -> Self {
        Self(problem, Passing::Lasting)
    }

    /// Whether another attempt may read the secret (a step fails `Retryable` then).
    pub fn may_pass(&self) -> bool {
        self.1 == Passing::MayPass
    }
}

/// Why Secrets Manager gave no value: the problem (never the value), and whether it may pass.
#[derive(Debug)]
pub struct SecretUnread {
    pub problem: String,
    pub passing: Passing,
}

impl Credential {
    /// Reads the secret's JSON: `{"api_key": "..."}` or `{"client_id": "...", "client_secret": "..."}`.
    pub fn from_json(text: &str) -> Result<Self, CredentialError> {
        let doc: SecretDocument =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                .map_err(|e| {
                    // Named: the field and position, never the value.
                    let field = e.path().iter().next().is_some();
                    let problem = match field && e.inner().to_string().starts_with("invalid type") {
                        // The path is a known field's: unknown fields are refused first.
                        true => format!("`{}` is not a string (every field is)", e.path()),
                        false => e.inner().classify_message(),
                    };
                    CredentialError::lasting(format!(
                        "not the expected JSON object ({problem}); expected {{\"api_key\": \"...\"}} or {{\"client_id\": \"...\", \"client_secret\": \"...\"}}"
                    ))
                })?;
        let present = |s: &Option<SecretString>| {
            s.as_ref()
                .is_some_and(|v| !secrecy::ExposeSecret::expose_secret(v).trim().is_empty())
        };
        match (
            present(&doc.api_key),
            doc.client_id.filter(|c| !c.trim().is_empty()),
            present(&doc.client_secret),
        ) {
            (true, None, false) => Ok(Self::ApiKey(doc.api_key.expect("checked present"))),
            (false, Some(client_id), true) => Ok(Self::OAuthClient {
                client_id: client_id.trim().to_string(),
                client_secret: doc.client_secret.expect("checked present"),
            }),
            (true, _, _) => Err(CredentialError::lasting(
                "holds both `api_key` and OAuth client fields; keep one kind".into(),
            )),
            (false, Some(_), false) => Err(CredentialError::lasting(
                "`client_id` is set but `client_secret` is missing or empty".into(),
            )),
            (false, None, true) => Err(CredentialError::lasting(
                "`client_secret` is set but `client_id` is missing or empty".into(),
            )),
            (false, None, false) => Err(CredentialError::lasting(
                "holds neither `api_key` nor `client_id` + `client_secret`".into(),
            )),
        }
    }
}

trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    /// The error without echoing input: its category, line and column, and for unknown or
    /// missing fields their names (serde includes names, not values, in those messages).
    fn classify_message(&self) -> String {
        use serde_json::error::Category;
        match self.classify() {
            Category::Data => {
                let text = self.to_string();
                // serde names it between backticks, before the fields it expected.
                let unknown = text.strip_prefix("unknown field `").map(|rest| {
                    rest.split_once("`, expected")
                        .or_else(|| rest.rsplit_once('`'))
                        .map_or(rest, |(name, _)| name)
                });
                if unknown.is_some_and(|name| !looks_like_a_field_name(name)) {
                    // A value pasted as a key (Secrets Manager's key/value editor): not echoed.
                    "an unknown field whose name is not shown (it may be a secret pasted as a key); the fields are `api_key`, or `client_id` and `client_secret`".to_string()
                } else if text.starts_with("unknown field") || text.starts_with("missing field") {
                    text.split(" at line")
                        .next()
                        .unwrap_or("wrong shape")
                        .split(", expected")
                        .next()
                        .unwrap_or("")
                        .to_string()
                } else {
                    "wrong shape".to_string()
                }
            }
            Category::Syntax | Category::Eof => format!(
                "invalid JSON at line {} column {}",
                self.line(),
                self.column()
            ),
            Category::Io => "unreadable".to_string(),
        }
    }
}

/// Whether an unknown key of a secret is a name one may show: at most 20 letters and `_`, as the
/// fields are (`api_key`, `client_id`). Anything else could be a credential pasted as a key (a
/// Keycloak client secret is 32 letters and digits).
fn looks_like_a_field_name(name: &str) -> bool {
    (1..=20).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// The most a secret file may hold: an API key or a client's id and secret are a few hundred bytes.
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// A `file:` secret's text: a file, or a pipe (`file:/dev/stdin`, a shell's `<(…)`).
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let bytes = crate::read_at_most(path, SECRET_FILE_LIMIT)
        .map_err(|e| format!("cannot read the file ({})", e.kind()))?
        .ok_or_else(|| "it holds more than 64 KiB, which no credential does".to_string())?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_that_may_be_a_pasted_secret_is_not_echoed() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl";
        let error = Credential::from_json(&format!(r#"{{"{token}": ""}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains(token) && !error.contains("c2lnbmF0"),
            "{error}"
        );
        assert!(error.contains("name is not shown"), "{error}");
        for pasted in ["Kq3ZpV8mT2xR7cW1nB5hJ9dF4sL6gY0a", "ab`SECRET-VALUE-9"] {
            let json = serde_json::json!({ pasted: "" }).to_string();
            let error = Credential::from_json(&json).unwrap_err().to_string();
            assert!(
                !error.contains("SECRET-VALUE") && !error.contains("Kq3Zp"),
                "{error}"
            );
        }
        let error = Credential::from_json(r#"{"apikey": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `apikey`"), "{error}");
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let key = Credential::from_json(r#"{"api_key": "eyJ-top-secret"}"#).unwrap();
        assert_eq!(format!("{key:?}"), "Credential::ApiKey(<redacted>)");
        let client =
            Credential::from_json(r#"{"client_id": "etm", "client_secret": "s3cr3t-value"}"#)
                .unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("etm") && !shown.contains("s3cr3t-value"));
    }

    #[test]
    fn bad_documents_name_fields_never_values() {
        let cases = [
            (
                r#"{"api_key": "k", "client_id": "c", "client_secret": "zz-secret"}"#,
                "both",
            ),
            (r#"{"client_id": "c"}"#, "`client_secret` is missing"),
            (
                r#"{"client_secret": "zz-secret"}"#,
                "`client_id` is missing",
            ),
            (r#"{}"#, "neither"),
            (r#"{"api_key": "   "}"#, "neither"),
            (r#"{"apikey": "zz-secret"}"#, "unknown field `apikey`"),
            (r#"{"api_key": zz-secret}"#, "invalid JSON at line 1"),
            (r#"["zz-secret"]"#, "wrong shape"),
            (
                r#"{"api_key": 424242}"#,
                "`api_key` is not a string (every field is)",
            ),
            (
                r#"{"client_id": "c", "client_secret": 7}"#,
                "`client_secret` is not a string",
            ),
        ];
        for (text, expected) in cases {
            let message = Credential::from_json(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                !message.contains("zz-secret") && !message.contains("424242"),
                "{text}: the value leaked into {message}"
            );
        }
    }
}

/// Where a connection's credential lives. The reference is in the connection config; the value
/// never is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// A Secrets Manager secret (ARN or name) holding the JSON document.
    SecretsManager(String),
    /// An environment variable holding the JSON document, or a bare API key.
    Env(String),
    /// A file holding the JSON document, or a bare API key.
    File(std::path::PathBuf),
    /// Handed over in process (the demo passes the bundled emulator's test credential).
    Provided,
}

impl std::str::FromStr for SecretRef {
    type Err = CredentialError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // A credential pasted after a prefix (`env:eyJ…`) would be echoed wherever the reference
        // is (errors, the stored config): refused, and not quoted.
        let target = text
            .split_once(':')
            .map_or("", |(_, target)| target.trim_start());
        if target.starts_with("eyJ") && target.contains('.') {
            return Err(CredentialError::lasting(
                "the secret reference holds what looks like a credential (a JWT), not where one is; put the credential in Secrets Manager, an environment variable or a file, and name that".into(),
            ));
        }
        let variable_name = |name: &str| {
            name.len() <= 128
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if let Some(var) = text.strip_prefix("env:").filter(|v| !v.is_empty()) {
            if !variable_name(var) {
                return Err(CredentialError::lasting(
                    "env: names no environment variable; give a name of letters, digits and '_' (at most 128, not starting with a digit), e.g. env:CXONE_API_KEY".into(),
                ));
            }
            Ok(Self::Env(var.to_string()))
        } else if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(Self::File(path.into()))
        } else if is_secrets_manager_arn(text) {
            Ok(Self::SecretsManager(text.to_string()))
        } else if let Some(name) = text
            .strip_prefix("secretsmanager:")
            .filter(|n| !n.is_empty())
        {
            Ok(Self::SecretsManager(name.to_string()))
        } else {
            // The text is not echoed: a secret value pasted here by mistake must not reach a log.
            Err(CredentialError::lasting(
                "the secret reference is not understood; use a Secrets Manager ARN, secretsmanager:NAME, env:VARIABLE or file:PATH".into(),
            ))
        }
    }
}

/// `arn:<partition>:secretsmanager:...` in any partition (`aws`, `aws-cn`, `aws-us-gov`, the
/// isolated ones), as the template's parameter pattern allows.
fn is_secrets_manager_arn(text: &str) -> bool {
    let mut parts = text.splitn(4, ':');
    let (arn, partition, service) = (parts.next(), parts.next(), parts.next());
    let partition_name =
        |p: &str| p.starts_with("aws") && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    arn == Some("arn")
        && partition.is_some_and(partition_name)
        && service == Some("secretsmanager")
        && parts.next().is_some()
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretsManager(id) => write!(f, "secretsmanager:{id}"),
            Self::Env(var) => write!(f, "env:{var}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Provided => f.write_str("provided"),
        }
    }
}

/// Reads a credential where its reference points, keeps it for later calls (across warm Lambda
/// invocations when the source lives as long as the process), and re-reads it on demand after the
/// vendor refused it, so a rotated secret is picked up without a restart.
pub struct SecretSource {
    reference: SecretRef,
    secrets_manager: Option<Arc<dyn SecretsManager>>,
    cached: tokio::sync::Mutex<Option<Credential>>,
}

/// The Secrets Manager port: the AWS SDK client, or [`MemorySecrets`] where no AWS is at hand.
pub trait SecretsManager: Send + Sync {
    /// The string value of the secret `id` (an ARN or a name), or why it cannot be read.
    fn secret_string<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, SecretUnread>>;
}

/// A Secrets Manager client that gives up on an answer that does not come: the SDK's defaults
/// bound only the connection, and a read that hangs would hold every step waiting on the
/// credential until the function's timeout.
pub fn secrets_manager_client(config: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(std::time::Duration::from_secs(10))
        .operation_timeout(std::time::Duration::from_secs(30))
        .build();
    let config = aws_sdk_secretsmanager::config::Builder::from(config)
        .timeout_config(timeouts)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

impl SecretsManager for aws_sdk_secretsmanager::Client {
    fn secret_string<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, SecretUnread>> {
        Box::pin(async move {
            let output = self
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| SecretUnread {
                    problem: format!(
                        "cannot read the secret ({})",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                    ),
                    passing: passing_of(&e),
                })?;
            output
                .secret_string()
                .map(str::to_string)
                .ok_or(SecretUnread {
                    problem: "the secret has no string value".to_string(),
                    passing: Passing::Lasting,
                })
        })
    }
}

/// Whether a failed GetSecretValue may pass (the SDK has already retried it): no answer in time,
/// no connection, a throttle or a fault within Secrets Manager; not a refusal of the request.
fn passing_of<R>(
    error: &aws_sdk_secretsmanager::error::SdkError<
        aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
        R,
    >,
) -> Passing {
    use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Passing::MayPass
        }
        SdkError::ServiceError(service) => {
            let failed_within = service.err().is_internal_service_error();
            let throttled = matches!(
                service.err().code(),
                Some("ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded")
            );
            match failed_within || throttled {
                true => Passing::MayPass,
                false => Passing::Lasting,
            }
        }
        _ => Passing::Lasting,
    }
}

/// Secrets held in memory by id, standing in for Secrets Manager in tests that run without AWS.
/// Like every credential here, the values cannot be printed: `Debug` shows the ids only.
#[derive(Default)]
pub struct MemorySecrets {
    values: std::sync::Mutex<std::collections::HashMap<String, SecretString>>,
}

impl std::fmt::Debug for MemorySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("MemorySecrets")
            .field("ids", &values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemorySecrets {
    /// Stores (or replaces, as a rotation does) the secret `id`.
    pub fn put(&self, id: impl Into<String>, value: impl Into<String>) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into(), SecretString::from(value.into()));
    }
}

impl SecretsManager for MemorySecrets {
    fn secret_string<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, SecretUnread>> {
        let value = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|value| secrecy::ExposeSecret::expose_secret(value).to_string())
            .ok_or_else(|| SecretUnread {
                problem: "cannot read the secret (no such secret)".to_string(),
                passing: Passing::Lasting,
            });
        Box::pin(std::future::ready(value))
    }
}

impl SecretSource {
    pub async fn new(reference: SecretRef) -> Self {
        let secrets_manager = match reference {
            SecretRef::SecretsManager(_) => {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Some(Arc::new(secrets_manager_client(&config)) as Arc<dyn SecretsManager>)
            }
            _ => None,
        };
        Self {
            reference,
            secrets_manager,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A Secrets Manager source read through a given port (a client of a local server or a custom
    /// endpoint, the function's shared client, or secrets in memory).
    pub fn with_secrets_manager(
        id: impl Into<String>,
        secrets_manager: Arc<dyn SecretsManager>,
    ) -> Self {
        Self {
            reference: SecretRef::SecretsManager(id.into()),
            secrets_manager: Some(secrets_manager),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A source that always yields `credential` (nothing to re-read).
    pub fn provided(credential: Credential) -> Self {
        Self {
            reference: SecretRef::Provided,
            secrets_manager: None,
            cached: tokio::sync::Mutex::new(Some(credential)),
        }
    }

    pub fn reference(&self) -> &SecretRef {
        &self.reference
    }

    /// The credential, read once and then served from memory.
    pub async fn credential(&self) -> Result<Credential, CredentialError> {
        let mut cached = self.cached.lock().await;
        if let Some(credential) = cached.as_ref() {
            return Ok(credential.clone());
        }
        let credential = self.read().await?;
        *cached = Some(credential.clone());
        Ok(credential)
    }

    /// Reads the secret again (after the vendor refused the cached one).
    pub async fn refresh(&self) -> Result<Credential, CredentialError> {
        let credential = self.read().await?;
        *self.cached.lock().await = Some(credential.clone());
        Ok(credential)
    }

    async fn read(&self) -> Result<Credential, CredentialError> {
        let located =
            |problem: String| CredentialError::lasting(format!("{}: {problem}", self.reference));
        let text = match &self.reference {
            SecretRef::Provided => {
                return self
                    .cached
                    .lock()
                    .await
                    .clone()
                    .ok_or_else(|| located("nothing was provided".into()));
            }
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| located("the environment variable is not set".into()))?,
            SecretRef::File(path) => read_secret_file(path).map_err(located)?,
            SecretRef::SecretsManager(id) => self
                .secrets_manager
                .as_ref()
                .expect("created for Secrets Manager references")
                .secret_string(id)
                .await
                .map_err(|unread| CredentialError(located(unread.problem).0, unread.passing))?,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(located("it is empty".into()));
        }
        if text.starts_with('{') {
            Credential::from_json(text).map_err(|e| located(e.0))
        } else {
            Ok(Credential::ApiKey(text.to_string().into()))
        }
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn memory_secrets_print_their_ids_never_their_values() {
        let secrets = MemorySecrets::default();
        secrets.put("cxone/demo", r#"{"api_key": "zz-top-secret"}"#);
        let shown = format!("{secrets:?}");
        assert!(
            shown.contains("cxone/demo") && !shown.contains("zz-top-secret"),
            "{shown}"
        );
    }

    #[test]
    fn references_parse_and_display_without_values() {
        assert_eq!(
            "env:CX_KEY".parse::<SecretRef>().unwrap(),
            SecretRef::Env("CX_KEY".into())
        );
        assert_eq!(
            "file:/run/key.json".parse::<SecretRef>().unwrap(),
            SecretRef::File("/run/key.json".into())
        );
        for partition in ["aws", "aws-cn", "aws-us-gov", "aws-iso-b"] {
            let arn =
                format!("arn:{partition}:secretsmanager:eu-west-1:123456789012:secret:cx-AbCdEf");
            assert_eq!(
                arn.parse::<SecretRef>().unwrap(),
                SecretRef::SecretsManager(arn.clone())
            );
        }
        for not_an_arn in [
            "arn:gcp:secretsmanager:r:1:secret:x",
            "arn:aws:s3:::bucket",
            "arn:aws:secretsmanager",
        ] {
            assert!(not_an_arn.parse::<SecretRef>().is_err(), "{not_an_arn}");
        }
        assert_eq!(
            "secretsmanager:cx/prod"
                .parse::<SecretRef>()
                .unwrap()
                .to_string(),
            "secretsmanager:cx/prod"
        );
        let e = "my-api-key-value"
            .parse::<SecretRef>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not understood"));
        // A credential pasted after a prefix is refused and not quoted.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        for pasted in [
            format!("env:{jwt}"),
            format!("file:{jwt}"),
            format!("secretsmanager:{jwt}"),
            format!("file: {jwt}"),
            "env:my-api-key-value".to_string(),
            format!("env:{}", "K".repeat(129)),
            "env:1KEY".to_string(),
        ] {
            let e = pasted.parse::<SecretRef>().unwrap_err().to_string();
            assert!(
                !e.contains("eyJ")
                    && !e.contains("my-api")
                    && !e.contains("KKK")
                    && !e.contains("1KEY"),
                "{pasted}: {e}"
            );
        }
        assert_eq!(
            format!("env:_{}", "K".repeat(127))
                .parse::<SecretRef>()
                .unwrap()
                .to_string()
                .len(),
            "env:".len() + 128
        );
    }

    #[tokio::test]
    async fn env_and_file_sources_read_documents_or_bare_keys_and_refresh() {
        let dir = std::env::temp_dir().join(format!("cxone-etm-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret.json");
        std::fs::write(&file, r#"{"client_id":"etm","client_secret":"first"}"#).unwrap();
        let source = SecretSource::new(SecretRef::File(file.clone())).await;
        assert!(matches!(
            source.credential().await.unwrap(),
            Credential::OAuthClient { .. }
        ));
        std::fs::write(&file, "rotated-bare-key").unwrap();
        assert!(
            matches!(
                source.credential().await.unwrap(),
                Credential::OAuthClient { .. }
            ),
            "served from the cache"
        );
        assert!(
            matches!(source.refresh().await.unwrap(), Credential::ApiKey(_)),
            "re-read after rotation"
        );
        std::fs::write(&file, "  ").unwrap();
        assert!(
            source
                .refresh()
                .await
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let missing =
            SecretSource::new(SecretRef::Env("CXONE_ETM_TEST_UNSET_VARIABLE".into())).await;
        assert_eq!(
            missing.credential().await.unwrap_err().to_string(),
            "credential secret: env:CXONE_ETM_TEST_UNSET_VARIABLE: the environment variable is not set"
        );
        // A device, or a file past the limit, is refused after at most one byte past it is
        // read: before, `file:/dev/zero` was read until memory ran out.
        std::fs::write(&file, "k".repeat(SECRET_FILE_LIMIT as usize + 1)).unwrap();
        for path in [file.clone(), "/dev/zero".into()] {
            let source = SecretSource::new(SecretRef::File(path.clone())).await;
            let refused = source.credential().await.unwrap_err().to_string();
            assert!(
                refused.contains("it holds more than 64 KiB"),
                "{path:?}: {refused}"
            );
        }
        // A pipe is read as a file is (a shell's `<(…)` keeps a secret off the disk).
        let pipe = dir.join("pipe");
        std::fs::remove_file(&pipe).ok();
        let made = std::process::Command::new("mkfifo").arg(&pipe).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let writer = std::thread::spawn({
            let pipe = pipe.clone();
            move || std::fs::write(pipe, "piped-key")
        });
        let source = SecretSource::new(SecretRef::File(pipe)).await;
        assert!(matches!(
            source.credential().await.unwrap(),
            Credential::ApiKey(_)
        ));
        writer.join().unwrap().unwrap();
        std::fs::write(&file, "k".repeat(SECRET_FILE_LIMIT as usize)).unwrap();
        let source = SecretSource::new(SecretRef::File(file.clone())).await;
        assert!(matches!(
            source.credential().await.unwrap(),
            Credential::ApiKey(_)
        ));
        std::fs::remove_dir_all(dir).ok();
    }
}
