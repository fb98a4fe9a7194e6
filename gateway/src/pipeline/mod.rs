//! The request path, as stages. [`handle`](handle::handle) reads top to bottom as the whole
//! path for every listener and both directions (start reading there):
//!
//! ingress → identify → admit → (work: kept durably, for asynchronous senders) → relay
//! (policy → normalize → route → fan-out: forward over the links, merge) → answer
//! (correlation of the far sides' answers with what waits for them). A plain relay (a
//! synchronous sender's message, notification or report to one SSP destination) takes the
//! same stages on the fast path (`fast`), its bytes spliced instead of parsed and written.
//!
//! Each stage is one module; they share the [`Gateway`] state and know nothing of the
//! listeners, which only hand POSTs to [`handle`](handle::handle).

mod admit;
pub(crate) mod answer;
mod fanout;
mod fast;
mod handle;
mod identify;
mod ingress;
mod keep;
mod lease;
mod names;
mod normalize;
mod policy;
mod relay;
pub mod route;
mod state;
mod work;

pub(crate) use handle::translated;
pub use handle::{Listener, handle};
pub use state::Gateway;
pub(crate) use work::{housekeeping, release, renew, take_over};
