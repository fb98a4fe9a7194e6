//! Names of other operators' users as ENUM gave them (`im:alice@a.test` for
//! +254700000001), learnt from the gateway's own lookups and kept both ways for a day after
//! their last use, for peers whose servers do not know their users by number (see
//! [`super::normalize`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ssp::{E164, WvId};

/// How long a learnt name is kept after its last lookup: long enough for the replies and
/// reports of a conversation.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Names kept at most.
const MAX_NAMES: usize = 100_000;

/// Names of other operators' users that ENUM gave, both ways.
#[derive(Debug, Default)]
pub(crate) struct Names {
    inner: Mutex<NamesInner>,
}

#[derive(Debug, Default)]
struct NamesInner {
    /// `wv:alice@a.test` → the number, and until when.
    by_name: HashMap<String, (E164, Instant)>,
    /// (number, domain) → `wv:alice@a.test`.
    by_number: HashMap<(E164, String), String>,
}

impl Names {
    /// ENUM names number `n` `id` (`wv:user@domain`).
    pub(crate) fn learn(&self, n: E164, id: &WvId) {
        let (Some(domain), false) = (id.domain.clone(), id.user.is_empty()) else {
            return;
        };
        let name = id.to_string();
        let Ok(mut m) = self.inner.lock() else { return };
        let now = Instant::now();
        if m.by_name.len() >= MAX_NAMES && !m.by_name.contains_key(&name) {
            m.by_name.retain(|_, (_, until)| *until > now);
            if m.by_name.len() >= MAX_NAMES {
                let gone: Vec<String> = m.by_name.keys().take(MAX_NAMES / 8).cloned().collect();
                for g in gone {
                    m.by_name.remove(&g);
                }
            }
            let live: std::collections::HashSet<String> = m.by_name.keys().cloned().collect();
            m.by_number.retain(|_, v| live.contains(v));
        }
        m.by_name.insert(name.clone(), (n, now + KEEP));
        m.by_number.insert((n, domain), name);
    }

    /// The name of number `n` at `domain`, if learnt.
    pub(crate) fn name_of(&self, n: E164, domain: &str) -> Option<String> {
        let m = self.inner.lock().ok()?;
        let name = m.by_number.get(&(n, domain.to_owned()))?;
        m.by_name
            .get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|_| name.clone())
    }

    /// The number of `name` (canonical `wv:user@domain`), if learnt.
    pub(crate) fn number_of(&self, name: &str) -> Option<E164> {
        let m = self.inner.lock().ok()?;
        m.by_name
            .get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_ways_and_only_at_their_domain() {
        let names = Names::default();
        let n = E164::parse("+254700000001").unwrap();
        names.learn(n, &WvId::parse("wv:Alice@A.test").unwrap());
        assert_eq!(
            names.name_of(n, "a.test").as_deref(),
            Some("wv:alice@a.test")
        );
        assert_eq!(names.name_of(n, "b.test"), None);
        assert_eq!(names.number_of("wv:alice@a.test"), Some(n));
        assert_eq!(names.number_of("wv:bob@a.test"), None);
    }
}
