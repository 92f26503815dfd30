//! Access tokens: both Checkmarx One flows, cached and refreshed before expiry, one token request
//! in flight at a time, and token-endpoint refusals turned into actionable errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::config::VendorConfig;
use super::error::{AuthError, VendorError};
use super::transport::{Exchange, Retry, Transport, Verdict, classify, without_url};
use crate::secret::Credential;

/// The client id Checkmarx's documentation uses for API keys without an `azp` claim.
const DEFAULT_API_KEY_CLIENT: &str = "ast-app";

enum Flow {
    ApiKey {
        key: SecretString,
        client_id: String,
    },
    Client {
        client_id: String,
        secret: SecretString,
    },
}

impl Flow {
    /// `body` with every echo of the secret this flow sends replaced by `(redacted)`: as it is,
    /// form-encoded as sent (`+` or `%20` for a space, hex in either case), JSON-escaped (`\/`
    /// and `\u0026` styles too) or HTML-escaped, matched whatever the letter case. The
    /// redaction of vendor text ([`vendor_text`](super::transport::vendor_text)) knows only the
    /// shapes of a credential, not its value: a `client_secret` quoted in a shape it does not
    /// know (`clientSecret: …`, an HTML form's `value`) got through.
    fn without_echoes(&self, body: &Bytes) -> Bytes {
        let secret = match self {
            Flow::ApiKey { key, .. } => key.expose_secret(),
            Flow::Client { secret, .. } => secret.expose_secret(),
        };
        let echoes = echoes_of(secret);
        let Ok(finder) = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&echoes)
        else {
            return Bytes::new();
        };
        if !finder.is_match(body.as_ref()) {
            return body.clone();
        }
        let redacted = vec![&b"(redacted)"[..]; echoes.len()];
        Bytes::from(finder.replace_all_bytes(body, &redacted))
    }
}

/// The forms in which an answer may quote `secret` ([`Flow::without_echoes`]): as sent
/// (form-encoded), as it is, JSON-escaped (the `\/`, `\u0026` and ASCII-only `\u00e9` styles)
/// and HTML-escaped (named, Go's, Python's, decimal and hexadecimal entities).
fn echoes_of(secret: &str) -> Vec<String> {
    if secret.is_empty() {
        return Vec::new();
    }
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).expect("a string serialises");
    let json = json[1..json.len() - 1].to_string();
    let go_json = json
        .replace('&', "\\u0026")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e");
    let mut jsons = Vec::new();
    for json in [json, go_json] {
        let ascii = ascii_only(&json);
        for json in [json, ascii] {
            jsons.push(json.replace('/', "\\/"));
            jsons.push(json);
        }
    }
    // Each family's entity for & < > " ', in that order.
    let entities: [[&str; 5]; 5] = [
        ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"],
        ["&amp;", "&lt;", "&gt;", "&#34;", "&#39;"],
        ["&amp;", "&lt;", "&gt;", "&quot;", "&#x27;"],
        ["&#38;", "&#60;", "&#62;", "&#34;", "&#39;"],
        ["&#x26;", "&#x3c;", "&#x3e;", "&#x22;", "&#x27;"],
    ];
    let htmls = entities.iter().map(|[amp, lt, gt, quot, apos]| {
        secret
            .replace('&', amp)
            .replace('<', lt)
            .replace('>', gt)
            .replace('"', quot)
            .replace('\'', apos)
    });
    let mut echoes: Vec<String> = [secret.to_string(), form.replace('+', "%20"), form]
        .into_iter()
        .chain(jsons)
        .chain(htmls)
        .collect();
    echoes.sort();
    echoes.dedup();
    echoes
}

/// JSON text with every character past ASCII written `\uXXXX` (a surrogate pair past the
/// basic plane), as an ASCII-only encoder writes it.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A cached access token; `serial` tells tokens apart without comparing their values.
#[derive(Clone)]
pub(crate) struct Bearer {
    value: Arc<SecretString>,
    serial: u64,
}

impl Bearer {
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

struct Cached {
    bearer: Bearer,
    refresh_after: Instant,
}

impl Cached {
    /// Whether `cached` holds `used` (the same token, by serial).
    fn is(cached: Option<&Cached>, used: &Bearer) -> bool {
        cached.is_some_and(|c| c.bearer.serial == used.serial)
    }
}

pub(crate) struct TokenSource {
    flow: Flow,
    token_url: Url,
    tenant: String,
    cache: tokio::sync::Mutex<Option<Cached>>,
    serials: AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Claims of an API key that tell where and for which client it was issued.
#[derive(Default)]
struct KeyClaims {
    azp: Option<String>,
    realm: Option<String>,
    /// Unix seconds after which the key no longer works, when it was created with an expiry (an
    /// `exp` of 0 means none).
    expires_at: Option<i64>,
}

fn key_claims(key: &str) -> KeyClaims {
    let Some(payload) = key.split('.').nth(1) else {
        return KeyClaims::default();
    };
    let decoded =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='));
    let Ok(claims) = decoded
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|_| ()))
    else {
        return KeyClaims::default();
    };
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let audience = match &claims["aud"] {
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(text)
            .find(|a| a.contains("/auth/realms/")),
        other => text(other).filter(|a| a.contains("/auth/realms/")),
    };
    KeyClaims {
        // Keycloak writes `exp: 0` into offline tokens that never expire.
        expires_at: claims["exp"].as_i64().filter(|exp| *exp > 0),
        azp: text(&claims["azp"]),
        realm: audience.or_else(|| text(&claims["iss"]).filter(|i| i.contains("/auth/realms/"))),
    }
}

/// The longest lifetime a token answer is taken at its word for (Checkmarx One's are 30
/// minutes): a larger `expires_in` overflowed the moment it was added to, a panic, and a token
/// that dies earlier is renewed on its first 401 anyway.
const LONGEST_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A token's lifetime from its answer's `expires_in` (seconds; 5 minutes where it says none).
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(300).max(1)).min(LONGEST_TOKEN_LIFETIME)
}

/// How long before expiry a token is replaced: a fifth of its lifetime, at least two seconds (an
/// issuer counts `exp` in whole seconds, so a token can die up to a second early, and a request
/// takes a while to arrive) and at most a minute, never more than half the lifetime.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5)
        .max(Duration::from_secs(2))
        .min(Duration::from_secs(60))
        .min(lifetime / 2)
}

fn realm_token_url(realm: &str) -> Result<Url, ()> {
    Url::parse(&format!(
        "{}/protocol/openid-connect/token",
        realm.trim_end_matches('/')
    ))
    .map_err(|_| ())
}

impl TokenSource {
    pub fn new(credential: &Credential, config: &VendorConfig) -> Result<Self, VendorError> {
        let configured_realm = config.realm_url();
        let configured = realm_token_url(&configured_realm)
            .map_err(|()| VendorError::Setup(format!("bad realm URL {configured_realm}")))?;
        let (flow, token_url) = match credential {
            Credential::ApiKey(key) => {
                let claims = key_claims(key.expose_secret());
                let token_url = match claims.realm {
                    None => configured,
                    Some(realm) => {
                        // The key says where it was issued; it must be this connection's IAM host and tenant.
                        let url = realm_token_url(&realm).ok();
                        let same_host = url.as_ref().is_some_and(|u| {
                            u.scheme() == configured.scheme()
                                && u.host_str() == configured.host_str()
                                && u.port_or_known_default() == configured.port_or_known_default()
                        });
                        let same_tenant = realm
                            .trim_end_matches('/')
                            .rsplit('/')
                            .next()
                            .is_some_and(|t| t.eq_ignore_ascii_case(&config.tenant));
                        match url {
                            Some(url) if same_host && same_tenant => url,
                            _ => {
                                return Err(AuthError::KeyForOtherRealm {
                                    key_realm: realm,
                                    configured_realm,
                                }
                                .into());
                            }
                        }
                    }
                };
                // An expired key is named as such, before the token endpoint's terse refusal.
                if let Some(expires_at) = claims.expires_at
                    && expires_at <= time::OffsetDateTime::now_utc().unix_timestamp()
                {
                    let expired_at = time::OffsetDateTime::from_unix_timestamp(expires_at)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| expires_at.to_string());
                    return Err(AuthError::ExpiredApiKey { expired_at }.into());
                }
                let client_id = claims
                    .azp
                    .unwrap_or_else(|| DEFAULT_API_KEY_CLIENT.to_string());
                (
                    Flow::ApiKey {
                        key: key.clone(),
                        client_id,
                    },
                    token_url,
                )
            }
            Credential::OAuthClient {
                client_id,
                client_secret,
            } => (
                Flow::Client {
                    client_id: client_id.clone(),
                    secret: client_secret.clone(),
                },
                configured,
            ),
        };
        Ok(Self {
            flow,
            token_url,
            tenant: config.tenant.clone(),
            cache: tokio::sync::Mutex::new(None),
            serials: AtomicU64::new(0),
        })
    }

    /// A valid access token: the cached one, or a fresh one. Callers wait on the lock while one
    /// of them refreshes, so only one token request is ever in flight.
    pub async fn bearer(&self, transport: &Transport) -> Result<Bearer, VendorError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| Instant::now() < c.refresh_after) {
            return Ok(cached.bearer.clone());
        }
        // Lifetimes count from before the request was sent, never from the answer.
        let requested_at = Instant::now();
        let (token, lifetime) = self.request(transport).await?;
        let bearer = Bearer {
            value: Arc::new(token),
            serial: self.serials.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *cache = Some(Cached {
            bearer: bearer.clone(),
            refresh_after: requested_at + lifetime - refresh_margin(lifetime),
        });
        Ok(bearer)
    }

    /// Whether `used` is the token held: no other caller has replaced it since.
    pub async fn holds(&self, used: &Bearer) -> bool {
        Cached::is(self.cache.lock().await.as_ref(), used)
    }

    /// Drops `used` after the API refused it, unless another caller already replaced it.
    pub async fn invalidate(&self, used: &Bearer) -> bool {
        let mut cache = self.cache.lock().await;
        if Cached::is(cache.as_ref(), used) {
            *cache = None;
            true
        } else {
            false
        }
    }

    async fn request(
        &self,
        transport: &Transport,
    ) -> Result<(SecretString, Duration), VendorError> {
        let mut retries = transport.retries("token");
        loop {
            transport
                .counters
                .token_requests
                .fetch_add(1, Ordering::Relaxed);
            let request = match &self.flow {
                Flow::ApiKey { key, client_id } => {
                    transport.http.post(self.token_url.clone()).form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", client_id.as_str()),
                        ("refresh_token", key.expose_secret()),
                    ])
                }
                Flow::Client { client_id, secret } => {
                    transport.http.post(self.token_url.clone()).form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id.as_str()),
                        ("client_secret", secret.expose_secret()),
                    ])
                }
            };
            let exchange = match transport
                .exchange(
                    "token",
                    retries.attempt(),
                    request.header("Accept", "application/json"),
                )
                .await
            {
                Ok(exchange) => exchange,
                Err(error) if error.is_connect() && retries.attempt() > 2 => {
                    return Err(AuthError::WrongRegion {
                        host: self.token_url.host_str().unwrap_or("?").to_string(),
                        detail: without_url(&error),
                    }
                    .into());
                }
                Err(error) => {
                    retries.wait(Retry::after(without_url(&error))).await?;
                    continue;
                }
            };
            if exchange.status.is_success() {
                let answer =
                    read_token_answer(&exchange.body).map_err(|detail| VendorError::Malformed {
                        endpoint: "token",
                        detail: format!("token answer: {detail}"),
                    })?;
                return Ok((answer.access_token, token_lifetime(answer.expires_in)));
            }
            // An answer that quotes the request (a gateway's or proxy's error page) would carry
            // the secret into the error, and from there to logs, run records and reports.
            let exchange = Exchange {
                body: self.flow.without_echoes(&exchange.body),
                ..exchange
            };
            if let Some(refusal) = self.refusal(exchange.status.as_u16(), &exchange.body) {
                return Err(refusal.into());
            }
            match classify("token", &exchange) {
                Verdict::Retry(retry) => retries.wait(retry).await?,
                Verdict::Fail(error) => return Err(error),
            }
        }
    }

    /// Token-endpoint answers that mean the credential, tenant or region is wrong.
    fn refusal(&self, status: u16, body: &[u8]) -> Option<AuthError> {
        let oauth: OAuthError = serde_json::from_slice(body).unwrap_or_default();
        let detail = if oauth.error_description.is_empty() {
            oauth.error.clone()
        } else {
            oauth.error_description.clone()
        };
        let detail = super::transport::vendor_text(&detail);
        match (status, oauth.error.as_str(), &self.flow) {
            (404, "Realm does not exist", _) => Some(AuthError::UnknownTenant {
                tenant: self.tenant.clone(),
            }),
            (404, _, _) => Some(AuthError::WrongRegion {
                host: self.token_url.host_str().unwrap_or("?").to_string(),
                detail: format!("HTTP 404 for {}", self.token_url.path()),
            }),
            (400, "invalid_grant", Flow::ApiKey { client_id, .. }) if detail.contains("client") => {
                Some(AuthError::KeyClientMismatch {
                    sent_client: client_id.clone(),
                })
            }
            (400, "invalid_grant", Flow::ApiKey { .. }) => Some(AuthError::BadApiKey { detail }),
            (400 | 401, "invalid_client" | "unauthorized_client", Flow::Client { .. }) => {
                Some(AuthError::BadClientCredentials { detail })
            }
            (
                400 | 401,
                "invalid_client" | "unauthorized_client",
                Flow::ApiKey { client_id, .. },
            ) => Some(AuthError::BadApiKey {
                detail: format!(
                    "client '{client_id}' from the key's azp claim is unknown to this tenant: {detail}"
                ),
            }),
            (400 | 401, _, _) => Some(AuthError::Unexpected { status, detail }),
            _ => None,
        }
    }
}

/// A token answer, or what is wrong with it: the field and the form expected, never a value (the
/// answer holds the access token).
fn read_token_answer(body: &[u8]) -> Result<TokenAnswer, String> {
    let answer: TokenAnswer = serde_path_to_error::deserialize(
        &mut serde_json::Deserializer::from_slice(body),
    )
    .map_err(|e| {
        let (path, inner) = (e.path().to_string(), e.inner());
        let message = inner.to_string();
        match path.as_str() {
            // Broken JSON: where, not what.
            _ if inner.classify() != serde_json::error::Category::Data => inner.classify_text(),
            _ if message.starts_with("missing field") => {
                format!(
                    "{} (an OAuth token answer has `access_token`)",
                    message.split(" at line").next().unwrap_or(&message)
                )
            }
            "access_token" => "`access_token` is not a text".to_string(),
            "expires_in" => "`expires_in` is not a whole number of seconds".to_string(),
            _ => inner.classify_text(),
        }
    })?;
    if answer.access_token.expose_secret().trim().is_empty() {
        return Err("`access_token` is empty (or blanks)".into());
    }
    Ok(answer)
}

trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    /// Where the JSON broke, without echoing it (the token answer holds a secret).
    fn classify_text(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token answer that is not one names the field and the form expected, never a value: the
    /// answer holds the access token.
    #[test]
    fn a_token_answer_that_is_not_one_names_the_field_not_the_value() {
        let refused = |body: &str| read_token_answer(body.as_bytes()).err().unwrap();
        for (body, named) in [
            (
                r#"{"expires_in": 1800}"#,
                "missing field `access_token` (an OAuth token answer has `access_token`)",
            ),
            (
                r#"{"access_token": "s3cr3t-token", "expires_in": "1800"}"#,
                "`expires_in` is not a whole number of seconds",
            ),
            (
                r#"{"access_token": 41, "expires_in": 1800}"#,
                "`access_token` is not a text",
            ),
            (
                r#"{"access_token": ""}"#,
                "`access_token` is empty (or blanks)",
            ),
            (
                r#"{"access_token": " \t "}"#,
                "`access_token` is empty (or blanks)",
            ),
            (
                r#"{"access_token": "s3cr3t-tok"#,
                "Eof error at line 1 column 28",
            ),
        ] {
            let error = refused(body);
            assert_eq!(error, named, "{body}");
            assert!(!error.contains("s3cr3t"), "{error}");
        }
        let fine = read_token_answer(br#"{"access_token": "t", "expires_in": 1800}"#).unwrap();
        assert_eq!(fine.expires_in, Some(1800));
    }

    #[test]
    fn a_token_lifetime_past_a_day_is_taken_as_a_day_and_none_as_five_minutes() {
        // Added to the moment of the request, u64::MAX seconds overflowed: a panic.
        let now = Instant::now();
        for claimed in [u64::MAX, 10_000_000_000_000_000_000, 86_401] {
            let lifetime = token_lifetime(Some(claimed));
            assert_eq!(lifetime, LONGEST_TOKEN_LIFETIME, "{claimed}");
            assert!(now + lifetime - refresh_margin(lifetime) > now);
        }
        assert_eq!(token_lifetime(Some(1800)), Duration::from_secs(1800));
        assert_eq!(token_lifetime(Some(0)), Duration::from_secs(1));
        assert_eq!(token_lifetime(None), Duration::from_secs(300));
    }

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"none"}"#), enc(claims))
    }

    #[test]
    fn tokens_are_replaced_well_before_they_expire() {
        assert_eq!(
            refresh_margin(Duration::from_secs(1800)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(100)),
            Duration::from_secs(20)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn key_claims_read_azp_and_the_realm_from_aud_or_iss() {
        let c = key_claims(&jwt(
            r#"{"azp":"cx-cli","aud":"https://eu.iam.checkmarx.net/auth/realms/acme"}"#,
        ));
        assert_eq!(c.azp.as_deref(), Some("cx-cli"));
        assert_eq!(
            c.realm.as_deref(),
            Some("https://eu.iam.checkmarx.net/auth/realms/acme")
        );
        let c = key_claims(&jwt(
            r#"{"aud":["account","https://iam.checkmarx.net/auth/realms/x"]}"#,
        ));
        assert_eq!(
            c.realm.as_deref(),
            Some("https://iam.checkmarx.net/auth/realms/x")
        );
        let c = key_claims(&jwt(
            r#"{"aud":"account","iss":"https://deu.iam.checkmarx.net/auth/realms/t"}"#,
        ));
        assert_eq!(
            c.realm.as_deref(),
            Some("https://deu.iam.checkmarx.net/auth/realms/t")
        );
        let c = key_claims("not-a-jwt");
        assert!(c.azp.is_none() && c.realm.is_none());
    }

    #[test]
    fn only_a_key_past_a_real_expiry_is_refused_as_expired() {
        let config = crate::cxone::VendorSettings::for_region("EU", "acme")
            .validate(crate::cxone::CaBundleAt::Named)
            .unwrap();
        let key = |exp: &str| {
            Credential::ApiKey(
                jwt(&format!(
                    r#"{{"aud":"https://eu.iam.checkmarx.net/auth/realms/acme"{exp}}}"#
                ))
                .into(),
            )
        };
        // No `exp`, Keycloak's `exp: 0` (never expires) and a future one: the key is used.
        for exp in ["", r#","exp":0"#, r#","exp":4102444800"#] {
            assert!(TokenSource::new(&key(exp), &config).is_ok(), "{exp}");
        }
        let error = TokenSource::new(&key(r#","exp":1767657600"#), &config)
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("the API key expired at 2026-01-06T00:00:00Z"),
            "{error}"
        );
    }

    #[test]
    fn a_key_from_another_region_or_tenant_is_refused_before_any_request() {
        let config = crate::cxone::VendorSettings::for_region("US", "acme")
            .validate(crate::cxone::CaBundleAt::Named)
            .unwrap();
        let eu_key = Credential::ApiKey(
            jwt(r#"{"aud":"https://eu.iam.checkmarx.net/auth/realms/acme"}"#).into(),
        );
        let error = TokenSource::new(&eu_key, &config).err().unwrap();
        assert!(
            error.to_string().contains("eu.iam.checkmarx.net")
                && error
                    .to_string()
                    .contains("set the region and tenant the credential was issued for"),
            "{error}"
        );
        let other_tenant = Credential::ApiKey(
            jwt(r#"{"aud":"https://iam.checkmarx.net/auth/realms/globex"}"#).into(),
        );
        assert!(TokenSource::new(&other_tenant, &config).is_err());
        let same = Credential::ApiKey(
            jwt(r#"{"aud":"https://iam.checkmarx.net/auth/realms/ACME","azp":"ast-app"}"#).into(),
        );
        let source = TokenSource::new(&same, &config).unwrap();
        assert_eq!(
            source.token_url.as_str(),
            "https://iam.checkmarx.net/auth/realms/ACME/protocol/openid-connect/token"
        );
    }
}
