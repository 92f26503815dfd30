//! Authentication against the emulator: both flows, every token error, expiry and re-auth.

use std::time::Duration;

use crate::common::*;
use cxone_emulator::{Emulator, EmulatorConfig, Endpoint, FaultSpec, TenantShape};
use cxone_etm::cxone::{AuthError, CaBundleAt, CxOneClient, RetrySettings, VendorError};
use cxone_etm::secret::Credential;

async fn auth_error(client: &CxOneClient) -> AuthError {
    match client.authenticate().await {
        Err(VendorError::Auth(e)) => e,
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

#[tokio::test]
async fn both_flows_read_projects() {
    let emulator = emulator(TenantShape {
        projects: 7,
        ..TenantShape::default()
    })
    .await;
    for credential in [api_key(&emulator), oauth(&emulator)] {
        let client = client(settings(&emulator), &credential);
        let listing = client.projects().await.unwrap();
        assert_eq!(listing.items.len(), 7);
        assert!(listing.completeness.is_complete());
        assert_eq!(client.counters().token_requests, 1);
    }
}

#[tokio::test]
async fn api_keys_are_presented_with_the_client_named_in_their_azp_claim() {
    let emulator = emulator_with(EmulatorConfig {
        api_key_client_id: "cx-etm-key-client".into(),
        ..EmulatorConfig::default()
    })
    .await;
    let client = default_client(&emulator);
    client
        .authenticate()
        .await
        .expect("the key's own client id is used, not ast-app");
}

/// A tenant typed in capitals (`Acme` for `acme`) is asked for by its realm lower-cased, as
/// Checkmarx One's clients ask it: Keycloak's realm names are case-sensitive, and the emulator's
/// too. Before, client credentials were refused as for an unknown tenant.
#[tokio::test]
async fn a_tenant_typed_in_capitals_is_asked_for_lower_cased() {
    let emulator = emulator(TenantShape::default()).await;
    let mut s = settings(&emulator);
    assert_eq!(s.tenant, s.tenant.to_ascii_lowercase());
    s.tenant = s.tenant.to_ascii_uppercase();
    for credential in [api_key(&emulator), oauth(&emulator)] {
        let client = client(s.clone(), &credential);
        assert!(client.projects().await.is_ok());
    }
}

#[tokio::test]
async fn each_token_refusal_becomes_its_own_actionable_error() {
    let emulator = emulator(TenantShape::default()).await;
    let good = settings(&emulator);

    let bad_key = Credential::ApiKey("not-a-real-key".to_string().into());
    assert!(matches!(
        auth_error(&client(good.clone(), &bad_key)).await,
        AuthError::BadApiKey { .. }
    ));

    let bad_secret = Credential::OAuthClient {
        client_id: emulator.credentials.client_id.clone(),
        client_secret: "wrong".to_string().into(),
    };
    let e = auth_error(&client(good.clone(), &bad_secret)).await;
    assert!(matches!(e, AuthError::BadClientCredentials { .. }), "{e}");
    assert!(e.fix().contains("client id and secret"));

    let mut wrong_tenant = good.clone();
    wrong_tenant.tenant = "globex".into();
    let e = auth_error(&client(wrong_tenant, &oauth(&emulator))).await;
    assert!(
        matches!(e, AuthError::UnknownTenant { ref tenant } if tenant == "globex"),
        "{e}"
    );

    // The IAM URL points at the API host: it answers 404, not Keycloak's "Realm does not exist".
    let mut wrong_region = good.clone();
    wrong_region.custom_iam_url = Some(emulator.api_url.clone());
    let e = auth_error(&client(wrong_region, &oauth(&emulator))).await;
    assert!(matches!(e, AuthError::WrongRegion { .. }), "{e}");
    assert!(e.fix().contains("set the region"));
    // A run's error says what went wrong and, once, what to do.
    let run_error = cxone_etm::cxone::VendorError::Auth(e.clone()).to_string();
    assert_eq!(
        run_error,
        format!("authentication failed: {e}; {}", e.fix()),
        "{run_error}"
    );

    // The API key names another realm than the one configured: refused before any request.
    let mut other_realm = good.clone();
    other_realm.tenant = "globex".into();
    let before = emulator.traffic().requests_to(Endpoint::Token);
    let e = CxOneClient::new(
        other_realm.validate(CaBundleAt::Named).unwrap(),
        &api_key(&emulator),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("belongs to"), "{e}");
    assert_eq!(emulator.traffic().requests_to(Endpoint::Token), before);
}

#[tokio::test]
async fn token_errors_never_contain_the_secret() {
    let emulator = emulator(TenantShape::default()).await;
    let secret = "an-obviously-secret-value-123";
    let credential = Credential::OAuthClient {
        client_id: emulator.credentials.client_id.clone(),
        client_secret: secret.to_string().into(),
    };
    let e = client(settings(&emulator), &credential)
        .authenticate()
        .await
        .unwrap_err();
    assert!(!format!("{e} {e:?}").contains(secret));
    let key = Credential::ApiKey(secret.to_string().into());
    let e = client(settings(&emulator), &key)
        .authenticate()
        .await
        .unwrap_err();
    assert!(!format!("{e} {e:?}").contains(secret));
}

#[tokio::test]
async fn tokens_expiring_mid_run_cause_no_failed_request() {
    // Four seconds, counted in whole seconds from the second of issue as Keycloak does: each
    // token dies 3 to 4 s after it is asked for, and is replaced 2 s after.
    let emulator = emulator_with(EmulatorConfig {
        token_lifetime_secs: 4,
        shape: TenantShape {
            projects: 3,
            results_per_scan: 30,
            ..TenantShape::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let client = default_client(&emulator);
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let started = std::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(6_500) || calls <= 10 {
        let (records, pager) = pull_results(&client, &scan).await;
        assert_eq!(records, 30);
        assert!(pager.completeness().is_complete());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counters = client.counters();
    assert!(
        counters.token_requests >= 3,
        "tokens refreshed before expiry: {counters:?}"
    );
    assert_eq!(
        counters.reauthentications, 0,
        "refreshed early, never refused: {counters:?}"
    );
}

#[tokio::test]
async fn a_token_killed_early_is_replaced_once_and_the_call_succeeds() {
    let emulator = emulator(TenantShape::default()).await;
    // Two seconds: the first call uses its token well inside them, however loaded the machine.
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            expire_tokens_after_secs: Some(2),
            ..FaultSpec::default()
        },
    );
    let client = default_client(&emulator);
    client.projects().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let listing = client
        .projects()
        .await
        .expect("the 401 is answered with one re-authentication");
    assert_eq!(listing.items.len(), 10);
    assert_eq!(client.counters().reauthentications, 1);
    assert_eq!(client.counters().token_requests, 2);
}

#[tokio::test]
async fn a_token_that_dies_during_each_retry_wait_is_renewed_each_time() {
    let emulator = emulator(TenantShape::default()).await;
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            expire_tokens_after_secs: Some(1),
            ..FaultSpec::default()
        },
    );
    // Each truncated page is retried after at least 1.2 s (half the base delay), longer than a token lives: every retry
    // meets a dead token. (Truncation happens after the emulator checked the token; a 429 comes
    // before, so it could not interleave with the refusals.)
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            truncate_rate: 1.0,
            max: Some(2),
            ..FaultSpec::default()
        },
    );
    let mut s = settings(&emulator);
    s.retry = RetrySettings {
        base_delay_ms: 2_400,
        max_delay_secs: 3,
        ..s.retry
    };
    let client = client(s, &api_key(&emulator));
    let listing = client
        .projects()
        .await
        .expect("a token that died in a wait is renewed, however many waits the call has");
    assert_eq!(listing.items.len(), 10);
    let counters = client.counters();
    assert_eq!(counters.retries, 2, "{counters:?}");
    assert_eq!(counters.reauthentications, 2, "{counters:?}");
    assert_eq!(counters.token_requests, 3, "{counters:?}");
}

#[tokio::test]
async fn a_forced_401_under_concurrency_costs_exactly_one_reauthentication() {
    let emulator = emulator(TenantShape {
        projects: 5,
        results_per_scan: 20,
        ..TenantShape::default()
    })
    .await;
    let client = default_client(&emulator);
    client.authenticate().await.unwrap();
    emulator.revoke_tokens();
    let tokens_before = emulator.traffic().requests_to(Endpoint::Token);
    let scans: Vec<String> = emulator
        .expected()
        .projects
        .iter()
        .filter_map(|p| p.latest_completed_sast_scan.clone())
        .collect();
    let pulls = (0..16).map(|i| {
        let client = client.clone();
        let scan = scans[i % scans.len()].clone();
        async move { pull_results(&client, &scan).await.0 }
    });
    let counts = futures_util::future::join_all(pulls).await;
    assert!(counts.iter().all(|c| *c == 20));
    assert_eq!(
        emulator.traffic().requests_to(Endpoint::Token) - tokens_before,
        1,
        "one token request for sixteen refused calls"
    );
    assert_eq!(client.counters().reauthentications, 1);
}

/// A tenant whose results answers come `latency_ms` late (each request's token judged when the
/// wait is over), a client holding a token, and the scan to pull.
async fn slow_results(latency_ms: u64) -> (Emulator, CxOneClient, String) {
    let emulator = emulator(TenantShape {
        projects: 2,
        scans_per_project: 1,
        results_per_scan: 20,
        ..TenantShape::default()
    })
    .await;
    let client = default_client(&emulator);
    client.authenticate().await.unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            latency_ms,
            ..FaultSpec::default()
        },
    );
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    (emulator, client, scan)
}

/// Waits until the emulator has received `count` results requests.
async fn results_requests_arrived(emulator: &Emulator, count: u64) {
    let started = std::time::Instant::now();
    while emulator.traffic().requests_to(Endpoint::Results) < count {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "results request {count} never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request that waits long on its answer can be refused for a token another request has since
/// replaced; that refusal says nothing about the credential. When the replacement dies too, the
/// request re-authenticates once more and succeeds, as any request whose token died would.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_of_a_token_already_replaced_is_not_held_against_the_credential() {
    // The first results answer comes three seconds late, long after what follows.
    let (emulator, client, scan) = slow_results(3_000).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { pull_results(&client, &scan).await.0 }
    });
    results_requests_arrived(&emulator, 1).await;
    // While it waits, its token is revoked, another call replaces it, and the replacement is
    // revoked as well.
    emulator.revoke_tokens();
    assert!(client.projects().await.unwrap().completeness.is_complete());
    emulator.revoke_tokens();
    emulator.clear_faults();
    assert_eq!(slow.await.unwrap(), 20, "the slow pull succeeds");
    let seen = client.counters();
    assert_eq!(
        (seen.reauthentications, seen.token_requests),
        (2, 3),
        "one re-authentication for each token that died"
    );
    assert_eq!(emulator.traffic().requests_to(Endpoint::Results), 3);
}

/// Refused again and again on tokens other requests keep replacing, a request gives up after a
/// few rounds rather than going on for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_refused_on_replaced_tokens_again_and_again_gives_up() {
    // Each attempt's token is judged 1.5 s after it arrives, long after the test's moves.
    let (emulator, client, scan) = slow_results(1_500).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.results(&scan).next_page().await.map(|_| ()) }
    });
    // During each of its attempts, the token it holds is revoked and replaced by another call.
    for attempt in 1..=5 {
        results_requests_arrived(&emulator, attempt).await;
        emulator.revoke_tokens();
        client.projects().await.unwrap();
    }
    let e = slow.await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            VendorError::Unauthorized {
                endpoint: "results"
            }
        ),
        "{e}"
    );
    assert_eq!(emulator.traffic().requests_to(Endpoint::Results), 5);
    assert_eq!(client.counters().token_requests, 6, "the other calls' five");
}

/// The bound is on refusals in a row: an answer of another kind between them (here a 503, retried)
/// starts the count again, so a long call among callers that keep replacing tokens goes on.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_on_replaced_tokens_are_counted_in_a_row_only() {
    let (emulator, client, scan) = slow_results(1_500).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.results(&scan).next_page().await.map(|_| ()) }
    });
    // Four refusals on replaced tokens, then a 503, then a fifth refusal: within the bound.
    for attempt in 1..=6 {
        results_requests_arrived(&emulator, attempt).await;
        if attempt == 5 {
            emulator.set_fault(
                Endpoint::Results,
                FaultSpec {
                    latency_ms: 1_500,
                    server_error_rate: 1.0,
                    max: Some(1),
                    ..FaultSpec::default()
                },
            );
        } else {
            emulator.revoke_tokens();
            client.projects().await.unwrap();
        }
    }
    emulator.clear_faults();
    slow.await
        .unwrap()
        .expect("a 503 between refusals starts their count again");
    assert_eq!(emulator.traffic().requests_to(Endpoint::Results), 7);
    assert_eq!(client.counters().retries, 1, "the 503's");
}

#[tokio::test]
async fn a_credential_refused_after_a_fresh_token_fails_clearly() {
    let emulator = emulator(TenantShape::default()).await;
    // Every token dies at once: the re-authenticated attempt is refused too.
    emulator.set_fault(
        Endpoint::Token,
        FaultSpec {
            expire_tokens_after_secs: Some(0),
            ..FaultSpec::default()
        },
    );
    let client = default_client(&emulator);
    let e = client.projects().await.unwrap_err();
    assert!(
        matches!(
            e,
            VendorError::Unauthorized {
                endpoint: "projects"
            }
        ),
        "{e}"
    );
    assert_eq!(
        client.counters().token_requests,
        2,
        "one re-authentication, not a loop"
    );
}
