//! The five-check connection test against the emulator: all pass, and each failure names its
//! cause and its fix, with the later checks skipped.

use crate::common::*;
use cxone_emulator::{EmulatorConfig, TenantShape};
use cxone_etm::cxone::{
    CheckStatus, ConnectionReport, ConnectorKind, CxOneClient, test_connection,
};
use cxone_etm::secret::Credential;

fn statuses(report: &ConnectionReport) -> Vec<CheckStatus> {
    report.checks.iter().map(|c| c.status).collect()
}

use CheckStatus::{Fail, Pass, Skipped};

#[tokio::test]
async fn all_checks_pass_for_sast_and_dast_on_a_local_emulator() {
    let emulator = emulator(TenantShape::default()).await;
    let client = default_client(&emulator);
    let report = test_connection(&client, ConnectorKind::Sast).await;
    assert!(report.passed, "{}", report.to_table());
    assert_eq!(
        statuses(&report),
        vec![Pass, Skipped, Pass, Pass, Pass],
        "TLS is skipped on plain HTTP"
    );
    assert!(report.checks[3].detail.contains("results"));
    assert!(
        report.checks[4].detail.contains("10 projects"),
        "{}",
        report.checks[4].detail
    );
    let dast = test_connection(&client, ConnectorKind::Dast).await;
    assert!(dast.passed, "{}", dast.to_table());
    assert!(dast.checks[4].detail.contains("3 DAST environments"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][0]["name"], "Network reachability");
    assert_eq!(json["checks"][1]["status"], "skipped");
    assert!(report.to_table().contains("connection test passed"));
}

#[tokio::test]
async fn over_tls_the_handshake_is_verified_with_the_ca_bundle_and_fails_without_it() {
    let emulator = emulator_with(EmulatorConfig {
        tls: true,
        ..EmulatorConfig::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("cxone-etm-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emulator.ca_pem.as_ref().unwrap()).unwrap();

    let mut with_ca = settings(&emulator);
    with_ca.ca_bundle = Some(ca.clone());
    let report = test_connection(&client(with_ca, &oauth(&emulator)), ConnectorKind::Sast).await;
    assert_eq!(statuses(&report), vec![Pass; 5], "{}", report.to_table());
    assert!(
        report.checks[1].detail.contains("TLSv1_3") || report.checks[1].detail.contains("TLSv1_2")
    );

    let report = test_connection(
        &client(settings(&emulator), &oauth(&emulator)),
        ConnectorKind::Sast,
    )
    .await;
    assert_eq!(
        statuses(&report),
        vec![Pass, Fail, Skipped, Skipped, Skipped],
        "{}",
        report.to_table()
    );
    assert!(
        report.checks[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("ca_bundle")
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_bad_key_fails_the_credential_check_with_the_fix() {
    let emulator = emulator(TenantShape::default()).await;
    let client = client(
        settings(&emulator),
        &Credential::ApiKey("revoked-key".to_string().into()),
    );
    let report = test_connection(&client, ConnectorKind::Sast).await;
    assert!(!report.passed);
    assert_eq!(
        statuses(&report),
        vec![Pass, Skipped, Fail, Skipped, Skipped]
    );
    assert!(report.checks[2].detail.contains("API key was rejected"));
    assert!(
        report.checks[2]
            .fix
            .as_deref()
            .unwrap()
            .contains("create a new API key")
    );
    assert!(report.to_table().contains("FAILED"));
}

#[tokio::test]
async fn an_unknown_tenant_fails_the_credential_check() {
    let emulator = emulator(TenantShape::default()).await;
    let mut s = settings(&emulator);
    s.tenant = "globex".into();
    let report = test_connection(&client(s, &oauth(&emulator)), ConnectorKind::Sast).await;
    assert_eq!(report.checks[2].status, Fail);
    assert!(
        report.checks[2]
            .detail
            .contains("tenant 'globex' does not exist")
    );
}

#[tokio::test]
async fn a_missing_role_fails_the_scope_check_naming_the_role() {
    let emulator = emulator(TenantShape::default()).await;
    let no_results = Credential::ApiKey(emulator.credentials.api_key_no_results.clone().into());
    let report = test_connection(
        &client(settings(&emulator), &no_results),
        ConnectorKind::Sast,
    )
    .await;
    assert_eq!(statuses(&report), vec![Pass, Skipped, Pass, Fail, Skipped]);
    assert!(
        report.checks[3]
            .fix
            .as_deref()
            .unwrap()
            .contains("view-results"),
        "{}",
        report.to_table()
    );

    let no_dast = Credential::OAuthClient {
        client_id: emulator.credentials.client_id_no_dast.clone(),
        client_secret: emulator.credentials.client_secret_no_dast.clone().into(),
    };
    let client = client(settings(&emulator), &no_dast);
    assert!(
        test_connection(&client, ConnectorKind::Sast).await.passed,
        "SAST needs no DAST role"
    );
    let report = test_connection(&client, ConnectorKind::Dast).await;
    assert_eq!(report.checks[3].status, Fail);
    assert!(report.checks[3].fix.as_deref().unwrap().contains("DAST"));
}

#[tokio::test]
async fn an_unreachable_host_fails_the_network_check_with_the_region_fix() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}");
    let mut s = cxone_etm::cxone::VendorSettings::for_custom(&url, &url, "acme");
    s.allow_insecure_local = true;
    let client = CxOneClient::new(
        s.validate().unwrap(),
        &Credential::ApiKey("k".to_string().into()),
    )
    .unwrap();
    let report = test_connection(&client, ConnectorKind::Sast).await;
    assert_eq!(
        statuses(&report),
        vec![Fail, Skipped, Skipped, Skipped, Skipped]
    );
    assert!(report.checks[0].detail.contains("cannot connect"));
    assert!(
        report.checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("check the region")
    );
}
