//! Call control: the B2BUA call bridging the caller-facing leg (A) and the carrier-facing leg
//! (B).
//!
//! [`core`] is the call as a sans-IO state machine (dialogs, transactions, timers, media
//! requests and accounting as inputs and outputs), with call transfer in [`core::transfer`];
//! [`driver`] runs the calls of the pod in a few shards and carries out their outputs; [`leg`]
//! holds one side's dialog and builds its requests.

pub mod core;
pub mod driver;
pub mod leg;
#[cfg(test)]
mod scenarios;

pub use self::core::{Settings, random_token};
pub use driver::{CallContext, Calls};
