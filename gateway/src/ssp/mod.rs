//! The SSP message model: XML codec, typed envelope and primitives, user IDs, status codes.

pub mod answer;
pub mod common;
pub mod ids;
pub mod message;
pub mod primitives;
pub mod splice;
mod stack;
pub mod status;
mod swar;
pub mod walk;
pub mod xml;

pub use common::{
    ContentData, DetailedResult, Entity, EntityKind, Ext, MessageInfo, MetaInfo, Party,
    PresenceValue, Status,
};
pub use ids::{E164, NumberPlan, WvId, WvIdRef};
pub use message::{
    Body, Codec, Message, Mode, NS_WV_SSP_13, ParseError, Session, SetupTransaction, Transaction,
};
pub use primitives::{Primitive, SetupPrimitive};
pub use walk::{RouteBy, Slot};

#[cfg(test)]
mod tests;
