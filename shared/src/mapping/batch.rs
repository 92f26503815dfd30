//! The ETM batch line: the envelope every line of an item starts with, and findings split into
//! lines of at most `max_findings_per_line`. The engine writes findings this way, and closures of
//! a ledger's open findings go out the same way.

use crate::{ConnectorKind, Engine};

/// Where lines go as they are finished: an object being written, for more lines than memory
/// holds (the closures of an asset of millions of findings).
pub type LineSink<'a> = dyn FnMut(&[u8]) -> std::io::Result<()> + 'a;

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

/// Batch lines of at most `per_line` findings each, numbered from a first part: envelope, part,
/// the asset (`"externalAssetId":…,"asset":{…},`) and the finding group. Each finding is written
/// straight into the line that carries it: a page of 10,000 findings was held twice while its
/// lines were made, once as a list of findings and once as lines.
#[derive(Default)]
pub(super) struct LineWriter {
    envelope: Vec<u8>,
    asset: Vec<u8>,
    per_line: usize,
    next_part: u64,
    /// The line being written, and how many findings it holds.
    open: Vec<u8>,
    in_open: usize,
    /// The length of the last line closed: room for the next.
    last_line: usize,
    done: Vec<Vec<u8>>,
}

impl LineWriter {
    pub fn new(envelope: Vec<u8>, asset: Vec<u8>, first_part: u64, per_line: usize) -> Self {
        Self {
            envelope,
            asset,
            per_line: per_line.max(1),
            next_part: first_part,
            ..Self::default()
        }
    }

    /// Numbers the lines to come from `part` on.
    pub fn number_from(&mut self, part: u64) {
        self.next_part = part;
    }

    /// Adds one finding, a JSON object `write` appends to the line.
    pub fn finding(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.in_open == 0 {
            self.open = Vec::with_capacity(self.last_line);
            self.open.extend_from_slice(&self.envelope);
            self.open
                .extend_from_slice(format!("\"part\":{},", self.next_part).as_bytes());
            self.open.extend_from_slice(&self.asset);
            self.open
                .extend_from_slice(b"\"findingGroup\":{\"findings\":[");
        } else {
            self.open.push(b',');
        }
        write(&mut self.open);
        self.in_open += 1;
        if self.in_open == self.per_line {
            self.close();
        }
    }

    /// The asset on a line of its own, its findings empty, numbered after the lines written.
    pub fn asset_alone(&self) -> Vec<u8> {
        let mut line = self.envelope.clone();
        line.extend_from_slice(format!("\"part\":{},", self.next_part).as_bytes());
        line.extend_from_slice(&self.asset);
        line.extend_from_slice(b"\"findingGroup\":{\"findings\":[]}}\n");
        line
    }

    fn close(&mut self) {
        if self.in_open == 0 {
            return;
        }
        self.open.extend_from_slice(b"]}}\n");
        self.open.shrink_to_fit();
        self.last_line = self.open.len();
        self.done.push(std::mem::take(&mut self.open));
        self.in_open = 0;
        self.next_part += 1;
    }

    /// The lines written since the last call, the last of them closed.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        self.close();
        std::mem::take(&mut self.done)
    }

    /// Hands the lines finished since the last call to `out`, the open one too when `close`;
    /// returns how many.
    pub fn hand_over(&mut self, close: bool, out: &mut LineSink) -> std::io::Result<u64> {
        if close {
            self.close();
        }
        let handed = self.done.len() as u64;
        for line in self.done.drain(..) {
            out(&line)?;
        }
        Ok(handed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_fill_lines_of_at_most_per_line_numbered_on() {
        let mut lines = LineWriter::new(b"{\"e\":1,".to_vec(), b"\"a\":2,".to_vec(), 7, 2);
        for n in 0..5 {
            lines.finding(|out| out.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes()));
        }
        let written: Vec<String> = lines
            .take()
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(
            written,
            [
                "{\"e\":1,\"part\":7,\"a\":2,\"findingGroup\":{\"findings\":[{\"n\":0},{\"n\":1}]}}\n",
                "{\"e\":1,\"part\":8,\"a\":2,\"findingGroup\":{\"findings\":[{\"n\":2},{\"n\":3}]}}\n",
                "{\"e\":1,\"part\":9,\"a\":2,\"findingGroup\":{\"findings\":[{\"n\":4}]}}\n",
            ]
        );
        assert!(lines.take().is_empty(), "nothing written since");
        lines.finding(|out| out.extend_from_slice(b"{}"));
        assert_eq!(
            lines.take(),
            [b"{\"e\":1,\"part\":10,\"a\":2,\"findingGroup\":{\"findings\":[{}]}}\n".to_vec()],
            "a page after goes on from the part before"
        );
    }

    #[test]
    fn lines_are_handed_over_as_they_are_finished_and_the_open_one_when_closed() {
        let mut lines = LineWriter::new(b"{".to_vec(), Vec::new(), 0, 2);
        let mut handed: Vec<String> = Vec::new();
        let mut sink = |line: &[u8]| {
            handed.push(String::from_utf8(line.to_vec()).unwrap());
            Ok(())
        };
        for _ in 0..3 {
            lines.finding(|out| out.extend_from_slice(b"{}"));
        }
        assert_eq!(
            lines.hand_over(false, &mut sink).unwrap(),
            1,
            "one line full"
        );
        assert_eq!(lines.hand_over(true, &mut sink).unwrap(), 1, "the open one");
        assert_eq!(lines.hand_over(true, &mut sink).unwrap(), 0);
        assert_eq!(
            handed,
            [
                "{\"part\":0,\"findingGroup\":{\"findings\":[{},{}]}}\n",
                "{\"part\":1,\"findingGroup\":{\"findings\":[{}]}}\n",
            ]
        );
        let mut refusing = |_: &[u8]| Err(std::io::Error::other("disk full"));
        lines.finding(|out| out.extend_from_slice(b"{}"));
        let refused = lines.hand_over(true, &mut refusing).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "disk full",
            "the sink's failure comes back"
        );
    }
}
