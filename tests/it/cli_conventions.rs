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
