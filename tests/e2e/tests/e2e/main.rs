//! The Lambda functions' code against moto (S3, Secrets Manager) and the emulator: whole runs on
//! S3 with credentials from Secrets Manager, every sample event through its handler, and bad input
//! of every kind. One test binary (each links the whole library and the AWS SDK).

mod aws;
mod bad_input;
mod functions;
