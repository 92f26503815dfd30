//! The library every function uses: the Checkmarx One client and the credential types; the
//! transform, the object store and secret ports, and the pipeline steps join it as they are built.

pub mod secret;
pub mod vendor;
