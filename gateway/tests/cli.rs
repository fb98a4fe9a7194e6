//! The `ssp-gateway` command line as an operator uses it: the example configs in `routes/`
//! pass `check` once dev certificates exist, `check` names the file (and line and key) of
//! whatever is wrong, and `ssp rewrite` shows what the outbound path would send.
//!
//! Building this test also builds the `ssp-gateway` binary, which the testbed's `resolve`
//! command test runs against NSD.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ssp-gateway");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway crate sits in the workspace")
        .to_owned()
}

/// A private copy of `routes/` with dev certificates at `certs/dev`, where the example
/// configs expect them (paths are relative to the config file).
struct Sandbox(PathBuf);

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("ssp-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("routes")).unwrap();
        for e in std::fs::read_dir(repo().join("routes")).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.join("routes").join(e.file_name())).unwrap();
            }
        }
        let out = run(&[
            "certs",
            "dev",
            "--out",
            dir.join("certs/dev").to_str().unwrap(),
            "--operator",
            "opx.example",
            "--operator",
            "opy.example",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        Sandbox(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn check(&self, config: &str) -> Output {
        run(&["check", "--config", self.path(config).to_str().unwrap()])
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn example_configs_pass_check_with_dev_certificates() {
    let sb = Sandbox::new("examples");
    for (config, peers, dir) in [("routes/example.toml", 1, 3), ("routes/opy.toml", 1, 1)] {
        let out = sb.check(config);
        assert!(out.status.success(), "{config}: {}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(
            said.contains(&format!("ok ({peers} peers,"))
                && said.contains(&format!("{dir} directory entries")),
            "{said}"
        );
    }
}

#[test]
fn check_names_what_is_wrong() {
    let sb = Sandbox::new("errors");
    let cfg = sb.path("routes/example.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let failing = |what: &str| {
        let out = sb.check("routes/example.toml");
        assert_eq!(out.status.code(), Some(1), "{what}: accepted");
        text(&out.stderr)
    };

    // A misspelt key: the file, its line and the key.
    let line = good
        .lines()
        .position(|l| l.starts_with("public_domain"))
        .unwrap()
        + 1;
    std::fs::write(&cfg, good.replacen("public_domain", "publik_domain", 1)).unwrap();
    let err = failing("misspelt key");
    assert!(
        err.contains(&format!(
            "example.toml:{line}: gateway.publik_domain: unknown field `publik_domain`"
        )),
        "{err}"
    );
    std::fs::write(&cfg, &good).unwrap();

    // [xmpp]: a bad value names its key and line; a section that federates with nobody is
    // refused; a valid one passes.
    let xmpp = "\n[xmpp]\nlisten = \"127.0.0.1:5269\"\nmax_stanza = 500\nreceipt_wait = \"soon\"\n";
    std::fs::write(&cfg, format!("{good}{xmpp}")).unwrap();
    let line = format!("{good}{xmpp}")
        .lines()
        .position(|l| l.starts_with("max_stanza"))
        .unwrap()
        + 1;
    let err = failing("bad [xmpp]");
    assert!(
        err.contains(&format!(
            "example.toml:{line}: xmpp.max_stanza: 500 is not within 10000..=1048576"
        )),
        "{err}"
    );
    std::fs::write(
        &cfg,
        format!("{good}\n[xmpp]\nlisten = \"127.0.0.1:5269\"\nreceipt_wait = \"soon\"\n"),
    )
    .unwrap();
    let err = failing("bad receipt_wait");
    assert!(err.contains("xmpp.receipt_wait:"), "{err}");
    std::fs::write(
        &cfg,
        format!("{good}\n[xmpp]\nlisten = \"127.0.0.1:5269\"\n"),
    )
    .unwrap();
    let err = failing("nobody to federate with");
    assert!(
        err.contains("xmpp.peer: no XMPP domain is federated with"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        format!("{good}\n[xmpp]\nlisten = \"127.0.0.1:5269\"\n[[xmpp.peer]]\ndomain = \"opb.example\"\nallow_dialback = true\n"),
    )
    .unwrap();
    let out = sb.check("routes/example.toml");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(&cfg, &good).unwrap();

    // A bad directory row: the CSV file and its line.
    let csv = sb.path("routes/directory.csv");
    let rows = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        format!("{rows}\nnot-a-number,wv:x@core.opx.example\n"),
    )
    .unwrap();
    let err = failing("bad directory row");
    assert!(err.contains("directory.csv:"), "{err}");
    assert!(err.contains("msisdn"), "{err}");
    std::fs::write(&csv, &rows).unwrap();

    // Another operator's key beside our certificate: both files are named.
    let key = sb.path("certs/dev/opx.example/key.pem");
    let ours = std::fs::read(&key).unwrap();
    std::fs::copy(sb.path("certs/dev/opy.example/key.pem"), &key).unwrap();
    let err = failing("mismatched key");
    assert!(
        err.contains("opx.example/key.pem: this private key does not belong to the certificate")
            && err.contains("opx.example/cert.pem"),
        "{err}"
    );
    std::fs::write(&key, ours).unwrap();

    // A trust anchor file that holds no certificate.
    let ca = sb.path("certs/dev/ca.pem");
    std::fs::write(&ca, "not PEM\n").unwrap();
    let err = failing("empty trust anchors");
    assert!(err.contains("ca.pem: no CERTIFICATE block found"), "{err}");
    std::fs::remove_file(&ca).unwrap();
    let err = failing("missing trust anchors");
    assert!(err.contains("ca.pem: cannot read certificates"), "{err}");

    // A config that is not there: what could not be read, without a made-up line.
    let out = run(&["check", "--config", "/nonexistent/gw.toml"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/gw.toml: cannot read the configuration file:"),
        "{err}"
    );
    // A directory file that is not there: which file, named by which key.
    std::fs::rename(&csv, sb.path("routes/moved.csv")).unwrap();
    let err = failing("missing directory");
    assert!(
        err.contains("directory.csv: cannot read the subscriber directory ([directory] file)"),
        "{err}"
    );
    // A bad number is quoted as written, its '+' included; a third field is refused.
    std::fs::write(&csv, "+4670123abc,wv:x@core.opx.example\n").unwrap();
    let err = failing("bad number");
    assert!(
        err.contains("directory.csv:1: column msisdn: \"+4670123abc\""),
        "{err}"
    );
    std::fs::write(&csv, "+46701234570,wv:x@core.opx.example,extra\n").unwrap();
    let err = failing("third field");
    assert!(err.contains("directory.csv:1: expected 2 fields"), "{err}");
    std::fs::write(&csv, &rows).unwrap();
}

#[test]
fn a_busy_listen_address_names_its_key_and_file() {
    let sb = Sandbox::new("busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cfg = sb.path("routes/example.toml");
    let text_cfg = std::fs::read_to_string(&cfg).unwrap().replacen(
        "peer = \"127.0.0.1:18444\"",
        &format!("peer = \"127.0.0.1:{port}\""),
        1,
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = run(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([listen] peer in "
        )) && err.contains("example.toml)"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes when not at a terminal: {err}"
    );
}

#[test]
fn ssp_rewrite_shows_the_outbound_message_without_core_ids() {
    let sb = Sandbox::new("rewrite");
    let msg = repo().join("routes/examples/send-message-outbound.xml");
    let out = run(&[
        "ssp",
        "rewrite",
        "--config",
        sb.path("routes/example.toml").to_str().unwrap(),
        "--direction",
        "outbound",
        msg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.contains(r#"<User userID="wv:+46701234567"/>"#), "{xml}");
    assert!(xml.contains(r#"serviceID="wv:@opx.example""#), "{xml}");
    assert!(
        !xml.contains("core.opx.example"),
        "core domain leaked: {xml}"
    );
    assert!(
        xml.contains(r#"<Vendor xmlns="urn:vendor:acme" trace="on">kept as is</Vendor>"#),
        "vendor element dropped: {xml}"
    );
    assert!(
        text(&out.stderr).contains("route-by: wv:+4915112345678"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn resolve_refuses_a_target_that_is_neither_number_nor_domain() {
    let out = run(&["resolve", "--nameserver", "127.0.0.1:9", "not a target@x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not wv:+E164"),
        "{}",
        text(&out.stderr)
    );
}

/// A child process killed and reaped when the test ends, passed or failed.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_tells_systemd_when_it_is_ready_and_when_it_drains() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let sb = Sandbox::new("notify");
    let cfg = sb.path("routes/example.toml");
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    let mut admin = String::new();
    for default in ["127.0.0.1:18444", "127.0.0.1:18080", "127.0.0.1:19080"] {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        admin = format!("127.0.0.1:{port}");
        text_cfg = text_cfg.replacen(default, &admin, 1);
    }
    std::fs::write(&cfg, text_cfg).unwrap();
    let socket = sb.path("notify.sock");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("READY=1 within 20 s");
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(said.starts_with("READY=1"), "{said}");
    // The container health check asks the admin listener.
    let out = run(&["health", "--admin", &admin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Its metrics say when each configured certificate ends (ours and the anchor).
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&admin).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let ends: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ssp_certificate_expiry_seconds{"))
        .collect();
    assert!(
        ends.iter().any(|l| l.contains("opx.example/cert.pem"))
            && ends.iter().any(|l| l.contains("ca.pem")),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let n = listener.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(said.starts_with("STOPPING=1"), "{said}");
    // Drained and stopped cleanly (bounded: the drain deadline of the example config).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let out = run(&["health", "--admin", &admin]);
    assert_eq!(out.status.code(), Some(1), "nothing serves any more");
}

#[test]
fn certs_dev_refuses_what_is_no_domain_and_keeps_what_exists() {
    let sb = Sandbox::new("certs");
    let out_dir = sb.path("certs/dev");
    let dev = |extra: &[&str]| {
        let mut args = vec!["certs", "dev", "--out", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    };
    // The sandbox made them: a second run without --force replaces nothing and says which.
    let ca_before = std::fs::read(out_dir.join("ca.key")).unwrap();
    let out = dev(&["--operator", "opx.example"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ca.key") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out_dir.join("ca.key")).unwrap(), ca_before);
    // Not a domain: refused before anything is written.
    for bad in ["localhost", "127.0.0.1", "not a domain", "bad..example"] {
        let out = dev(&["--force", "--operator", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            text(&out.stderr).contains("is not a domain name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(out_dir.join("ca.key")).unwrap(), ca_before);
    // With --force: replaced, and every file written is listed.
    let out = dev(&[
        "--force",
        "--operator",
        "opx.example",
        "--operator",
        "opz.example",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for f in [
        "ca.pem",
        "ca.key",
        "opx.example/cert.pem",
        "opx.example/key.pem",
        "opz.example/cert.pem",
        "opz.example/key.pem",
    ] {
        assert!(said.contains(f), "{f} not listed: {said}");
    }
    assert_ne!(std::fs::read(out_dir.join("ca.key")).unwrap(), ca_before);
}

#[test]
fn run_help_is_the_manual() {
    let out = run(&["run", "--help"]);
    let said = text(&out.stdout);
    for what in [
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "SIGTERM",
        "SIGHUP",
        "EXIT STATUS",
        "--config <FILE>",
    ] {
        assert!(said.contains(what), "{what}: {said}");
    }
    let out = run(&["resolve", "--help"]);
    assert!(
        text(&out.stdout).contains("repeatable"),
        "{}",
        text(&out.stdout)
    );
}
