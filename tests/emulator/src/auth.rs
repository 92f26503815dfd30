//! Checkmarx One IAM (Keycloak) as clients meet it: the token endpoint with both flows, JWT-shaped
//! API keys and access tokens, and the error answers for each way a credential can be wrong.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::app::Shared;
use crate::ids::{Kind, decode, encode, mix};

pub const ROLE_PROJECTS: &str = "view-projects";
pub const ROLE_SCANS: &str = "view-scans";
pub const ROLE_RESULTS: &str = "view-results";
/// The real DAST view role's name is not documented; this one stands for it.
pub const ROLE_DAST: &str = "dast-viewer";

/// Public clients the realm knows besides the one API keys are issued to.
const PUBLIC_CLIENTS: [&str; 2] = ["ast-app", "ast-cli"];

/// The three kinds of test credential the seeded tenant has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    Full,
    NoResults,
    NoDast,
}

impl Principal {
    const ALL: [Principal; 3] = [Self::Full, Self::NoResults, Self::NoDast];

    pub fn roles(self) -> Vec<&'static str> {
        let all = [
            "ast-viewer",
            ROLE_PROJECTS,
            ROLE_SCANS,
            ROLE_RESULTS,
            ROLE_DAST,
        ];
        all.into_iter()
            .filter(|r| match self {
                Self::Full => true,
                Self::NoResults => *r != ROLE_RESULTS && *r != "ast-viewer",
                Self::NoDast => *r != ROLE_DAST,
            })
            .collect()
    }

    fn client_id(self) -> &'static str {
        match self {
            Self::Full => "etm-connector",
            Self::NoResults => "etm-connector-no-results",
            Self::NoDast => "etm-connector-no-dast",
        }
    }

    fn index(self) -> u32 {
        self as u32
    }
}

/// The seeded tenant's test credentials (test values, not secrets).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub api_key: String,
    /// The full-access key, but it expired the day after it was issued (the token endpoint
    /// answers "Token is not active").
    pub api_key_expired: String,
    pub client_id: String,
    pub client_secret: String,
    pub api_key_no_results: String,
    pub client_id_no_results: String,
    pub client_secret_no_results: String,
    pub api_key_no_dast: String,
    pub client_id_no_dast: String,
    pub client_secret_no_dast: String,
}

pub struct Auth {
    seed: u64,
    key: [u8; 32],
    tenant: String,
    realm_url: String,
    api_url: String,
    lifetime_secs: u64,
    api_key_client_id: String,
    next_token: AtomicU64,
    first_valid_token: AtomicU64,
}

/// Why an access token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
    Expired,
    Revoked,
}

/// When the emulator's API keys were issued (2026-01-05).
const ISSUED_AT: u64 = 1_767_571_200;

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    now_millis() / 1000
}

impl Auth {
    pub fn new(
        seed: u64,
        tenant: &str,
        iam_url: &str,
        api_url: &str,
        lifetime_secs: u64,
        api_key_client_id: &str,
    ) -> Self {
        let mut key = [0u8; 32];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(&[seed, 0xA11CE, i as u64]).to_le_bytes());
        }
        Self {
            seed,
            key,
            tenant: tenant.to_ascii_lowercase(),
            realm_url: format!(
                "{}/auth/realms/{}",
                iam_url.trim_end_matches('/'),
                tenant.to_ascii_lowercase()
            ),
            api_url: api_url.trim_end_matches('/').to_string(),
            lifetime_secs,
            api_key_client_id: api_key_client_id.to_string(),
            next_token: AtomicU64::new(1),
            first_valid_token: AtomicU64::new(0),
        }
    }

    pub fn credentials(&self) -> Credentials {
        let key = |p: Principal| self.api_key(p);
        let secret = |p: Principal| self.client_secret(p);
        Credentials {
            api_key: key(Principal::Full),
            api_key_expired: self.api_key_expiring(Principal::Full, Some(ISSUED_AT + 86_400)),
            client_id: Principal::Full.client_id().into(),
            client_secret: secret(Principal::Full),
            api_key_no_results: key(Principal::NoResults),
            client_id_no_results: Principal::NoResults.client_id().into(),
            client_secret_no_results: secret(Principal::NoResults),
            api_key_no_dast: key(Principal::NoDast),
            client_id_no_dast: Principal::NoDast.client_id().into(),
            client_secret_no_dast: secret(Principal::NoDast),
        }
    }

    fn client_secret(&self, p: Principal) -> String {
        format!(
            "{:016x}{:016x}",
            mix(&[self.seed, 0x5EC, p.index() as u64]),
            mix(&[self.seed, 0x5ED, p.index() as u64])
        )
    }

    fn user_id(&self, p: Principal) -> String {
        encode(self.seed, Kind::User, p.index(), 0)
    }

    /// An API key is a Keycloak offline (refresh) token: its `aud` and `iss` name the realm and
    /// its `azp` the client it was issued to.
    fn api_key(&self, p: Principal) -> String {
        self.api_key_expiring(p, None)
    }

    /// An API key, with an expiry (`exp`) when it was created with one.
    fn api_key_expiring(&self, p: Principal, expires_at: Option<u64>) -> String {
        let mut claims = json!({
            "iat": ISSUED_AT,
            "jti": encode(self.seed, Kind::Token, u32::MAX, p.index()),
            "iss": self.realm_url,
            "aud": self.realm_url,
            "sub": self.user_id(p),
            "typ": "Offline",
            "azp": self.api_key_client_id,
            "session_state": encode(self.seed, Kind::Token, u32::MAX - 1, p.index()),
            "scope": "openid offline_access ast-api iam-api roles profile email",
        });
        if let Some(exp) = expires_at {
            claims["exp"] = json!(exp);
        }
        self.sign(&claims)
    }

    fn sign(&self, claims: &Value) -> String {
        let header =
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","kid":"cxone-emulator"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn verify(&self, token: &str) -> Option<Value> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let payload = signing_input.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    fn principal_of(&self, claims: &Value) -> Option<Principal> {
        let (index, _) = decode(self.seed, Kind::User, claims["sub"].as_str()?)?;
        Principal::ALL.get(index as usize).copied()
    }

    fn issue_access_token(
        &self,
        p: Principal,
        client_id: &str,
        valid_for: Option<u64>,
    ) -> (String, u64) {
        let now = now_secs();
        let number = self.next_token.fetch_add(1, Ordering::SeqCst);
        let mut claims = json!({
            "exp": now + self.lifetime_secs,
            "iat": now,
            "jti": encode(self.seed, Kind::Token, (number >> 32) as u32, number as u32),
            "iss": self.realm_url,
            "aud": ["ast-app", "account"],
            "sub": self.user_id(p),
            "typ": "Bearer",
            "azp": client_id,
            "tenant_id": encode(self.seed, Kind::Tenant, 0, 0),
            "tenant_name": self.tenant,
            "roles_ast": p.roles(),
            "ast-base-url": self.api_url,
            "preferred_username": format!("service-account-{client_id}"),
            "is-service-user": "true",
        });
        if let Some(secs) = valid_for {
            // Only the emulator reads this: the token dies early although `exp` says otherwise.
            // Milliseconds, so a token lives its full validity whatever the second it was issued in.
            claims["x-emulator-valid-until-ms"] = json!(now_millis() + secs * 1000);
        }
        (self.sign(&claims), self.lifetime_secs)
    }

    /// Checks a bearer token from an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(Refusal::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::Invalid);
        }
        let claims = self.verify(token.trim()).ok_or(Refusal::Invalid)?;
        if claims["typ"] != "Bearer" {
            return Err(Refusal::Invalid);
        }
        let passed = |claim: &str, now: u64| claims[claim].as_u64().is_some_and(|t| now >= t);
        if passed("exp", now_secs()) || passed("x-emulator-valid-until-ms", now_millis()) {
            return Err(Refusal::Expired);
        }
        let (hi, lo) = decode(self.seed, Kind::Token, claims["jti"].as_str().unwrap_or(""))
            .ok_or(Refusal::Invalid)?;
        if ((u64::from(hi) << 32) | u64::from(lo)) < self.first_valid_token.load(Ordering::SeqCst) {
            return Err(Refusal::Revoked);
        }
        self.principal_of(&claims).ok_or(Refusal::Invalid)
    }

    /// Every access token issued so far stops working (as after a key rotation or session kill).
    pub fn revoke_all(&self) {
        self.first_valid_token
            .store(self.next_token.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn token_answer(&self, form: &[(String, String)], valid_for: Option<u64>) -> Response {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match field("grant_type") {
            None => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing form parameter: grant_type",
            ),
            Some("refresh_token") => {
                let Some(client_id) = field("client_id") else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Missing parameter: client_id",
                    );
                };
                if !PUBLIC_CLIENTS.contains(&client_id) && client_id != self.api_key_client_id {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "Invalid client or Invalid client credentials",
                    );
                }
                let Some(key) = field("refresh_token") else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Missing parameter: refresh_token",
                    );
                };
                let claims = self
                    .verify(key)
                    .filter(|c| c["typ"] == "Offline" && c["iss"] == self.realm_url.as_str());
                let Some((claims, principal)) =
                    claims.and_then(|c| self.principal_of(&c).map(|p| (c, p)))
                else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid refresh token",
                    );
                };
                if claims["exp"].as_u64().is_some_and(|exp| now_secs() >= exp) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Token is not active",
                    );
                }
                if claims["azp"] != client_id {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid refresh token. Token client and authorized client don't match",
                    );
                }
                let (token, expires_in) = self.issue_access_token(principal, client_id, valid_for);
                token_body(token, expires_in, Some(key))
            }
            Some("client_credentials") => {
                let principal = Principal::ALL.into_iter().find(|p| {
                    field("client_id") == Some(p.client_id())
                        && field("client_secret") == Some(self.client_secret(*p).as_str())
                });
                let Some(principal) = principal else {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "Invalid client or Invalid client credentials",
                    );
                };
                let (token, expires_in) =
                    self.issue_access_token(principal, principal.client_id(), valid_for);
                token_body(token, expires_in, None)
            }
            Some(_) => oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            ),
        }
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn token_body(access_token: String, expires_in: u64, refresh_token: Option<&str>) -> Response {
    let mut body = json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": "f4308084-84b5-41af-a326-7c38d9fc19fa",
        "scope": "iam-api profile email ast-api groups offline_access roles",
    });
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    Json(body).into_response()
}

/// `POST /auth/realms/{tenant}/protocol/openid-connect/token`
pub async fn token(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    // Keycloak's realm names are case-sensitive: `Acme` is not `acme`.
    if tenant != state.auth.tenant {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Realm does not exist"})),
        )
            .into_response();
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    state
        .auth
        .token_answer(&form, state.faults.token_validity())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            3,
            "Acme",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            1800,
            "ast-app",
        )
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let a = auth();
        let (token, _) = a.issue_access_token(Principal::Full, "etm-connector", None);
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {token}"))),
            Ok(Principal::Full)
        );
        assert_eq!(
            a.authenticate(Some(&format!("bearer {token}"))),
            Ok(Principal::Full)
        );
        let mut forged = token.clone();
        forged.insert(forged.len() / 2, 'x');
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {forged}"))),
            Err(Refusal::Invalid)
        );
        assert_eq!(a.authenticate(None), Err(Refusal::Missing));
        // An API key is not an access token.
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {}", a.credentials().api_key))),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn revocation_and_early_expiry_refuse_tokens() {
        let a = auth();
        let (old, _) = a.issue_access_token(Principal::Full, "etm-connector", None);
        a.revoke_all();
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {old}"))),
            Err(Refusal::Revoked)
        );
        let (dead, _) = a.issue_access_token(Principal::Full, "etm-connector", Some(0));
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {dead}"))),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn refresh_flow_checks_client_and_key() {
        let a = auth();
        let key = a.credentials().api_key;
        let ok = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", &key),
            ]),
            None,
        );
        assert_eq!(ok.status(), StatusCode::OK);
        let garbage = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", "abc.def.ghi"),
            ]),
            None,
        );
        assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
        let other = Auth::new(
            3,
            "other",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            1800,
            "ast-app",
        );
        let foreign = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", &other.credentials().api_key),
            ]),
            None,
        );
        assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
        let mismatch = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-cli"),
                ("refresh_token", &key),
            ]),
            None,
        );
        assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
        let unknown = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "nobody"),
                ("refresh_token", &key),
            ]),
            None,
        );
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        let expired = a.token_answer(
            &form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", &a.credentials().api_key_expired),
            ]),
            None,
        );
        assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    }
}
