//! End-to-end tests against real PostgreSQL and S3-compatible servers (see scripts/test).

mod audit;
mod common;
mod config_errors;
mod daemon;
mod evidence;
mod postgres;
mod s3;
