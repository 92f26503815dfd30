//! The library every function uses: the Checkmarx One client (`cxone`), the credential types
//! (`secret`), the mapping of vendor records into ETM batches through transform maps and scoring
//! tables (`mapping`), the object store port and its adapters (`store`), the bucket layout
//! (`layout`), the pipeline steps (`pipeline`) and the Lambda task logic (`lambda`).

pub mod cxone;
pub mod field_error;
pub mod lambda;
pub mod layout;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod secret;
pub mod store;

use serde::{Deserialize, Serialize};

/// Which connector: SAST (projects and their scans' results) or DAST (environments and theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorKind {
    Sast,
    Dast,
}
