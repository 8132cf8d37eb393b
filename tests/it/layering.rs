//! Dependencies run one way: error/config → anonymise/store → audit/report/policy/metrics →
//! preflight → sweep/conformance → startup → http → schedule (the daemon) → cli → main.
//! Read from the sources: a `crate::<module>` path in a file is a dependency of its
//! module. This fails when a lower layer names a higher one, or anything outside `cli`
//! and `main.rs` names `cli`.

const LAYERS: &[&[&str]] = &[
    &["error", "config"],
    &["anonymise", "store"],
    &["audit", "report", "policy", "metrics"],
    &["preflight"],
    &["sweep", "conformance", "export"],
    &["startup"],
    &["http"],
    &["schedule"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_run_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "the sources were found: {files:?}");
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(own) = layer(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in LAYERS",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for used in crate_paths(&text) {
            let Some(theirs) = layer(&used) else {
                continue;
            };
            if used != module && theirs > own {
                wrong.push(format!(
                    "{}: `{module}` (layer {own}) uses `crate::{used}` (layer {theirs})",
                    rel.display()
                ));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "dependencies against the layering:\n{}",
        wrong.join("\n")
    );
}

/// The top-level modules that `crate::` paths in `text` name.
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn the_check_sees_a_wrong_way_dependency() {
    // The parsing the layering test uses finds a `crate::cli` path in a lower layer.
    let used = crate_paths("use crate::cli::Fail;\nfn f() { crate::store::x(); }");
    assert_eq!(used, ["cli", "store"]);
    assert!(layer("cli") > layer("preflight"));
}
