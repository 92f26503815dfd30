//! SSRF refusals before any connection, redirects that leave the host, and no secret in any log
//! line at trace level.

use std::sync::{Arc, Mutex};

use crate::common::*;
use cxone_emulator::{Endpoint, FaultSpec, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::cxone::{CaBundleAt, CxOneClient, VendorSettings};
use cxone_etm::secret::Credential;

#[test]
fn ssrf_shaped_settings_are_refused_at_construction() {
    let cases = [
        ("http://cx.example.com", false),
        ("https://127.0.0.1", false),
        ("http://127.0.0.1:8080", false),
        ("https://169.254.169.254", true),
        ("https://[fd00:ec2::254]", true),
        ("https://10.0.0.5", true),
        ("https://user:pass@cx.example.com", true),
        ("https://cx.example.com:8443", false),
        ("https://localhost", false),
    ];
    for (url, allow_local) in cases {
        let mut s = VendorSettings::for_custom(url, url, "acme");
        s.allow_insecure_local = allow_local;
        let e = s.validate(CaBundleAt::Named).unwrap_err();
        assert!(e[0].field == "custom_api_url", "{url}: {e:?}");
    }
    let mut unknown_region = VendorSettings::for_region("atlantis", "acme");
    unknown_region.allow_insecure_local = true;
    assert_eq!(
        unknown_region.validate(CaBundleAt::Named).unwrap_err()[0].field,
        "region"
    );
}

/// A server that answers every request with a redirect to `location`.
async fn redirecting_server(location: String) -> String {
    scripted_server(move |_| {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    })
    .await
}

#[tokio::test]
async fn redirects_to_another_host_are_refused() {
    let emulator = emulator(TenantShape::default()).await;
    let target = format!(
        "{}/auth/realms/acme/protocol/openid-connect/token",
        emulator.iam_url.replace("127.0.0.1", "localhost")
    );
    let redirector = redirecting_server(target).await;
    let mut s = settings(&emulator);
    s.custom_iam_url = Some(redirector);
    s.retry.max_retries = 0;
    let client =
        CxOneClient::new(s.validate(CaBundleAt::Named).unwrap(), &oauth(&emulator)).unwrap();
    let e = client.authenticate().await.unwrap_err();
    assert!(e.to_string().contains("redirect"), "{e}");
    assert_eq!(
        emulator.traffic().requests_to(Endpoint::Token),
        0,
        "the redirect was not followed"
    );
}

/// A token endpoint (or a gateway in front of it) whose error quotes the request: the OAuth
/// client's secret in none of the forms it may take reaches the error, whose text goes to logs,
/// run records, reports and the API's answers.
#[tokio::test]
async fn a_token_answer_quoting_the_secret_in_any_encoding_carries_none_of_it() {
    const SECRET: &str = "t0p&Secret/Value+ 42<x>";
    // Quotes and a letter past ASCII, for the encoders that write those their own way.
    const QUOTED: &str = "Q\"uo'te\u{e9}d&S3cret9";
    let cases = [
        (
            SECRET,
            "422 Unprocessable Entity",
            "you sent clientSecret: t0p&Secret/Value+ 42<x> which we did not expect",
        ),
        (
            SECRET,
            "422 Unprocessable Entity",
            r#"{"detail":"grant_type=client_credentials\u0026client_secret=t0p%26Secret%2FValue%2B+42%3Cx%3E"}"#,
        ),
        (
            SECRET,
            "400 Bad Request",
            r#"{"error":"invalid_request","error_description":"bad secret t0p\u0026Secret\/Value+ 42\u003cx\u003e"}"#,
        ),
        (
            SECRET,
            "413 Payload Too Large",
            r#"<input name="client_secret" value="t0p&amp;Secret/Value+ 42&lt;x&gt;">"#,
        ),
        (
            SECRET,
            "409 Conflict",
            "client_secret=t0p%26Secret%2fValue%2b%2042%3cx%3e&grant_type=client_credentials",
        ),
        (
            SECRET,
            "415 Unsupported Media Type",
            "T0P&SECRET/VALUE+ 42<X>",
        ),
        // Go's html.EscapeString, Python's html.escape, Python's json.dumps (ASCII only).
        (
            QUOTED,
            "422 Unprocessable Entity",
            "<p>secret Q&#34;uo&#39;te\u{e9}d&amp;S3cret9</p>",
        ),
        (
            QUOTED,
            "422 Unprocessable Entity",
            "<p>secret Q&quot;uo&#x27;te\u{e9}d&amp;S3cret9</p>",
        ),
        (
            QUOTED,
            "422 Unprocessable Entity",
            r#"{"detail":"secret Q\"uo'te\u00e9d&S3cret9"}"#,
        ),
    ];
    for (secret, status, body) in cases {
        let answer = body.to_string();
        let server = scripted_server(move |_| http_response(status, "text/plain", &answer)).await;
        let mut settings = VendorSettings::for_custom(&server, &server, "acme");
        settings.allow_insecure_local = true;
        settings.retry.max_retries = 0;
        let credential = Credential::OAuthClient {
            client_id: "etm".into(),
            client_secret: secret.to_string().into(),
        };
        let client =
            CxOneClient::new(settings.validate(CaBundleAt::Named).unwrap(), &credential).unwrap();
        let error = client.authenticate().await.unwrap_err();
        let text = format!("{error} {error:?}").to_ascii_lowercase();
        assert!(
            ![
                "t0p",
                "secret%2f",
                "/value",
                "42<x>",
                "42%3c",
                "uo",
                "s3cret9"
            ]
            .iter()
            .any(|part| text.contains(part)),
            "{body}: {text}"
        );
        assert!(text.contains("(redacted)"), "{body}: {text}");
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line at trace level, for as long as the guard lives (this thread).
fn capture_trace() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_even_at_trace_level() {
    let (captured, _guard) = capture_trace();

    let emulator = emulator(TenantShape {
        projects: 3,
        results_per_scan: 20,
        ..TenantShape::default()
    })
    .await;
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            rate_limit_rate: 1.0,
            max: Some(1),
            ..FaultSpec::default()
        },
    );
    let key_client = default_client(&emulator);
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    let (records, _) = pull_results(&key_client, &scan).await;
    assert_eq!(records, 20);
    emulator.revoke_tokens();
    key_client.projects().await.unwrap();
    let oauth_client = client(settings(&emulator), &oauth(&emulator));
    oauth_client.projects().await.unwrap();
    let bad = Credential::OAuthClient {
        client_id: emulator.credentials.client_id.clone(),
        client_secret: "wrong-secret-zz9".to_string().into(),
    };
    let refused = client(settings(&emulator), &bad)
        .authenticate()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("secret was rejected"),
        "{refused}"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("vendor_request") && logs.contains("retrying"),
        "the run was logged"
    );
    for secret in [
        emulator.credentials.api_key.as_str(),
        emulator.credentials.client_secret.as_str(),
        "wrong-secret-zz9",
        "Bearer ",
        "eyJ",
    ] {
        assert!(
            !logs.contains(secret),
            "a secret ({}…) reached the logs",
            &secret[..secret.len().min(6)]
        );
    }
}

/// Every file under `dir`, gzip members unpacked, as text.
fn everything_stored(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            everything_stored(&path, out);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        // Packed files (raw pages, batches, ledgers) are searched unpacked.
        let unpacked = cxone_etm::packing::unpack(&path.to_string_lossy(), &bytes).unwrap();
        let text = String::from_utf8_lossy(&unpacked).into_owned();
        out.push((path.display().to_string(), text));
    }
}

#[tokio::test]
async fn a_full_run_with_failures_leaks_no_secret_into_logs_errors_objects_or_events() {
    let (captured, _guard) = capture_trace();

    let emulator = emulator(TenantShape {
        projects: 4,
        results_per_scan: 60,
        dast_environments: 2,
        dast_results_per_scan: 40,
        ..TenantShape::default()
    })
    .await;
    // Retries (a 429 and a 503, each exactly once), tokens revoked between the runs, and one item
    // the vendor refuses (403).
    emulator.set_fault(
        Endpoint::DastResults,
        FaultSpec {
            rate_limit_rate: 1.0,
            max: Some(1),
            ..FaultSpec::default()
        },
    );
    emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            server_error_rate: 1.0,
            max: Some(1),
            ..FaultSpec::default()
        },
    );
    let refused_scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(refused_scan),
            ..FaultSpec::default()
        },
    );
    let (store, dir) = crate::common::runs::temp_store("no-secrets");
    let mut errors = Vec::new();
    for (id, kind, credential) in [
        ("sast", ConnectorKind::Sast, api_key(&emulator)),
        ("dast", ConnectorKind::Dast, oauth(&emulator)),
    ] {
        let c = crate::common::runs::connection(&emulator, id, kind);
        let summary = crate::common::runs::run(&store, &c, credential)
            .await
            .unwrap();
        errors.push(serde_json::to_string(&summary).unwrap());
        emulator.revoke_tokens();
    }
    // Failed authentication: a wrong client secret and a key of another realm.
    let wrong = Credential::OAuthClient {
        client_id: emulator.credentials.client_id.clone(),
        client_secret: "wrong-secret-zz9".to_string().into(),
    };
    let c = crate::common::runs::connection(&emulator, "bad-auth", ConnectorKind::Dast);
    let failed = crate::common::runs::run(&store, &c, wrong)
        .await
        .unwrap_err();
    errors.push(format!("{failed} {failed:?}"));

    let mut stored = Vec::new();
    everything_stored(&dir, &mut stored);
    assert!(
        stored.iter().any(|(k, _)| k.ends_with("_COMMITTED"))
            && stored.iter().any(|(k, _)| k.ends_with("manifest.json")),
        "the runs committed"
    );
    let events_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    everything_stored(&events_dir, &mut stored);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying")
            && logs.contains("403")
            && logs.contains("id or secret was rejected"),
        "the failures were logged"
    );
    let mut places: Vec<(String, String)> = vec![("logs".into(), logs)];
    places.extend(
        errors
            .into_iter()
            .map(|e| ("error or summary".to_string(), e)),
    );
    places.extend(stored);
    for (place, text) in &places {
        for secret in [
            emulator.credentials.api_key.as_str(),
            emulator.credentials.client_secret.as_str(),
            "wrong-secret-zz9",
            "Bearer ",
            "eyJ",
        ] {
            assert!(
                !text.contains(secret),
                "{place} holds a secret ({}…)",
                &secret[..secret.len().min(6)]
            );
        }
        assert!(
            !text.to_ascii_lowercase().contains("authorization:"),
            "{place} holds an Authorization header"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
