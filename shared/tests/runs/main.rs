//! Whole runs against the emulator and a directory store: the pipeline's steps and lock, findings
//! reconciled across runs, and every fault scenario of docs/reliability.md. One test binary (each
//! links the whole library).

#[path = "../common/mod.rs"]
mod common;

mod engines;
mod pipeline;
mod reconciliation;
mod reliability;
mod resume;
mod split;
mod states;
