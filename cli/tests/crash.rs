//! The local runner (`cxone-etm run`) killed mid-run with SIGKILL, then run again: the next run
//! recovers the dead runner's lock at once and commits exactly what a run that was never
//! interrupted commits. Its figures join docs/reliability.md's table.

#[path = "../../shared/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use common::reliability::*;
use common::runs::*;
use common::*;
use cxone_emulator::{Emulator, Endpoint, FaultSpec};
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

/// `cxone-etm run` of connection `id` into a store of its own, against an emulator whose results
/// answer slowly (150 ms), so that a run can be stopped while it collects.
struct SlowRun {
    emulator: Emulator,
    store: cxone_etm::store::LocalStore,
    dir: std::path::PathBuf,
    id: &'static str,
    config_file: std::path::PathBuf,
    secret: String,
}

impl SlowRun {
    async fn new(id: &'static str, item_concurrency: usize) -> Self {
        let emulator = emulator(shape()).await;
        emulator.set_fault(
            Endpoint::Results,
            FaultSpec {
                latency_ms: 150,
                ..FaultSpec::default()
            },
        );
        let (store, dir) = temp_store(&format!("reliability-{id}"));
        let config = cxone_etm::pipeline::ConnectionConfig {
            item_concurrency,
            ..cxone_etm::pipeline::ConnectionConfig::new(
                id,
                ConnectorKind::Sast,
                settings(&emulator),
                "env:CX_SLOW_RUN_SECRET",
            )
        };
        let config_file = dir.with_extension("json");
        std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
        let secret = json!({"api_key": emulator.credentials.api_key}).to_string();
        Self {
            emulator,
            store,
            dir,
            id,
            config_file,
            secret,
        }
    }

    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["run", "--quiet", "--json", "--config"])
            .arg(&self.config_file)
            .arg("--store")
            .arg(&self.dir)
            .env("CX_SLOW_RUN_SECRET", &self.secret);
        command
    }

    /// Runs the connection to its end, off the test's thread (which answers as the emulator).
    async fn run_to_the_end(&self) -> std::process::Output {
        let mut command = self.command();
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// The run a runner started, once it has stored its first raw pages.
    async fn run_with_pages(&self) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let running = runs_on_disk(&self.dir, self.id);
            let with_pages = running.keys().find(|run| {
                let raw = self.dir.join("connections").join(self.id).join("runs");
                walk_count(&raw.join(run).join("raw"), ".json.zst") > 2
            });
            if let Some(run) = with_pages {
                return run.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the runner stored no pages"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn clean_up(self) {
        std::fs::remove_dir_all(self.dir).ok();
        std::fs::remove_file(self.config_file).ok();
    }
}

#[tokio::test]
async fn a_runner_killed_mid_run_is_recovered_by_the_next_run_with_the_same_output() {
    let slow = SlowRun::new("crash", 2).await;
    let (store, dir, emulator) = (&slow.store, &slow.dir, &slow.emulator);

    // Kill the runner (SIGKILL: no clean-up runs) once it has stored its first raw pages.
    let mut child = slow
        .command()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let crashed_run = slow.run_with_pages().await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        runs_on_disk(dir, "crash"),
        BTreeMap::from([(crashed_run.clone(), false)]),
        "the killed run committed nothing"
    );
    assert!(
        dir.join("connections/crash/lock").exists(),
        "the killed runner left its lock"
    );

    // The next run takes the dead runner's lock over at once and commits everything.
    let output = slow.run_to_the_end().await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rerun = summary["runId"].as_str().unwrap().to_string();
    let on_disk = runs_on_disk(dir, "crash");
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
        store,
        emulator,
        ConnectorKind::Sast,
        summary["manifest"].as_str().unwrap(),
        &BTreeMap::new(),
    )
    .await;

    // The same findings as a run that was never interrupted.
    let recovered = committed_findings(
        store,
        &manifest(store, summary["manifest"].as_str().unwrap()).await,
    )
    .await;
    let (clean_store, clean_dir) = temp_store("reliability-no-crash");
    let clean = run(
        &clean_store,
        &connection(emulator, "crash", ConnectorKind::Sast),
        api_key(emulator),
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
        emulator,
    );
    std::fs::remove_dir_all(clean_dir).ok();
    slow.clean_up();
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
    let slow = SlowRun::new("stopped", 4).await;
    let child = slow
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped_run = slow.run_with_pages().await;
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
        stderr.contains("stopped by Ctrl-C (SIGINT); run it again"),
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
        !slow.dir.join("connections/stopped/lock").exists(),
        "the stopped runner released its lock"
    );
    let record: Value = serde_json::from_slice(
        &slow
            .store
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
    let rerun = slow.run_to_the_end().await;
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(
        runs_on_disk(&slow.dir, "stopped")
            .values()
            .filter(|c| **c)
            .count(),
        1,
        "the run after commits"
    );
    slow.clean_up();
}
