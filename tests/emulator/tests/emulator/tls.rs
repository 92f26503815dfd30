//! HTTPS with a generated CA: trusted when the client is given the CA, refused otherwise.

use cxone_emulator::{Emulator, EmulatorConfig};
use reqwest::StatusCode;

#[tokio::test]
async fn serves_https_to_clients_that_trust_its_ca_only() {
    let emulator = Emulator::start(EmulatorConfig {
        tls: true,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    assert!(
        emulator.api_url.starts_with("https://127.0.0.1:")
            && emulator.iam_url.starts_with("https://")
    );
    let pem = emulator.ca_pem.clone().expect("a CA when serving TLS");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    let error = untrusting
        .get(format!("{}/_emulator/health", emulator.api_url))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");

    let ca = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let token: serde_json::Value = trusting
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &emulator.credentials.client_id),
            ("client_secret", &emulator.credentials.client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let projects = trusting
        .get(format!("{}/api/projects", emulator.api_url))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(projects.status(), StatusCode::OK);
    assert_eq!(
        projects.json::<serde_json::Value>().await.unwrap()["totalCount"],
        10
    );
}
