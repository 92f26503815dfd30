//! Client throughput against the emulator on loopback: one 100,000-result scan pulled through the
//! results pager (pages of 10,000, completeness proven), reported as results/s and as bytes/s.
//! Run: `cargo bench -p cxone-etm --bench client_throughput`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxone_emulator::{Emulator, EmulatorConfig, TenantShape};
use cxone_etm::cxone::{CxOneClient, VendorSettings};
use cxone_etm::secret::Credential;

const RESULTS: u64 = 100_000;

fn client_throughput(c: &mut Criterion) {
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
    let mut settings =
        VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
    settings.allow_insecure_local = true;
    let credential = Credential::ApiKey(emulator.credentials.api_key.clone().into());
    let client = CxOneClient::new(
        settings
            .validate(cxone_etm::cxone::CaBundleAt::Named)
            .expect("settings"),
        &credential,
    )
    .expect("client");
    let scan = emulator.expected().projects[0]
        .latest_completed_sast_scan
        .clone()
        .expect("scan");
    let pull = || async {
        let mut pager = client.results(&scan);
        let (mut records, mut bytes) = (0u64, 0u64);
        while let Some(page) = pager.next_page().await.expect("page") {
            records += page.records as u64;
            bytes += page.body.len() as u64;
        }
        assert!(pager.completeness().is_complete());
        (records, bytes)
    };
    let (records, bytes) = runtime.block_on(pull());
    assert_eq!(records, RESULTS);

    let mut group = c.benchmark_group("client");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records));
    group.bench_function(format!("pull a {RESULTS}-result scan (results/s)"), |b| {
        b.iter(|| runtime.block_on(pull()))
    });
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(
        format!("pull a {RESULTS}-result scan ({bytes} bytes of JSON)"),
        |b| b.iter(|| runtime.block_on(pull())),
    );
    group.finish();
}

criterion_group!(benches, client_throughput);
criterion_main!(benches);
