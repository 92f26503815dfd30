//! Starting an emulator and a client pointed at it.
#![allow(dead_code)] // each test binary uses its own subset

pub mod reliability;
pub mod runs;

use cxone_emulator::{Emulator, EmulatorConfig, TenantShape};
use cxone_etm::cxone::{CxOneClient, RetrySettings, VendorSettings};
use cxone_etm::secret::Credential;

pub async fn emulator(shape: TenantShape) -> Emulator {
    emulator_with(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await
}

pub async fn emulator_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("emulator starts")
}

/// Settings for the emulator, with short retry delays so fault tests run quickly.
pub fn settings(emulator: &Emulator) -> VendorSettings {
    let mut s = VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
    s.allow_insecure_local = true;
    s.retry = RetrySettings {
        max_retries: 6,
        base_delay_ms: 10,
        max_delay_secs: 1,
        max_total_wait_secs: 30,
    };
    s
}

pub fn api_key(emulator: &Emulator) -> Credential {
    Credential::ApiKey(emulator.credentials.api_key.clone().into())
}

pub fn oauth(emulator: &Emulator) -> Credential {
    Credential::OAuthClient {
        client_id: emulator.credentials.client_id.clone(),
        client_secret: emulator.credentials.client_secret.clone().into(),
    }
}

pub fn client(settings: VendorSettings, credential: &Credential) -> CxOneClient {
    CxOneClient::new(
        settings
            .validate(cxone_etm::cxone::CaBundleAt::Named)
            .expect("valid settings"),
        credential,
    )
    .expect("client builds")
}

pub fn default_client(emulator: &Emulator) -> CxOneClient {
    client(settings(emulator), &api_key(emulator))
}

/// Every page of one scan's results; returns the record count and the pager's verdict.
pub async fn pull_results(
    client: &CxOneClient,
    scan: &str,
) -> (u64, cxone_etm::cxone::ResultsPager) {
    let mut pager = client.results(scan);
    let mut records = 0;
    while let Some(page) = pager.next_page().await.expect("page") {
        records += page.records as u64;
    }
    (records, pager)
}

/// A vendor that is not the emulator: an HTTP server on loopback answering every request (its
/// head, as text) with the whole response `answer` writes for it. Its URL.
pub async fn scripted_server(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let response = answer(&String::from_utf8_lossy(&buf[..n]));
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// An HTTP/1.1 response of `status` (`"200 OK"`) with `body`, closing the connection.
pub fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
