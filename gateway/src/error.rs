//! One classification of everything the gateway refuses or fails at.
//!
//! A [`Failure`] says *what* went wrong ([`Kind`]), *whose side* it is on ([`Side`]: the peer,
//! the core, or the gateway itself) and, in free text, the detail. Everything else follows
//! from the kind, in the tables of this module and nowhere else:
//!
//! - the SSP status the requester gets (code, `StatusDescription`, `TryAgainTimeout`);
//! - the HTTP status when a whole POST is refused, and its `Retry-After`;
//! - whether and when to retry;
//! - the reason label of the metric that counts it.
//!
//! The SSP codes are those of `gateway/PROTOCOL.md` §7.

use std::borrow::Cow;

use http::StatusCode;

use crate::ssp::{Status, status as code};

/// Whose side a failure is on (for logs and the reader of a status description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A peer operator (or whoever claims to be one).
    Peer,
    /// Our core.
    Core,
    /// The gateway itself (its limits, its policy, its DNS).
    Local,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not an acceptable SSP message or transaction (XML, envelope, missing ID, bounds).
    Malformed,
    /// A body or message over a size limit.
    TooLarge,
    /// A sender too slow: a body not received within its deadline or its minimum rate.
    TooSlow,
    /// Not an SSP media type.
    MediaType,
    /// Not a POST.
    Method,
    /// The sender is not who it must be (certificate, address, peer table).
    Forbidden,
    /// No association (or an expired one) behind the session ID.
    UnknownSession,
    /// The primitive cannot be carried to this destination.
    NotSupported,
    /// An answer whose transaction ID we did not issue to this sender.
    InvalidTransaction,
    /// A user ID that does not parse.
    InvalidUserId,
    /// The destination (a peer, the core) cannot be reached, or refused at HTTP level.
    Unreachable,
    /// No in-flight slot left.
    Overloaded,
    /// Over a rate limit.
    RateLimited,
    /// The gateway is shutting down.
    Draining,
    /// The far side accepted the request and never answered within the deadline.
    Timeout,
    /// No route to the destination's network.
    NoRoute,
    /// A user who is not our subscriber (no open relay).
    UnknownUser,
    /// A number search too broad (wildcards, partial numbers).
    SearchTooBroad,
    /// The originator does not belong to the sender (anti-spoofing).
    Spoofed,
    /// DNS cannot place the originator now.
    Unverifiable,
    /// The state store cannot keep what the gateway would have to promise.
    StoreUnavailable,
    /// The recipient (or the far side on its behalf) declined it for good.
    Declined,
    /// The gateway failed itself.
    Internal,
}

/// When a requester may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Not the same request: it will fail the same way.
    Never,
    /// After this many seconds.
    After(u32),
}

/// `TryAgainTimeout` and `Retry-After` for what will pass once the far side or the load
/// recovers: half a minute, long enough that a flood of retries does not keep a recovering
/// peer down.
const RETRY_LATER: u32 = 30;
/// For a draining replica: another replica (or this one, restarted) takes it at once.
const RETRY_ELSEWHERE: u32 = 1;

impl Kind {
    /// The SSP status code.
    pub fn code(self) -> u16 {
        match self {
            Kind::Malformed | Kind::TooLarge | Kind::TooSlow | Kind::MediaType | Kind::Method => {
                code::BAD_REQUEST
            }
            Kind::Forbidden | Kind::UnknownSession => code::INVALID_SESSION,
            Kind::NotSupported => code::NOT_SUPPORTED,
            Kind::InvalidTransaction => code::INVALID_TRANSACTION,
            Kind::InvalidUserId => code::INVALID_USER_ID,
            Kind::Unreachable
            | Kind::Overloaded
            | Kind::RateLimited
            | Kind::Draining
            | Kind::StoreUnavailable
            | Kind::Unverifiable => code::UNAVAILABLE,
            Kind::Timeout => code::TIMEOUT,
            Kind::NoRoute => code::DOMAIN_NOT_SUPPORTED,
            Kind::UnknownUser => code::UNKNOWN_USER,
            Kind::SearchTooBroad => code::SEARCH_TOO_BROAD,
            Kind::Spoofed => code::ADDRESS_ERROR,
            Kind::Declined => code::BLOCKED,
            Kind::Internal => code::INTERNAL,
        }
    }

    /// The HTTP status when a whole POST is refused for this.
    pub fn http(self) -> StatusCode {
        match self {
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Kind::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Method => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::Overloaded
            | Kind::RateLimited
            | Kind::Draining
            | Kind::Unreachable
            | Kind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether and when to try again.
    pub fn retry(self) -> Retry {
        match self {
            Kind::Draining => Retry::After(RETRY_ELSEWHERE),
            Kind::Unreachable
            | Kind::Overloaded
            | Kind::RateLimited
            | Kind::Unverifiable
            | Kind::StoreUnavailable
            | Kind::Timeout => Retry::After(RETRY_LATER),
            _ => Retry::Never,
        }
    }

    /// The reason label of the metric that counts a refusal of this kind (closed set).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Malformed => "parse",
            Kind::TooLarge => "size",
            Kind::TooSlow => "slow",
            Kind::MediaType => "media",
            Kind::Method => "method",
            Kind::Forbidden | Kind::UnknownSession => "auth",
            Kind::NotSupported => "not-supported",
            Kind::InvalidTransaction => "transaction",
            Kind::InvalidUserId => "user-id",
            Kind::Unreachable => "unreachable",
            Kind::Overloaded => "overload",
            Kind::RateLimited => "rate",
            Kind::Draining => "draining",
            Kind::Timeout => "timeout",
            Kind::NoRoute => "no-route",
            Kind::UnknownUser => "relay",
            Kind::SearchTooBroad => "search",
            Kind::Spoofed => "spoof",
            Kind::Declined => "declined",
            Kind::Unverifiable => "unverified",
            Kind::StoreUnavailable => "store",
            Kind::Internal => "internal",
        }
    }
}

/// A refusal or failure: what, whose side, and the detail for the status description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Failure {
    /// What went wrong.
    pub kind: Kind,
    /// Whose side.
    pub side: Side,
    /// For the `StatusDescription` and the log.
    pub detail: Cow<'static, str>,
}

impl Failure {
    /// A failure of `kind` on `side`.
    pub fn new(kind: Kind, side: Side, detail: impl Into<Cow<'static, str>>) -> Failure {
        Failure {
            kind,
            side,
            detail: detail.into(),
        }
    }

    /// The gateway's own refusal (limits, policy, routing).
    pub fn local(kind: Kind, detail: impl Into<Cow<'static, str>>) -> Failure {
        Failure::new(kind, Side::Local, detail)
    }

    /// No in-flight slot left.
    pub fn overloaded() -> Failure {
        Failure::local(Kind::Overloaded, "gateway overloaded")
    }

    /// The gateway is shutting down.
    pub fn draining() -> Failure {
        Failure::local(Kind::Draining, "gateway is shutting down")
    }

    /// The SSP code.
    pub fn code(&self) -> u16 {
        self.kind.code()
    }

    /// The SSP status the requester gets.
    pub fn status(&self) -> Status {
        let mut s = Status::with(self.code(), self.detail.clone().into_owned());
        if let Retry::After(secs) = self.kind.retry()
            && self.code() == code::UNAVAILABLE
        {
            s.try_again = Some(secs);
        }
        s
    }

    /// The `Retry-After` of an HTTP refusal of a whole POST.
    pub fn retry_after(&self) -> Option<u32> {
        match self.kind.retry() {
            Retry::After(secs) if self.kind.http() == StatusCode::SERVICE_UNAVAILABLE => Some(secs),
            _ => None,
        }
    }
}

/// The status of a whole message refused before any transaction was read (with HTTP 400 or
/// 413): its parse error, classified.
impl From<&crate::ssp::ParseError> for Failure {
    fn from(e: &crate::ssp::ParseError) -> Failure {
        let kind = if e.is_too_large() {
            Kind::TooLarge
        } else {
            Kind::Malformed
        };
        Failure::new(kind, Side::Peer, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_carries_when_to_try_again() {
        for kind in [
            Kind::Unreachable,
            Kind::Overloaded,
            Kind::RateLimited,
            Kind::Draining,
            Kind::Unverifiable,
        ] {
            let st = Failure::local(kind, "x").status();
            assert_eq!(st.code, 503, "{kind:?}");
            assert!(st.try_again.is_some(), "{kind:?}");
        }
        assert_eq!(Failure::draining().status().try_again, Some(1));
        assert_eq!(Failure::draining().retry_after(), Some(1));
        assert_eq!(Failure::overloaded().retry_after(), Some(30));
        // A 504 may be retried, but is no HTTP refusal and carries no TryAgainTimeout.
        let t = Failure::local(Kind::Timeout, "x");
        assert_eq!(t.status().try_again, None);
        assert_eq!(t.retry_after(), None);
        assert_eq!(Failure::local(Kind::Spoofed, "x").status().code, 901);
    }

    #[test]
    fn http_refusals() {
        assert_eq!(Kind::TooLarge.http(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Kind::Malformed.http(), StatusCode::BAD_REQUEST);
        assert_eq!(Kind::UnknownSession.http(), StatusCode::BAD_REQUEST);
        assert_eq!(Kind::Forbidden.http(), StatusCode::FORBIDDEN);
        assert_eq!(Kind::Draining.http(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
