//! The deploy artefacts against the gateway: the alert rules pass `promtool check rules`
//! and their unit tests (`deploy/prometheus/rules_test.yaml`), and every metric the rules
//! and the Grafana dashboard use is exported, with a sample, before anything has happened
//! (so a ratio is 0 and a panel shows a line, not "No data").
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .expect("promtool is needed (Debian prometheus; tests/run installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "rules_test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
    // Every alert has a unit test in which it fires (and promtool checks its labels and
    // annotations there).
    let rules = std::fs::read_to_string(repo("deploy/prometheus/rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(repo("deploy/prometheus/rules_test.yaml")).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let firing: Vec<&str> = lines
        .windows(3)
        .filter(|w| w[2].starts_with("- exp_labels:"))
        .filter_map(|w| w[0].strip_prefix("alertname: "))
        .collect();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 18, "{alerts:?}");
    for a in &alerts {
        assert!(
            firing.contains(a),
            "{a}: no test in rules_test.yaml in which it fires"
        );
    }
}

/// The `ssp_…` metric names in `text` (recording rules, which hold a `:`, left out).
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("ssp_")
        .filter(|(i, _)| {
            // A name starts here: not inside another identifier or a recording rule name.
            *i == 0 || {
                let b = text.as_bytes()[i - 1];
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
            }
        })
        .map(|(i, _)| {
            text[i..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .map(char::from)
                .collect::<String>()
        })
        .filter(|n| !text.contains(&format!("{n}:")))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported_from_the_start() {
    let exposed = ssp_gateway::ops::metrics::Metrics::new().render();
    let mut used = Vec::new();
    for f in [
        "deploy/prometheus/rules.yaml",
        "deploy/grafana/ssp-gateway.json",
    ] {
        used.extend(metric_names(&std::fs::read_to_string(repo(f)).unwrap()));
    }
    used.sort();
    used.dedup();
    assert!(
        used.len() >= 10,
        "the rules and dashboard name metrics: {used:?}"
    );
    // Series that exist once per configured thing, not before: checked where a gateway runs
    // with a configuration (gateway/tests/cli.rs, run_tells_systemd_…).
    let per_config = ["ssp_certificate_expiry_seconds"];
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !per_config.contains(&n.as_str()))
        .filter(|n| {
            // A sample line of the series: `name{…} value` or `name value`.
            !exposed
                .lines()
                .any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used but without a sample before any traffic: {missing:?}\n{exposed}"
    );
    // The process: CPU, memory, descriptors, as every exporter names them.
    for m in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(exposed.lines().any(|l| l.starts_with(m)), "{m}\n{exposed}");
    }
    // Every `name{label="value"}` the rules select on (besides `job`) has its series, so an
    // `increase()` or a ratio over it sees its first event.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/rules.yaml")).unwrap();
    for (i, _) in rules.match_indices("ssp_") {
        let rest = &rules[i..];
        let Some(open) = rest.find('{') else { continue };
        let name = &rest[..open];
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let Some(close) = rest[open..].find('}') else {
            continue;
        };
        for m in rest[open + 1..open + close].split(',') {
            let Some((label, value)) = m.split_once('=') else {
                continue;
            };
            if label.ends_with('!') || value.starts_with('~') || label.trim() == "job" {
                continue; // not an equality
            }
            let want = format!("{}={}", label.trim(), value.trim());
            assert!(
                exposed
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want)),
                "{name}{{{want}}}: no series before the first event\n{exposed}"
            );
        }
    }
    // Which build it is.
    assert!(
        exposed.contains(&format!(
            "ssp_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{exposed}"
    );
    // The error series the error ratio divides are there at zero.
    assert!(
        exposed
            .contains("ssp_answers_total{code=\"503\",direction=\"inbound\",protocol=\"ssp\"} 0")
    );
}

/// `deploy/pin-images` pins every unpinned `FROM` of a Containerfile by the digest the
/// registry gives (here a stand-in `skopeo` on the PATH: the tests have no registry), keeps
/// stage names, and leaves pinned lines alone.
#[test]
fn pin_images_pins_every_base_image_by_digest() {
    let dir = ssp_testbed::federation::TempDir::new("ssp-pin");
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let skopeo = bin.join("skopeo");
    // `inspect --raw REF` answers a manifest naming the reference; `manifest-digest FILE`
    // a digest made from it, so each image gets its own.
    std::fs::write(
        &skopeo,
        "#!/bin/sh\ncase \"$1\" in\n  inspect) echo \"manifest of $3\" ;;\n  manifest-digest) printf 'sha256:%064d\\n' \"$(wc -c < \"$2\")\" ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&skopeo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.0.join("Containerfile");
    std::fs::copy(repo("deploy/Containerfile"), &file).unwrap();
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap()
            + "FROM docker.io/library/busybox:1@sha256:0000000000000000000000000000000000000000000000000000000000000001\n\
               from --platform=linux/amd64 docker.io/library/alpine:3.20 as tools\n\
               FROM scratch\nFROM build\nFROM $BASE\n  FROM docker.io/library/debian:bookworm\n",
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(repo("deploy/pin-images"))
        .arg(&file)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned = std::fs::read_to_string(&file).unwrap();
    let froms: Vec<&str> = pinned
        .lines()
        .map(str::trim_start)
        .filter(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 8, "{pinned}");
    assert!(
        froms[7].starts_with("FROM docker.io/library/debian:bookworm@sha256:"),
        "an indented FROM is pinned too: {}",
        froms[7]
    );
    for l in &froms[..4] {
        let image = l.split_whitespace().find(|w| w.contains('@')).expect(l);
        let (_, digest) = image.split_once("@sha256:").expect(l);
        assert_eq!(digest.len(), 64, "{l}");
    }
    assert!(
        froms[0].ends_with(" AS build"),
        "the stage name stays: {}",
        froms[0]
    );
    assert!(
        froms[2]
            .ends_with("@sha256:0000000000000000000000000000000000000000000000000000000000000001"),
        "a pinned line is left alone: {}",
        froms[2]
    );
    assert!(
        froms[3].starts_with("from --platform=linux/amd64 docker.io/library/alpine:3.20@sha256:")
            && froms[3].ends_with(" as tools"),
        "{}",
        froms[3]
    );
    assert_eq!(
        froms[4..7],
        ["FROM scratch", "FROM build", "FROM $BASE"],
        "left alone"
    );
}
