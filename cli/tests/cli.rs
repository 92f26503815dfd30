//! The `cxone-etm` command: export a map, validate maps and scoring tables, and replay a transform
//! over stored raw pages with another map.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cxone-etm");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cxone-etm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A raw folder holding one SAST item, `raw/project-1`, with its project record: the folder and the
/// item's directory, for the test to put pages in.
fn raw_folder_with_one_project(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let item = dir.join("raw").join("project-1");
    std::fs::create_dir_all(&item).unwrap();
    std::fs::write(
        item.join("item.json"),
        include_str!("../../shared/tests/fixtures/project_real_sample.json"),
    )
    .unwrap();
    (dir, item)
}

fn gunzip_lines(path: &Path) -> Vec<Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn export_then_validate_round_trips_and_errors_are_listed() {
    let dir = temp_dir("validate");
    let map = dir.join("map.json");
    let status = Command::new(BIN)
        .args(["export-map", "sast", "--out", map.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new(BIN)
        .args(["validate", "map", map.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("valid sast map 'Checkmarx SAST Transformation Map'")
    );
    // Every engine's shipped map exports and validates as it is.
    for (engine, name) in [
        ("sca", "Checkmarx SCA Transformation Map"),
        ("kics", "Checkmarx KICS Transformation Map"),
        ("containers", "Checkmarx Containers Transformation Map"),
    ] {
        let file = dir.join(format!("{engine}.json"));
        let exported = Command::new(BIN)
            .args(["export-map", engine, "--out", file.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(exported.success());
        let output = Command::new(BIN)
            .args(["validate", "map", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&output.stdout)
                .contains(&format!("valid {engine} map '{name}'")),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut edited: Value = serde_json::from_str(&std::fs::read_to_string(&map).unwrap()).unwrap();
    let shipped = edited["entries"].as_array().unwrap().len();
    edited["entries"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "findings[].bogus", "target": "findingGroup.findings[].category"}));
    edited["entries"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "findings[].id", "target": "findingGroup.findings[].nonsense"}));
    std::fs::write(&map, edited.to_string()).unwrap();
    let output = Command::new(BIN)
        .args(["validate", "map", map.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has 2 error(s)"), "{stderr}");
    assert!(stderr.contains(&format!("- field `entries[{shipped}]`: `findings[].bogus` → `findingGroup.findings[].category`: unknown source path `findings[].bogus`")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "- field `entries[{}]`: `findings[].id` → `findingGroup.findings[].nonsense`: unknown target",
            shipped + 1
        )),
        "{stderr}"
    );

    let scoring = dir.join("scoring.json");
    std::fs::write(
        &scoring,
        r#"{"version":1,"rows":[{"severity":"HIGH","qds":200}],"defaultSeverity":"HIGH"}"#,
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["validate", "scoring", scoring.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("- field `rows[0]`: HIGH: QDS 200 is outside 0–100")
            && stderr.contains("- field `rows`: no row for CRITICAL"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn transform_replays_stored_raw_pages_with_another_map() {
    let (dir, item) = raw_folder_with_one_project("replay");
    std::fs::write(
        item.join("0.json.gz"),
        gzip(include_bytes!(
            "../../shared/tests/fixtures/results_real_sample.json"
        )),
    )
    .unwrap();
    let (raw, out) = (dir.join("raw"), dir.join("out"));

    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "transform",
            "--kind",
            "sast",
            "--raw",
            raw.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let summary = run(&out, &["--connection-id", "conn-9", "--run-id", "run-42"]);
    assert_eq!(summary["figures"]["findingsOut"], 1);
    // The page both ways, as a collect retried across the upgrade to zstd can leave it: read once.
    let page = dir.join("raw/project-1/0.json.zst");
    std::fs::write(
        &page,
        cxone_etm::packing::pack_page(include_bytes!(
            "../../shared/tests/fixtures/results_real_sample.json"
        )),
    )
    .unwrap();
    let both = run(&dir.join("out-both"), &[]);
    assert_eq!(both["figures"], summary["figures"]);
    std::fs::remove_file(page).unwrap();
    let lines = gunzip_lines(&out.join("project-1/0.ndjson.gz"));
    assert_eq!(lines[0]["connectionId"], "conn-9");
    assert_eq!(lines[0]["runId"], "run-42");
    assert!(
        lines[0]["findingGroup"]["findings"][0]
            .get("category")
            .is_none()
    );

    let mut map: Value = serde_json::from_slice(
        &Command::new(BIN)
            .args(["export-map", "sast"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    map["entries"].as_array_mut().unwrap().push(
        json!({"source": "findings[].data.group", "target": "findingGroup.findings[].category"}),
    );
    let map_file = dir.join("custom.json");
    std::fs::write(&map_file, map.to_string()).unwrap();
    let replayed = dir.join("out2");
    run(&replayed, &["--map", map_file.to_str().unwrap()]);
    let lines = gunzip_lines(&replayed.join("project-1/0.ndjson.gz"));
    assert_eq!(
        lines[0]["findingGroup"]["findings"][0]["category"],
        "Java_Low_Visibility"
    );

    let output = Command::new(BIN)
        .args([
            "transform",
            "--kind",
            "dast",
            "--raw",
            raw.to_str().unwrap(),
            "--out",
            replayed.to_str().unwrap(),
            "--map",
            map_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the map is for sast results, not dast")
    );

    // Without item.json or collect.json (a collect cut off before it finished), the item is
    // listed as unfinished and the others replay.
    std::fs::remove_file(item.join("item.json")).unwrap();
    let other = raw.join("project-2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("item.json"),
        include_str!("../../shared/tests/fixtures/project_real_sample.json"),
    )
    .unwrap();
    std::fs::copy(item.join("0.json.gz"), other.join("0.json.gz")).unwrap();
    let summary = run(&replayed, &[]);
    assert_eq!(summary["unfinished"], json!(["project-1"]));
    assert_eq!(summary["items"][0]["item"], "project-2");
    assert_eq!(summary["figures"]["findingsOut"], 1);

    // A collect.json without the record names the folder.
    std::fs::write(item.join("collect.json"), r#"{"otherPulls": []}"#).unwrap();
    let output = Command::new(BIN)
        .args(["transform", "--kind", "sast", "--raw"])
        .arg(&raw)
        .arg("--out")
        .arg(&replayed)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("project-1: no project or environment record: neither item.json nor a `record` in collect.json"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Replay refuses to write inside a run's folder (it would replace the batches the run
/// committed), refuses an item's folder given as the raw folder, and a second replay into the
/// same folder leaves no page of the first that it does not write again.
#[test]
fn a_replay_writes_outside_the_runs_and_leaves_no_stale_page() {
    let (dir, item) = raw_folder_with_one_project("replay-guards");
    let sample: &[u8] = include_bytes!("../../shared/tests/fixtures/results_real_sample.json");
    std::fs::write(item.join("0.json.gz"), cxone_etm::packing::gzip(&[sample])).unwrap();
    let replay = |raw: &Path, out: &Path| {
        Command::new(BIN)
            .args(["transform", "--kind", "sast", "--raw"])
            .arg(raw)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    // A run's folder, even one under way (no manifest yet), and reached through a link.
    let run = dir.join("connections/c/runs/20261207T150000Z-1a2b3c");
    std::fs::create_dir_all(run.join("etm")).unwrap();
    let link = dir.join("link-to-etm");
    std::os::unix::fs::symlink(run.join("etm"), &link).unwrap();
    for out in [run.join("etm").join("x"), link.clone()] {
        let inside = replay(&dir.join("raw"), &out);
        assert_eq!(inside.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&inside.stderr);
        assert!(
            stderr.contains("is inside the run folder")
                && stderr.contains("20261207T150000Z-1a2b3c"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(run.join("etm")).unwrap().count(),
        0,
        "nothing written"
    );
    // A manifest.json of something else (a web app's) above the folder is no run.
    std::fs::write(dir.join("manifest.json"), "{}").unwrap();

    let output = replay(&item, &dir.join("out"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("is one item's folder (it holds pages)"),
        "{stderr}"
    );

    let out = dir.join("out");
    let stale = out.join("project-1").join("7.ndjson.gz");
    let closures = out.join("project-1").join("closures.ndjson.gz");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"from an earlier replay").unwrap();
    std::fs::write(&closures, b"not a page").unwrap();
    let output = replay(&dir.join("raw"), &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stale.exists(), "the earlier replay's page is gone");
    assert!(closures.exists(), "only pages are replaced");
    assert!(out.join("project-1").join("0.ndjson.gz").exists());
    std::fs::remove_dir_all(dir).ok();
}

/// Replay reads the pages collect counted: a page past those `collect.json` lists (one a pull that
/// started over left behind) is not replayed, and a page stored over the one counted is refused.
#[test]
fn a_replay_takes_only_the_pages_collect_counted() {
    let (dir, item) = raw_folder_with_one_project("replay-counted");
    let sample: &[u8] = include_bytes!("../../shared/tests/fixtures/results_real_sample.json");
    let counted = cxone_etm::packing::pack_page(sample);
    let checksum = cxone_etm::packing::page_checksum(&counted).unwrap();
    std::fs::write(item.join("0.json.zst"), &counted).unwrap();
    std::fs::write(item.join("1.json.zst"), &counted).unwrap();
    std::fs::write(
        item.join("collect.json"),
        json!({"pages": 1, "pageChecksums": [checksum]}).to_string(),
    )
    .unwrap();
    let replay = || {
        Command::new(BIN)
            .args(["transform", "--kind", "sast", "--raw"])
            .arg(dir.join("raw"))
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap()
    };
    let replayed = || {
        let output = replay();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["items"][0]["pages"], 1, "{summary}");
        assert_eq!(summary["figures"]["findingsOut"], 1);
    };
    replayed();
    // The same page unpacked by hand carries the same content's checksum.
    std::fs::remove_file(item.join("0.json.zst")).unwrap();
    std::fs::write(item.join("0.json"), sample).unwrap();
    replayed();
    std::fs::remove_file(item.join("0.json")).unwrap();

    let mut other: Value = serde_json::from_slice(sample).unwrap();
    other["totalCount"] = json!(2);
    let other = cxone_etm::packing::pack_page(&serde_json::to_vec(&other).unwrap());
    std::fs::write(item.join("0.json.zst"), other).unwrap();
    let output = replay();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.json.zst: not the page collect counted (its checksum is ")
            && stderr.contains(&format!("collect.json lists {checksum:08x})")),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_replayed_page_that_is_not_json_throughout_is_refused_by_name() {
    let (dir, item) = raw_folder_with_one_project("replay-not-json");
    // A `\u` escape in a field no map reads, with no hex digits after it: it would take the
    // closing quote with it.
    std::fs::write(
        item.join("0.json"),
        r#"{"results":[{"id":"a","unread":"\u"},{"id":"b"}],"totalCount":2}"#,
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["transform", "--kind", "sast", "--raw"])
        .arg(dir.join("raw"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.json: not JSON (line 1 column 38)"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_pulls_a_small_tenant_in_the_fewest_requests_and_reports_each_budget() {
    let output = Command::new(BIN)
        .args([
            "bench",
            "--projects",
            "7",
            "--results-per-scan",
            "50",
            "--dast-environments",
            "3",
            "--dast-results-per-scan",
            "250",
            "--latency-ms",
            "0",
            "--single-project-results",
            "12000",
            "--huge-project-results",
            "25000",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 2)),
        "exit 0 (every budget met) or 2 (one missed): {stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let e2e = &report["endToEnd"];
    // 7 projects of which some have no completed SAST scan, 3 environments of 250 DAST results
    // (3 pages of 100 each): the pull needs exactly the minimum the API allows.
    assert_eq!(e2e["requests"], e2e["minimumRequests"], "{report}");
    assert!(e2e["findings"].as_u64().unwrap() > 750, "{report}");
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["complete"], true, "{run}");
        assert!(run["peakRssMiB"].as_f64().unwrap() > 1.0, "{run}");
        assert!(run["firstRequestMs"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["stageMs"]["finalize"].is_u64(), "{run}");
    }
    // The 12,000-result project takes two result pages; its findings are its SAST share.
    assert!(report["singleProject"]["findings"].as_u64().unwrap() > 5_000);
    // Every engine of the same scans: the requests of the SAST-only pull, every finding of each.
    let every = &report["everyEngine"];
    assert_eq!(every["requests"], every["minimumRequests"], "{every}");
    for e in every["byEngine"].as_array().unwrap() {
        assert!(e["findings"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["findings"], e["emulatorHolds"], "{e}");
    }
    // Each run beside the plain download of its own requests, and what it would cost deployed.
    assert!(e2e["downloadSeconds"].as_f64().unwrap() > 0.0, "{e2e}");
    assert!(e2e["ratioToDownload"].as_f64().unwrap() > 0.0, "{e2e}");
    for run in report["runs"].as_array().unwrap() {
        let cost = &run["cost"];
        // A small run keeps its parallelism: fewer items than children at once, one item each.
        let children = run["childExecutions"].as_u64().unwrap();
        assert_eq!(Some(children), run["items"].as_u64(), "{run}");
        // The parent's start, plan, choice, map and finalize; each child's start, collect and
        // transform.
        assert_eq!(
            cost["stateTransitions"].as_u64(),
            Some(5 + 3 * children),
            "{cost}"
        );
        // The trigger's start, the plan and finalize; each child's collect and transform.
        assert_eq!(
            cost["lambdaInvocations"].as_u64(),
            Some(3 + 2 * children),
            "{cost}"
        );
        assert!(cost["s3Puts"].as_u64().unwrap() > 0, "{cost}");
    }
    let huge = &report["hugeProject"];
    // Each run's CPU floor: its CPU and the emulator's, shared out over the cores, a lower bound
    // of its wall time; the end-to-end floor is the runs' floors over their downloads.
    let runs = report["runs"].as_array().unwrap();
    let mut floors = 0.0;
    for (run, download) in runs
        .iter()
        .map(|r| (r["wallSeconds"].as_f64().unwrap(), &r["download"]))
        .chain([(huge["wallSeconds"].as_f64().unwrap(), &huge["download"])])
    {
        let floor = &download["cpuFloor"];
        let f = |key: &str| floor[key].as_f64().unwrap();
        let cpu = f("connectorCpuSeconds") + f("emulatorCpuSeconds");
        assert!(f("connectorCpuSeconds") > 0.0, "{floor}");
        assert!((f("seconds") * f("cores") - cpu).abs() < 1e-9, "{floor}");
        let download_seconds = download["downloadSeconds"].as_f64().unwrap();
        assert!(
            (f("ratio") - f("seconds") / download_seconds).abs() < 1e-9,
            "{floor}"
        );
        assert!(
            f("seconds") <= run + 0.05,
            "a floor above its run's {run} s: {floor}"
        );
        floors += f("seconds");
    }
    floors -= huge["download"]["cpuFloor"]["seconds"].as_f64().unwrap();
    // The emulator generated the huge project's 25,000 results while the run went on.
    assert!(huge["download"]["cpuFloor"]["emulatorCpuSeconds"].as_f64() > Some(0.0));
    let e2e_floor = e2e["cpuFloorRatio"].as_f64().unwrap();
    let e2e_download = e2e["downloadSeconds"].as_f64().unwrap();
    assert!((e2e_floor - floors / e2e_download).abs() < 1e-9, "{e2e}");
    assert_eq!(huge["findings"].as_u64(), Some(15_000));
    assert_eq!(huge["nextRun"]["findings"].as_u64(), Some(15_000), "{huge}");
    assert!(
        huge["nextRun"]["peakRssMiB"].as_f64().unwrap() > 0.0,
        "{huge}"
    );
    let budgets = report["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 12, "eight run budgets and four binaries");
    assert_eq!(
        output.status.code() == Some(0),
        budgets.iter().all(|b| b["met"] != false),
        "the exit code follows the budgets"
    );
}

#[test]
fn ids_that_are_not_key_segments_and_configs_under_another_key_are_refused() {
    for args in [
        vec!["status", "../demo-sast"],
        vec!["report", "demo-sast", "../../x"],
        vec!["report", "a/b"],
    ] {
        let output = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // 1, failed: not 2, which `run` says means committed but partial.
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("must be 1–64 ASCII letters, digits, '-' or '_'"),
            "{args:?}: {stderr}"
        );
    }
    // Under --json, a failure is one document on stdout too, for the script reading it.
    let output = Command::new(BIN)
        .args([
            "run",
            "--config",
            "no-such-config.json",
            "--store",
            "no-such-store",
            "--json",
        ])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        output.status.code() == Some(1)
            && report["error"]
                .as_str()
                .is_some_and(|e| e.contains("no-such-config.json")),
        "{report}"
    );
    assert!(!std::path::Path::new("no-such-store").exists());
    let help = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0), "help is no error");
    let demo = Command::new(BIN)
        .args(["demo", "--out", "s3://bucket/"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(
        demo.status.code() == Some(1) && stderr.contains("--out s3://bucket/ is not a folder"),
        "{stderr}"
    );
    assert!(!std::path::Path::new("s3:").exists(), "no folder named s3:");
    // A config copied by hand under another connection's key is not that connection.
    let dir = temp_dir("copied-config");
    std::fs::create_dir_all(dir.join("connections/copied")).unwrap();
    std::fs::write(
        dir.join("connections/copied/config.json"),
        r#"{"id":"demo-sast","name":"x","kind":"sast","vendor":{"region":"EU","tenant":"acme"},"secret":"env:CX_KEY"}"#,
    )
    .unwrap();
    let status = |id: &str| {
        let output = Command::new(BIN)
            .args(["status", id, "--store"])
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        stderr
    };
    let stderr = status("copied");
    assert!(
        stderr.contains("holds connection 'demo-sast', not 'copied'"),
        "{stderr}"
    );
    // What a case-insensitive disk shows for `Demo-Sast`: `demo-sast`'s own config under both
    // keys, which the message must not tell the operator to delete.
    for twin in ["Demo-Sast", "demo-sast"] {
        std::fs::create_dir_all(dir.join(format!("connections/{twin}"))).unwrap();
        std::fs::copy(
            dir.join("connections/copied/config.json"),
            dir.join(format!("connections/{twin}/config.json")),
        )
        .unwrap();
    }
    let stderr = status("Demo-Sast");
    assert!(
        stderr.contains("there is no connection 'Demo-Sast'; did you mean 'demo-sast'?")
            && !stderr.contains("delete"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn report_renders_the_last_committed_run_and_names_what_is_missing() {
    let dir = temp_dir("report");
    let demo = Command::new(BIN)
        .args([
            "demo",
            "--quiet",
            "--projects",
            "3",
            "--dast-environments",
            "1",
            "--out",
        ])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(demo.success());
    let output = Command::new(BIN)
        .args(["report", "demo-sast", "--store"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let markdown = String::from_utf8_lossy(&output.stdout);
    assert!(markdown.starts_with("# Run ") && markdown.contains("## Findings by lifecycle status"));
    let html = dir.join("report.html");
    let output = Command::new(BIN)
        .args(["report", "demo-dast", "--format", "html", "--out"])
        .arg(&html)
        .arg("--store")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("id=\"severity-chart\""));

    let refused = |args: &[&str], expected: &str| {
        let output = Command::new(BIN)
            .args(args)
            .arg("--store")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    };
    refused(
        &["report", "nobody"],
        "connection nobody has no committed run in this store",
    );
    refused(
        &["report", "demo-sast", "20990101T000000Z-000000"],
        "connection demo-sast has no run 20990101T000000Z-000000 in this store",
    );

    // A manifest whose commit marker is missing (finalize died between the two) is no report.
    let state: Value = serde_json::from_slice(
        &std::fs::read(dir.join("connections/demo-sast/state.json")).unwrap(),
    )
    .unwrap();
    let run = state["lastCommittedRun"].as_str().unwrap();
    let marker = dir.join(format!("connections/demo-sast/runs/{run}/_COMMITTED"));
    std::fs::remove_file(&marker).unwrap();
    let uncommitted = format!("run {run} of connection demo-sast is not committed");
    refused(&["report", "demo-sast", run], &uncommitted);
    // Without a run named, the last committed run is the commit markers' (none now), not the
    // state's.
    refused(
        &["report", "demo-sast"],
        "connection demo-sast has no committed run in this store",
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_runs_raw_folder_replays_as_it_is_with_severities_before_triage() {
    let dir = temp_dir("replay-run");
    let demo = Command::new(BIN)
        .args(["demo", "--quiet", "--projects", "3", "--out"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(demo.success());
    let runs = dir.join("connections/demo-sast/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let out = dir.join("replayed");
    let output = Command::new(BIN)
        .args(["transform", "--kind", "sast", "--raw"])
        .arg(run.join("raw"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    // The demo's project connection delivers every engine; a SAST map replays the SAST ones.
    assert_eq!(
        summary["figures"]["findingsOut"],
        manifest["totalsByEngine"]["sast"]["findingsOut"]
    );
    assert_eq!(
        summary["figures"]["severityChangedByTriage"],
        manifest["totals"]["severityChangedByTriage"]
    );
    let item = &summary["items"][0]["item"];
    let folder = run.join("raw").join(item.as_str().unwrap());
    assert!(
        !folder.join("item.json.gz").exists(),
        "the record is in collect.json, not an object of its own"
    );
    let lines = gunzip_lines(&out.join(item.as_str().unwrap()).join("0.ndjson.gz"));
    assert!(
        lines[0]["findingGroup"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["originalVendorSeverity"].is_string())
    );

    // A stray file in an item folder is named, not read as a page.
    std::fs::write(
        run.join("raw")
            .join(item.as_str().unwrap())
            .join("notes.json"),
        "{}",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["transform", "--kind", "sast", "--raw"])
        .arg(run.join("raw"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("notes.json: page files are named"));
    std::fs::remove_dir_all(dir).ok();
}

/// `test-connection` always prints the five checks, in text and in JSON, whatever the mistake:
/// every one of the emulator's table, and a secret that is not there. (Multi-threaded: the
/// emulator serves while this thread waits on the command.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_prints_the_five_checks_for_every_mistake() {
    let emulator = cxone_emulator::Emulator::start(cxone_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let dir = temp_dir("test-connection");
    let config = |name: &str, kind: &str, vendor: Value, secret: &str| {
        let path = dir.join(format!("{name}.json"));
        let config = json!({"id": "checked", "name": name, "kind": kind, "vendor": vendor, "secret": secret});
        std::fs::write(&path, config.to_string()).unwrap();
        path
    };
    let test = |path: &Path, json: bool| {
        let mut command = Command::new(BIN);
        command
            .args(["test-connection", "--config"])
            .arg(path)
            .env_remove("CXONE_UNSET_KEY");
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let good_vendor = json!({"custom_api_url": emulator.api_url, "custom_iam_url": emulator.iam_url, "tenant": emulator.tenant, "allow_insecure_local": true});

    let key_file = dir.join("good-secret.json");
    std::fs::write(
        &key_file,
        json!({"api_key": emulator.credentials.api_key}).to_string(),
    )
    .unwrap();
    let good = config(
        "good",
        "sast",
        good_vendor.clone(),
        &format!("file:{}", key_file.display()),
    );
    let output = test(&good, false);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("connection test passed"), "{text}");

    let unset = config("unset", "sast", good_vendor, "env:CXONE_UNSET_KEY");
    let output = test(&unset, true);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report["checks"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("env:CXONE_UNSET_KEY: the environment variable is not set"),
        "{report}"
    );

    for (n, mistake) in emulator.mistakes().into_iter().enumerate() {
        let secret_file = dir.join(format!("secret-{n}.json"));
        std::fs::write(&secret_file, &mistake.secret).unwrap();
        let path = config(
            &format!("mistake-{n}"),
            mistake.kind,
            mistake.vendor(),
            &format!("file:{}", secret_file.display()),
        );
        let output = test(&path, true);
        assert_eq!(output.status.code(), Some(1), "{}", mistake.what);
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: a JSON report on stdout ({e}): {}{}",
                mistake.what,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        if let Err(problem) = mistake.check_report(&report) {
            panic!("{problem}");
        }

        let output = test(&path, false);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("FAIL")
                && text.contains(&format!(
                    "fix: {}",
                    report["checks"][mistake.fails]["fix"].as_str().unwrap()
                ))
                && text.contains("connection test FAILED"),
            "{}: {text}",
            mistake.what
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Writes to `path` a SAST connection `id` of a private deployment (`cx.example.com`, never asked)
/// whose credential is `secret`.
fn write_custom_connection(path: &std::path::Path, id: &str, secret: &str) {
    let config = cxone_etm::pipeline::ConnectionConfig::new(
        id,
        cxone_etm::ConnectorKind::Sast,
        cxone_etm::cxone::VendorSettings::for_custom(
            "https://cx.example.com",
            "https://iam.example.com",
            "acme",
        ),
        secret,
    );
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

/// `connection put` into S3 (the deployed functions' store) refuses what the functions would
/// refuse, before any store is opened: a credential from the environment or a file.
#[test]
fn a_config_the_functions_would_refuse_is_not_put_into_s3() {
    let dir = temp_dir("put-s3");
    let path = dir.join("connection.json");
    write_custom_connection(&path, "borrowing", "env:AWS_SECRET_ACCESS_KEY");
    let output = Command::new(BIN)
        .args([
            "connection",
            "put",
            "--store",
            "s3://no-such-bucket/",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing stored") && stderr.contains("Secrets Manager only"),
        "{stderr}"
    );
}

/// `connection put` into S3 of a config whose CA bundle is a path the functions read on AWS
/// refuses, before any store is opened, when this machine has no such file and no copy is
/// given; `--check-ca-bundle` is refused where it would check another file than the one read.
/// (Checked and stored with a copy: the deployed test's private-CA scenario.)
#[test]
fn a_ca_bundle_the_functions_read_on_aws_needs_a_copy_here_to_be_put() {
    let dir = temp_dir("put-ca");
    let path = dir.join("connection.json");
    let copy = dir.join("copy.pem");
    std::fs::write(&copy, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let put = |config: &cxone_etm::pipeline::ConnectionConfig,
               store: &str,
               extra: &[&std::path::Path]| {
        std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["connection", "put", "--store", store, "--config"])
            .arg(&path);
        for copy in extra {
            command.arg("--check-ca-bundle").arg(copy);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let mut config = cxone_etm::pipeline::ConnectionConfig::new(
        "private",
        cxone_etm::ConnectorKind::Sast,
        cxone_etm::cxone::VendorSettings::for_custom(
            "https://cx.example.com",
            "https://iam.example.com",
            "acme",
        ),
        "secretsmanager:cxone/private",
    );
    let stderr = put(&config, "s3://no-such-bucket/team-a/", &[]);
    assert!(
        stderr.contains("s3://no-such-bucket/team-a/ names a folder (team-a/) in the bucket, but the deployed functions read connections at its root; nothing stored"),
        "{stderr}"
    );
    let stderr = put(&config, "s3://no-such-bucket/", &[&copy]);
    assert!(
        stderr.contains("--check-ca-bundle is given, but")
            && stderr.contains("names no vendor.ca_bundle"),
        "{stderr}"
    );
    config.vendor.ca_bundle = Some("/opt/cxone-etm-test-absent/ca.pem".into());
    let stderr = put(&config, "s3://no-such-bucket/", &[]);
    assert!(
        stderr.contains("vendor.ca_bundle names /opt/cxone-etm-test-absent/ca.pem, which the functions read on AWS and this machine does not have; nothing stored")
            && stderr.contains("--check-ca-bundle <file>"),
        "{stderr}"
    );
    let local = dir.join("store");
    let stderr = put(&config, local.to_str().unwrap(), &[&copy]);
    assert!(
        stderr.contains("--check-ca-bundle is for a connection stored into a bucket"),
        "{stderr}"
    );
    assert!(!local.exists(), "nothing stored");
    std::fs::remove_dir_all(dir).ok();
}

/// `connection put`, or a local `run`, of an id that differs from a stored connection's only in
/// letter case is refused before anything is checked or stored: on a case-insensitive disk
/// (macOS's default) it would write over the other's config, and its runs reconcile against the
/// other's ledgers.
#[test]
fn an_id_differing_from_a_stored_connections_only_in_case_is_not_put() {
    let dir = temp_dir("put-case");
    let store = dir.join("store");
    let held = store.join("connections/prod/config.json");
    std::fs::create_dir_all(held.parent().unwrap()).unwrap();
    std::fs::write(&held, b"{}").unwrap();
    let path = dir.join("connection.json");
    write_custom_connection(&path, "Prod", "env:CXONE_TEST_KEY");
    let output = Command::new(BIN)
        .args(["connection", "put", "--store"])
        .arg(&store)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "connection 'Prod' differs from the stored connection 'prod' only in letter case"
        ) && stderr.contains("nothing stored"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&held).unwrap(), b"{}");
    assert!(!store.join("connections/Prod").exists());

    // A local run of it likewise, before its config is written or the tenant asked.
    let output = Command::new(BIN)
        .args(["run", "--quiet", "--store"])
        .arg(&store)
        .arg("--config")
        .arg(&path)
        .env("CXONE_TEST_KEY", "key")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only in letter case"), "{stderr}");
    assert_eq!(std::fs::read(&held).unwrap(), b"{}");
    assert!(!store.join("connections/Prod").exists());
}

/// `status` after `connection put` (Registered, then Scheduled with its next run in the schedule's
/// time zone) and after a run (Processed, complete), in text and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_connection_from_put_to_its_run() {
    let emulator = cxone_emulator::Emulator::start(cxone_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let dir = temp_dir("status");
    let store = dir.join("store");
    let path = dir.join("connection.json");
    let mut vendor = cxone_etm::cxone::VendorSettings::for_custom(
        &emulator.api_url,
        &emulator.iam_url,
        &emulator.tenant,
    );
    vendor.allow_insecure_local = true;
    let mut config = cxone_etm::pipeline::ConnectionConfig::new(
        "watched",
        cxone_etm::ConnectorKind::Sast,
        vendor,
        "env:CXONE_TEST_KEY",
    );
    let run_with = |key: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("CXONE_TEST_KEY", key)
            .output()
            .unwrap()
    };
    let cli = |args: &[&str]| {
        let output = run_with(&emulator.credentials.api_key, args);
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let (store_arg, path_arg) = (store.to_str().unwrap(), path.to_str().unwrap());
    let status = || -> Value {
        serde_json::from_str(&cli(&["status", "watched", "--store", store_arg, "--json"])).unwrap()
    };
    let put = |config: &cxone_etm::pipeline::ConnectionConfig| {
        std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
        cli(&[
            "connection",
            "put",
            "--store",
            store_arg,
            "--config",
            path_arg,
        ]);
    };

    put(&config);
    let registered = status();
    assert_eq!(registered["state"], "Registered", "{registered}");
    assert_eq!(
        registered["nextRunNote"],
        "no schedule: runs start on demand"
    );

    config.schedule = Some(cxone_etm::pipeline::Schedule {
        expression: "cron(0 2 * * ? *)".into(),
        timezone: "Asia/Tokyo".into(),
        start_date: "2026-01-01".into(),
        end_date: None,
    });
    put(&config);
    let scheduled = status();
    assert_eq!(scheduled["state"], "Scheduled", "{scheduled}");
    // 02:00 in Tokyo is 17:00 UTC the day before.
    assert!(
        scheduled["nextRunAt"]
            .as_str()
            .unwrap()
            .ends_with("T17:00:00Z")
            && scheduled["nextRunLocal"]
                .as_str()
                .unwrap()
                .contains(" 02:00 JST (Asia/Tokyo)"),
        "{scheduled}"
    );

    cli(&["run", "--config", path_arg, "--store", store_arg, "--quiet"]);
    let processed = status();
    assert_eq!(
        (&processed["state"], &processed["outcome"]),
        (&json!("Processed"), &json!("complete")),
        "{processed}"
    );
    assert_eq!(processed["lastRun"], processed["lastCommittedRun"]);
    let text = cli(&["status", "watched", "--store", store_arg]);
    assert!(
        text.starts_with("connection watched: Processed (complete)\n")
            && text.contains("next run: "),
        "{text}"
    );

    // A key that may not read results: every item fails, nothing is committed, and the state,
    // the run's report and the last committed run say so.
    let failed = run_with(
        &emulator.credentials.api_key_no_results,
        &["run", "--config", path_arg, "--store", store_arg, "--quiet"],
    );
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("nothing was committed: every item failed"),
        "{stderr}"
    );
    let after = status();
    assert_eq!(after["state"], "Failed", "{after}");
    assert_eq!(after["lastCommittedRun"], processed["lastCommittedRun"]);
    let failed_run = after["lastRun"].as_str().unwrap();
    let report = cli(&["report", "watched", failed_run, "--store", store_arg]);
    assert!(
        report.contains("**Failed: nothing was committed: every item failed")
            && report.contains("403"),
        "{report}"
    );
    let last_committed = cli(&["report", "watched", "--store", store_arg]);
    assert!(
        last_committed.contains(processed["lastCommittedRun"].as_str().unwrap())
            && last_committed.contains("**Complete**"),
        "{last_committed}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `schedule-dates` gives the deploy's schedule parameters by the product's rules (five years on;
/// February 29th ends on February 28th) and refuses a zone the database does not hold.
#[test]
fn schedule_dates_are_the_deploy_parameters_of_a_five_year_schedule() {
    let output = Command::new(BIN)
        .args([
            "schedule-dates",
            "--timezone",
            "Pacific/Honolulu",
            "--start",
            "2028-02-29",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ScheduleTimezone=Pacific/Honolulu ScheduleStartDate=2028-02-29 ScheduleEndDate=2033-02-28\n"
    );
    let output = Command::new(BIN)
        .args(["schedule-dates", "--timezone", "Berlin"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("`schedule.timezone`: 'Berlin' is not in the IANA time zone database"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
