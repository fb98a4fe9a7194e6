//! The DDDS and SRV-ordering tests: RFC 6116/3402/3403 examples, edge cases, properties.
use std::collections::HashMap;
use std::sync::Mutex;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const AUS_0123: &str = "+442079460123";

fn rec(order: u16, pref: u16, flags: &str, services: &str, regexp: &str, repl: &str) -> Naptr {
    Naptr {
        order,
        preference: pref,
        flags: flags.into(),
        services: services.into(),
        regexp: regexp.into(),
        replacement: repl.into(),
        ttl: 300,
    }
}

fn with_ttl(mut r: Naptr, ttl: u32) -> Naptr {
    r.ttl = ttl;
    r
}

/// enum-dns-research.md §3.2, +44 20 7946 0123 (wire form: single backslashes).
fn zone_0123() -> Vec<Naptr> {
    vec![
        rec(100, 10, "u", "E2U+im", "!^.*$!im:alice@example.net!", "."),
        rec(
            100,
            20,
            "u",
            "E2U+pres",
            "!^.*$!pres:alice@example.net!",
            ".",
        ),
        rec(
            100,
            30,
            "u",
            "E2U+sip",
            r"!^\+(.*)$!sip:\1@example.net;user=phone!",
            ".",
        ),
        rec(100, 40, "u", "E2U+voice:tel", r"!^(.*)$!tel:\1!", "."),
        rec(
            200,
            10,
            "u",
            "E2U+im",
            "!^.*$!im:alice@backup.example.org!",
            ".",
        ),
    ]
}

/// §3.2, +44 20 7946 0124: uppercase flag, compound services.
fn zone_0124() -> Vec<Naptr> {
    vec![
        rec(
            10,
            10,
            "U",
            "E2U+im+pres",
            "!^.*$!xmpp:bob@xmpp.example.com!",
            ".",
        ),
        rec(
            10,
            20,
            "u",
            "E2U+xmpp",
            "!^.*$!xmpp:bob@xmpp.example.com!",
            ".",
        ),
    ]
}

fn uris(c: &[Candidate]) -> Vec<(&str, Service)> {
    c.iter()
        .map(|c| (c.uri.as_str(), c.service.clone()))
        .collect()
}

fn apply(field: &str, aus: &str) -> Option<String> {
    parse_subst(field).unwrap().apply(aus)
}

// ---- 1. enum_domain ----------------------------------------------------

#[test]
fn enum_domain_reverses_digits_and_adds_fqdn_suffix() {
    let want = "3.2.1.0.6.4.9.7.0.2.4.4.e164.arpa.";
    assert_eq!(enum_domain("442079460123", "e164.arpa"), want);
    assert_eq!(enum_domain("442079460123", "e164.arpa."), want);
    // RFC 6116 §3.2 example; non-digits are dropped.
    assert_eq!(
        enum_domain("+44-2079460148", "e164.arpa"),
        "8.4.1.0.6.4.9.7.0.2.4.4.e164.arpa."
    );
    assert_eq!(enum_domain("1", "e164enum.net."), "1.e164enum.net.");
}

// ---- 3. services -------------------------------------------------------

#[test]
fn services_simple_compound_and_case() {
    assert_eq!(parse_services("E2U+im"), Some(vec![Service::Im]));
    assert_eq!(parse_services("e2u+PRES"), Some(vec![Service::Pres]));
    assert_eq!(
        parse_services("E2U+im+pres"),
        Some(vec![Service::Im, Service::Pres])
    );
    assert_eq!(
        parse_services("E2U+voice:tel+sms:tel"),
        Some(vec![
            Service::Other("voice:tel".into()),
            Service::Other("sms:tel".into())
        ])
    );
    assert_eq!(
        parse_services("E2U+xmpp+SIP"),
        Some(vec![Service::Xmpp, Service::Sip])
    );
    assert_eq!(
        parse_services("E2U+X-Foo"),
        Some(vec![Service::Other("x-foo".into())])
    );
}

#[test]
fn services_obsolete_sip_e2u() {
    assert_eq!(parse_services("sip+E2U"), Some(vec![Service::Sip]));
    assert_eq!(parse_services("SIP+e2u"), Some(vec![Service::Sip]));
}

#[test]
fn services_private_types_discarded() {
    assert_eq!(parse_services("E2U+P-foo"), Some(vec![]));
    assert_eq!(parse_services("E2U+p-foo:bar+im"), Some(vec![Service::Im]));
}

#[test]
fn services_other_applications_and_junk_are_none() {
    assert_eq!(parse_services("SIP+D2T"), None);
    assert_eq!(parse_services("SIPS+D2T"), None);
    assert_eq!(parse_services(""), None);
    assert_eq!(parse_services("E2U"), None);
    assert_eq!(parse_services("E2U+"), None);
    assert_eq!(parse_services("E2U+im:"), None);
    assert_eq!(parse_services("E2U+i m"), None);
    assert_eq!(parse_services(&format!("E2U+{}", "a".repeat(33))), None);
}

// ---- 4. substitution expressions -------------------------------------

#[test]
fn subst_basic_and_backref() {
    assert_eq!(
        apply("!^.*$!im:alice@example.net!", AUS_0123).as_deref(),
        Some("im:alice@example.net")
    );
    assert_eq!(
        apply(r"!^\+(.*)$!sip:\1@example.net;user=phone!", AUS_0123).as_deref(),
        Some("sip:442079460123@example.net;user=phone")
    );
    // No match.
    assert_eq!(apply(r"!^\+1(.*)$!tel:\1!", AUS_0123), None);
}

#[test]
fn subst_other_delimiters_with_escaped_delimiter() {
    // '/' delimiter, '\/' inside both ERE and replacement.
    assert_eq!(
        apply(r"/^\+44(.*)$/http:\/\/example.net\/\1/", AUS_0123).as_deref(),
        Some("http://example.net/2079460123")
    );
    // '#' delimiter.
    assert_eq!(
        apply(r"#^\+(..)(.*)$#tel:+\1-\2\##", AUS_0123).as_deref(),
        Some("tel:+44-2079460123#")
    );
    // '!' delimiter escaped inside the ERE matches a literal '!'.
    assert_eq!(apply(r"!^a\!b$!ok\!!", "a!b").as_deref(), Some("ok!"));
    // Escaped delimiter inside a bracket expression.
    assert_eq!(apply(r"/^[\/x]+$/yes/", "/x/").as_deref(), Some("yes"));
}

#[test]
fn subst_case_insensitive_flag() {
    assert_eq!(apply("!^abc$!x!", "ABC"), None);
    let e = parse_subst("!^abc$!x!i").unwrap();
    assert!(e.case_insensitive());
    assert_eq!(e.apply("ABC").as_deref(), Some("x"));
    assert_eq!(apply("!^abc$!x!I", "aBc").as_deref(), Some("x"));
    assert_eq!(
        parse_subst("!a!b!x").unwrap_err(),
        DddsError::UnknownFlag('x')
    );
}

#[test]
fn subst_rfc3402_backref_numbering() {
    // RFC 3402 §3.2: (A(B(C)DE)(F)G) gives \1=ABCDEFG \2=BCDE \3=C \4=F.
    let e = parse_subst(r"!(A(B(C)DE)(F)G)!\1|\2|\3|\4!").unwrap();
    assert_eq!(e.groups(), 4);
    assert_eq!(e.apply("ABCDEFG").as_deref(), Some("ABCDEFG|BCDE|C|F"));
    // \5..\9 are errors.
    for n in 5..=9 {
        assert_eq!(
            parse_subst(&format!(r"!(A(B(C)DE)(F)G)!\{n}!")).unwrap_err(),
            DddsError::BackrefOutOfRange {
                backref: n,
                groups: 4
            }
        );
    }
    assert_eq!(
        parse_subst(r"!(a)!\0!").unwrap_err(),
        DddsError::InvalidBackref
    );
}

#[test]
fn subst_backslash_and_nonparticipating_group() {
    // "\\" in the replacement is one literal backslash; "\\1" is "\" then "1".
    assert_eq!(apply(r"!^(a)$!x\\y\\\1!", "a").as_deref(), Some(r"x\y\a"));
    // A group that did not take part expands to nothing.
    assert_eq!(
        apply(r"!^(a)|(b)$![\1][\2]!", "b").as_deref(),
        Some("[][b]")
    );
    // Other escapes in the replacement stay literal.
    assert_eq!(apply(r"!^a$!x\.y!", "a").as_deref(), Some(r"x\.y"));
}

#[test]
fn subst_three_delimiter_rule() {
    assert_eq!(
        parse_subst("!^.*$!im:a@b").unwrap_err(),
        DddsError::DelimiterCount { found: 2 }
    );
    assert_eq!(
        parse_subst("!^.*$!im:a@b!!").unwrap_err(),
        DddsError::DelimiterCount { found: 4 }
    );
    assert_eq!(
        parse_subst("!^.*$!im!a@b!").unwrap_err(),
        DddsError::DelimiterCount { found: 4 }
    );
    assert_eq!(
        parse_subst("!").unwrap_err(),
        DddsError::DelimiterCount { found: 1 }
    );
    // The escaped delimiter does not count.
    assert!(parse_subst(r"!a\!b!c!").is_ok());
    assert_eq!(parse_subst("").unwrap_err(), DddsError::Empty);
    assert_eq!(parse_subst("!!x!").unwrap_err(), DddsError::EmptyEre);
}

#[test]
fn subst_invalid_delimiters() {
    assert_eq!(
        parse_subst("1a1b1").unwrap_err(),
        DddsError::InvalidDelimiter('1')
    );
    assert_eq!(
        parse_subst("iaibi").unwrap_err(),
        DddsError::InvalidDelimiter('i')
    );
    assert_eq!(
        parse_subst(r"\a\b\").unwrap_err(),
        DddsError::InvalidDelimiter('\\')
    );
    assert_eq!(
        parse_subst(r"!a!b\").unwrap_err(),
        DddsError::TrailingBackslash
    );
    assert_eq!(
        parse_subst(r"!a!b!\").unwrap_err(),
        DddsError::UnknownFlag('\\')
    );
    // A letter other than 'i' may delimit; "\x" is then a literal 'x'.
    assert_eq!(apply(r"xa\xbxokx", "axb").as_deref(), Some("ok"));
}

#[test]
fn ere_translation_features() {
    // Escaped specials, intervals, classes, alternation.
    assert_eq!(
        apply(r"!^\+44[0-9]{10}$!y!", AUS_0123).as_deref(),
        Some("y")
    );
    assert_eq!(apply(r"!^\+44[0-9]{11}$!y!", AUS_0123), None);
    assert_eq!(
        apply(r"!^\+[[:digit:]]{2,}$!y!", AUS_0123).as_deref(),
        Some("y")
    );
    assert_eq!(apply(r"!^\+(1|44)!\1!", AUS_0123).as_deref(), Some("44"));
    assert_eq!(apply(r"!^[^+]!y!", AUS_0123), None);
    assert_eq!(apply(r"!^[]a]+$!y!", "]a]").as_deref(), Some("y"));
    assert_eq!(apply(r"!^[a-]+$!y!", "-a").as_deref(), Some("y"));
    // Regex-crate syntax is literal in ERE brackets.
    assert_eq!(apply(r"!^[\d]+$!y!", r"d\").as_deref(), Some("y"));
    assert_eq!(apply(r"!^[\d]+$!y!", "5"), None);
    // `}` and `]` outside brackets are literals.
    assert_eq!(apply(r"!^a}]$!y!", "a}]").as_deref(), Some("y"));
    // Repeated repetition keeps its POSIX meaning (not lazy).
    let e = parse_subst(r"!^(a*?)$!\1!").unwrap();
    assert_eq!(e.apply("aaa").as_deref(), Some("aaa"));
    // An unescaped '+' is a repetition operator.
    assert_eq!(apply(r"!^4+$!y!", "444").as_deref(), Some("y"));
}

#[test]
fn ere_unsupported_constructs_are_errors() {
    for bad in [
        r"!\d+!x!",
        r"!(a)\1!x!",
        r"!*a!x!",
        r"!a|+b!x!",
        r"!^*a!x!",
        r"!(a!x!",
        r"!a)!x!",
        r"![a!x!",
        r"![[.a.]]!x!",
        r"![[=a=]]!x!",
        r"![[:foo:]]!x!",
        r"![z-a]!x!",
        r"!a{!x!",
        r"!a{2,1}!x!",
        r"!a{,3}!x!",
        r"!a{256}!x!",
        r"!a{99999999999999999999}!x!",
        r"!a\!x!",
    ] {
        assert!(parse_subst(bad).is_err(), "{bad} should be rejected");
    }
    // Engine limits surface as errors, not panics.
    assert!(parse_subst("!((((a{255}){255}){255}){255})!x!").is_err());
}

// ---- 5. select ---------------------------------------------------------

#[test]
fn select_order_and_preference() {
    let s = select(&zone_0123(), AUS_0123, &[Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![("im:alice@example.net", Service::Im)]
    );
    assert!(s.referrals.is_empty());

    let s = select(&zone_0123(), AUS_0123, &[Service::Pres, Service::Im]);
    // PREFERENCE first, then the position in `wanted`.
    assert_eq!(
        uris(&s.terminal),
        vec![
            ("im:alice@example.net", Service::Im),
            ("pres:alice@example.net", Service::Pres)
        ]
    );

    let s = select(&zone_0123(), AUS_0123, &[Service::Sip]);
    assert_eq!(
        uris(&s.terminal),
        vec![("sip:442079460123@example.net;user=phone", Service::Sip)]
    );
    let s = select(
        &zone_0123(),
        AUS_0123,
        &[Service::Other("voice:tel".into())],
    );
    assert_eq!(s.terminal[0].uri, "tel:+442079460123");
}

#[test]
fn select_sorts_regardless_of_response_order() {
    let mut z = zone_0123();
    z.reverse();
    let s = select(&z, AUS_0123, &[Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![("im:alice@example.net", Service::Im)]
    );
}

#[test]
fn select_backup_order_only_without_match_in_better_order() {
    // Order 200 is cut off when order 100 matched.
    let s = select(&zone_0123(), AUS_0123, &[Service::Im, Service::Sip]);
    assert!(s.terminal.iter().all(|c| c.order == 100));
    assert_eq!(s.terminal.len(), 2);

    // Without the order-100 im record the order-200 backup is eligible:
    // service filtering precedes the ORDER cut-off (RFC 6116 §5.2).
    let z: Vec<Naptr> = zone_0123()
        .into_iter()
        .filter(|r| !(r.order == 100 && r.services == "E2U+im"))
        .collect();
    let s = select(&z, AUS_0123, &[Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![("im:alice@backup.example.org", Service::Im)]
    );
    // ...but not when an order-100 record for another wanted service matches.
    let s = select(&z, AUS_0123, &[Service::Im, Service::Pres]);
    assert_eq!(
        uris(&s.terminal),
        vec![("pres:alice@example.net", Service::Pres)]
    );
    // A non-matching order-100 regexp does not count as accepted.
    let z = vec![
        rec(
            100,
            10,
            "u",
            "E2U+im",
            r"!^\+1(.*)$!im:us@example.net!",
            ".",
        ),
        rec(
            200,
            10,
            "u",
            "E2U+im",
            "!^.*$!im:alice@backup.example.org!",
            ".",
        ),
    ];
    let s = select(&z, AUS_0123, &[Service::Im]);
    assert_eq!(s.terminal[0].uri, "im:alice@backup.example.org");
}

#[test]
fn select_uppercase_flag_and_compound_services() {
    let s = select(&zone_0124(), "+442079460124", &[Service::Pres, Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![
            ("xmpp:bob@xmpp.example.com", Service::Pres),
            ("xmpp:bob@xmpp.example.com", Service::Im)
        ]
    );
    let s = select(&zone_0124(), "+442079460124", &[Service::Xmpp, Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![
            ("xmpp:bob@xmpp.example.com", Service::Im),
            ("xmpp:bob@xmpp.example.com", Service::Xmpp)
        ]
    );
    assert!(s.terminal.iter().all(|c| c.order == 10));
}

#[test]
fn select_ignores_bad_records() {
    let z = vec![
        // Both a regexp and a replacement: ignored (RFC 3403 §4.1).
        rec(
            10,
            10,
            "u",
            "E2U+im",
            "!^.*$!im:both@example.net!",
            "other.example.net.",
        ),
        // Unknown flags: skipped.
        rec(10, 20, "s", "E2U+im", "!^.*$!im:s@example.net!", "."),
        rec(10, 30, "uz", "E2U+im", "!^.*$!im:uz@example.net!", "."),
        // Private type: discarded.
        rec(
            10,
            40,
            "u",
            "E2U+P-im",
            "!^.*$!im:private@example.net!",
            ".",
        ),
        // Other DDDS application.
        rec(10, 50, "u", "SIP+D2U", "!^.*$!im:d2u@example.net!", "."),
        // Broken regexp.
        rec(10, 60, "u", "E2U+im", "!^.*$!im:broken@example.net", "."),
        // Non-terminal without a usable replacement.
        rec(10, 70, "", "E2U+im", "", "."),
        rec(10, 80, "", "E2U+im", "", ""),
        // Terminal without regexp.
        rec(10, 90, "u", "E2U+im", "", "."),
        // Empty output.
        rec(10, 95, "u", "E2U+im", "!^.*$!!", "."),
        rec(20, 10, "u", "E2U+im", "!^.*$!im:good@example.net!", ""),
    ];
    let s = select(&z, AUS_0123, &[Service::Im]);
    assert_eq!(
        uris(&s.terminal),
        vec![("im:good@example.net", Service::Im)]
    );
    assert!(s.referrals.is_empty());
}

#[test]
fn select_obsolete_sip_e2u_record() {
    let z = vec![rec(
        100,
        10,
        "u",
        "sip+E2U",
        r"!^\+(.*)$!sip:\1@example.net!",
        ".",
    )];
    let s = select(&z, AUS_0123, &[Service::Sip]);
    assert_eq!(s.terminal[0].uri, "sip:442079460123@example.net");
}

#[test]
fn select_non_terminal_referral() {
    // §3.2 +44 20 7946 0126: services and regexp of a non-terminal are ignored.
    let z = vec![rec(100, 10, "", "E2U+im", "", "carrier.enum.example.net.")];
    let s = select(&z, "+442079460126", &[Service::Pres]);
    assert!(s.terminal.is_empty());
    assert_eq!(
        s.referrals,
        vec![("carrier.enum.example.net.".to_string(), 300, 100)]
    );
    let z = vec![
        rec(50, 10, "", "", "!^.*$!ignored!", "first.example.net"),
        rec(100, 10, "u", "E2U+im", "!^.*$!im:a@example.net!", "."),
        rec(100, 20, "", "", "", "after.example.net."),
    ];
    let s = select(&z, AUS_0123, &[Service::Im]);
    assert_eq!(
        s.referrals,
        vec![("first.example.net.".to_string(), 300, 50)]
    );
    assert_eq!(s.terminal.len(), 1);
}

// ---- 6. resolve --------------------------------------------------------

/// A NAPTR source over a map; unknown names are NXDOMAIN with TTL 60.
#[derive(Default)]
struct Fake {
    zones: HashMap<String, Result<NaptrAnswer, SourceError>>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn with(mut self, name: &str, answer: Result<NaptrAnswer, SourceError>) -> Self {
        self.zones.insert(visit_key(name), answer);
        self
    }
    fn records(self, name: &str, records: Vec<Naptr>) -> Self {
        self.with(name, Ok(NaptrAnswer::Records(records)))
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl NaptrSource for Fake {
    fn naptr(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<NaptrAnswer, SourceError>> + Send {
        let key = visit_key(name);
        self.calls.lock().unwrap().push(key.clone());
        let answer = self
            .zones
            .get(&key)
            .cloned()
            .unwrap_or(Ok(NaptrAnswer::NxDomain {
                negative_ttl: Some(60),
            }));
        async move { answer }
    }
}

const K0123: &str = "3.2.1.0.6.4.9.7.0.2.4.4.e164.arpa.";
const K0126: &str = "6.2.1.0.6.4.9.7.0.2.4.4.e164.arpa.";

fn found(o: EnumOutcome) -> EnumResult {
    match o {
        EnumOutcome::Found(r) => r,
        other => panic!("expected Found, got {other:?}"),
    }
}

fn referral(order: u16, pref: u16, to: &str) -> Naptr {
    rec(order, pref, "", "", "", to)
}

#[tokio::test]
async fn resolve_terminal_in_first_rrset() {
    let src = Fake::default().records(K0123, zone_0123());
    let r = found(
        resolve(&src, AUS_0123, K0123, &[Service::Im, Service::Pres])
            .await
            .unwrap(),
    );
    assert_eq!(r.candidate.uri, "im:alice@example.net");
    assert_eq!(
        uris(&r.others),
        vec![("pres:alice@example.net", Service::Pres)]
    );
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.min_ttl, 300);
}

#[tokio::test]
async fn resolve_follows_non_terminal_to_carrier() {
    let src = Fake::default()
        .records(
            K0126,
            vec![with_ttl(
                rec(100, 10, "", "E2U+im", "", "carrier.enum.example.net."),
                120,
            )],
        )
        .records(
            "carrier.enum.example.net.",
            vec![rec(
                100,
                10,
                "u",
                "E2U+im",
                "!^.*$!im:dave@example.net!",
                ".",
            )],
        );
    let r = found(
        resolve(&src, "+442079460126", K0126, &[Service::Im])
            .await
            .unwrap(),
    );
    assert_eq!(r.candidate.uri, "im:dave@example.net");
    assert_eq!(r.min_ttl, 120);
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec![K0126, "carrier.enum.example.net."]);
}

#[tokio::test]
async fn resolve_detects_loops() {
    let src = Fake::default()
        .records("a.example.", vec![referral(10, 10, "b.example.")])
        .records("b.example.", vec![referral(10, 10, "A.EXAMPLE")]);
    let out = resolve(&src, AUS_0123, "a.example.", &[Service::Im])
        .await
        .unwrap();
    let EnumOutcome::NotFound {
        negative_ttl,
        steps,
    } = out
    else {
        panic!("loop must not resolve");
    };
    assert_eq!(steps.len(), 2);
    assert_eq!(negative_ttl, Some(300));
    assert_eq!(src.calls(), vec!["a.example", "b.example"]);
}

fn chain(hops: usize) -> Fake {
    let mut src = Fake::default();
    for i in 0..hops {
        src = src.records(
            &format!("h{i}.example."),
            vec![referral(1, 1, &format!("h{}.example.", i + 1))],
        );
    }
    src.records(
        &format!("h{hops}.example."),
        vec![rec(1, 1, "u", "E2U+im", "!^.*$!im:end@example.net!", ".")],
    )
}

#[tokio::test]
async fn resolve_hop_limit() {
    let src = chain(MAX_HOPS);
    let r = found(
        resolve(&src, AUS_0123, "h0.example.", &[Service::Im])
            .await
            .unwrap(),
    );
    assert_eq!(r.candidate.uri, "im:end@example.net");
    assert_eq!(r.steps.len(), MAX_HOPS + 1);

    let src = chain(MAX_HOPS + 1);
    let out = resolve(&src, AUS_0123, "h0.example.", &[Service::Im])
        .await
        .unwrap();
    assert!(matches!(out, EnumOutcome::NotFound { .. }));
    assert_eq!(src.calls().len(), MAX_HOPS + 1);
}

#[tokio::test]
async fn resolve_continues_after_problem_in_referenced_domain() {
    let src = Fake::default()
        .records(
            "top.",
            vec![
                referral(10, 10, "nx.example."),
                referral(10, 20, "err.example."),
                referral(10, 30, "nomatch.example."),
                referral(10, 40, "nodata.example."),
                referral(10, 50, "good.example."),
                rec(20, 10, "u", "E2U+im", "!^.*$!im:backup@example.net!", "."),
            ],
        )
        .with(
            "err.example.",
            Err(SourceError {
                message: "timeout".into(),
                server: true,
            }),
        )
        .with(
            "nodata.example.",
            Ok(NaptrAnswer::NoData {
                negative_ttl: Some(30),
            }),
        )
        .records(
            "nomatch.example.",
            vec![rec(1, 1, "u", "E2U+sip", "!^.*$!sip:x@example.net!", ".")],
        )
        .records(
            "good.example.",
            vec![with_ttl(
                rec(1, 1, "u", "E2U+im", "!^.*$!im:good@example.net!", "."),
                50,
            )],
        );
    let r = found(
        resolve(&src, AUS_0123, "top.", &[Service::Im])
            .await
            .unwrap(),
    );
    assert_eq!(r.candidate.uri, "im:good@example.net");
    assert_eq!(r.min_ttl, 50);
    // The failed query is not a step; all the others are.
    assert_eq!(r.steps.len(), 5);
}

#[tokio::test]
async fn resolve_uses_worse_order_terminal_after_failed_referral() {
    let src = Fake::default().records(
        "top.",
        vec![
            referral(10, 10, "nx.example."),
            rec(20, 10, "u", "E2U+im", "!^.*$!im:backup@example.net!", "."),
            rec(
                20,
                20,
                "u",
                "E2U+pres",
                "!^.*$!pres:backup@example.net!",
                ".",
            ),
            rec(30, 10, "u", "E2U+im", "!^.*$!im:worse@example.net!", "."),
        ],
    );
    let r = found(
        resolve(&src, AUS_0123, "top.", &[Service::Im, Service::Pres])
            .await
            .unwrap(),
    );
    assert_eq!(r.candidate.uri, "im:backup@example.net");
    assert_eq!(
        uris(&r.others),
        vec![("pres:backup@example.net", Service::Pres)]
    );
}

#[tokio::test]
async fn resolve_errors_and_negative_answers() {
    // First query failing is an error.
    let src = Fake::default().with(
        K0123,
        Err(SourceError {
            message: "SERVFAIL".into(),
            server: false,
        }),
    );
    let err = resolve(&src, AUS_0123, K0123, &[Service::Im])
        .await
        .unwrap_err();
    assert_eq!(err.message, "SERVFAIL");

    // NXDOMAIN and NODATA are outcomes with their negative TTL.
    let src = Fake::default();
    let out = resolve(&src, AUS_0123, K0123, &[Service::Im])
        .await
        .unwrap();
    assert!(
        matches!(out, EnumOutcome::NotFound { negative_ttl: Some(60), ref steps } if steps.len() == 1)
    );
    let src = Fake::default().with(K0123, Ok(NaptrAnswer::NoData { negative_ttl: None }));
    let out = resolve(&src, AUS_0123, K0123, &[Service::Im])
        .await
        .unwrap();
    assert!(matches!(
        out,
        EnumOutcome::NotFound {
            negative_ttl: None,
            ..
        }
    ));

    // Records but no wanted service: not found, cacheable for the record TTL.
    let src = Fake::default().records(K0123, zone_0123());
    let out = resolve(&src, AUS_0123, K0123, &[Service::Xmpp])
        .await
        .unwrap();
    assert!(matches!(
        out,
        EnumOutcome::NotFound {
            negative_ttl: Some(300),
            ..
        }
    ));

    // A referral error is reported only when nothing else matched.
    let src = Fake::default()
        .records("top.", vec![referral(10, 10, "err.example.")])
        .with(
            "err.example.",
            Err(SourceError {
                message: "timeout".into(),
                server: true,
            }),
        );
    let err = resolve(&src, AUS_0123, "top.", &[Service::Im])
        .await
        .unwrap_err();
    assert_eq!(err.message, "timeout");
}

#[tokio::test]
async fn resolve_caps_total_queries() {
    let many: Vec<Naptr> = (0..100)
        .map(|i| referral(10, i, &format!("n{i}.example.")))
        .collect();
    let src = Fake::default().records("top.", many);
    let out = resolve(&src, AUS_0123, "top.", &[Service::Im])
        .await
        .unwrap();
    assert!(matches!(out, EnumOutcome::NotFound { .. }));
    assert_eq!(src.calls().len(), MAX_QUERIES);
}

#[test]
fn resolve_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let src = Fake::default();
    let fut = resolve(&src, AUS_0123, K0123, &[Service::Im]);
    assert_send(&fut);
}

// ---- 7. uri_domain -----------------------------------------------------

#[test]
fn uri_domains() {
    let d = |u: &str| uri_domain(u);
    assert_eq!(d("im:alice@example.net").as_deref(), Some("example.net"));
    assert_eq!(d("IM:alice@Example.NET").as_deref(), Some("example.net"));
    assert_eq!(d("pres:x@y?query").as_deref(), Some("y"));
    assert_eq!(
        d("sip:+442079460123@example.net;user=phone").as_deref(),
        Some("example.net")
    );
    assert_eq!(
        d("sips:bob:pw@Sip.Example.org:5061;transport=tcp?x=y").as_deref(),
        Some("sip.example.org")
    );
    assert_eq!(d("sip:example.com").as_deref(), Some("example.com"));
    assert_eq!(
        d("xmpp:bob@xmpp.example.com/res").as_deref(),
        Some("xmpp.example.com")
    );
    assert_eq!(
        d("xmpp:bob@xmpp.example.com/r@s").as_deref(),
        Some("xmpp.example.com")
    );
    assert_eq!(
        d("xmpp://guest@example.com/support@example.org?message").as_deref(),
        Some("example.org")
    );
    assert_eq!(d("xmpp:example.com").as_deref(), Some("example.com"));
    assert_eq!(
        d("xmpp:bob@example.com.#frag").as_deref(),
        Some("example.com")
    );
    assert_eq!(d("tel:+442079460123"), None);
    assert_eq!(d("mailto:a@b.example"), None);
    assert_eq!(d("im:alice"), None);
    assert_eq!(d("im:alice@"), None);
    assert_eq!(d("sip:alice@192.0.2.1"), None);
    assert_eq!(d("sip:alice@[2001:db8::1]:5060"), None);
    assert_eq!(d("im:alice@bad domain"), None);
    assert_eq!(d(""), None);
}

// ---- 8. SRV ------------------------------------------------------------

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
    Srv {
        priority,
        weight,
        port,
        target: target.into(),
        ttl: 300,
    }
}

fn targets(o: SrvOrder) -> Vec<Srv> {
    match o {
        SrvOrder::Targets(t) => t,
        SrvOrder::NotOffered => panic!("expected targets"),
    }
}

#[test]
fn srv_priority_order() {
    let mut rng = StdRng::seed_from_u64(1);
    let rs = vec![
        srv(20, 0, 5060, "sip-backup"),
        srv(10, 60, 5060, "sip1"),
        srv(10, 40, 5060, "sip2"),
        srv(5, 0, 5060, "first"),
    ];
    let t = targets(order_srv(&rs, &mut rng));
    assert_eq!(t.len(), 4);
    assert_eq!(t[0].target, "first");
    assert_eq!(t[3].target, "sip-backup");
    assert!(t.windows(2).all(|w| w[0].priority <= w[1].priority));
}

#[test]
fn srv_root_target() {
    let mut rng = StdRng::seed_from_u64(2);
    assert_eq!(
        order_srv(&[srv(0, 0, 0, ".")], &mut rng),
        SrvOrder::NotOffered
    );
    assert_eq!(
        order_srv(&[srv(0, 0, 0, "")], &mut rng),
        SrvOrder::NotOffered
    );
    let t = targets(order_srv(
        &[srv(0, 0, 0, "."), srv(10, 0, 5060, "sip1")],
        &mut rng,
    ));
    assert_eq!(t, vec![srv(10, 0, 5060, "sip1")]);
    assert_eq!(order_srv(&[], &mut rng), SrvOrder::Targets(vec![]));
}

#[test]
fn srv_weights_proportions() {
    let mut rng = StdRng::seed_from_u64(42);
    let rs = vec![
        srv(10, 10, 1, "a"),
        srv(10, 30, 2, "b"),
        srv(10, 60, 3, "c"),
    ];
    let draws = 10_000;
    let mut first = [0usize; 3];
    for _ in 0..draws {
        let t = targets(order_srv(&rs, &mut rng));
        assert_eq!(t.len(), 3);
        first[usize::from(t[0].port - 1)] += 1;
    }
    for (i, expect) in [0.10, 0.30, 0.60].into_iter().enumerate() {
        let got = first[i] as f64 / f64::from(draws);
        assert!(
            (got - expect).abs() <= 0.03,
            "record {i}: {got} vs {expect}"
        );
    }
}

#[test]
fn srv_weight_zero_rarely_first() {
    let mut rng = StdRng::seed_from_u64(7);
    let rs = vec![srv(10, 100, 1, "heavy"), srv(10, 0, 2, "zero")];
    let draws = 10_000;
    let zero_first = (0..draws)
        .filter(|_| targets(order_srv(&rs, &mut rng))[0].target == "zero")
        .count();
    // Expected 1/101 of draws.
    assert!(zero_first < draws / 50, "zero first {zero_first} times");
    // All weights zero: input order kept.
    let rs = vec![srv(1, 0, 1, "a"), srv(1, 0, 2, "b")];
    assert_eq!(targets(order_srv(&rs, &mut rng)), rs);
}

proptest! {
    #[test]
    fn prop_order_srv_is_permutation(
        recs in prop::collection::vec((0u16..4, 0u16..50, prop::bool::weighted(0.1)), 0..12),
        seed in any::<u64>(),
    ) {
        let rs: Vec<Srv> = recs
            .iter()
            .enumerate()
            .map(|(i, (p, w, dot))| srv(*p, *w, i as u16, if *dot { "." } else { "host" }))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        match order_srv(&rs, &mut rng) {
            SrvOrder::NotOffered => {
                prop_assert!(!rs.is_empty() && rs.iter().all(|r| r.target == "."));
            }
            SrvOrder::Targets(t) => {
                prop_assert!(t.windows(2).all(|w| w[0].priority <= w[1].priority));
                let mut got: Vec<u16> = t.iter().map(|r| r.port).collect();
                got.sort_unstable();
                let want: Vec<u16> = rs.iter().filter(|r| r.target != ".").map(|r| r.port).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn prop_parse_subst_never_panics(field in any::<String>(), aus in "\\+[0-9]{1,15}") {
        if let Ok(e) = parse_subst(&field) {
            let _ = e.apply(&aus);
        }
    }

    #[test]
    fn prop_parse_subst_regexish_never_panics(
        field in r"[!/#][\\!/#a-c0-9()\[\]{}*+?|^$.:,=-]{0,24}[!/#]?i?",
        aus in "\\+[0-9]{1,15}",
    ) {
        if let Ok(e) = parse_subst(&field) {
            let _ = e.apply(&aus);
        }
    }

    #[test]
    fn prop_select_never_panics(
        flags in "[uUsz]?",
        services in "[A-Za-z0-9+:-]{0,20}",
        regexp in r"[!/][\\!/a-c0-9().*+^$]{0,16}",
        replacement in "[a-z.]{0,10}",
    ) {
        let r = rec(1, 1, &flags, &services, &regexp, &replacement);
        let _ = select(&[r], AUS_0123, &[Service::Im, Service::Sip]);
    }
}
