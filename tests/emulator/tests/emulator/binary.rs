//! The `cxone-emulator` binary: `--help`, the one JSON start-up line, flags for size and faults.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_cxone-emulator");

async fn spawn(args: &[&str]) -> (Child, Value) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("start-up line within 20 s")
        .unwrap()
        .expect("a line");
    (
        child,
        serde_json::from_str(&line).expect("the start-up line is JSON"),
    )
}

#[test]
fn help_documents_every_flag_and_the_fault_syntax() {
    let output = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--projects",
        "--project-results",
        "--results-offset",
        "--token-lifetime",
        "--tls",
        "--tls-ca-out",
        "--fault",
        "--dast-environments",
        "retry-after=SECS|date:SECS|none",
        "/_emulator/stats",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_fail_with_a_message_naming_them() {
    let output = std::process::Command::new(BIN)
        .args(["--fault", "nowhere:429=1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown endpoint 'nowhere'"));
    let output = std::process::Command::new(BIN)
        .args(["--result-mix", "50,50,50,50"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("add up to 100"));
}

#[tokio::test]
async fn prints_one_json_line_with_urls_and_credentials_then_serves_them() {
    let (_child, line) = spawn(&[
        "--projects",
        "7",
        "--results-per-scan",
        "30",
        "--fault",
        "projects:429=1,retry-after=2,max=1",
    ])
    .await;
    for field in [
        "url",
        "iam_url",
        "tenant",
        "api_key",
        "client_id",
        "client_secret",
        "api_key_no_results",
        "client_id_no_results",
        "client_secret_no_results",
        "api_key_no_dast",
        "client_id_no_dast",
        "client_secret_no_dast",
    ] {
        assert!(
            line[field].is_string(),
            "start-up line lacks {field}: {line}"
        );
    }
    let http = reqwest::Client::new();
    let token_url = format!(
        "{}/auth/realms/{}/protocol/openid-connect/token",
        line["iam_url"].as_str().unwrap(),
        line["tenant"].as_str().unwrap()
    );
    let token: Value = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", line["client_id"].as_str().unwrap()),
            ("client_secret", line["client_secret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let projects_url = format!("{}/api/projects", line["url"].as_str().unwrap());
    let first = http
        .get(&projects_url)
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        first.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the --fault flag is in force"
    );
    assert_eq!(first.headers()["retry-after"], "2");
    let second: Value = http
        .get(&projects_url)
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["totalCount"], 7);
    let stats: Value = http
        .get(format!("{}/_emulator/stats", line["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["traffic"]["requests"]["projects"], 2);
    assert_eq!(
        stats["traffic"]["faults_fired"]["rate_limited"]["projects"],
        1
    );
    assert_eq!(stats["expected"]["totals"]["projects"], 7);
}

#[tokio::test]
async fn tls_flag_writes_the_ca_for_clients() {
    let dir = std::env::temp_dir().join(format!("cxone-emulator-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    let (_child, line) = spawn(&["--tls", "--tls-ca-out", ca_path.to_str().unwrap()]).await;
    assert_eq!(line["ca_file"], ca_path.to_str().unwrap());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let health = http
        .get(format!(
            "{}/_emulator/health",
            line["url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    std::fs::remove_dir_all(dir).ok();
}
