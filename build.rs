//! Rebuilds when a migration changes: `audit::migrations` embeds `migrations/` at compile
//! time, and cargo does not watch that directory on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
