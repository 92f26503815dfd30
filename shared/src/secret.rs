//! Credentials, typed so they cannot be printed: `Debug` shows only which kind it is, and the
//! secret parts are [`secrecy::SecretString`]s that are exposed only where a request is built.

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
pub struct CredentialError(String);

impl Credential {
    /// Reads the secret's JSON: `{"api_key": "..."}` or `{"client_id": "...", "client_secret": "..."}`.
    pub fn from_json(text: &str) -> Result<Self, CredentialError> {
        let doc: SecretDocument = serde_json::from_str(text).map_err(|e| {
            // serde_json's message names the field and position, not the value.
            CredentialError(format!(
                "not the expected JSON object ({}); expected {{\"api_key\": \"...\"}} or {{\"client_id\": \"...\", \"client_secret\": \"...\"}}",
                e.classify_message()
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
            (true, _, _) => Err(CredentialError(
                "holds both `api_key` and OAuth client fields; keep one kind".into(),
            )),
            (false, Some(_), false) => Err(CredentialError(
                "`client_id` is set but `client_secret` is missing or empty".into(),
            )),
            (false, None, true) => Err(CredentialError(
                "`client_secret` is set but `client_id` is missing or empty".into(),
            )),
            (false, None, false) => Err(CredentialError(
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
                if text.starts_with("unknown field") || text.starts_with("missing field") {
                    text.split(" at line")
                        .next()
                        .unwrap_or("wrong shape")
                        .split(", expected")
                        .next()
                        .unwrap_or("")
                        .to_string()
                } else if text.starts_with("invalid type") {
                    // serde quotes the offending value here; say only what is wrong.
                    "a value has the wrong type (every field is a string)".to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

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
            (r#"{"api_key": 424242}"#, "wrong type"),
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
