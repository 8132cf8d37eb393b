//! deploy/: every manifest and the unit parse, and say what the daemon needs.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn docs(file: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join("kubernetes").join(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file} does not parse: {e}"))
}

fn find<'a>(all: &'a [Yaml], kind: &str) -> &'a Yaml {
    all.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_kubernetes_manifest_parses_and_fits_the_daemon() {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(root().join("kubernetes")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            all.extend(docs(&name));
        }
    }
    let deployment = find(&all, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 30,
        "longer than the 30 s grace period"
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"run"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));

    // The ConfigMap's retention.toml is a valid config that listens beyond loopback.
    let cm = find(&all, "ConfigMap");
    let toml = cm["data"]["retention.toml"]
        .as_str()
        .expect("retention.toml in the ConfigMap");
    let cfg = retentiond::config::Config::parse(Path::new("configmap:retention.toml"), toml)
        .expect("ConfigMap config is valid");
    assert_eq!(cfg.http.listen.to_string(), "0.0.0.0:9187");

    let secret = find(&all, "Secret");
    for key in [
        "DATABASE_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RETENTIOND_HMAC_KEY",
    ] {
        assert!(
            !secret["stringData"][key].is_badvalue(),
            "Secret lacks {key}"
        );
    }
    let cron = find(&all, "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    let cron_args = format!(
        "{:?}",
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    );
    assert!(cron_args.contains("sweep"), "{cron_args}");
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let path = root().join("systemd/retentiond.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "User=retentiond",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "Restart=on-failure",
        "EnvironmentFile=/etc/retentiond/retentiond.env",
    ] {
        assert!(has(line), "unit lacks `{line}`");
    }
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(analyze) = analyze {
        // Verify a copy whose ExecStart points at the binary under test.
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("retentiond.service");
        let exec = env!("CARGO_BIN_EXE_retentiond");
        std::fs::write(&unit, text.replace("/usr/local/bin/retentiond", exec)).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify failed:\n{stderr}"
        );
    } else {
        eprintln!("systemd-analyze not installed: unit checked by its directives only");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") || user.contains("nonroot"), "{user}");
}

/// `deploy/prometheus/alerts.yaml` loads (`promtool check rules`), every alert fires and
/// stays quiet where its unit tests say (`promtool test rules`), and every retentiond
/// metric it names is one the daemon exports.
#[test]
fn the_alert_rules_pass_promtool_and_name_exported_metrics() {
    let dir = root().join("prometheus");
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts_test.yaml"][..],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (scripts/ensure-promtool installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let alerts = std::fs::read_to_string(dir.join("alerts.yaml")).unwrap();
    let exported =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    let mut named = 0;
    for (i, _) in alerts.match_indices("retentiond_") {
        let name: String = alerts[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        named += 1;
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "alerts.yaml names {name}, which src/metrics.rs does not export"
        );
    }
    assert!(named >= 7, "the alerts use the daemon's metrics");
}
