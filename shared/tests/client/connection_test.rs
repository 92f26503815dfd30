//! The five-check connection test against the emulator: all pass, and every failure a user can
//! make is a report in which one check fails, names its cause and its fix, and the later checks
//! are skipped.

use crate::common::*;
use cxone_emulator::{EmulatorConfig, Endpoint, FaultSpec, TenantShape};
use cxone_etm::cxone::{
    CaBundleAt, CheckStatus, ConnectionReport, ConnectorKind, RunCalls, VendorSettings,
    test_connection, test_connection_within,
};
use cxone_etm::secret::Credential;

fn statuses(report: &ConnectionReport) -> Vec<CheckStatus> {
    report.checks.iter().map(|c| c.status).collect()
}

use CheckStatus::{Fail, Pass, Skipped};

async fn check(
    settings: VendorSettings,
    credential: Credential,
    calls: RunCalls,
) -> ConnectionReport {
    test_connection(
        &settings
            .validate(CaBundleAt::Named)
            .expect("valid settings"),
        Ok(credential),
        calls,
    )
    .await
}

#[tokio::test]
async fn all_checks_pass_for_sast_and_dast_on_a_local_emulator() {
    let emulator = emulator(TenantShape::default()).await;
    let sast = RunCalls {
        branches: true,
        ..RunCalls::defaults(ConnectorKind::Sast)
    };
    let report = check(settings(&emulator), api_key(&emulator), sast).await;
    assert!(report.passed, "{}", report.to_table());
    assert_eq!(
        statuses(&report),
        vec![Pass, Skipped, Pass, Pass, Pass],
        "TLS is skipped on plain HTTP"
    );
    assert_eq!(
        report.checks[3].detail,
        "can read everything a run reads: projects, last-scan, branches, results, sast-results"
    );
    assert!(
        report.checks[4].detail.contains("10 projects"),
        "{}",
        report.checks[4].detail
    );
    let dast = check(
        settings(&emulator),
        oauth(&emulator),
        RunCalls::defaults(ConnectorKind::Dast),
    )
    .await;
    assert!(dast.passed, "{}", dast.to_table());
    assert_eq!(
        dast.checks[3].detail,
        "can read everything a run reads: dast-environments, dast-scans, dast-results"
    );
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
    let sast = RunCalls::defaults(ConnectorKind::Sast);
    let report = check(with_ca, oauth(&emulator), sast.clone()).await;
    assert_eq!(statuses(&report), vec![Pass; 5], "{}", report.to_table());
    assert!(
        report.checks[1].detail.contains("TLSv1_3") || report.checks[1].detail.contains("TLSv1_2")
    );

    let report = check(settings(&emulator), oauth(&emulator), sast).await;
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

/// The emulator's table of mistakes (`Emulator::mistakes`, also run through the CLI and the
/// Lambda route), and a secret that cannot be read: each a report whose one failing check names
/// its cause and its fix.
#[tokio::test]
async fn every_mistake_is_a_report_with_one_failed_check_its_cause_and_its_fix() {
    let emulator = emulator(TenantShape::default()).await;
    for mistake in emulator.mistakes() {
        let settings: VendorSettings = serde_json::from_value(mistake.vendor()).unwrap();
        let credential = Credential::from_json(&mistake.secret).map_err(|e| e.to_string());
        let kind: ConnectorKind = serde_json::from_value(serde_json::json!(mistake.kind)).unwrap();
        let report = test_connection(
            &settings
                .validate(CaBundleAt::Named)
                .expect("valid settings"),
            credential,
            RunCalls::defaults(kind),
        )
        .await;
        let json = serde_json::to_value(&report).unwrap();
        if let Err(problem) = mistake.check_report(&json) {
            panic!("{problem}\n{}", report.to_table());
        }
    }
    let unreadable = test_connection(
        &settings(&emulator).validate(CaBundleAt::Named).unwrap(),
        Err("credential secret: env:CX_KEY: the environment variable is not set".into()),
        RunCalls::defaults(ConnectorKind::Sast),
    )
    .await;
    assert_eq!(
        statuses(&unreadable),
        [Pass, Skipped, Fail, Skipped, Skipped]
    );
    assert!(
        unreadable.checks[2]
            .fix
            .as_deref()
            .unwrap()
            .contains("store the credential where the connection's `secret` points")
    );
}

#[tokio::test]
async fn the_scope_check_calls_every_endpoint_a_run_calls_and_names_each_missing_role() {
    let emulator = emulator(TenantShape::default()).await;
    let each_branch = RunCalls {
        branches: true,
        ..RunCalls::defaults(ConnectorKind::Sast)
    };
    let dast = RunCalls::defaults(ConnectorKind::Dast);
    let cases = [
        (
            Endpoint::Projects,
            each_branch.clone(),
            "GET /api/projects (403)",
            "the view-projects role",
        ),
        (
            Endpoint::LastScan,
            each_branch.clone(),
            "GET /api/projects/last-scan (403)",
            "the view-scans role",
        ),
        (
            Endpoint::Branches,
            each_branch.clone(),
            "GET /api/projects/branches (403)",
            "the view-projects role",
        ),
        (
            Endpoint::Results,
            each_branch.clone(),
            "GET /api/results (403)",
            "the view-results role",
        ),
        (
            Endpoint::SastResults,
            each_branch.clone(),
            "GET /api/sast-results (403)",
            "the view-results role",
        ),
        (
            Endpoint::DastEnvironments,
            dast.clone(),
            "GET /api/dast/scans/environments (403)",
            "a DAST role",
        ),
        (
            Endpoint::DastScans,
            dast.clone(),
            "GET /api/dast/scans/scans (403)",
            "a DAST role",
        ),
        (
            Endpoint::DastResults,
            dast.clone(),
            "GET /api/dast/mfe-results/results/",
            "a DAST role",
        ),
    ];
    for (endpoint, calls, refused, role) in cases {
        emulator.clear_faults();
        emulator.set_fault(
            endpoint,
            FaultSpec {
                forbidden_rate: 1.0,
                ..FaultSpec::default()
            },
        );
        let report = check(settings(&emulator), oauth(&emulator), calls).await;
        let table = report.to_table();
        assert_eq!(
            statuses(&report),
            vec![Pass, Skipped, Pass, Fail, Skipped],
            "{endpoint:?}: {table}"
        );
        let scope = &report.checks[3];
        assert!(scope.detail.contains(refused), "{endpoint:?}: {table}");
        let fix = scope.fix.as_deref().unwrap();
        assert!(
            fix.starts_with("give the credential ") && fix.contains(role),
            "{endpoint:?}: {fix}"
        );
        assert!(!fix.contains("role a "), "read once, not garbled: {fix}");
    }
    emulator.clear_faults();

    // What the run does not call is not asked for: without the each-branch policy, a refused
    // branches endpoint does not fail the test, nor a refused /api/sast-results without the
    // severities before triage.
    emulator.set_fault(
        Endpoint::Branches,
        FaultSpec {
            forbidden_rate: 1.0,
            ..FaultSpec::default()
        },
    );
    emulator.set_fault(
        Endpoint::SastResults,
        FaultSpec {
            forbidden_rate: 1.0,
            ..FaultSpec::default()
        },
    );
    let plain = RunCalls {
        severities_before_triage: false,
        ..RunCalls::defaults(ConnectorKind::Sast)
    };
    let report = check(settings(&emulator), oauth(&emulator), plain).await;
    assert!(report.passed, "{}", report.to_table());
    // Two refusals are both named, each with its role.
    let report = check(settings(&emulator), oauth(&emulator), each_branch).await;
    let scope = &report.checks[3];
    assert!(
        scope.detail.contains("/api/projects/branches (403)")
            && scope.detail.contains("/api/sast-results (403)"),
        "{}",
        scope.detail
    );
    assert_eq!(
        scope.fix.as_deref().unwrap(),
        "give the credential the view-projects role and the view-results role (ast-viewer and ast-scanner include it)"
    );
}

#[tokio::test]
async fn credentials_without_a_role_fail_the_scope_check() {
    let emulator = emulator(TenantShape::default()).await;
    let no_results = Credential::ApiKey(emulator.credentials.api_key_no_results.clone().into());
    let report = check(
        settings(&emulator),
        no_results,
        RunCalls::defaults(ConnectorKind::Sast),
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
    let sast = check(
        settings(&emulator),
        no_dast.clone(),
        RunCalls::defaults(ConnectorKind::Sast),
    )
    .await;
    assert!(sast.passed, "SAST needs no DAST role");
    let report = check(
        settings(&emulator),
        no_dast,
        RunCalls::defaults(ConnectorKind::Dast),
    )
    .await;
    assert_eq!(report.checks[3].status, Fail);
    assert!(report.checks[3].fix.as_deref().unwrap().contains("DAST"));
}

/// A tenant slower than the caller waits (the API's route has 25 s; here 1 s against answers 1.5 s
/// late): the check running when the limit is spent fails, naming the limit and what to do, and
/// the rest are skipped; a report all the same, not a request cut off without one.
#[tokio::test]
async fn a_tenant_slower_than_the_test_may_take_fails_the_check_it_was_at() {
    let emulator = emulator(TenantShape::default()).await;
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            latency_ms: 1_500,
            ..FaultSpec::default()
        },
    );
    let report = test_connection_within(
        &settings(&emulator).validate(CaBundleAt::Named).unwrap(),
        Ok(api_key(&emulator)),
        RunCalls::defaults(ConnectorKind::Sast),
        std::time::Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        statuses(&report),
        [Pass, Skipped, Pass, Fail, Skipped],
        "{}",
        report.to_table()
    );
    assert!(!report.passed);
    let scope = &report.checks[3];
    assert_eq!(scope.detail, "no answer within the 1 s this test may take");
    assert!(
        scope
            .fix
            .as_deref()
            .unwrap()
            .contains("`cxone-etm test-connection`"),
        "{:?}",
        scope.fix
    );

    // Without a limit, the same tenant passes: slow is not wrong.
    let patient = test_connection(
        &settings(&emulator).validate(CaBundleAt::Named).unwrap(),
        Ok(api_key(&emulator)),
        RunCalls::defaults(ConnectorKind::Sast),
    )
    .await;
    assert!(patient.passed, "{}", patient.to_table());
}
