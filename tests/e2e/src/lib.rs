//! End-to-end test support: a moto server (S3 and Secrets Manager over the real AWS wire protocol),
//! settings pointing the client at an emulator, and the Lambda tasks' fixture over memory ports. `bash scripts/test.sh` installs
//! moto into `.venv`; `MOTO_SERVER` may name another binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxone_emulator::{Emulator, EmulatorConfig};
use cxone_etm::lambda::{RecordedStarts, Runtime, VendorHosts};
use cxone_etm::pipeline::{ConnectionConfig, config_key};
use cxone_etm::secret::MemorySecrets;
use cxone_etm::store::{MemoryStore, ObjectStore};
use serde_json::json;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = workspace.join(".venv/bin/moto_server");
    assert!(
        path.exists(),
        "moto_server not found at {}; run `bash scripts/test.sh` (it installs moto into .venv) or set MOTO_SERVER",
        path.display()
    );
    path
}

impl Moto {
    pub async fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if let Ok(response) = reqwest::get(format!("{}/moto-api/", moto.endpoint)).await
                && response.status().is_success()
            {
                return moto;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "moto_server did not answer within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        secrets_manager_at(&self.endpoint)
    }
}

/// A Secrets Manager client for the server at `endpoint`, with test credentials.
pub fn secrets_manager_at(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// The host the emulator's API and IAM listen on (`http://<host>:<port>`).
pub fn emulator_host(emulator: &cxone_emulator::Emulator) -> &str {
    let authority = emulator.api_url.split("//").nth(1).unwrap_or_default();
    authority.split([':', '/']).next().unwrap_or_default()
}

/// Vendor settings for an emulator on loopback, with short retry delays.
pub fn vendor_settings(emulator: &cxone_emulator::Emulator) -> cxone_etm::cxone::VendorSettings {
    let mut s = cxone_etm::cxone::VendorSettings::for_custom(
        &emulator.api_url,
        &emulator.iam_url,
        &emulator.tenant,
    );
    s.allow_insecure_local = true;
    s.retry = cxone_etm::cxone::RetrySettings {
        max_retries: 6,
        base_delay_ms: 10,
        max_delay_secs: 1,
        max_total_wait_secs: 30,
    };
    s
}

/// The Lambda tasks over a memory store, secrets in memory and a state machine that records what it
/// is asked to start: the functions' handlers run offline, as the sample events describe them. The
/// AWS adapters themselves (S3, Secrets Manager) are tested against moto, and the state machine by
/// the deployed-shape test.
pub struct Fixture {
    pub emulator: Emulator,
    pub runtime: Runtime<MemoryStore>,
    pub starts: Arc<RecordedStarts>,
    pub secrets: Arc<MemorySecrets>,
}

/// The secret the `demo-sast` connection names: an ARN, as a deployed connection's would be.
pub const DEMO_SECRET_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:cxone/demo-sast-AbCdEf";

/// The `demo-sast` connection of the sample events configured against an emulator of the default
/// tenant (seed 1), its API key in (memory) Secrets Manager.
pub async fn fixture() -> Fixture {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    secrets.put(
        DEMO_SECRET_ARN,
        json!({"api_key": emulator.credentials.api_key}).to_string(),
    );
    let starts = Arc::new(RecordedStarts::default());
    let store = MemoryStore::default();
    let config = ConnectionConfig::new(
        "demo-sast",
        cxone_etm::ConnectorKind::Sast,
        vendor_settings(&emulator),
        DEMO_SECRET_ARN,
    );
    store
        .put(
            &config_key("demo-sast"),
            serde_json::to_vec(&config).unwrap().into(),
        )
        .await
        .unwrap();
    // The emulator stands for a private deployment the stack allows.
    let runtime = Runtime::new(store, secrets.clone(), Some(starts.clone()))
        .with_vendor_hosts(VendorHosts::listed(emulator_host(&emulator)).unwrap());
    Fixture {
        emulator,
        runtime,
        starts,
        secrets,
    }
}
