//! The gateway's configuration file (TOML; commented example in `routes/example.toml`).
//!
//! Loading is two steps: serde reads the file strictly (unknown keys are errors, so a typo
//! never silently disables a setting), then [`validate`](Config::load) checks values and
//! resolves paths relative to the file. Every error names the file, the line and the key.

mod locate;
mod raw;
mod schema;
mod sip;
mod validate;
mod xmpp;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use schema::*;

use locate::{Step, line_of, render};

/// A configuration error: where, which key, what is wrong (`file:line: key: message`; the
/// line and key when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default(), message)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`peer[1].urls`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Collects validation errors with their key paths; turned into [`ConfigError`]s with lines.
pub(crate) struct Check<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Check<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Check {
            file,
            src,
            errors: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, path: &[Step], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: line_of(self.src, path),
            key: Some(render(path)),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Shorthand for building key paths.
/// `path` with `more` steps after it.
pub(crate) fn at(path: &[Step], more: &[Step]) -> Vec<Step> {
    [path, more].concat()
}

pub(crate) fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn domain(check: &mut Check<'_>, path: &[Step], d: &str) -> String {
    if !valid_domain(d) {
        check.err(path, format!("{d:?} is not a valid domain name"));
    }
    d.to_ascii_lowercase()
}

pub(crate) fn k(s: &str) -> Step {
    Step::Key(s.to_owned())
}

/// The longest duration a setting takes: anything longer is a mistake (and would overflow
/// clock arithmetic).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parse a duration like `1500ms`, `10s`, `5m`, `1h` (at most 30 days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} must start with a whole number"))?;
    let d = match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    d.filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("duration {s:?} is longer than the maximum of 30 days"))
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::from_str(path, &src)
    }

    /// Parse and validate config text; `path` names it in errors and anchors relative paths.
    pub fn from_str(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(src).map_err(|e| {
            let line = e.span().map(|s| locate::line_at(src, s.start));
            ConfigError {
                file: path.to_owned(),
                line,
                key: e.span().and_then(|s| locate::path_at(src, s.start)),
                message: e.message().trim().to_owned(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        let mut check = Check::new(path, src);
        let mut cfg = validate::validate(raw, &base, &mut check);
        cfg.path = path.to_owned();
        check.finish()?;
        Ok(cfg)
    }

    /// Where the file was loaded from (relative paths in it are resolved against its folder).
    pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Config, ConfigError> {
        Config::from_str(Path::new("routes/test.toml"), src)
    }

    const MIN: &str = "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n";

    #[test]
    fn minimal_config_loads() {
        let c = load(MIN).unwrap();
        assert_eq!(c.operator.public_domain, "opx.example");
        assert_eq!(c.plan.country_code, "46");
    }

    #[test]
    fn a_core_name_that_ssp_markup_holds_is_refused() {
        // Hidden wherever it occurs, such a name would be "hidden" in the gateway's own
        // markup too: with `response` a core host, a scrubbed message's `mode="Response"`
        // was rewritten and its transaction dropped.
        for (list, name, word) in [
            ("core_hosts", "response", "LoginResponse"),
            ("core_hosts", "SSP", "WV-SSP-Message"),
            ("core_domains", "wv", "WV-SSP-Message"),
            ("core_domains", "yes", "Yes"),
            (
                "core_domains",
                "openmobilealliance.org",
                "http://www.openmobilealliance.org",
            ),
            ("core_domains", "vendor.example", "urn:vendor.example:ssp"),
            // A namespace a peer may use: `imps` alone would be scrubbed out of it.
            ("core_hosts", "imps", "IMPS-SSP1.3"),
            // A group primitive's name, a value written from the model, a status code.
            ("core_hosts", "join", "JoinGroupRequest"),
            ("core_hosts", "plain", "text/plain"),
            ("core_hosts", "200", "a number"),
        ] {
            // The name under test second in its list; the vendor namespace accepted.
            let lists = if list == "core_domains" {
                format!("core_domains = [\"core.opx.example\", \"{name}\"]")
            } else {
                format!(
                    "core_domains = [\"core.opx.example\"]\n\
                     {list} = [\"imps01.opx.internal\", \"{name}\"]"
                )
            };
            let src = MIN.replace(
                "core_domains = [\"core.opx.example\"]",
                &format!("{lists}\nextra_namespaces = [\"urn:vendor.example:ssp\"]"),
            );
            let e = load(&src).unwrap_err();
            assert_eq!(
                e.key.as_deref(),
                Some(&*format!("gateway.{list}[1]")),
                "{e}"
            );
            assert!(e.message.contains("SSP's own markup"), "{e}");
            assert!(e.message.contains(word), "{name}: {e}");
        }
        // The namespace a peer is written in is the gateway's markup too.
        let e = load(&format!(
            "{MIN}core_hosts = [\"peer.example\"]\n\n[[peer]]\ndomain = \"b.example\"\n\
             urls = [\"https://b.example/ssp\"]\nnamespace = \"urn:peer.example:ssp\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gateway.core_hosts[0]"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("urn:peer.example:ssp"), "{e}");
        // A single-label name in no markup is the operator's business.
        let src = MIN.replace(
            "country_code",
            "core_hosts = [\"imps01\", \"imps01.dc1.opx.internal\"]\ncountry_code",
        );
        assert!(load(&src).is_ok());
    }

    #[test]
    fn unknown_key_names_line() {
        let e = load(&format!("{MIN}publik_domain = \"x\"\n")).unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("publik_domain"), "{e}");
        assert!(e.to_string().starts_with("routes/test.toml:5: "), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        // A type error from the TOML reader names its key too.
        let e = load(&format!("{MIN}\n[limits]\nmax_in_flight = \"many\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.max_in_flight"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
        let e = load(&MIN.replace("\"46\"", "\"4x6\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gateway.country_code"));
        assert_eq!(e.line, Some(4));
        let e = load(&format!(
            "{MIN}\n[[peer]]\ndomain = \"b.example\"\nurls = [\"ftp://x/\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("peer[0].urls[0]"));
        assert_eq!(e.line, Some(8));
        // Bounds out of order (the default minimum is 5 s) would panic at the first
        // negative answer; refused here instead.
        let e = load(&format!(
            "{MIN}\n[resolver]\nnameservers = [\"127.0.0.1:53\"]\nnegative_max_ttl = \"2s\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("resolver.negative_max_ttl"), "{e}");
        assert!(e.message.contains("below negative_min_ttl"), "{e}");
        let e = load(&format!(
            "{MIN}\n[resolver]\nnameservers = [\"127.0.0.1:53\"]\ntimeout = \"0s\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("resolver.timeout"), "{e}");
    }

    #[test]
    fn enforce_with_nothing_to_check_against_is_a_warning() {
        let peer = "\n[[peer]]\ndomain = \"opy.example\"\n";
        let c = load(&format!("{MIN}{peer}")).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("originator_check"));
        let routed = format!("{MIN}{peer}\n[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n");
        assert!(load(&routed).unwrap().warnings.is_empty());
        let off = format!("{MIN}\n[policy]\noriginator_check = \"off\"\n{peer}");
        assert!(load(&off).unwrap().warnings.is_empty());
    }

    #[test]
    fn sip_section_is_checked_with_key_and_line() {
        let ok = format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\n[[sip.peer]]\ndomain = \"opb.example\"\naddresses = [\"127.0.0.0/8\", \"::1\"]\n"
        );
        let c = load(&ok).unwrap();
        let sip = c.sip.as_ref().unwrap();
        assert!(
            sip.peer_at("OPB.example", "127.0.0.9".parse().unwrap())
                .is_some()
        );
        assert!(
            sip.peer_at("opb.example", "10.0.0.1".parse().unwrap())
                .is_none()
        );
        let e = load(&format!("{MIN}[sip]\nlisten = \"nowhere\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.listen"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
        let e = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\n[[sip.peer]]\ndomain = \"opb.example\"\naddresses = [\"localhost\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.peer[0].addresses[0]"), "{e}");
        assert_eq!(sip.subscribe_expires, 3600, "an hour by default");
        let e = load(&format!("{MIN}[sip]\nlisten = \"0.0.0.0:5060\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.advertise"), "{e}");
        let c = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\nsubscribe_expires = \"10m\"\n"
        ))
        .unwrap();
        assert_eq!(c.sip.as_ref().unwrap().subscribe_expires, 600);
        let e = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\nsubscribe_expires = \"2s\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.subscribe_expires"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn sip_over_tls_is_checked() {
        // TLS presents our certificate.
        let e = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\ntls_listen = \"127.0.0.1:5061\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.tls_listen"), "{e}");
        assert!(e.to_string().contains("[tls] cert and key"), "{e}");
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let e = load(&format!(
            "{MIN}{tls}[sip]\nlisten = \"127.0.0.1:5060\"\ntls_listen = \"127.0.0.1:5060\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("a port of its own"), "{e}");
        // A peer is trusted by address, by certificate, or both; never by nothing.
        let e = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\n[[sip.peer]]\ndomain = \"opb.example\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.peer[0].addresses"), "{e}");
        let e = load(&format!(
            "{MIN}[sip]\nlisten = \"127.0.0.1:5060\"\n[[sip.peer]]\ndomain = \"opb.example\"\ntls = true\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sip.peer[0].tls"), "{e}");
        let c = load(&format!(
            "{MIN}{tls}[sip]\nlisten = \"127.0.0.1:5060\"\ntls_listen = \"127.0.0.1:5061\"\n\
             [[sip.peer]]\ndomain = \"opb.example\"\ntls = true\ntrust = [\"b-ca.pem\"]\n"
        ))
        .unwrap();
        let sip = c.sip.as_ref().unwrap();
        assert_eq!(sip.tls_listen, Some("127.0.0.1:5061".parse().unwrap()));
        let b = sip.peer("opb.example").unwrap();
        assert!(b.tls && b.addresses.is_empty());
        assert!(b.trust[0].ends_with("b-ca.pem"));
    }

    #[test]
    fn replicas_on_sqlite_are_a_warning() {
        let cluster = "\n[listen]\nadmin = \"127.0.0.1:9900\"\n[cluster]\nreplica = 0\nsiblings = [\"http://127.0.0.1:9900\", \"http://127.0.0.1:9901\"]\n";
        let c = load(&format!("{MIN}{cluster}")).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("replicas do not share")),
            "{:?}",
            c.warnings
        );
        let shared =
            format!("{MIN}{cluster}\n[store]\nurl = \"postgres://gw@127.0.0.1:5432/ssp\"\n");
        assert!(load(&shared).unwrap().warnings.is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("x5s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("721h").unwrap_err().contains("30 days"));
        assert!(parse_duration("10000000000000000000s").is_err());
        assert!(parse_duration("9999999999999999999h").is_err());
    }
}
