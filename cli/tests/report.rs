//! The run report as people see it: a partial run (one project refused, one whose pull is
//! incomplete) rendered to HTML by `cxone-etm report`, opened in a real headless browser. The page
//! shows the manifest's verdict, counts and items, and each severity's bar is as long as its count.

use std::collections::BTreeMap;
use std::process::Command;

use cxone_emulator::{Emulator, EmulatorConfig, Endpoint, FaultSpec, TenantShape};
use cxone_etm::cxone::VendorSettings;
use cxone_etm::pipeline::{ConnectionConfig, Manifest, Trigger, run_connection};
use cxone_etm::secret::{Credential, SecretSource};
use cxone_etm::store::{LocalStore, ObjectStore};
use cxone_etm::{ConnectorKind, Engine};
use cxone_etm_cli::report;

const BIN: &str = env!("CARGO_BIN_EXE_cxone-etm");

#[tokio::test]
async fn a_partial_runs_html_report_shows_what_its_manifest_says() {
    let emulator = Emulator::start(EmulatorConfig {
        shape: TenantShape {
            projects: 5,
            results_per_scan: 40,
            ..TenantShape::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let projects = emulator.expected().projects;
    let (refused, incomplete) = (projects[0].clone(), projects[1].clone());
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: refused.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    emulator.set_fault(
        Endpoint::SastResults,
        FaultSpec {
            total_drift: 3,
            only_matching: incomplete.main_branch_sast_scan.clone(),
            ..FaultSpec::default()
        },
    );
    let dir =
        std::env::temp_dir().join(format!("cxone-etm-cli-report-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalStore::new(&dir);
    let mut settings =
        VendorSettings::for_custom(&emulator.api_url, &emulator.iam_url, &emulator.tenant);
    settings.allow_insecure_local = true;
    let connection = ConnectionConfig {
        engines: Some(Engine::PROJECT_ENGINES.to_vec()),
        ..ConnectionConfig::new("report", ConnectorKind::Sast, settings, "env:UNUSED")
    }
    .validate()
    .expect("a valid connection");
    let credential = Credential::ApiKey(emulator.credentials.api_key.clone().into());
    let summary = run_connection(
        &store,
        &connection,
        SecretSource::provided(credential),
        Trigger::Local,
        &|_| {},
        &|_| {},
    )
    .await
    .expect("the run commits");
    assert!(!summary.complete, "a refused project makes the run partial");
    let manifest: Manifest =
        serde_json::from_slice(&store.get(&summary.manifest).await.unwrap().unwrap()).unwrap();

    // The page the user gets from the command.
    let page = dir.join("report.html");
    let made = Command::new(BIN)
        .args(["report", "report", &manifest.run_id, "--format", "html"])
        .arg("--store")
        .arg(&dir)
        .arg("--out")
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let shown = browser_check(&page, &dir.join("report.png"));
    assert!(
        shown.dom.contains("Partial: some items are incomplete"),
        "the verdict"
    );
    for (status, n) in &manifest.totals.lifecycle {
        assert!(
            shown
                .dom
                .contains(&format!("<td>{status}</td><td>{n}</td>")),
            "{status} {n} in the lifecycle table"
        );
    }
    for engine in Engine::PROJECT_ENGINES {
        let f = &manifest.totals_by_engine[&engine];
        assert!(f.findings_out > 0, "{engine}");
        assert!(
            shown.dom.contains(&format!(
                "<td>{engine}</td><td>{}</td><td>{}</td><td>{}</td>",
                f.records_in, f.findings_out, f.rejected
            )),
            "{engine}'s row in the engine table"
        );
    }
    assert!(
        shown.dom.contains(&refused.name) && shown.dom.contains(&incomplete.name),
        "the refused and the incomplete project are listed"
    );
    assert!(manifest.totals.severity_changed_by_triage > 0);
    assert!(
        shown.dom.contains(&format!(
            "<td>Severity changed by triage</td><td>{}</td>",
            manifest.totals.severity_changed_by_triage
        )),
        "the triage figures"
    );
    let t = &manifest.totals;
    assert!(
        shown.dom.contains(&format!(
            "<td>Open findings held, not closed</td><td>{} (a rejected record in their pull: {};",
            t.held_for_rejected_records
                + t.held_for_repeated_records
                + t.held_on_branch_change
                + t.held_as_id_now_repeats
                + t.held_for_unknown_record_types,
            t.held_for_rejected_records
        )),
        "the findings held open"
    );
    // The slowest items link to their scans in Checkmarx One (here, the emulator's web app).
    let slow_links = manifest.items.iter().filter_map(|i| i.scan_url.as_deref());
    let linked = slow_links
        .filter(|url| {
            shown
                .dom
                .contains(&format!("<a href=\"{}\">", url.replace('&', "&amp;")))
        })
        .count();
    assert!(linked >= 1, "the slowest items link to their scans");
    // Bars: the pixels of each severity's colour are proportional to its count.
    let counts: Vec<(&str, u64)> = report::SEVERITY_COLOURS
        .iter()
        .map(|(s, _)| {
            (
                *s,
                manifest
                    .totals
                    .by_severity
                    .get(&cxone_etm::cxone::Severity::parse(s))
                    .copied()
                    .unwrap_or(0),
            )
        })
        .collect();
    let (top, top_count) = counts.iter().max_by_key(|(_, n)| *n).copied().unwrap();
    assert!(top_count > 0);
    for (severity, count) in &counts {
        let ratio = shown.pixels[*severity] as f64 / shown.pixels[top] as f64;
        let expected = *count as f64 / top_count as f64;
        assert!(
            (ratio - expected).abs() < 0.03,
            "{severity}: bar area {ratio:.3} of the longest, count {expected:.3}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

struct Shown {
    /// The DOM after the browser parsed and laid out the page.
    dom: String,
    /// Pixels of each severity's bar colour in a screenshot.
    pixels: BTreeMap<&'static str, u64>,
}

/// Renders `page` in headless Chromium (Debian's `chromium`, which scripts/test.sh installs):
/// its DOM and a screenshot, whose pixels are counted per bar colour.
fn browser_check(page: &std::path::Path, screenshot: &std::path::Path) -> Shown {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a headless browser: install Debian's chromium (bash scripts/test.sh does)");
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,2400",
    ];
    let dom = std::process::Command::new(browser)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = std::process::Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(screenshot).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = frame.color_type.samples();
    let colours: Vec<(&'static str, [u8; 3])> = report::SEVERITY_COLOURS
        .iter()
        .map(|(s, hex)| {
            let v = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            (*s, [v(1), v(3), v(5)])
        })
        .collect();
    let mut pixels: BTreeMap<&'static str, u64> = colours.iter().map(|(s, _)| (*s, 0)).collect();
    for px in buffer[..frame.buffer_size()].chunks(channels) {
        if let Some((s, _)) = colours.iter().find(|(_, c)| px[..3] == c[..]) {
            *pixels.get_mut(s).unwrap() += 1;
        }
    }
    Shown {
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
        pixels,
    }
}
