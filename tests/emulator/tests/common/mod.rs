//! Helpers shared by the emulator's integration tests: start an emulator, get tokens, call it.
#![allow(dead_code)] // each test binary uses its own subset

use cxone_emulator::{Emulator, EmulatorConfig, TenantShape};
use reqwest::StatusCode;
use serde_json::Value;

pub async fn start(shape: TenantShape) -> Emulator {
    start_with(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await
}

pub async fn start_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("emulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client builds")
}

pub async fn token_response(emulator: &Emulator, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client()
        .post(emulator.token_url())
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn api_key_token(emulator: &Emulator, api_key: &str) -> String {
    let (status, body) = token_response(
        emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", api_key),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub async fn oauth_token(emulator: &Emulator, client_id: &str, secret: &str) -> String {
    let (status, body) = token_response(
        emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub async fn full_token(emulator: &Emulator) -> String {
    api_key_token(emulator, &emulator.credentials.api_key).await
}

/// GET `{api_url}{path}` with a bearer token; the status and the body parsed as JSON (or Null).
pub async fn get(emulator: &Emulator, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}{path}", emulator.api_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn get_ok(emulator: &Emulator, token: &str, path: &str) -> Value {
    let (status, body) = get(emulator, token, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// Decodes (without verifying) the claims of a JWT-shaped token.
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("json")
}
