//! The Checkmarx One client against the emulator over real HTTP: authentication, the retry layer
//! under faults, paging, the connection test, and secrets kept out of every output. One test
//! binary (each links the whole library).

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod connection_test;
mod faults;
mod paging;
mod security;
