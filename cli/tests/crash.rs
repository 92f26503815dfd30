//! The local runner (`cxone-etm run`) killed mid-run with SIGKILL, then run again: the next run
//! recovers the dead runner's lock at once and commits exactly what a run that was never
//! interrupted commits. Its figures join docs/reliability.md's table.

#[path = "../../shared/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use common::reliability::*;
use common::runs::*;
use common::*;
use cxone_emulator::{Endpoint, FaultSpec};
use cxone_etm::ConnectorKind;
use cxone_etm::store::ObjectStore;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cxone-etm");

/// Each run directory under `connections/<id>/runs/` with whether it holds a commit marker.
fn runs_on_disk(dir: &std::path::Path, id: &str) -> BTreeMap<String, bool> {
    std::fs::read_dir(dir.join("connections").join(id).join("runs"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, p.join("_COMMITTED").exists())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_runner_killed_mid_run_is_recovered_by_the_next_run_with_the_same_output() {
    let emulator = emulator(shape()).await;
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            latency_ms: 150,
            ..FaultSpec::default()
        },
    );
    let (store, dir) = temp_store("reliability-crash");
    let config = cxone_etm::pipeline::ConnectionConfig {
        item_concurrency: 2,
        ..cxone_etm::pipeline::ConnectionConfig::new(
            "crash",
            ConnectorKind::Sast,
            settings(&emulator),
            "env:CX_CRASH_TEST_SECRET",
        )
    };
    let config_file = dir.with_extension("json");
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    let secret = json!({"api_key": emulator.credentials.api_key}).to_string();
    let runner = || {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["run", "--quiet", "--json", "--config"])
            .arg(&config_file)
            .arg("--store")
            .arg(&dir)
            .env("CX_CRASH_TEST_SECRET", &secret);
        command
    };

    // Kill the runner (SIGKILL: no clean-up runs) once it has stored its first raw pages.
    let mut child = runner()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let crashed_run = loop {
        let running = runs_on_disk(&dir, "crash");
        let with_pages = running.keys().find(|run| {
            let raw = dir.join("connections/crash/runs").join(run).join("raw");
            walk_count(&raw, ".json.zst") > 2
        });
        if let Some(run) = with_pages {
            break run.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner stored no pages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        runs_on_disk(&dir, "crash"),
        BTreeMap::from([(crashed_run.clone(), false)]),
        "the killed run committed nothing"
    );
    assert!(
        dir.join("connections/crash/lock").exists(),
        "the killed runner left its lock"
    );

    // The next run takes the dead runner's lock over at once and commits everything.
    let mut rerun = runner();
    let output = tokio::task::spawn_blocking(move || rerun.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rerun = summary["runId"].as_str().unwrap().to_string();
    let on_disk = runs_on_disk(&dir, "crash");
    assert_eq!(
        on_disk,
        BTreeMap::from([(crashed_run.clone(), false), (rerun.clone(), true)]),
        "exactly one commit, by the re-run"
    );
    let abandoned: Value = serde_json::from_slice(
        &store
            .get(&format!("connections/crash/runs/{crashed_run}/run.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(abandoned["state"], "Failed");
    assert!(abandoned["reason"].as_str().unwrap().contains(&rerun));
    let row = check_run(
        &store,
        &emulator,
        ConnectorKind::Sast,
        summary["manifest"].as_str().unwrap(),
        &BTreeMap::new(),
    )
    .await;

    // The same findings as a run that was never interrupted.
    let recovered = committed_findings(
        &store,
        &manifest(&store, summary["manifest"].as_str().unwrap()).await,
    )
    .await;
    let (clean_store, clean_dir) = temp_store("reliability-no-crash");
    let clean = run(
        &clean_store,
        &connection(&emulator, "crash", ConnectorKind::Sast),
        api_key(&emulator),
    )
    .await
    .unwrap();
    let uninterrupted =
        committed_findings(&clean_store, &manifest(&clean_store, &clean.manifest).await).await;
    assert_eq!(recovered, uninterrupted);
    record_figures(
        "crash-and-rerun",
        "the local runner killed (SIGKILL) after it stored its first raw pages, then run again",
        &[row],
        &emulator,
    );
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(clean_dir).ok();
    std::fs::remove_file(config_file).ok();
}

fn walk_count(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| {
                if p.is_dir() {
                    walk_count(&p, suffix)
                } else {
                    usize::from(p.to_string_lossy().ends_with(suffix))
                }
            })
            .sum()
    })
}

/// The local runner stopped with Ctrl-C (SIGINT) while it collects: its run fails as any failure
/// does, saying why, and its lock goes at once, where a runner killed outright leaves it for the
/// lease to any start from elsewhere (the deployed trigger's). The next run commits.
#[tokio::test]
async fn a_runner_stopped_with_ctrl_c_fails_its_run_and_frees_its_lock() {
    let emulator = emulator(shape()).await;
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            latency_ms: 150,
            ..FaultSpec::default()
        },
    );
    let (store, dir) = temp_store("reliability-ctrl-c");
    let config = cxone_etm::pipeline::ConnectionConfig::new(
        "stopped",
        ConnectorKind::Sast,
        settings(&emulator),
        "env:CX_STOP_TEST_SECRET",
    );
    let config_file = dir.with_extension("json");
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    let secret = json!({"api_key": emulator.credentials.api_key}).to_string();
    let runner = || {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["run", "--quiet", "--json", "--config"])
            .arg(&config_file)
            .arg("--store")
            .arg(&dir)
            .env("CX_STOP_TEST_SECRET", &secret)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    };
    let child = runner().spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let stopped_run = loop {
        let running = runs_on_disk(&dir, "stopped");
        let with_pages = running.keys().find(|run| {
            let raw = dir.join("connections/stopped/runs").join(run).join("raw");
            walk_count(&raw, ".json.zst") > 2
        });
        if let Some(run) = with_pages {
            break run.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner stored no pages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped by Ctrl-C (SIGINT) before it committed"),
        "{stderr}"
    );
    let said: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("stopped by Ctrl-C"),
        "{said}"
    );
    assert!(
        !dir.join("connections/stopped/lock").exists(),
        "the stopped runner released its lock"
    );
    let record: Value = serde_json::from_slice(
        &store
            .get(&format!("connections/stopped/runs/{stopped_run}/run.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["state"], "Failed", "{record}");
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("stopped by Ctrl-C"),
        "{record}"
    );
    // Off the test's thread, which answers as the emulator.
    let mut again = runner();
    let rerun = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(
        runs_on_disk(&dir, "stopped")
            .values()
            .filter(|c| **c)
            .count(),
        1,
        "the run after commits"
    );
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_file(config_file).ok();
}
