//! The command line (SPEC §5): names, flags and exit codes are a contract.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// retentiond: enforce data-retention rules on PostgreSQL and S3-compatible storage.
#[derive(Debug, Parser)]
#[command(name = "retentiond", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The retention config.
    #[arg(
        long,
        global = true,
        env = "RETENTIOND_CONFIG",
        default_value = "retention.toml"
    )]
    pub config: PathBuf,
    /// Log format: human-readable text, or JSON lines.
    #[arg(long, global = true, env = "RETENTIOND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `retentiond=debug`.
    #[arg(
        long,
        global = true,
        env = "RETENTIOND_LOG",
        default_value = "warn,retentiond=info"
    )]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For terminals.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output formats for results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for terminals.
    Text,
    /// JSON.
    Json,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A table for terminals.
    Text,
    /// The JSON contract (docs/report.schema.json).
    Json,
    /// Markdown.
    Markdown,
    /// A self-contained HTML page.
    Html,
}

/// Policy formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFormat {
    /// Markdown table.
    Markdown,
    /// HTML table.
    Html,
    /// JSON.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduler, HTTP endpoints, graceful shutdown.
    Run(RunArgs),
    /// One run now; prints its report.
    Sweep(SweepArgs),
    /// Parse the config and preflight every store; changes nothing.
    Validate(FormatArg),
    /// Every rule's cutoff, next scheduled times and due counts; changes nothing.
    Plan(PlanArgs),
    /// Run reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// For every rule: records that should be gone but are not.
    Conformance(ConformanceArgs),
    /// Legal holds.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// The right to erasure for one subject, across every rule with a subject column.
    Erase(EraseArgs),
    /// Access and portability: a subject's rows and objects, as NDJSON with a manifest.
    Export(ExportArgs),
    /// The retention schedule as a table a privacy policy can quote.
    Policy(PolicyArgs),
    /// Apply the audit schema migrations.
    Migrate,
    /// Print a shell completion script: `retentiond completions bash > /etc/bash_completion.d/retentiond`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `retentiond man > retentiond.1`.
    Man,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long shutdown may take (finish the current batch, record the run), e.g. 30s.
    #[arg(long, env = "RETENTIOND_GRACE_PERIOD")]
    pub grace_period: Option<String>,
    /// Skip catch-up of overdue rules at start.
    #[arg(long)]
    pub no_catch_up: bool,
}

/// `sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Only these rules (repeatable).
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<String>,
    /// Only rules of these categories (repeatable).
    #[arg(long = "category", value_name = "CATEGORY")]
    pub categories: Vec<String>,
    /// Count and sample what would go; change nothing but the audit record.
    #[arg(long)]
    pub dry_run: bool,
    /// Dry-run only: compute cutoffs as of TIME (RFC 3339, YYYY-MM-DD, or +7d / -2h from now).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Proceed even when a rule's max_delete would be exceeded.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Who is running this (recorded in the audit trail).
    #[arg(long, env = "RETENTIOND_ACTOR")]
    pub actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print sample keys even where `[audit] samples = false` withholds them (a pipe,
    /// a log, JSON). Sample keys may be personal data.
    #[arg(long)]
    pub show_samples: bool,
}

/// `--format` alone.
#[derive(Debug, Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Only count records older than their cutoff by more than this (e.g. the schedule
    /// interval, so records waiting for the next scheduled run are not violations).
    #[arg(long, value_name = "DURATION")]
    pub tolerance: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Compute cutoffs as of TIME instead of now.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `report …`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Runs, newest first.
    List {
        /// Only runs started at or after TIME.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only runs that include RULE.
        #[arg(long, value_name = "RULE")]
        rule: Option<String>,
        /// Only runs with this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One run's report.
    Show {
        /// Run id, a unique prefix of it, or `latest`.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Read the run from an offline bundle (`audit export`) instead of the trail; no
        /// config or database is used.
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
        /// With `--bundle`: check the bundle's signatures with this public key (repeatable).
        #[arg(long = "pubkey", value_name = "FILE", requires = "bundle")]
        pubkeys: Vec<PathBuf>,
    },
}

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and check completeness; exit 4 on tampering.
    Verify(VerifyArgs),
    /// Write a new Ed25519 key pair: FILE (private, mode 0600) and FILE.pub.
    Keygen {
        /// Where the private key goes (PKCS#8 PEM); it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key of `[audit] signing_key_env`/`signing_key_file` (SPKI PEM).
    Pubkey,
    /// Write an offline bundle of the trail: records, holds, releases, signatures,
    /// the configs the runs used and the anchors seen.
    Export {
        /// Only records from TIME on.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only records before TIME.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// The bundle file; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also prove that every anchor in `[audit] anchor_store` is still in the chain.
    #[arg(long)]
    pub anchors: bool,
    /// Check every record's signature with this public key (repeatable, for rotated keys).
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// Verify an offline bundle instead; no config or database is used.
    #[arg(long, value_name = "FILE", conflicts_with = "anchors")]
    pub bundle: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `hold …`.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold on a subject or a whole category.
    #[command(group(ArgGroup::new("target").required(true).args(["subject", "category"])))]
    Add {
        /// KIND:ID, e.g. account:42.
        #[arg(long)]
        subject: Option<String>,
        /// A category name from the config.
        #[arg(long)]
        category: Option<String>,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// When the hold lapses on its own.
        #[arg(long, value_name = "TIME")]
        expires: Option<String>,
        /// Who places it.
        #[arg(long, env = "RETENTIOND_ACTOR")]
        actor: Option<String>,
    },
    /// Active holds (all holds with --all).
    List {
        /// Include released and expired holds.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Release a hold.
    Release {
        /// Hold id.
        id: i64,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who releases it.
        #[arg(long, env = "RETENTIOND_ACTOR")]
        actor: Option<String>,
    },
}

/// Whose request: one subject, or the batch of a file (`erase`, `export`).
#[derive(Debug, Args)]
pub struct SubjectsArg {
    /// KIND:ID, e.g. account:42.
    #[arg(
        long,
        required_unless_present = "subjects_file",
        conflicts_with = "subjects_file"
    )]
    pub subject: Option<String>,
    /// A file of subjects, one KIND:ID per line (blank lines and `#` comments skipped):
    /// one run per subject (an export each in its own subdirectory), then one summary.
    #[arg(long, value_name = "FILE")]
    pub subjects_file: Option<std::path::PathBuf>,
}

/// `erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub subjects: SubjectsArg,
    /// Report what would be erased; change nothing but the audit record.
    #[arg(long)]
    pub dry_run: bool,
    /// Who requests it.
    #[arg(long, env = "RETENTIOND_ACTOR")]
    pub actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print sample keys even where `[audit] samples = false` withholds them.
    #[arg(long)]
    pub show_samples: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub subjects: SubjectsArg,
    /// A directory (created; must be empty), or s3://STORE/PREFIX of an s3 store of the
    /// config.
    #[arg(long, value_name = "DIR")]
    pub out: String,
    /// Also copy the linked objects into objects/.
    #[arg(long)]
    pub with_objects: bool,
    /// Who requests it.
    #[arg(long, env = "RETENTIOND_ACTOR")]
    pub actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `policy`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PolicyArgs {
    /// The config versions in the trail, and what changed between two.
    #[command(subcommand)]
    pub command: Option<PolicyCommand>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PolicyFormat::Markdown)]
    pub format: PolicyFormat,
}

/// `policy history` and `policy diff`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Every config a run used (by SHA-256), with the first and last run of each.
    History(FormatArg),
    /// What changed in retention terms from version A to version B.
    Diff {
        /// A SHA-256 (or a unique prefix) from `policy history`, or `current` for the config file.
        a: String,
        /// Likewise.
        b: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}
