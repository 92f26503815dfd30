//! The library every function uses: the Checkmarx One client, the credential types and the
//! transform; the object store and secret ports and the pipeline steps join it as they are built.

pub mod lambda;
pub mod layout;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod secret;
pub mod store;
pub mod transform;
pub mod vendor;

use serde::{Deserialize, Serialize};

/// Which connector: SAST (projects and their scans' results) or DAST (environments and theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorKind {
    Sast,
    Dast,
}
