//! SSP status codes the gateway produces or interprets (`PROTOCOL.md` §4 and §7).

/// Success.
pub const OK: u16 = 200;
/// Partially successful: one `DetailedResult` per failed ID.
pub const PARTIAL: u16 = 201;
/// Malformed message, missing transactionID, DOCTYPE/entities.
pub const BAD_REQUEST: u16 = 400;
/// Service not supported by the route.
pub const NOT_SUPPORTED: u16 = 405;
/// Invalid transaction (unknown or forged transaction ID in a response).
pub const INVALID_TRANSACTION: u16 = 420;
/// Invalid user ID (Baraza's answer for unknown recipients).
pub const INVALID_USER_ID: u16 = 427;
/// Internal error.
pub const INTERNAL: u16 = 500;
/// Peer, DNS or core unreachable, or rate limit hit (with `TryAgainTimeout`).
pub const UNAVAILABLE: u16 = 503;
/// The far side did not answer within the deadline.
pub const TIMEOUT: u16 = 504;
/// No route to the destination's network.
pub const DOMAIN_NOT_SUPPORTED: u16 = 516;
/// Unknown user: inbound request for an MSISDN that is not ours.
pub const UNKNOWN_USER: u16 = 531;
/// Search too broad (wildcards or partial numbers refused).
pub const SEARCH_TOO_BROAD: u16 = 537;
/// The recipient declined (blocked) it.
pub const BLOCKED: u16 = 532;
/// Invalid or expired SSP session.
pub const INVALID_SESSION: u16 = 604;
/// Multiple errors (Baraza's envelope for per-ID errors).
pub const MULTIPLE_ERRORS: u16 = 900;
/// The originator does not belong to the authenticated peer.
pub const ADDRESS_ERROR: u16 = 901;

/// The usual description for a code.
pub fn description(code: u16) -> &'static str {
    match code {
        200 => "Successful",
        201 => "Partially successful",
        400 => "Bad request",
        405 => "Service not supported",
        420 => "Invalid transaction",
        427 => "Invalid user ID",
        500 => "Internal server error",
        501 => "Not implemented",
        503 => "Service unavailable",
        504 => "Timeout",
        516 => "Domain not supported",
        531 => "Unknown user",
        532 => "Recipient blocked the message",
        537 => "Too broad search criteria",
        604 => "Invalid session",
        900 => "Multiple errors",
        901 => "General address error",
        _ => "Error",
    }
}
