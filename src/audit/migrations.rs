//! The audit schema's migrations, `migrations/NNNN_*.sql`, embedded at compile time
//! (`build.rs` rebuilds when the directory changes). What `sqlx::migrate!` would embed,
//! without compiling sqlx's macro crate: the same versions, descriptions and SHA-384
//! checksums, so a trail migrated by an older build stays valid.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(version, description, SQL)` of every migration, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit trail",
        include_str!("../../migrations/0001_audit_trail.sql"),
    ),
    (
        2,
        "rule progress",
        include_str!("../../migrations/0002_rule_progress.sql"),
    ),
    (
        3,
        "export trigger",
        include_str!("../../migrations/0003_export_trigger.sql"),
    ),
    (
        4,
        "signatures and policies",
        include_str!("../../migrations/0004_signatures_and_policies.sql"),
    ),
];

/// The migrator of the audit schema.
pub(super) fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_embedded_with_its_version_and_description() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(v, d, _)| format!("{v:04}_{}.sql", d.replace(' ', "_")))
            .collect();
        assert_eq!(files, embedded, "a migration file is not in MIGRATIONS");
        for ((_, _, sql), name) in MIGRATIONS.iter().zip(&files) {
            let on_disk = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("migrations")
                    .join(name),
            )
            .unwrap();
            assert_eq!(*sql, on_disk, "{name}");
        }
    }
}
