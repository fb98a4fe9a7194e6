//! Admit: a request takes an in-flight slot, and a peer's request a token of that peer's
//! rate, before any task is spawned for it, so overload or a flood costs no task per request.

use tokio::sync::OwnedSemaphorePermit;

use super::state::Gateway;
use crate::error::{Failure, Kind};
use crate::links::Origin;

/// A request's in-flight slot, held until its answer is ready.
pub(crate) type Slot = OwnedSemaphorePermit;

/// A slot for one more request from `origin`, within its rate.
pub(crate) fn slot(gw: &Gateway, origin: &Origin) -> Result<Slot, Failure> {
    let slot = gw
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| Failure::overloaded())?;
    if let Origin::Peer(peer) = origin
        && peer.limiter.check().is_err()
    {
        gw.metrics().refused.with_label_values(&["rate"]).inc();
        return Err(Failure::local(
            Kind::RateLimited,
            format!("rate limit for {} exceeded", peer.cfg.domain),
        ));
    }
    Ok(slot)
}
