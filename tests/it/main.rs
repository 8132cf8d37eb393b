//! End-to-end tests against real PostgreSQL and S3-compatible servers (see scripts/test).

mod anchors;
mod audit;
mod cli_conventions;
mod common;
mod config_errors;
mod daemon;
mod deploy;
mod events;
mod evidence;
mod export;
mod faults;
mod killed_runs;
mod layering;
mod partitions;
mod pg_restart;
mod postgres;
mod preflight_checks;
mod reliability;
mod s3;
mod safety;
mod secrets;
mod tables;
