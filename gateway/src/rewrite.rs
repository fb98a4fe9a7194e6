//! ID rewriting in both directions, over every ID slot of every primitive.
//!
//! Outbound (core -> peers): our subscribers' core IDs become `wv:+MSISDN` (or
//! `wv:+MSISDN@public` for peers that need a host part), core domains become the public domain,
//! service IDs become `wv:@public`. Inbound (peers -> core): the reverse, and other operators'
//! `wv:+MSISDN@their-domain` IDs lose the domain so the core keeps one stable ID per number.
//!
//! Topology hiding does not rely on the ID slots alone: [`Rewriter::emit_outbound`] checks the
//! emitted bytes for any core domain or host name (free text such as a `StatusDescription` of
//! "invalid userid: nobody@core…" included) and scrubs every string if one is found.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::config::{Config, IdStyle};
use crate::directory::Directory;
use crate::ssp::Message;
use crate::ssp::ids::WvIdRef;
use crate::ssp::walk::Slot;

/// A slot [`Rewriter::rewrite_slots`] has done: its kind, its text as it came (where that
/// was borrowed from the body) and its value now.
type Rewritten<'s, 'b> = (Slot, Option<&'b str>, &'s mut Cow<'b, str>);

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Core to peers.
    Outbound,
    /// Peers to core.
    Inbound,
}

/// How the receiving peer wants IDs written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerView<'a> {
    /// ID style.
    pub style: IdStyle,
    /// The peer's domain (host part for foreign MSISDN IDs in `MsisdnAtDomain` style).
    pub domain: Option<&'a str>,
}

/// Rewrites IDs for one operator.
#[derive(Debug, Clone)]
pub struct Rewriter {
    public_domain: String,
    core_domains: Vec<String>,
    /// Lowercase strings that must never appear outbound, longest first.
    hidden: Vec<String>,
}

impl Rewriter {
    /// From the validated config.
    pub fn new(cfg: &Config) -> Rewriter {
        Rewriter::from_parts(
            &cfg.operator.public_domain,
            &cfg.operator.core_domains,
            &cfg.operator.core_hosts,
        )
    }

    /// From the parts (public domain, core domains, extra core host names).
    pub fn from_parts(public: &str, core_domains: &[String], core_hosts: &[String]) -> Rewriter {
        let mut hidden: Vec<String> = core_domains
            .iter()
            .chain(core_hosts)
            .map(|d| d.to_ascii_lowercase())
            .collect();
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
        hidden.dedup();
        Rewriter {
            public_domain: public.to_ascii_lowercase(),
            core_domains: core_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            hidden,
        }
    }

    /// The public domain.
    pub fn public_domain(&self) -> &str {
        &self.public_domain
    }

    /// The core domain inbound IDs are mapped to.
    pub fn primary_core_domain(&self) -> &str {
        self.core_domains
            .first()
            .map(String::as_str)
            .unwrap_or(&self.public_domain)
    }

    /// Whether `domain` (or no domain) denotes this operator, from the core's point of view.
    pub fn is_own_domain(&self, domain: Option<&str>) -> bool {
        match domain {
            None => true,
            Some(d) => d == self.public_domain || self.core_domains.iter().any(|c| c == d),
        }
    }

    /// Rewrite every ID in `msg` for `dir`ection.
    pub fn rewrite(
        &self,
        dir: &Directory,
        msg: &mut Message,
        direction: Direction,
        peer: PeerView<'_>,
    ) {
        msg.visit_ids(&mut |slot, s| {
            if let Some(v) = self.slot(dir, slot, s, direction, peer) {
                *s = v;
            }
        })
    }

    /// [`Rewriter::rewrite`] over ID slots found elsewhere (the fast path's spliced
    /// messages, which borrow what they do not change): the same rule for each slot.
    ///
    /// A message names one user more than once (the requestor is nearly always the
    /// sender too): a slot whose kind and text, as they came, match an earlier one's gets
    /// that one's result without a second parse and lookup. The rule depends on nothing
    /// else (one directory, one direction, one peer), so the result is the same.
    pub fn rewrite_slots<'s, 'b: 's>(
        &self,
        dir: &Directory,
        slots: impl Iterator<Item = (Slot, &'s mut Cow<'b, str>)>,
        direction: Direction,
        peer: PeerView<'_>,
    ) {
        // Each slot, with its text as it came where that is borrowed from the body (an
        // unescaped one is rare and simply rewritten again).
        let mut done: SmallVec<[Rewritten<'s, 'b>; 8]> = SmallVec::new();
        for (slot, s) in slots {
            let came = match s {
                Cow::Borrowed(b) => Some(*b),
                Cow::Owned(_) => None,
            };
            let earlier = came.and_then(|c| {
                done.iter()
                    .find(|(k, d, _)| *k == slot && *d == Some(c))
                    .map(|(_, _, v)| Cow::clone(v))
            });
            match earlier {
                Some(v) => *s = v,
                None => {
                    if let Some(v) = self.slot(dir, slot, s, direction, peer) {
                        *s = Cow::Owned(v);
                    }
                }
            }
            // The first eight are remembered (inline): a message naming more users is
            // rare, and its later slots are looked up among those but not remembered.
            if done.len() < done.inline_size() {
                done.push((slot, came, s));
            }
        }
    }

    /// The new value of one ID slot for `direction`, `None` if it stays.
    fn slot(
        &self,
        dir: &Directory,
        slot: Slot,
        s: &str,
        direction: Direction,
        peer: PeerView<'_>,
    ) -> Option<String> {
        match direction {
            Direction::Outbound => self.outbound_slot(dir, slot, s, peer),
            Direction::Inbound => self.inbound_slot(dir, slot, s, peer),
        }
    }

    /// Rewrite one ID outbound; unparseable values are left alone (the scrub still applies).
    pub fn outbound_id(&self, dir: &Directory, id: &str, peer: PeerView<'_>) -> String {
        self.outbound_slot(dir, Slot::User, id, peer)
            .unwrap_or_else(|| id.to_owned())
    }

    /// Rewrite one ID inbound.
    pub fn inbound_id(&self, dir: &Directory, id: &str) -> String {
        self.inbound_slot(dir, Slot::User, id, PeerView::default())
            .unwrap_or_else(|| id.to_owned())
    }

    /// Number `n` as `peer` writes it (`own`: one of ours), `None` where `s` is that already.
    fn msisdn_out(
        &self,
        n: crate::ssp::E164,
        own: bool,
        peer: PeerView<'_>,
        s: &str,
    ) -> Option<String> {
        let host = match peer.style {
            IdStyle::Msisdn => None,
            IdStyle::MsisdnAtDomain if own => Some(self.public_domain.as_str()),
            IdStyle::MsisdnAtDomain => peer.domain,
        };
        msisdn_slot(n, host, s)
    }

    /// The outbound value of one ID slot, `None` when it stays as it is (so an unchanged
    /// value is never copied).
    fn outbound_slot(
        &self,
        dir: &Directory,
        slot: Slot,
        s: &str,
        peer: PeerView<'_>,
    ) -> Option<String> {
        if slot == Slot::Domain {
            return self
                .core_domains
                .iter()
                .any(|c| s.eq_ignore_ascii_case(c))
                .then(|| self.public_domain.clone());
        }
        // Read borrowed first: most IDs are numbers, which need no copy of the parts.
        let id = WvIdRef::parse(s).ok()?;
        if let Some(n) = id.e164() {
            // A bare `wv:+MSISDN` is ours only if the directory says so.
            let own =
                dir.is_subscriber(n) || (id.domain.is_some() && self.is_own_domain(id.domain()));
            return self.msisdn_out(n, own, peer, s);
        }
        if !self.is_own_domain(id.domain()) {
            return None;
        }
        if id.is_user() {
            // The core may write a subscriber under any of its domains (or the public one,
            // or none); the directory holds one canonical core ID, so try each. One buffer
            // serves all attempts.
            let mut key = String::with_capacity(s.len() + 24);
            let own_first = id.domain().filter(|d| *d != self.public_domain);
            let found = own_first
                .into_iter()
                .chain(self.core_domains.iter().map(String::as_str))
                .find_map(|d| {
                    key.clear();
                    id.push_with_domain(&mut key, d);
                    dir.msisdn(&key)
                });
            if let Some(n) = found {
                return self.msisdn_out(n, true, peer, s);
            }
        }
        let mut out = String::with_capacity(s.len() + self.public_domain.len());
        id.push_with_domain(&mut out, &self.public_domain);
        Some(out)
    }

    /// The inbound value of one ID slot, `None` when it stays as it is. `core`: how the core
    /// wants other operators' numbers (host part or not).
    fn inbound_slot(
        &self,
        dir: &Directory,
        slot: Slot,
        s: &str,
        core: PeerView<'_>,
    ) -> Option<String> {
        if slot == Slot::Domain {
            return s
                .eq_ignore_ascii_case(&self.public_domain)
                .then(|| self.primary_core_domain().to_owned());
        }
        let id = WvIdRef::parse(s).ok()?;
        if let Some(n) = id.e164() {
            return match dir.core_id(n) {
                Some(core) => Some(core),
                // Not ours (the originator, or a number we do not serve): one stable form,
                // with our domain as host part for cores that need one.
                None => {
                    let host = (core.style == IdStyle::MsisdnAtDomain)
                        .then_some(self.public_domain.as_str());
                    msisdn_slot(n, host, s)
                }
            };
        }
        (id.domain() == Some(self.public_domain.as_str())).then(|| {
            let core = self.primary_core_domain();
            let mut out = String::with_capacity(s.len() + core.len());
            id.push_with_domain(&mut out, core);
            out
        })
    }

    /// Whether `text` contains any hidden name (case-insensitive).
    pub fn leaks(&self, text: &str) -> Option<&str> {
        // Fast path: the hidden names are ASCII; a lowercase copy is only made when a byte-wise
        // case-insensitive search finds a candidate.
        let hay = text.as_bytes();
        self.hidden
            .iter()
            .find(|h| contains_ignore_ascii_case(hay, h.as_bytes()))
            .map(String::as_str)
    }

    /// Rewrite outbound and serialise with `namespace`, scrubbing leftovers of core names.
    pub fn emit_outbound(
        &self,
        dir: &Directory,
        msg: &mut Message,
        peer: PeerView<'_>,
        namespace: &str,
    ) -> String {
        self.rewrite(dir, msg, Direction::Outbound, peer);
        let out = msg.emit(namespace);
        if self.leaks(&out).is_none() {
            return out;
        }
        tracing::debug!("core names left in free text after ID rewriting; scrubbing");
        msg.visit_strings(&mut |v| self.scrub(v));
        msg.emit(namespace)
    }

    /// Replace every hidden name in `v` with the public domain. A replacement can make a new
    /// occurrence out of what precedes it (`xcore.core.opx.example` becomes
    /// `xcore.opx.example`, which holds `core.opx.example` again), so passes are repeated;
    /// a value that still holds one after a few is replaced whole.
    fn scrub(&self, v: &mut String) {
        for _ in 0..4 {
            if self.leaks(v).is_none() {
                return;
            }
            for h in &self.hidden {
                // Resume after each replacement: the public domain may itself end with a
                // hidden name's suffix, and rescanning it would never terminate.
                let mut from = 0;
                while let Some(pos) = find_ignore_ascii_case(&v.as_bytes()[from..], h.as_bytes()) {
                    let at = from + pos;
                    v.replace_range(at..at + h.len(), &self.public_domain);
                    from = at + self.public_domain.len();
                }
            }
        }
        if self.leaks(v).is_some() {
            *v = self.public_domain.clone();
        }
    }
}

fn find_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    // Candidates are found with SIMD on one byte of the needle, in both cases. The hidden
    // names are domain names, and a dot is far rarer in messages (base64 has none) than a
    // letter: where the needle has one, its first dot anchors the search (the anchor at
    // `k + i` in `hay` puts a candidate at `i`).
    let k = needle.iter().position(|&b| b == b'.').unwrap_or(0);
    let (lower, upper) = (
        needle[k].to_ascii_lowercase(),
        needle[k].to_ascii_uppercase(),
    );
    memchr::memchr2_iter(lower, upper, &hay[k..=last_start + k])
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    find_ignore_ascii_case(hay, needle).is_some()
}

/// The slot's new value for number `n`: `wv:+digits`, `@host` added when given (the
/// canonical text of a number's ID), or `None` where `s` is exactly that already (most
/// numbers arrive canonical: nothing to build or copy). `host` is a configured domain
/// (validated and lowercase), which needs no escaping.
fn msisdn_slot(n: crate::ssp::E164, host: Option<&str>, s: &str) -> Option<String> {
    let w = n.written();
    // Read once: each reading of the digits checks them as text again.
    let plus = w.plus();
    let rest = s.strip_prefix("wv:").and_then(|r| r.strip_prefix(plus));
    let canonical = match host {
        None => rest == Some(""),
        Some(h) => rest.and_then(|r| r.strip_prefix('@')) == Some(h),
    };
    (!canonical).then(|| msisdn_text(plus, host))
}

/// `wv:` and `plus`, then `@host` when given, in one allocation (this runs for most IDs of
/// every message).
fn msisdn_text(plus: &str, host: Option<&str>) -> String {
    let mut s = String::with_capacity(3 + plus.len() + host.map_or(0, |h| h.len() + 1));
    s.push_str("wv:");
    s.push_str(plus);
    if let Some(h) = host {
        s.push('@');
        s.push_str(h);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DirectorySpec, TemplateSpec};
    use crate::ssp::{Codec, NS_WV_SSP_13};
    use std::path::Path;

    fn setup() -> (Rewriter, Directory) {
        let rw = Rewriter::from_parts(
            "opx.example",
            &["core.opx.example".into(), "opx.internal".into()],
            &["imps01.dc1.opx.internal".into()],
        );
        let mut dir = Directory::load(&DirectorySpec {
            file: None,
            templates: vec![TemplateSpec {
                core: "wv:{national}@core.opx.example".into(),
                public: "+46{national}".into(),
                ranges: vec!["+46709".into()],
            }],
        })
        .unwrap();
        dir.load_csv(
            Path::new("d.csv"),
            "+46701234567,wv:usera@core.opx.example\n+46701234568,wv:userb@core.opx.example\n",
        )
        .unwrap();
        (rw, dir)
    }

    const BARAZA: PeerView<'static> = PeerView {
        style: IdStyle::MsisdnAtDomain,
        domain: Some("opy.example"),
    };

    /// The first case-insensitive match, the slow and obvious way.
    fn naive_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        if needle.is_empty() {
            return None;
        }
        hay.windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle))
    }

    proptest::proptest! {
        #[test]
        fn the_hidden_name_search_finds_the_first_match(
            hay in "[a-cA-C.x]{0,40}",
            needle in "[a-cA-C.]{0,6}",
        ) {
            proptest::prop_assert_eq!(
                find_ignore_ascii_case(hay.as_bytes(), needle.as_bytes()),
                naive_find(hay.as_bytes(), needle.as_bytes())
            );
        }
    }

    proptest::proptest! {
        /// Slots rewritten together (where a repeated one takes the earlier one's result)
        /// read as each rewritten alone, in both directions, whether a value came borrowed
        /// or owned, past the eight remembered.
        #[test]
        fn repeated_slots_are_rewritten_as_each_alone(
            picks in proptest::collection::vec((0usize..8, 0usize..4, proptest::bool::ANY), 0..12),
            outbound: bool,
        ) {
            let (rw, dir) = setup();
            let values = [
                "wv:usera@core.opx.example", "wv:+46701234567", "wv:+4915112345678@opy.example",
                "wv:userb@core.opx.example", "wv:+46701234568@opx.example", "wv:friends@opy.example",
                // A domain reads differently as a `Domain` slot than as an ID.
                "opx.example", "core.opx.example",
            ];
            let kinds = [Slot::User, Slot::Group, Slot::Service, Slot::Domain];
            let (direction, peer) = if outbound {
                (Direction::Outbound, BARAZA)
            } else {
                (Direction::Inbound, PeerView::default())
            };
            let fresh = |i: usize, owned: bool| {
                if owned { Cow::Owned(values[i].to_owned()) } else { Cow::Borrowed(values[i]) }
            };
            let mut together: Vec<(Slot, Cow<'_, str>)> =
                picks.iter().map(|&(v, k, o)| (kinds[k], fresh(v, o))).collect();
            rw.rewrite_slots(&dir, together.iter_mut().map(|(k, v)| (*k, v)), direction, peer);
            for (&(v, k, o), (_, got)) in picks.iter().zip(&together) {
                let mut alone = fresh(v, o);
                rw.rewrite_slots(&dir, std::iter::once((kinds[k], &mut alone)), direction, peer);
                proptest::prop_assert_eq!(got, &alone, "{} as {:?}", values[v], kinds[k]);
            }
        }
    }

    #[test]
    fn the_hidden_name_search_with_and_without_a_dot() {
        for (hay, needle, want) in [
            ("xCORE.opx.example", "core.opx.example", Some(1)),
            (".core.opx.examplE.", "core.opx.example", Some(1)),
            ("core.opx.exampl", "core.opx.example", None),
            ("a.b.c", ".c", Some(3)),
            ("Imps01", "imps01", Some(0)),
            ("", "a", None),
            ("abc", "", None),
        ] {
            assert_eq!(
                find_ignore_ascii_case(hay.as_bytes(), needle.as_bytes()),
                want,
                "{hay:?} {needle:?}"
            );
        }
    }

    #[test]
    fn a_number_in_its_canonical_form_is_kept_as_it_came() {
        let (rw, dir) = setup();
        let at_domain = PeerView {
            style: IdStyle::MsisdnAtDomain,
            domain: Some("opy.example"),
        };
        for (direction, peer, value, want) in [
            // A foreign number, canonical for the core (no host part) and not.
            (
                Direction::Inbound,
                PeerView::default(),
                "wv:+4915112345678",
                None,
            ),
            (
                Direction::Inbound,
                PeerView::default(),
                "WV:+4915112345678",
                Some("wv:+4915112345678"),
            ),
            (
                Direction::Inbound,
                PeerView::default(),
                "wv:+4915112345678@opx.example",
                Some("wv:+4915112345678"),
            ),
            // Towards a peer that wants host parts: its own number with its domain.
            (
                Direction::Outbound,
                at_domain,
                "wv:+4915112345678@opy.example",
                None,
            ),
            (
                Direction::Outbound,
                at_domain,
                "wv:+4915112345678",
                Some("wv:+4915112345678@opy.example"),
            ),
            (
                Direction::Outbound,
                PeerView::default(),
                "wv:+4915112345678",
                None,
            ),
        ] {
            let mut v = Cow::Borrowed(value);
            rw.rewrite_slots(&dir, std::iter::once((Slot::User, &mut v)), direction, peer);
            match want {
                None => assert!(
                    matches!(v, Cow::Borrowed(b) if b == value),
                    "{value}: {v:?}"
                ),
                Some(w) => assert_eq!(v, w, "{value}"),
            }
        }
    }

    #[test]
    fn outbound_ids() {
        let (rw, dir) = setup();
        let v = PeerView::default();
        assert_eq!(
            rw.outbound_id(&dir, "wv:usera@core.opx.example", v),
            "wv:+46701234567"
        );
        assert_eq!(
            rw.outbound_id(&dir, "USERA@Core.OPX.example", v),
            "wv:+46701234567"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:usera", v),
            "wv:+46701234567",
            "domain-less = ours"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:709000001@core.opx.example", v),
            "wv:+46709000001"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:nobody@core.opx.example", v),
            "wv:nobody@opx.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:usera/friends@opx.internal", v),
            "wv:usera/friends@opx.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:/room@core.opx.example", v),
            "wv:/room@opx.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:@core.opx.example", v),
            "wv:@opx.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:+4915112345678", v),
            "wv:+4915112345678"
        );
        assert_eq!(rw.outbound_id(&dir, "wv:bob@b.test", v), "wv:bob@b.test");
        // Baraza style: ours get the public domain, theirs the peer's domain.
        assert_eq!(
            rw.outbound_id(&dir, "wv:usera@core.opx.example", BARAZA),
            "wv:+46701234567@opx.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:+4915112345678", BARAZA),
            "wv:+4915112345678@opy.example"
        );
        assert_eq!(
            rw.outbound_id(&dir, "wv:+4915112345678@else.example", v),
            "wv:+4915112345678"
        );
    }

    #[test]
    fn inbound_ids() {
        let (rw, dir) = setup();
        assert_eq!(
            rw.inbound_id(&dir, "wv:+46701234567"),
            "wv:usera@core.opx.example"
        );
        assert_eq!(
            rw.inbound_id(&dir, "wv:+46701234567@opx.example"),
            "wv:usera@core.opx.example"
        );
        assert_eq!(
            rw.inbound_id(&dir, "wv:+46709000001"),
            "wv:709000001@core.opx.example"
        );
        assert_eq!(
            rw.inbound_id(&dir, "wv:+4915112345678@opy.example"),
            "wv:+4915112345678"
        );
        assert_eq!(
            rw.inbound_id(&dir, "wv:@opx.example"),
            "wv:@core.opx.example"
        );
        assert_eq!(
            rw.inbound_id(&dir, "wv:/room@opx.example"),
            "wv:/room@core.opx.example"
        );
        assert_eq!(rw.inbound_id(&dir, "wv:bob@b.test"), "wv:bob@b.test");
        assert_eq!(rw.inbound_id(&dir, "not an id"), "not an id");
    }

    #[test]
    fn outbound_then_inbound_restores_subscribers() {
        let (rw, dir) = setup();
        for id in [
            "wv:usera@core.opx.example",
            "wv:709123456@core.opx.example",
            "wv:/room@core.opx.example",
        ] {
            let out = rw.outbound_id(&dir, id, PeerView::default());
            assert_eq!(rw.inbound_id(&dir, &out), id);
        }
    }

    #[test]
    fn scrubbing_does_not_make_a_hidden_name_out_of_what_precedes_it() {
        // Found by the rewrite_ssp fuzz target: "xcore." + the public domain holds the core
        // domain again after one replacement.
        let (rw, dir) = setup();
        let xml = r#"<?xml version='1.0'?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="7@b.test"><Transaction mode="Response" transactionID="t7">
<SearchResponse searchID="s-1" completionFlag="T xcore.core.opx.example V"><Status code="200"/>
</SearchResponse></Transaction></Session></WV-SSP-Message>"#;
        let mut m = Codec::default().parse(xml.as_bytes()).unwrap();
        let out = rw.emit_outbound(&dir, &mut m, PeerView::default(), NS_WV_SSP_13);
        assert!(rw.leaks(&out).is_none(), "{out}");
    }

    #[test]
    fn whole_message_hides_topology() {
        let (rw, dir) = setup();
        let xml = r#"<?xml version='1.0'?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="8@core.opx.example">
<Transaction mode="Response" transactionID="t1">
<SendMessageResponse messageID="m1">
<Status code="900"><StatusDescription>Errors</StatusDescription>
<DetailedResult code="427"><StatusDescription>invalid userid: nobody@CORE.opx.example via imps01.dc1.opx.internal</StatusDescription>
<UserID userID="wv:usera@core.opx.example"/><Domain>core.opx.example</Domain></DetailedResult></Status>
<Vendor note="from opx.internal" userID="wv:userb@opx.internal"/>
</SendMessageResponse></Transaction></Session></WV-SSP-Message>"#;
        let mut m = Codec::default().parse(xml.as_bytes()).unwrap();
        let out = rw.emit_outbound(&dir, &mut m, PeerView::default(), NS_WV_SSP_13);
        assert!(rw.leaks(&out).is_none(), "{out}");
        assert!(out.contains(r#"userID="wv:+46701234567""#), "{out}");
        assert!(
            out.contains(r#"userID="wv:+46701234568""#),
            "vendor userID rewritten: {out}"
        );
        assert!(
            out.contains("invalid userid: nobody@opx.example via opx.example"),
            "{out}"
        );
        assert!(out.contains("<Domain>opx.example</Domain>"), "{out}");
    }
}
