//! Sans-IO SIP: zero-copy message parsing and printing, SDP, transactions.
//!
//! * [`parse`] frames and parses messages from datagrams and streams into [`SipMessage`]s whose
//!   parts are slices of the received buffer;
//! * [`headers`] keeps header fields raw and [`typed`] parses them on demand (Via, CSeq,
//!   From/To/Contact, …); [`uri`] reads SIP, SIPS and tel URIs;
//! * [`validate`] applies the RFC 3261 request checks and names the response code;
//!   [`response`] builds responses;
//! * [`transaction`] holds the RFC 3261 §17 state machines, driven by the caller's clock;
//! * [`dialog`] keeps RFC 3261 §12 dialog state and builds in-dialog requests and CANCEL;
//!   [`extensions`] reads the option tags, session-timer and reliable-provisional headers;
//! * [`digest`] reads, answers and verifies digest authentication (RFC 2617, RFC 8760);
//! * [`ids`] makes branches, tags and Call-IDs; [`sdp`] handles session descriptions.
//!
//! Nothing here performs I/O or reads the time.

pub mod dialog;
pub mod digest;
pub mod extensions;
pub mod headers;
pub mod ids;
pub mod message;
pub mod params;
pub mod parse;
pub mod response;
pub mod sdp;
mod syntax;
pub mod transaction;
pub mod typed;
pub mod uri;
pub mod validate;

pub use headers::Headers;
pub use message::{Method, RequestLine, SipMessage, StartLine, StatusLine};
pub use parse::{ParseError, StreamFramer, parse_datagram};
pub use typed::{CSeq, HeaderError, MediaType, NameAddr, Via};
pub use uri::SipUri;
