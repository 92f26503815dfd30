//! The commit claims. A run commits against the run it reconciled against (its base) only by
//! writing, once and conditionally, the claim on the commit after that base, before its
//! `_COMMITTED` marker and with the marker's body. Two runs planned against one base (a run whose
//! lock was taken over while it went on, beside the run that took it) cannot both commit,
//! whatever the connection's state says (it is written without a condition) and in whatever
//! order their ids sort (a laptop's clock). The claims chain each commit to the next: only the
//! newest commit's is free, and followed from any committed run they lead to it.

use bytes::Bytes;
use serde::Deserialize;

use super::error::StepError;
use crate::layout::{RunRef, commit_claim_key, is_run_id};
use crate::store::ObjectStore;

/// Which run holds the claim on a commit.
#[derive(Debug, PartialEq)]
pub(crate) enum Claimed {
    /// The run that asked, with the claim's bytes: its commit marker's (another attempt of its
    /// finalize, Step Functions retrying one whose answer it lost, may have claimed first).
    ByThisRun(Bytes),
    /// Another run, which reconciled against the same base and claimed first.
    ByAnother(String),
}

/// Claims the commit after `previous` (the run `run` reconciled against) with `marker`, the
/// bytes of the run's commit marker. What the claim commits is made durable before it, and the
/// claim before the marker may follow (a directory's writes may otherwise reach the disk in
/// another order, or not at all, before a power loss).
pub(crate) async fn claim(
    store: &impl ObjectStore,
    run: &RunRef,
    previous: Option<&str>,
    marker: Bytes,
) -> Result<Claimed, StepError> {
    let key = commit_claim_key(&run.connection_id, previous);
    store.make_durable().await?;
    if store.put_durably_if_absent(&key, marker.clone()).await? {
        store.make_durable().await?;
        return Ok(Claimed::ByThisRun(marker));
    }
    let Some(standing) = store.get(&key).await? else {
        return Err(StepError::NotYetWritten {
            key,
            why: "another finalize is writing it (the store refused this one's for a write in flight); the next attempt reads which run claimed it".into(),
        });
    };
    let claimant = claimant(&key, &standing)?;
    Ok(if claimant == run.run_id {
        Claimed::ByThisRun(standing)
    } else {
        Claimed::ByAnother(claimant)
    })
}

/// The run that committed after `previous` (`None`: the connection's first commit), with its
/// claim's bytes; `None` while no run has.
pub(crate) async fn next_commit(
    store: &impl ObjectStore,
    connection_id: &str,
    previous: Option<&str>,
) -> Result<Option<(RunRef, Bytes)>, StepError> {
    let key = commit_claim_key(connection_id, previous);
    let Some(claim) = store.get(&key).await? else {
        return Ok(None);
    };
    let run = RunRef {
        connection_id: connection_id.to_string(),
        run_id: claimant(&key, &claim)?,
    };
    Ok(Some((run, claim)))
}

/// Writes the commit marker of `run` from its `claim`: it claimed its commit, and its finalize
/// stopped before the marker. Answers the marker's bytes; `None` where the run's manifest is
/// gone (deleted by hand), which leaves nothing to commit; `NotYetWritten` where the store
/// refused the marker for another write in flight.
pub(crate) async fn write_marker_from_claim(
    store: &impl ObjectStore,
    run: &RunRef,
    claim: Bytes,
) -> Result<Option<Bytes>, StepError> {
    if store.get(&run.manifest()).await?.is_none() {
        return Ok(None);
    }
    tracing::warn!(run = %run.run_id, "the run claimed its commit, and its finalize stopped before the commit marker: the marker is written from the claim");
    put_marker(store, run, claim.clone()).await?;
    Ok(Some(claim))
}

/// Writes the commit marker of `run`, which claimed its commit, with the claim's bytes `claim`.
/// `NotYetWritten` where the store refused it for another write in flight (S3's 409), which may
/// never land: the run is not taken as committed until a marker stands.
pub(crate) async fn put_marker(
    store: &impl ObjectStore,
    run: &RunRef,
    claim: Bytes,
) -> Result<(), StepError> {
    // A refusal is another writer's marker (each marker of a run that claimed its commit holds
    // the claim's bytes), or a write in flight.
    if !store
        .put_durably_if_absent(&run.commit_marker(), claim)
        .await?
        && store.get(&run.commit_marker()).await?.is_none()
    {
        return Err(StepError::NotYetWritten {
            key: run.commit_marker(),
            why: "another writer has it in flight (the store refused this one's for it); the next attempt finds it, or writes it from the run's commit claim".into(),
        });
    }
    // A run answered committed is committed after a power loss too.
    Ok(store.make_durable().await?)
}

/// The run a claim names.
fn claimant(key: &str, claim: &[u8]) -> Result<String, StepError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Claim {
        run_id: String,
    }
    match serde_json::from_slice::<Claim>(claim) {
        Ok(claim) if is_run_id(&claim.run_id) => Ok(claim.run_id),
        _ => Err(StepError::bad_object(
            key,
            "is not a commit claim (a JSON object whose runId is a run id such as 20261122T204900Z-1a2b3c, as finalize writes it); a claim written by hand must be deleted",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn run(id: &str) -> RunRef {
        RunRef {
            connection_id: "c".into(),
            run_id: id.into(),
        }
    }

    fn marker(id: &str) -> Bytes {
        Bytes::from(format!(r#"{{"runId":"{id}","manifestSha256":"{id}"}}"#))
    }

    /// A store that logs the keys it wrote and each point where it was made durable.
    #[derive(Default)]
    struct Logged {
        inner: MemoryStore,
        log: std::sync::Mutex<Vec<String>>,
    }

    impl ObjectStore for Logged {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), crate::store::StoreError> {
            self.log.lock().unwrap().push(key.to_string());
            self.inner.put(key, body).await
        }
        async fn put_if_absent(
            &self,
            key: &str,
            body: Bytes,
        ) -> Result<bool, crate::store::StoreError> {
            self.log.lock().unwrap().push(key.to_string());
            self.inner.put_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, crate::store::StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), crate::store::StoreError> {
            self.inner.delete(key).await
        }
        async fn make_durable(&self) -> Result<(), crate::store::StoreError> {
            self.log.lock().unwrap().push("(durable)".into());
            Ok(())
        }
        async fn put_durably_if_absent(
            &self,
            key: &str,
            body: Bytes,
        ) -> Result<bool, crate::store::StoreError> {
            self.log.lock().unwrap().push(format!("{key} (durably)"));
            self.inner.put_if_absent(key, body).await
        }
    }

    const BASE: &str = "20261201T000000Z-000000";
    const FIRST: &str = "20261201T010000Z-000001";
    const SECOND: &str = "20261201T020000Z-000002";

    /// The first run to claim a base commits; another attempt of it is answered the first
    /// attempt's bytes, and another run is refused, named.
    #[tokio::test]
    async fn one_run_claims_a_base_and_its_other_attempts_are_answered_its_claim() {
        let store = MemoryStore::default();
        let first = claim(&store, &run(FIRST), Some(BASE), marker(FIRST))
            .await
            .unwrap();
        assert_eq!(first, Claimed::ByThisRun(marker(FIRST)));
        let again = claim(
            &store,
            &run(FIRST),
            Some(BASE),
            Bytes::from_static(b"another attempt's marker"),
        )
        .await
        .unwrap();
        assert_eq!(
            again,
            Claimed::ByThisRun(marker(FIRST)),
            "the standing bytes"
        );
        let other = claim(&store, &run(SECOND), Some(BASE), marker(SECOND))
            .await
            .unwrap();
        assert_eq!(other, Claimed::ByAnother(FIRST.into()));
        let after_first = claim(&store, &run(SECOND), Some(FIRST), marker(SECOND))
            .await
            .unwrap();
        assert_eq!(
            after_first,
            Claimed::ByThisRun(marker(SECOND)),
            "a base of its own"
        );
        let (next, bytes) = next_commit(&store, "c", Some(BASE)).await.unwrap().unwrap();
        assert_eq!((next.run_id.as_str(), bytes), (FIRST, marker(FIRST)));
        assert!(
            next_commit(&store, "c", Some(SECOND))
                .await
                .unwrap()
                .is_none()
        );
        assert!(next_commit(&store, "c", None).await.unwrap().is_none());
    }

    /// What a claim commits is made durable before it, the claim before the marker, and the
    /// marker before the run is answered committed: on a directory, a power loss would otherwise
    /// leave a claim or marker whose run's objects (or the claim itself) never reached the disk.
    #[tokio::test]
    async fn a_commit_is_made_durable_before_its_claim_its_marker_and_its_answer() {
        let store = Logged::default();
        claim(&store, &run(FIRST), Some(BASE), marker(FIRST))
            .await
            .unwrap();
        put_marker(&store, &run(FIRST), marker(FIRST))
            .await
            .unwrap();
        let durable = "(durable)".to_string();
        assert_eq!(
            *store.log.lock().unwrap(),
            [
                durable.clone(),
                format!("{} (durably)", commit_claim_key("c", Some(BASE))),
                durable.clone(),
                format!("{} (durably)", run(FIRST).commit_marker()),
                durable
            ]
        );
    }

    /// A claim that names no run id (written by hand: a path, an empty object) is refused with its
    /// key, not followed.
    #[tokio::test]
    async fn a_claim_that_names_no_run_id_is_refused_with_its_key() {
        let store = MemoryStore::default();
        for body in [&br#"{"runId":"../../etc"}"#[..], b"{}", b"not json"] {
            let key = commit_claim_key("c", None);
            store.put(&key, Bytes::from_static(body)).await.unwrap();
            let refused = next_commit(&store, "c", None).await.unwrap_err();
            assert!(
                matches!(&refused, StepError::BadObject { key: k, .. } if *k == key),
                "{refused}"
            );
            let refused = claim(&store, &run(FIRST), None, marker(FIRST))
                .await
                .unwrap_err();
            assert!(refused.to_string().contains("runId"), "{refused}");
        }
    }

    /// The marker written from a claim is the claim's bytes, and only for a run whose manifest is
    /// there.
    #[tokio::test]
    async fn a_marker_is_written_from_a_claim_only_beside_its_manifest() {
        let store = MemoryStore::default();
        let claimed = run(FIRST);
        assert_eq!(
            write_marker_from_claim(&store, &claimed, marker(FIRST))
                .await
                .unwrap(),
            None
        );
        assert!(store.get(&claimed.commit_marker()).await.unwrap().is_none());
        store
            .put(&claimed.manifest(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            write_marker_from_claim(&store, &claimed, marker(FIRST))
                .await
                .unwrap(),
            Some(marker(FIRST))
        );
        assert_eq!(
            store.get(&claimed.commit_marker()).await.unwrap(),
            Some(marker(FIRST))
        );
    }
}
