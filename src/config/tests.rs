use super::*;

#[test]
fn shipped_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("retention.toml");
    let cfg = Config::load(&path).expect("shipped retention.toml is valid");
    assert!(cfg.rules.len() >= 10);
    assert_eq!(
        cfg.categories["invoices"].min_retain,
        Some(Period::from_months(84))
    );
}

#[test]
fn guard_arithmetic() {
    assert!(MaxDelete::Percent(20.0).exceeded(21, 100));
    assert!(!MaxDelete::Percent(20.0).exceeded(20, 100));
    assert!(MaxDelete::Count(5).exceeded(6, 1_000));
    assert!(!MaxDelete::Count(5).exceeded(5, 1_000));
}

const HEAD: &str = "[audit]\nstore = \"app\"\n\n[stores.app]\nkind = \"postgres\"\nurl_env = \"DATABASE_URL\"\n\n[stores.assets]\nkind = \"s3\"\nbucket = \"b\"\n\n[categories.logs]\n\n[[rules]]\nname = \"r\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\naction = \"delete\"\n";

fn with_rule(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), &format!("{HEAD}{extra}"))
}

fn table(cfg: &Config) -> &TableTarget {
    match &cfg.rules[0].target {
        Target::Table(t) => t,
        Target::Prefix(_) => panic!("a table rule"),
    }
}

#[test]
fn zero_retain_is_refused() {
    for zero in ["0d", "0s", "0ms", "0mo", "0y0d"] {
        let e = with_rule(&format!("retain = \"{zero}\"\n")).unwrap_err();
        assert_eq!(e.field, "rules[0].retain", "{zero}: {e}");
        assert_eq!(e.line, 21, "{zero}: {e}");
        assert!(e.message.contains("retain must be longer than zero"), "{e}");
    }
    assert!(with_rule("retain = \"1ms\"\n").is_ok());
    // A zero floor is pointless but harmless.
    let text = format!("{HEAD}retain = \"1d\"\n").replace(
        "[categories.logs]\n",
        "[categories.logs]\nmin_retain = \"0d\"\n",
    );
    assert!(Config::parse(Path::new("t.toml"), &text).is_ok());
}

#[test]
fn age_timezone_is_parsed_at_load() {
    let cfg = with_rule("retain = \"1d\"\n").unwrap();
    assert_eq!(table(&cfg).age_timezone, None);
    let cfg = with_rule("retain = \"1d\"\nage_timezone = \"Europe/Amsterdam\"\n").unwrap();
    assert_eq!(table(&cfg).age_timezone, Some(chrono_tz::Europe::Amsterdam));
    let e = with_rule("retain = \"1d\"\nage_timezone = \"Mars/Olympus\"\n").unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line, e.column),
        ("rules[0].age_timezone", 22, 16)
    );
    assert!(
        e.message.contains("unknown time zone `Mars/Olympus`"),
        "{e}"
    );
    let e = with_rule("retain = \"1d\"\nage_format = \"epoch_millis\"\nage_timezone = \"UTC\"\n")
        .unwrap_err();
    assert_eq!(e.field, "rules[0].age_timezone", "{e}");
}

#[test]
fn age_timezone_on_a_prefix_rule_is_refused() {
    let text = format!(
        "{HEAD}retain = \"1d\"\n\n[[rules]]\nname = \"o\"\ncategory = \"logs\"\nstore = \"assets\"\nprefix = \"x/\"\nretain = \"1d\"\naction = \"delete\"\nage_timezone = \"UTC\"\n"
    );
    let e = Config::parse(Path::new("t.toml"), &text).unwrap_err();
    assert_eq!(e.field, "rules[1].age_timezone", "{e}");
    assert!(e.message.contains("table rules"), "{e}");
}

#[test]
fn filters_are_checked_at_load() {
    let ok = with_rule("retain = \"1d\"\nfilter = \"note = 'a;b'\"\n").unwrap();
    assert_eq!(table(&ok).filter.as_deref(), Some("note = 'a;b'"));
    let e = with_rule("retain = \"1d\"\nfilter = \"status='resolved') OR (true\"\n").unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line, e.column),
        ("rules[0].filter", 22, 10)
    );
    assert!(
        e.message.contains("found `)` after `status='resolved'`"),
        "{e}"
    );
}

#[test]
fn cron_needs_seconds() {
    assert!(Schedule::parse("0 0 3 * * *").is_ok());
    assert!(Schedule::parse("*/1 * * * * *").is_ok());
    assert!(Schedule::parse("0 3 * * *").is_err());
    assert!(Schedule::parse("every day").is_err());
}

mod fuzz {
    use super::super::*;
    use proptest::prelude::*;

    fn shipped() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("retention.toml"))
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Arbitrary bytes never panic the loader.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = Config::parse(Path::new("fuzz.toml"), &text);
        }

        /// Mangled copies of a real config never panic, and every error has a position.
        #[test]
        fn mangled_configs_fail_cleanly(cut in 0usize..6000, len in 0usize..40, insert in "[\\[\\]=\"'{}., a-z0-9\n#]{0,12}") {
            let text = shipped();
            let start = cut.min(text.len());
            let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap();
            let end = (start + len).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap();
            let mangled = format!("{}{}{}", &text[..start], insert, &text[end..]);
            if let Err(e) = Config::parse(Path::new("m.toml"), &mangled) {
                prop_assert!(e.line >= 1 && e.column >= 1, "{e}");
                prop_assert!(!e.field.is_empty());
            }
        }
    }
}

#[test]
fn a_key_pasted_where_its_name_or_path_belongs_is_refused_without_echoing_it() {
    let seed = "11a8".repeat(16);
    let pem = "-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIKey\\n-----END PRIVATE KEY-----";
    for (field, value) in [
        ("signing_key_env", seed.as_str()),
        ("signing_key_env", pem),
        ("signing_key_file", seed.as_str()),
        ("signing_key_file", pem),
    ] {
        let text = HEAD.replacen("[audit]\n", &format!("[audit]\n{field} = \"{value}\"\n"), 1)
            + "retain = \"30d\"\n";
        let e = Config::parse(Path::new("r.toml"), &text)
            .expect_err("key material in the config")
            .to_string();
        assert!(e.contains(&format!("audit.{field}")), "{e}");
        assert!(!e.contains("11a811a8") && !e.contains("MC4CAQ"), "{e}");
    }
    let both = HEAD.replacen(
        "[audit]\n",
        "[audit]\nsigning_key_env = \"K\"\nsigning_key_file = \"/k\"\n",
        1,
    ) + "retain = \"30d\"\n";
    assert!(Config::parse(Path::new("r.toml"), &both).is_err());
    let anchors =
        HEAD.replacen("[audit]\n", "[audit]\nanchor_store = \"app\"\n", 1) + "retain = \"30d\"\n";
    let e = Config::parse(Path::new("r.toml"), &anchors)
        .expect_err("anchors need an s3 store")
        .to_string();
    assert!(e.contains("audit.anchor_store"), "{e}");
}
