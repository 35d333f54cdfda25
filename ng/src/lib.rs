//! The rtpengine "ng" control protocol, without I/O: a bencode codec, datagram framing
//! (`<cookie> <bencoded dictionary>`), typed requests and replies, and the `query` and
//! `statistics` report shapes.
//!
//! The server side (media-pod) parses datagrams with [`Request::decode`] and answers with
//! [`Reply`]; the client side (signaling-pod) builds requests with [`Request::offer`] and
//! friends and reads answers with [`Reply::decode`].
//!
//! ```
//! use tandem_ng::{Reply, Request};
//!
//! let wire = Request::ping().encode("5323_1");
//! assert_eq!(wire, b"5323_1 d7:command4:pinge");
//! let (cookie, reply) = Reply::decode(b"5323_1 d6:result4:ponge").unwrap();
//! assert_eq!(cookie, "5323_1");
//! assert!(reply.is_success());
//! ```

pub mod bencode;
pub mod error;
pub mod frame;
pub mod reply;
pub mod report;
pub mod request;

pub use bencode::{BencodeError, BencodeErrorKind, Dictionary, Limits, Value, decode, encode};
pub use error::NgError;
pub use frame::{Cookie, frame, parse_datagram, split_cookie};
pub use reply::{Reply, ReplyResult};
pub use report::{
    CallReport, MediaReport, MosReport, PacketStats, SsrcReport, Statistics, StreamReport,
    TagReport,
};
pub use request::{Command, Ice, ReceivedFrom, Replace, Request};
