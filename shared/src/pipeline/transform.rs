//! Transform: one collected item's raw pages, in order, through the connection's map and scoring
//! into ETM batch files, reconciled against the asset's ledger of the last committed run.

use super::config::Connection;
use super::documents::{CollectOutcome, ItemStatus, TransformRecord, WorkItem};
use super::error::StepError;
use super::objects::{get_gzip_json, get_json, get_written, put_gzip_json, put_json, put_lines};
use super::run::read_run;
use crate::ConnectorKind;
use crate::cxone::links::ScanLinks;
use crate::mapping::{ItemTransformer, Ledger, TransformContext};
use crate::store::ObjectStore;

/// Transforms one collected item: its raw pages, in order, into `etm/<item>/<page>.ndjson.gz`.
/// Items whose collection is not complete are not transformed (nothing of them is committed).
pub async fn transform(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
) -> Result<TransformRecord, StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    let outcome: CollectOutcome = get_json(store, &run.collect_outcome(key))
        .await?
        .ok_or_else(|| StepError::NotYetWritten {
            key: run.collect_outcome(key),
            why: "collect has not finished for this item".into(),
        })?;
    let mut record = TransformRecord {
        item: item.item.clone(),
        ..TransformRecord::default()
    };
    if outcome.status == ItemStatus::Complete {
        let run_record = read_run(store, run).await?;
        // Every line of the run carries the run's start: re-running a step gives the same bytes.
        let context = TransformContext {
            connection_id: item.run.connection_id.clone(),
            run_id: item.run.run_id.clone(),
            produced_at: run_record.started_at,
        };
        let item_json = get_written(store, &run.raw_record(key)).await?;
        let mut transformer = ItemTransformer::new(
            &connection.plan,
            &connection.scoring,
            &context,
            connection.options.clone(),
            &item_json,
        )
        .map_err(|source| StepError::Transform {
            at: format!("item {key}"),
            source,
        })?;
        transformer.expect_repeats(outcome.repeated_ids.iter().cloned());
        if let Some(scan_id) = &outcome.scan_id {
            transformer.link_to(ScanLinks {
                base: connection.vendor.endpoints.api.clone(),
                scan_id: scan_id.clone(),
                project_id: match item.kind {
                    ConnectorKind::Sast => item.record["id"].as_str().map(str::to_string),
                    ConnectorKind::Dast => None,
                },
                branch: item.scan_branch.clone(),
            });
        }
        let previous = match &item.previous_run {
            Some(previous_run) => {
                get_gzip_json::<Ledger>(store, &run.sibling(previous_run).ledger(key)).await?
            }
            None => None,
        };
        transformer.reconcile(
            previous.unwrap_or_default(),
            &item.run.run_id,
            item.scan_branch.as_deref(),
        );
        for number in 0..outcome.original_pages {
            let page_key = run.original_page(key, number);
            let page = get_written(store, &page_key).await?;
            transformer
                .add_original_severities(&page)
                .map_err(|source| StepError::Transform {
                    at: page_key.clone(),
                    source,
                })?;
        }
        for number in 0..outcome.pages {
            let page = get_written(store, &run.raw_page(key, number)).await?;
            let before = transformer.figures().findings_out;
            let lines =
                transformer
                    .push_page(&page, number)
                    .map_err(|source| StepError::Transform {
                        at: format!("item {key}"),
                        source,
                    })?;
            if lines.is_empty() {
                continue;
            }
            let findings = transformer.figures().findings_out - before;
            record
                .objects
                .push(put_lines(store, &run.etm_page(key, number), &lines, findings).await?);
        }
        let (closures, closed) = transformer.close_absent();
        if !closures.is_empty() {
            record
                .objects
                .push(put_lines(store, &run.closures(key), &closures, closed).await?);
        }
        let mut done = transformer.finish();
        if let Some(ledger) = done.ledger.take() {
            put_gzip_json(store, &run.ledger(key), &ledger).await?;
        }
        record.figures = done.figures;
        record.rejected = done.rejected;
        record.collisions = done.collisions;
    }
    put_json(store, &run.transform_record(key), &record).await?;
    Ok(record)
}
