//! Vendor records → ETM batch lines, through transform maps and scoring tables that are data.
//! See docs/etm-batch.md for the line format, the identity rules and the counting rules.

mod batch;
mod catalog;
mod engine;
mod extract;
mod identity;
mod ledger;
mod map;
mod original;
mod replay;
mod scoring;
mod triage;

pub use batch::{LineSink, PRODUCT, SCHEMA_VERSION, TransformContext, VENDOR};
pub use catalog::{Catalog, Computed, Scope, Target, ValueType, catalog};
pub use engine::{
    AssetTypes, Collision, Figures, ItemOutcome, ItemTransformer, PageReader, PullHold, ReadPage,
    Rejected, TransformError, TransformOptions, Unseen,
};
pub use identity::{IdTally, RepeatedIds, Repeats};
pub use ledger::{
    Closed, Ledger, LedgerByEngine, LedgerEntry, LedgerParts, Lifecycle, OpenFindings, close_all,
    external_asset_id,
};
pub use map::{DEFAULT_DAST_MAP, DEFAULT_SAST_MAP, MapEntry, Plan, TransformMap};
pub use replay::{ItemReplay, ReplayError, ReplaySummary, replay_dir};
pub use scoring::{CompiledScoring, DEFAULT_SCORING, ScoreRow, Scoring};
pub use triage::{TriageMap, TriageOutcome};

/// The JSON Schema every batch line validates against.
pub const BATCH_SCHEMA: &str = include_str!("../../../schemas/etm-batch-v1.schema.json");
