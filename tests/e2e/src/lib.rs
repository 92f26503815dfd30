//! End-to-end test support: a moto server (S3, Secrets Manager and Step Functions over the real AWS
//! wire protocol) and settings pointing the client at an emulator. `bash scripts/test.sh` installs
//! moto into `.venv`; `MOTO_SERVER` may name another binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cxone_emulator::{Emulator, EmulatorConfig};
use cxone_etm::lambda::Runtime;
use cxone_etm::pipeline::{ConnectionConfig, config_key};
use cxone_etm::store::{ObjectStore, S3Store};
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
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not answer within 30 s"
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
        let config = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }
}

impl Moto {
    pub fn step_functions(&self) -> aws_sdk_sfn::Client {
        let config = aws_sdk_sfn::config::Builder::new()
            .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
            .region(aws_sdk_sfn::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sfn::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .build();
        aws_sdk_sfn::Client::from_conf(config)
    }
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

pub struct Fixture {
    pub moto: Moto,
    pub emulator: Emulator,
    pub runtime: Runtime,
}

/// moto with a bucket, the API key in Secrets Manager and a state machine; the `demo-sast`
/// connection of the sample events configured against an emulator of the default tenant (seed 1).
pub async fn fixture() -> Fixture {
    let moto = Moto::start().await;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    moto.s3()
        .create_bucket()
        .bucket("etm-data")
        .send()
        .await
        .unwrap();
    let secret = serde_json::json!({"api_key": emulator.credentials.api_key}).to_string();
    let arn = moto
        .secrets_manager()
        .create_secret()
        .name("cxone/demo-sast")
        .secret_string(secret)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let definition =
        json!({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}).to_string();
    let machine = moto
        .step_functions()
        .create_state_machine()
        .name("cxone-etm")
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/cxone-etm")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_string();
    let store = S3Store::new(moto.s3(), "etm-data", "");
    let config = ConnectionConfig::new(
        "demo-sast",
        cxone_etm::ConnectorKind::Sast,
        vendor_settings(&emulator),
        &arn,
    );
    store
        .put(
            &config_key("demo-sast"),
            serde_json::to_vec(&config).unwrap().into(),
        )
        .await
        .unwrap();
    let runtime = Runtime::new(
        store,
        moto.secrets_manager(),
        Some((moto.step_functions(), machine)),
    );
    Fixture {
        moto,
        emulator,
        runtime,
    }
}
