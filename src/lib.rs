//! retentiond: enforces data-retention rules on PostgreSQL tables and S3-compatible
//! buckets, and keeps a tamper-evident audit trail of every run.
//!
//! See `ARCHITECTURE.md` for the code map and how a run flows.

pub mod anonymise;
pub mod audit;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod error;
pub mod export;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod preflight;
pub mod report;
pub mod schedule;
pub mod startup;
pub mod store;
pub mod sweep;
