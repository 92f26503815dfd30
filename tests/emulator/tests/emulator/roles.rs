//! Credentials lacking a role get 403 from exactly the endpoints that need it.

use crate::common::*;
use cxone_emulator::TenantShape;
use reqwest::StatusCode;

#[tokio::test]
async fn missing_results_role_gives_403_on_results_only() {
    let emulator = start(TenantShape::default()).await;
    let c = emulator.credentials.clone();
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    for token in [
        api_key_token(&emulator, &c.api_key_no_results).await,
        oauth_token(
            &emulator,
            &c.client_id_no_results,
            &c.client_secret_no_results,
        )
        .await,
    ] {
        assert!(
            !claims(&token)["roles_ast"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "view-results")
        );
        assert_eq!(
            get(&emulator, &token, "/api/projects").await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(&emulator, &token, "/api/projects/last-scan").await.0,
            StatusCode::OK
        );
        for path in [
            format!("/api/results?scan-id={scan}"),
            format!("/api/sast-results?scan-id={scan}"),
        ] {
            let (status, body) = get(&emulator, &token, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(body["code"], 403);
            assert!(body.get("data").is_some(), "{body}");
        }
    }
}

#[tokio::test]
async fn missing_dast_role_gives_403_on_dast_only() {
    let emulator = start(TenantShape::default()).await;
    let c = emulator.credentials.clone();
    let env = emulator.expected().environments[0].clone();
    let scan = env.latest_completed_scan.clone().unwrap();
    let project_scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    for token in [
        api_key_token(&emulator, &c.api_key_no_dast).await,
        oauth_token(&emulator, &c.client_id_no_dast, &c.client_secret_no_dast).await,
    ] {
        assert_eq!(
            get(
                &emulator,
                &token,
                &format!("/api/results?scan-id={project_scan}")
            )
            .await
            .0,
            StatusCode::OK
        );
        for path in [
            "/api/dast/scans/environments".to_string(),
            format!("/api/dast/scans/scans?environmentId={}", env.id),
            format!("/api/dast/mfe-results/results/{scan}"),
        ] {
            let (status, body) = get(&emulator, &token, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(body["code"], 403);
        }
    }
}
