//! End-to-end tests against real PostgreSQL and S3-compatible servers (see scripts/test).

mod common;
mod config_errors;
mod postgres;
mod s3;
mod audit;
mod daemon;
mod evidence;
