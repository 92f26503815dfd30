//! The transform on a realistic page: 5,000 results of a SAST scan as the emulator serves them
//! (60% SAST with nodes, the rest KICS/SCA/containers), beside a plain `serde_json` parse of the
//! same bytes into `serde_json::Value`; and the raw page packed and unpacked as collect and the
//! transform do (zstd level 1), beside gzip at its fastest level, which raw pages used before.
//! Run: `cargo bench -p cxone-etm --bench transform`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxone_emulator::{Emulator, EmulatorConfig, TenantShape};
use cxone_etm::cxone::{CxOneClient, VendorSettings};
use cxone_etm::mapping::{
    ItemTransformer, Scoring, TransformContext, TransformMap, TransformOptions,
};
use cxone_etm::secret::Credential;
use cxone_etm::{ConnectorKind, Engine};

fn realistic_page() -> (Vec<u8>, Vec<u8>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let shape = TenantShape { projects: 1, scans_per_project: 1, project_results: vec![5_000], ..TenantShape::default() };
        let emulator = Emulator::start(EmulatorConfig { shape, ..EmulatorConfig::default() }).await.expect("emulator");
        let mut settings = VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
        settings.allow_insecure_local = true;
        let credential = Credential::ApiKey(emulator.credentials.api_key.clone().into());
        let client = CxOneClient::new(settings.validate(cxone_etm::cxone::CaBundleAt::Named).expect("settings"), &credential).expect("client");
        let scan = emulator.expected().projects[0].latest_completed_sast_scan.clone().expect("scan");
        let page = client.results(&scan).next_page().await.expect("page").expect("one page");
        let project = serde_json::json!({"id": emulator.expected().projects[0].id, "name": "acme/checkout", "createdAt": "2026-01-01T00:00:00Z",
            "repoUrl": "https://github.com/acme/checkout", "mainBranch": "main"});
        (page.body.to_vec(), serde_json::to_vec(&project).expect("project"))
    })
}

fn transform(c: &mut Criterion) {
    let (page, project) = realistic_page();
    let plan = TransformMap::default_for(Engine::Sast)
        .compile()
        .expect("map");
    let scoring = Scoring::default_table().compile().expect("scoring");
    let context = TransformContext {
        connection_id: "bench".into(),
        run_id: "run".into(),
        connector_kind: ConnectorKind::Sast,
        produced_at: "2026-11-22T00:00:00Z".into(),
    };
    let run = || {
        let mut t = ItemTransformer::new(
            &plan,
            &scoring,
            &context,
            TransformOptions::default(),
            &project,
        )
        .expect("item");
        let lines = t.push_page(&page, 0).expect("page");
        (
            lines.iter().map(Vec::len).sum::<usize>(),
            t.finish().expect("not reconciled").figures.findings_out,
        )
    };
    let (_, findings) = run();

    let mut group = c.benchmark_group("transform");
    group.sample_size(30);
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function(
        format!(
            "plain serde_json::Value parse of the page ({} bytes)",
            page.len()
        ),
        |b| b.iter(|| serde_json::from_slice::<serde_json::Value>(&page).expect("parses")),
    );
    group.bench_function("transform the page (bytes/s of vendor JSON)", |b| {
        b.iter(run)
    });
    group.throughput(Throughput::Elements(findings));
    group.bench_function(format!("transform the page ({findings} findings/s)"), |b| {
        b.iter(run)
    });
    group.finish();
}

fn packing(c: &mut Criterion) {
    let (page, _) = realistic_page();
    let gzip = |bytes: &[u8]| cxone_etm::packing::gzip(&[bytes]);
    let (zstd, gzipped) = (cxone_etm::packing::pack_page(&page), gzip(&page));
    let mut group = c.benchmark_group("raw page");
    group.sample_size(30);
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function(
        format!(
            "pack, zstd level 1 ({} of {} bytes)",
            zstd.len(),
            page.len()
        ),
        |b| b.iter(|| cxone_etm::packing::pack_page(&page)),
    );
    group.bench_function(
        format!(
            "pack, gzip fast ({} of {} bytes)",
            gzipped.len(),
            page.len()
        ),
        |b| b.iter(|| gzip(&page)),
    );
    // The levels the page level was chosen among (packing::PAGE_LEVEL).
    for level in [-7, -5, -3, -1, 1, 3] {
        let packed = zstd::bulk::compress(&page, level).expect("packs");
        group.bench_function(
            format!(
                "pack, zstd level {level} ({} of {} bytes)",
                packed.len(),
                page.len()
            ),
            |b| b.iter(|| zstd::bulk::compress(&page, level).expect("packs")),
        );
        group.bench_function(format!("unpack, zstd level {level}"), |b| {
            b.iter(|| zstd::bulk::decompress(&packed, page.len()).expect("unpacks"))
        });
    }
    group.bench_function("unpack, zstd", |b| {
        b.iter(|| cxone_etm::packing::unpack("0.json.zst", &zstd).expect("zstd"))
    });
    group.bench_function("unpack, gzip", |b| {
        b.iter(|| cxone_etm::packing::unpack("0.json.gz", &gzipped).expect("gzip"))
    });
    group.finish();
}

criterion_group!(benches, transform, packing);
criterion_main!(benches);
