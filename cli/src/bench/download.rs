//! The limit a run is measured against: the same answers fetched by the plainest fast client. Every
//! API request the run made, replayed in its order with the same number of connections, each
//! body read to its end and dropped: no parsing, no store, no dependency between requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cxone_emulator::{Emulator, Endpoint};
use futures_util::StreamExt;

/// What the plain download of a run's requests took.
pub struct Download {
    pub wall: Duration,
    pub requests: u64,
    pub bytes: u64,
}

/// Fetches `targets` (paths with query, as the emulator logged them) from the emulator's API with
/// `connections` requests in flight, after one token request like the connector's.
pub async fn download(
    emulator: &Emulator,
    targets: &[(Endpoint, String)],
    connections: usize,
) -> anyhow::Result<Download> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .context("building the download client")?;
    let started = Instant::now();
    let token = access_token(&client, emulator).await?;
    let bearer: Arc<str> = format!("Bearer {token}").into();
    let fetches = targets
        .iter()
        .filter(|(endpoint, _)| *endpoint != Endpoint::Token)
        .map(|(_, target)| {
            let request = client
                .get(format!("{}{target}", emulator.api_url))
                .header("Authorization", &*bearer)
                .header("Accept", "application/json; version=1.0");
            async move {
                let response = request.send().await?.error_for_status()?;
                Ok::<u64, reqwest::Error>(response.bytes().await?.len() as u64)
            }
        });
    let mut answers = futures_util::stream::iter(fetches).buffer_unordered(connections);
    let (mut requests, mut bytes) = (1, 0);
    while let Some(answer) = answers.next().await {
        bytes += answer.context("downloading a logged request again")?;
        requests += 1;
    }
    Ok(Download {
        wall: started.elapsed(),
        requests,
        bytes,
    })
}

async fn access_token(client: &reqwest::Client, emulator: &Emulator) -> anyhow::Result<String> {
    let answer: serde_json::Value = client
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ast-app"),
            ("refresh_token", emulator.credentials.api_key.as_str()),
        ])
        .send()
        .await?
        .error_for_status()
        .context("asking the emulator for a token")?
        .json()
        .await?;
    match answer["access_token"].as_str() {
        Some(token) => Ok(token.to_string()),
        None => bail!("the token answer has no access_token: {answer}"),
    }
}
