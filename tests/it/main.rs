//! End-to-end tests against real PostgreSQL and S3-compatible servers (see scripts/test).

mod audit;
mod common;
mod config_errors;
mod daemon;
mod evidence;
mod deploy;
mod secrets;
mod partitions;
mod reliability;
mod faults;
mod pg_restart;
mod postgres;
mod s3;
