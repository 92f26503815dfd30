//! The AWS adapters against moto: S3 as the object store (conditional writes included) and Secrets
//! Manager as the credential source (rotation included), in full pipeline runs.

use std::sync::Arc;

use bytes::Bytes;
use cxone_emulator::{Emulator, EmulatorConfig, ResultType, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{ConnectionConfig, Manifest, Trigger, run_connection};
use cxone_etm::secret::SecretSource;
use cxone_etm::store::{ObjectStore, S3Store};
use cxone_etm_e2e::{Moto, secrets_manager_at, vendor_settings as settings};

async fn bucket(moto: &Moto, name: &str) -> S3Store {
    moto.s3()
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("bucket created");
    S3Store::new(moto.s3(), name, "etm")
}

#[tokio::test]
async fn s3_store_keeps_the_store_contract_including_conditional_writes() {
    let moto = Moto::start().await;
    let store = bucket(&moto, "contract").await;
    store
        .put("a/b/1.json", Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put("a/b/1.json", Bytes::from_static(b"uno"))
        .await
        .unwrap();
    assert_eq!(
        store.get("a/b/1.json").await.unwrap().unwrap(),
        Bytes::from_static(b"uno")
    );
    assert!(
        store
            .put_if_absent("a/lock", Bytes::from_static(b"x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("a/lock", Bytes::from_static(b"y"))
            .await
            .unwrap(),
        "If-None-Match: * refuses the second write"
    );
    assert_eq!(
        store.get("a/lock").await.unwrap().unwrap(),
        Bytes::from_static(b"x")
    );
    // The same condition on an object written through a spool file (a ledger).
    let spooled = |text: &'static [u8]| {
        store.put_written_if_absent("a/lock", move |out| std::io::Write::write_all(out, text))
    };
    assert!(
        !spooled(b"z").await.unwrap(),
        "refused through the spool too"
    );
    assert_eq!(
        store.get("a/lock").await.unwrap().unwrap(),
        Bytes::from_static(b"x")
    );
    // An object of exactly the bytes written stands already: the SDK's retry of this very write,
    // whose first attempt landed and whose answer was lost, meets its own object (412). It is
    // this write's; taken for another writer's, a plan deleted its own work list.
    assert!(
        store
            .put_if_absent("a/lock", Bytes::from_static(b"x"))
            .await
            .unwrap(),
        "its own bytes"
    );
    // Through a spool (a ledger, too large to read whole to compare), a 412 is refused: the
    // ledger's writer checks what stands itself.
    assert!(!spooled(b"x").await.unwrap(), "refused through the spool");
    assert_eq!(
        store.list("a/").await.unwrap(),
        vec!["a/b/1.json", "a/lock"]
    );
    // One level, by S3's delimiter, under the store's prefix.
    store
        .put("a/c/d/2.json", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(store.list_folders("a/").await.unwrap(), vec!["b", "c"]);
    assert_eq!(store.list_folders("a/c/").await.unwrap(), vec!["d"]);
    assert!(store.list_folders("a/b/").await.unwrap().is_empty());
    store.delete("a/c/d/2.json").await.unwrap();
    store.delete("a/lock").await.unwrap();
    assert!(store.get("a/lock").await.unwrap().is_none());
    assert!(spooled(b"z").await.unwrap(), "written once the key is gone");
    store.delete("a/lock").await.unwrap();
    let raw = moto
        .s3()
        .list_objects_v2()
        .bucket("contract")
        .send()
        .await
        .unwrap();
    assert!(
        raw.contents()
            .iter()
            .all(|o| o.key().unwrap().starts_with("etm/")),
        "objects live under the prefix"
    );
}

/// A write on the version read (`If-Match` on its ETag) lands only while the object is unchanged:
/// a write between the read and it stands, as does the object's absence; the write's own object
/// met again (the SDK's retry of a write that landed) counts as written.
#[tokio::test]
async fn s3_writes_on_the_version_read_only_while_the_object_is_unchanged() {
    let moto = Moto::start().await;
    let store = bucket(&moto, "versions").await;
    store
        .put("config.json", Bytes::from_static(b"read"))
        .await
        .unwrap();
    let (body, read) = store.get_versioned("config.json").await.unwrap().unwrap();
    assert_eq!(body, Bytes::from_static(b"read"));
    store
        .put("config.json", Bytes::from_static(b"put since"))
        .await
        .unwrap();
    assert!(
        !store
            .put_if_unchanged("config.json", Bytes::from_static(b"ours"), &read)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("config.json").await.unwrap().unwrap(),
        Bytes::from_static(b"put since")
    );
    let (_, current) = store.get_versioned("config.json").await.unwrap().unwrap();
    assert_ne!(current, read);
    assert!(
        store
            .put_if_unchanged("config.json", Bytes::from_static(b"ours"), &current)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("config.json").await.unwrap().unwrap(),
        Bytes::from_static(b"ours")
    );
    assert!(
        store
            .put_if_unchanged("config.json", Bytes::from_static(b"ours"), &current)
            .await
            .unwrap(),
        "its own object, met again"
    );
    store.delete("config.json").await.unwrap();
    assert!(
        !store
            .put_if_unchanged("config.json", Bytes::from_static(b"late"), &current)
            .await
            .unwrap()
    );
    assert!(store.get("config.json").await.unwrap().is_none());
}

/// Folders and keys past one page of S3's listing (1,000 entries): every one is answered, in
/// order. A connection of more than 1,000 runs is found its newest committed run by
/// `list_folders` over its run folders.
#[tokio::test]
async fn s3_listings_go_on_past_one_page() {
    let moto = Moto::start().await;
    let store = bucket(&moto, "pages").await;
    let folders: Vec<String> = (0..1_005).map(|n| format!("run-{n:05}")).collect();
    for chunk in folders.chunks(64) {
        futures_util::future::try_join_all(chunk.iter().map(|folder| {
            let key = format!("runs/{folder}/_COMMITTED");
            let store = &store;
            async move { store.put(&key, Bytes::from_static(b"{}")).await }
        }))
        .await
        .unwrap();
    }
    assert_eq!(store.list_folders("runs/").await.unwrap(), folders);
    let keys = store.list("runs/").await.unwrap();
    assert_eq!(keys.len(), folders.len());
    assert_eq!(
        keys.last().map(String::as_str),
        Some("runs/run-01004/_COMMITTED")
    );
}

/// Large objects (ledgers) go to S3 through a temporary file and come back through one: what
/// reaches the bucket is what was written, and a failed write sends nothing.
#[tokio::test]
async fn s3_store_writes_and_reads_large_objects_through_files() {
    use std::io::Read;
    let moto = Moto::start().await;
    let spool = tempfile::tempdir().unwrap();
    let store = bucket(&moto, "streams").await.spooling_in(spool.path());
    let spooled = || std::fs::read_dir(spool.path()).unwrap().count();
    let large: Vec<u8> = (0..2_000_000u32).flat_map(u32::to_le_bytes).collect();
    store
        .put_written("ledger/big.json.gz", |out| {
            out.write_all(&large)?;
            #[cfg(target_os = "linux")]
            assert_eq!(
                spooled(),
                0,
                "the spool has no name: a process cut off here leaves nothing in /tmp"
            );
            Ok(())
        })
        .await
        .unwrap();
    assert!(
        store.get("ledger/big.json.gz").await.unwrap().unwrap() == large,
        "the bucket holds the 8 MB as written"
    );
    let mut read = Vec::new();
    store
        .get_reader("ledger/big.json.gz")
        .await
        .unwrap()
        .expect("the object")
        .read_to_end(&mut read)
        .unwrap();
    assert!(read == large, "read back through the spool as written");
    assert_eq!(spooled(), 0, "nothing is left in the spool directory");
    let failed = store
        .put_written("ledger/big.json.gz", |out| {
            out.write_all(b"a part of a new ledger")?;
            Err(std::io::Error::other("the serializer gave up"))
        })
        .await
        .unwrap_err();
    assert!(
        failed.to_string().contains("the serializer gave up")
            && failed
                .to_string()
                .contains("s3://streams/etm/ledger/big.json.gz"),
        "{failed}"
    );
    assert!(
        store.get("ledger/big.json.gz").await.unwrap().unwrap() == large,
        "a failed write sends nothing"
    );
    assert!(store.get_reader("ledger/absent").await.unwrap().is_none());
}

#[tokio::test]
async fn full_runs_commit_to_s3_with_credentials_from_secrets_manager() {
    let moto = Moto::start().await;
    let shape = TenantShape {
        projects: 8,
        results_per_scan: 60,
        dast_environments: 3,
        dast_results_per_scan: 40,
        ..TenantShape::default()
    };
    let emulator = Emulator::start(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let store = bucket(&moto, "runs").await;
    let sm = moto.secrets_manager();
    let key_doc = serde_json::json!({"api_key": emulator.credentials.api_key}).to_string();
    let key_arn = sm
        .create_secret()
        .name("cx/api-key")
        .secret_string(key_doc)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let client_doc = serde_json::json!({"client_id": emulator.credentials.client_id, "client_secret": emulator.credentials.client_secret}).to_string();
    let client_arn = sm
        .create_secret()
        .name("cx/oauth")
        .secret_string(client_doc)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();

    for (kind, arn, expected) in [
        (
            ConnectorKind::Sast,
            key_arn,
            emulator.expected().totals.by_type[&ResultType::Sast],
        ),
        (
            ConnectorKind::Dast,
            client_arn,
            emulator.expected().totals.dast_results,
        ),
    ] {
        let id = format!("{kind:?}").to_lowercase();
        let config = ConnectionConfig::new(&id, kind, settings(&emulator), &arn);
        let connection = config.validate().unwrap();
        let secret = SecretSource::with_secrets_manager(arn, Arc::new(moto.secrets_manager()));
        let summary = run_connection(&store, &connection, secret, Trigger::Api, &|_| {}, &|_| {})
            .await
            .unwrap();
        assert!(summary.complete, "{:?}", summary.problems);
        assert_eq!(summary.findings + summary.rejected, expected, "{kind:?}");
        let manifest: Manifest =
            serde_json::from_slice(&store.get(&summary.manifest).await.unwrap().unwrap()).unwrap();
        for object in manifest.items.iter().flat_map(|i| &i.objects) {
            let head = moto
                .s3()
                .head_object()
                .bucket("runs")
                .key(format!("etm/{}", object.key))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.content_length(),
                Some(object.bytes as i64),
                "{}",
                object.key
            );
        }
        assert!(
            store
                .get(&summary.manifest.replace("manifest.json", "_COMMITTED"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .get(&format!("connections/{id}/lock"))
                .await
                .unwrap()
                .is_none()
        );
        // Every raw object, pages and the outcomes written only where none is alike, and the
        // plan's work lists (the vendor's records), is tagged for the lifecycle rule.
        let raw: Vec<String> = store
            .list(&format!("connections/{id}/runs/"))
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.contains("/raw/") || k.contains("/plan/"))
            .collect();
        assert!(raw.iter().any(|k| k.ends_with("/0.json.zst")), "{raw:?}");
        assert!(raw.iter().any(|k| k.ends_with("/collect.json")), "{raw:?}");
        assert!(
            raw.iter().any(|k| k.ends_with("/plan/work.jsonl")),
            "{raw:?}"
        );
        for key in &raw {
            let tags = moto
                .s3()
                .get_object_tagging()
                .bucket("runs")
                .key(format!("etm/{key}"))
                .send()
                .await
                .unwrap();
            assert!(
                tags.tag_set()
                    .iter()
                    .any(|t| t.key() == "class" && t.value() == "raw"),
                "{key} is tagged for the lifecycle rule"
            );
        }
    }
    let everything = store.list("").await.unwrap();
    for secret in [
        &emulator.credentials.api_key,
        &emulator.credentials.client_secret,
    ] {
        for key in &everything {
            let body = store.get(key).await.unwrap().unwrap();
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret reached {key}"
            );
        }
    }
}

#[tokio::test]
async fn a_rotated_secret_is_re_read_when_the_vendor_refuses_the_cached_one() {
    let moto = Moto::start().await;
    let shape = TenantShape {
        projects: 3,
        results_per_scan: 20,
        ..TenantShape::default()
    };
    let emulator = Emulator::start(EmulatorConfig {
        shape,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let store = bucket(&moto, "rotation").await;
    let sm = moto.secrets_manager();
    let arn = sm
        .create_secret()
        .name("cx/rotating")
        .secret_string(r#"{"api_key": "revoked-before-rotation"}"#)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let secret = SecretSource::with_secrets_manager(arn.clone(), Arc::new(moto.secrets_manager()));
    secret.credential().await.unwrap();
    // The key is rotated after the source cached the old one.
    let rotated = serde_json::json!({"api_key": emulator.credentials.api_key}).to_string();
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(rotated)
        .send()
        .await
        .unwrap();
    let config = ConnectionConfig {
        item_concurrency: 2,
        ..ConnectionConfig::new("rotation", ConnectorKind::Sast, settings(&emulator), &arn)
    };
    let summary = run_connection(
        &store,
        &config.validate().unwrap(),
        secret,
        Trigger::Schedule,
        &|_| {},
        &|_| {},
    )
    .await
    .unwrap();
    assert!(summary.complete, "{:?}", summary.problems);
    assert!(summary.findings > 0);
}

/// A secret Secrets Manager does not give for a while (no connection, a throttle: the SDK's own
/// retries spent) fails the step Retryable, so the state machine tries again; a secret that does
/// not exist fails it for good. Each over the wire: moto's answer, a port nothing listens on, and
/// a server answering as Secrets Manager does when it throttles.
#[tokio::test]
async fn a_secret_unread_for_a_while_is_retried_and_a_missing_one_is_not() {
    use cxone_etm::pipeline::StepError;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:cx/none-AbCdEf";
    let step_error = |client: aws_sdk_secretsmanager::Client| async move {
        let source = SecretSource::with_secrets_manager(arn.to_string(), Arc::new(client));
        StepError::from(source.credential().await.expect_err("no secret is read"))
    };

    let moto = Moto::start().await;
    let missing = step_error(moto.secrets_manager()).await;
    assert!(!missing.is_retryable(), "{missing}");
    assert!(
        missing.to_string().contains("ResourceNotFound"),
        "{missing}"
    );

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = step_error(secrets_manager_at(&nobody)).await;
    assert!(unreachable.is_retryable(), "{unreachable}");

    let throttling = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", throttling.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        while let Ok((mut socket, _)) = throttling.accept().await {
            let mut request = vec![0; 64 * 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    let throttled = step_error(secrets_manager_at(&endpoint)).await;
    assert!(throttled.is_retryable(), "{throttled}");
    assert!(
        throttled.to_string().contains("ThrottlingException"),
        "{throttled}"
    );
}

/// A Secrets Manager that takes the connection and never answers: the functions' client gives up
/// (its own timeouts: the SDK's defaults bound only the connection), and the step fails Retryable,
/// rather than every step that waits on the credential hanging until the function's timeout.
#[tokio::test]
async fn a_secret_read_that_never_answers_gives_up_and_is_retried() {
    use cxone_etm::pipeline::StepError;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(
                aws_sdk_secretsmanager::config::Credentials::new(
                    "test", "test", None, None, "test",
                ),
            ),
        )
        .build();
    let client = cxone_etm::secret::secrets_manager_client(&config);
    let source = SecretSource::with_secrets_manager(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:cx-AbCdEf",
        Arc::new(client),
    );
    let started = std::time::Instant::now();
    let error = StepError::from(source.credential().await.expect_err("no answer"));
    assert!(error.is_retryable(), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
}
