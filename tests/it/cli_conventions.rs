//! Shell completions and the man page come from the command line's own definition
//! (clap_complete, clap_mangen), and need no config and no store.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .args(["--config", "/nonexistent/retention.toml"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn completions_cover_every_subcommand_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef retentiond"),
        ("fish", "complete -c retentiond"),
    ] {
        let (code, text) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(text.contains(marker), "{shell}: no `{marker}` in:\n{text}");
        for word in [
            "sweep",
            "validate",
            "plan",
            "conformance",
            "erase",
            "dry-run",
            "show-samples",
        ] {
            assert!(text.contains(word), "{shell}: `{word}` missing");
        }
    }
}

#[test]
fn the_man_page_is_roff_and_lists_the_commands() {
    let (code, text) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(
        text.starts_with(".ie") || text.starts_with(".TH"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains(".TH retentiond"), "a title header");
    for word in ["sweep", "validate", "conformance", "hold", "audit"] {
        assert!(text.contains(word), "`{word}` missing from the man page");
    }
}

/// Runs `retentiond --config CFG ARGS` under a pseudo-terminal (`script`, util-linux)
/// with `env`; returns the exit code and everything the terminal showed.
fn on_a_terminal(cfg: &std::path::Path, args: &str, env: &[(String, String)]) -> (i32, String) {
    let cmd = format!(
        "{} --config {} {args}",
        env!("CARGO_BIN_EXE_retentiond"),
        cfg.display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .envs(env.iter().cloned())
        .env_remove("DATABASE_URL")
        .env("COLUMNS", "120")
        .output()
        .expect("script (util-linux) runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// SGR sequences: colour.
fn has_colour(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(2)).any(|i| {
        b[i] == 0x1b
            && b[i + 1] == b'['
            && b[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == b';')
                .count()
                > 0
            && b[i + 2..]
                .iter()
                .find(|c| !(c.is_ascii_digit() || **c == b';'))
                == Some(&b'm')
    })
}

// #17 item 5: on a terminal a sweep shows a bar per rule, with the count and the rate;
// without one, or with --format json, there is none; NO_COLOR turns colour off.
#[tokio::test]
async fn a_sweep_on_a_terminal_shows_a_bar_per_rule_and_none_in_a_pipe() {
    let env = crate::common::TestEnv::new("bars").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 40);",
    )
    .await;
    let cfg = env.config("[categories.logs]\n\n[[rules]]\nname = \"old-logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n");
    // A dry-run counts: its bar has the total. An enforcing sweep without a count of its
    // own shows the records done and the rate (a terminal never adds a count).
    let (code, shown) = on_a_terminal(&cfg, "sweep --dry-run", &env.env);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("old-logs")
            && shown.contains("40/40 records")
            && shown.contains("succeeded, 40 matched"),
        "a bar with the count: {shown}"
    );
    let (code, shown) = on_a_terminal(&cfg, "sweep", &env.env);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("old-logs")
            && shown.contains("40 records")
            && shown.contains("succeeded, 40 matched"),
        "a bar with the records done: {shown}"
    );
    env.sql("INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5);")
        .await;
    let piped = env.run(&cfg, &["sweep"]);
    piped.expect_code(0);
    assert!(
        !piped.stderr.contains("records  "),
        "no bar in a pipe: {}",
        piped.stderr
    );
    env.sql("INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5);")
        .await;
    let (code, json) = on_a_terminal(&cfg, "sweep --format json", &env.env);
    assert_eq!(code, 0, "{json}");
    assert!(
        !json.contains("5/5 records"),
        "no bar with --format json: {json}"
    );
    // A warning on a terminal is coloured, and not with NO_COLOR: report copies that
    // cannot be written are a warning.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let unwritable = env.config_named(
        "unwritable.toml",
        &text.replacen("report_dir = \"", "report_dir = \"/dev/null/x", 1),
    );
    let mut plain = env.env.clone();
    let (_, coloured) = on_a_terminal(&unwritable, "sweep --dry-run --format json", &plain);
    plain.push(("NO_COLOR".into(), "1".into()));
    let (_, uncoloured) = on_a_terminal(&unwritable, "sweep --dry-run --format json", &plain);
    assert!(
        coloured.contains("WARN") && has_colour(&coloured),
        "{coloured:?}"
    );
    assert!(
        uncoloured.contains("WARN") && !has_colour(&uncoloured),
        "{uncoloured:?}"
    );
}
