//! The emulator over real HTTP, as Checkmarx One's clients see it: authentication, projects and
//! scans, results, DAST, roles, faults, TLS and the binary's command line. One test binary.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod binary;
mod dast;
mod faults;
mod projects;
mod results;
mod roles;
mod tls;
