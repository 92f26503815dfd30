//! The Checkmarx One client: configuration and SSRF rules, authentication, the HTTP layer with its
//! one retry layer, tolerant models, pagers that prove completeness, and the connection test.

mod auth;
mod bodies;
mod check;
mod client;
mod config;
mod error;
pub mod links;
mod models;
mod paging;
mod region;
mod transport;

pub use check::{
    CheckOutcome, CheckStatus, ConnectionReport, ConnectorKind, RunCalls, test_connection,
    test_connection_until, test_connection_within,
};
pub use client::CxOneClient;
pub use config::{CaBundleAt, RetrySettings, VendorConfig, VendorSettings};
pub use error::{AuthError, ConfigError, VendorError};
pub use models::*;
pub use paging::{
    BranchListing, Completeness, DastResultsPager, LastScanQuery, LastScans, Listing,
    OffsetSemantics, OriginalSeverityPager, PageSource, RawPage, ResultsPager, ResultsProgress,
    ScanRange,
};
pub use region::{Endpoints, NetworkPolicy, REGIONS, Region};
pub use transport::{CounterSnapshot, Counters, counted};
