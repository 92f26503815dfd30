//! How fast the emulator serves `/api/results` pages over loopback (HTTP/1.1, one client, the
//! largest page the API allows). Run: `cargo bench -p cxone-emulator --bench serve_results`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxone_emulator::{Emulator, EmulatorConfig, TenantShape};

const LIMIT: u64 = 10_000;
const RESULTS: u64 = 100_000;

fn serve_results(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let shape = TenantShape {
        projects: 1,
        scans_per_project: 1,
        project_results: vec![RESULTS],
        ..TenantShape::default()
    };
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig {
            shape,
            ..EmulatorConfig::default()
        }))
        .expect("emulator");
    let http = reqwest::Client::new();
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .expect("scan");
    let token = runtime.block_on(async {
        let body: serde_json::Value = http
            .post(emulator.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ast-app"),
                ("refresh_token", &emulator.credentials.api_key),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    });
    let fetch = |page: u64| {
        let request = http
            .get(format!(
                "{}/api/results?scan-id={scan}&limit={LIMIT}&offset={page}",
                emulator.api_url
            ))
            .bearer_auth(&token);
        async move {
            request
                .send()
                .await
                .expect("send")
                .bytes()
                .await
                .expect("body")
                .len()
        }
    };
    let page_bytes = runtime.block_on(fetch(0));
    let mut group = c.benchmark_group("emulator");
    group.throughput(Throughput::Bytes(page_bytes as u64));
    group.sample_size(20);
    let mut page = 0;
    group.bench_function(
        format!("results page of {LIMIT} ({page_bytes} bytes)"),
        |b| {
            b.iter(|| {
                page = (page + 1) % (RESULTS / LIMIT);
                runtime.block_on(fetch(page))
            })
        },
    );
    group.finish();
}

criterion_group!(benches, serve_results);
criterion_main!(benches);
