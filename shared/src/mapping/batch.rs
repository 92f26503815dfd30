//! The ETM batch line: the envelope every line of an item starts with, and findings split into
//! lines of at most `max_findings_per_line`. The engine writes findings this way, and closures of
//! a ledger's open findings go out the same way.

use crate::{ConnectorKind, Engine};

pub const SCHEMA_VERSION: &str = "1.0";
pub const VENDOR: &str = "Checkmarx";
pub const PRODUCT: &str = "Checkmarx";

/// Which run the lines belong to and when they were produced.
#[derive(Clone, Debug)]
pub struct TransformContext {
    pub connection_id: String,
    pub run_id: String,
    /// The connection's kind, as every line says it.
    pub connector_kind: ConnectorKind,
    /// RFC 3339; every line of the run carries it.
    pub produced_at: String,
}

/// `{"schemaVersion":…,"vendorItemId":"…",` — the start of every batch line of one item.
pub(super) fn line_envelope(
    context: &TransformContext,
    engine: Engine,
    vendor_item_id: &str,
) -> Vec<u8> {
    let kind = match context.connector_kind {
        ConnectorKind::Sast => "SAST",
        ConnectorKind::Sca => "SCA",
        ConnectorKind::Dast => "DAST",
    };
    let envelope = serde_json::json!({
        "schemaVersion": SCHEMA_VERSION,
        "connectionId": context.connection_id,
        "runId": context.run_id,
        "connectorKind": kind,
        "engine": engine,
        "vendor": VENDOR,
        "product": PRODUCT,
        "producedAt": context.produced_at,
        "vendorItemId": vendor_item_id,
    });
    let mut envelope = serde_json::to_vec(&envelope).expect("serializes");
    envelope.pop();
    envelope.push(b',');
    envelope
}

/// Batch lines of at most `per_line` findings each (JSON objects), numbered from `first_part`:
/// envelope, part, the asset (`"externalAssetId":…,"asset":{…},`) and the finding group.
pub(super) fn batch_lines(
    envelope: &[u8],
    first_part: u64,
    asset: &[u8],
    findings: &[Vec<u8>],
    per_line: usize,
) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for (part, chunk) in (first_part..).zip(findings.chunks(per_line.max(1))) {
        let size: usize =
            chunk.iter().map(|f| f.len() + 1).sum::<usize>() + envelope.len() + asset.len() + 64;
        let mut line = Vec::with_capacity(size);
        line.extend_from_slice(envelope);
        line.extend_from_slice(format!("\"part\":{part},").as_bytes());
        line.extend_from_slice(asset);
        line.extend_from_slice(b"\"findingGroup\":{\"findings\":[");
        for (i, finding) in chunk.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(finding);
        }
        line.extend_from_slice(b"]}}\n");
        lines.push(line);
    }
    lines
}
