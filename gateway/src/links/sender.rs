//! Who a sender from another protocol is, as an SSP ID: the translators' one anti-spoofing
//! rule. A SIP or XMPP operator's user named by number is `wv:+MSISDN` only when ENUM places
//! that number at the operator's own domain (the check an SSP peer's originator gets); a
//! user named otherwise is `wv:user@domain`.

use super::Links;
use crate::resolve::Unplaced;
use crate::ssp::ids::E164;

/// Why a sender has no SSP ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoSender {
    /// The user part is no IMPS user name.
    NotAnId,
    /// The number cannot be checked: there is no resolver.
    NoResolver(E164),
    /// ENUM places the number at another operator, or nowhere (counted as spoofing).
    Elsewhere(E164),
    /// DNS cannot say now (the text says why).
    Unverifiable(E164, String),
}

impl std::fmt::Display for NoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSender::NotAnId => f.write_str("a sender that is no IMPS user ID"),
            NoSender::NoResolver(n) => write!(f, "+{} cannot be verified: no resolver", n.digits()),
            NoSender::Elsewhere(n) => {
                write!(f, "+{} does not belong to the sending domain", n.digits())
            }
            NoSender::Unverifiable(n, e) => {
                write!(f, "+{} cannot be verified now: {e}", n.digits())
            }
        }
    }
}

impl Links {
    /// The SSP ID of the user of `domain` who is `number` when it is named by one, else
    /// `user` (already unescaped).
    pub(crate) async fn foreign_sender(
        &self,
        number: Option<E164>,
        user: &str,
        domain: &str,
    ) -> Result<String, NoSender> {
        let Some(n) = number else {
            let user = user.to_ascii_lowercase();
            if user.is_empty()
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(NoSender::NotAnId);
            }
            return Ok(format!("wv:{user}@{domain}"));
        };
        let Some(r) = self.live().resolver.clone() else {
            return Err(NoSender::NoResolver(n));
        };
        match r.place(n, domain).await {
            Ok(()) => Ok(format!("wv:+{}", n.digits())),
            Err(Unplaced::Elsewhere) => {
                self.metrics.refused.with_label_values(&["spoof"]).inc();
                Err(NoSender::Elsewhere(n))
            }
            Err(Unplaced::Unverifiable(e)) => Err(NoSender::Unverifiable(n, e)),
        }
    }
}
