//! IAM: both token flows, the claims real clients read, and every documented error answer.

use crate::common::*;
use cxone_emulator::{EmulatorConfig, Endpoint, FaultSpec, TenantShape};
use reqwest::StatusCode;

#[tokio::test]
async fn api_key_flow_issues_a_token_with_the_claims_clients_read() {
    let emulator = start(TenantShape::default()).await;
    let key = claims(&emulator.credentials.api_key);
    let realm = format!("{}/auth/realms/acme", emulator.iam_url);
    assert_eq!(key["aud"], realm.as_str());
    assert_eq!(key["iss"], realm.as_str());
    assert_eq!(key["azp"], "ast-app");

    let (status, body) = token_response(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", &emulator.credentials.api_key),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["refresh_token"], emulator.credentials.api_key.as_str());
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["tenant_name"], "acme");
    assert_eq!(access["ast-base-url"], emulator.api_url.as_str());
    assert!(access["exp"].as_u64().unwrap() > access["iat"].as_u64().unwrap() + 1700);
    let roles: Vec<&str> = access["roles_ast"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"view-results") && roles.contains(&"dast-viewer"),
        "{roles:?}"
    );
}

#[tokio::test]
async fn oauth_client_flow_issues_a_token_without_refresh_token() {
    let emulator = start(TenantShape::default()).await;
    let c = &emulator.credentials;
    let (status, body) = token_response(
        &emulator,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["azp"],
        c.client_id.as_str()
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        get(&emulator, token, "/api/projects?limit=1").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_errors_answer_as_keycloak_does() {
    let emulator = start(TenantShape::default()).await;
    let c = &emulator.credentials;
    // (form, status, error, error_description)
    type Case<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", "eyJ.garbage.key"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "ast-cli"),
                ("refresh_token", &c.api_key),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token. Token client and authorized client don't match",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &c.client_id),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", &c.client_secret),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        ),
        (
            vec![("grant_type", "password")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        ),
        (
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        ),
    ];
    for (form, status, error, description) in cases {
        let (got, body) = token_response(&emulator, &form).await;
        assert_eq!(got, status, "{form:?}: {body}");
        assert_eq!(body["error"], error, "{form:?}");
        assert_eq!(body["error_description"], description, "{form:?}");
    }
}

#[tokio::test]
async fn unknown_tenant_is_404_realm_does_not_exist_and_realm_names_are_case_sensitive() {
    let emulator = start(TenantShape::default()).await;
    let url = format!(
        "{}/auth/realms/nosuch/protocol/openid-connect/token",
        emulator.iam_url
    );
    let response = client()
        .post(url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", &emulator.credentials.api_key),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "Realm does not exist"
    );

    let upper = format!(
        "{}/auth/realms/ACME/protocol/openid-connect/token",
        emulator.iam_url
    );
    let response = client()
        .post(upper)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", &emulator.credentials.api_key),
        ])
        .send()
        .await
        .unwrap();
    // As Keycloak's: `ACME` is another realm than `acme`.
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn iam_and_api_are_separate_hosts() {
    let emulator = start(TenantShape::default()).await;
    assert_ne!(emulator.iam_url, emulator.api_url);
    let on_api_host = format!(
        "{}/auth/realms/acme/protocol/openid-connect/token",
        emulator.api_url
    );
    let response = client()
        .post(on_api_host)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let token = full_token(&emulator).await;
    let on_iam_host = client()
        .get(format!("{}/api/projects", emulator.iam_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(on_iam_host.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keys_issued_to_another_client_need_that_client_id() {
    let emulator = start_with(EmulatorConfig {
        api_key_client_id: "cx-etm-connector".into(),
        ..EmulatorConfig::default()
    })
    .await;
    let key = emulator.credentials.api_key.clone();
    assert_eq!(claims(&key)["azp"], "cx-etm-connector");
    let (status, body) = token_response(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", &key),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("don't match")
    );
    let (status, _) = token_response(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cx-etm-connector"),
            ("refresh_token", &key),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn api_refuses_missing_forged_expired_and_revoked_tokens() {
    let emulator = start_with(EmulatorConfig {
        token_lifetime_secs: 1,
        ..EmulatorConfig::default()
    })
    .await;
    let response = client()
        .get(format!("{}/api/projects", emulator.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let token = full_token(&emulator).await;
    assert_eq!(
        claims(&token)["exp"].as_u64().unwrap() - claims(&token)["iat"].as_u64().unwrap(),
        1
    );
    let forged = format!("{token}x");
    assert_eq!(
        get(&emulator, &forged, "/api/projects").await.0,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, body) = get(&emulator, &token, "/api/projects").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let emulator = start(TenantShape::default()).await;
    let token = full_token(&emulator).await;
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK
    );
    emulator.revoke_tokens();
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::UNAUTHORIZED
    );
    let fresh = full_token(&emulator).await;
    assert_eq!(
        get(&emulator, &fresh, "/api/projects").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn early_expiry_fault_kills_tokens_before_their_exp() {
    let emulator = start(TenantShape::default()).await;
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            expire_tokens_after_secs: Some(1),
            ..FaultSpec::default()
        },
    );
    let token = full_token(&emulator).await;
    assert!(
        claims(&token)["exp"].as_u64().unwrap() > claims(&token)["iat"].as_u64().unwrap() + 1000
    );
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::UNAUTHORIZED
    );
    emulator.clear_faults();
    let token = full_token(&emulator).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        get(&emulator, &token, "/api/projects").await.0,
        StatusCode::OK,
        "cleared fault stops early expiry"
    );
}
