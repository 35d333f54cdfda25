//! The end-to-end tests, one module per area, in one test binary: one link of the harness, the
//! TLS and WebSocket clients and the codecs instead of one per file. cargo-nextest (what
//! `scripts/test-e2e` runs) still starts every test in a process, and a network namespace, of its
//! own; select a module's tests with `-E 'test(/^cdr::/)'`.

mod admission;
mod advertised_address;
mod cancel;
mod cdr;
mod dialogs;
mod digest_auth;
mod dns;
mod dtmf;
mod header_rules;
mod kamailio_rtpengine;
mod local_platform;
mod media_loss;
mod outbound_registration;
mod rate_deck;
mod registrar;
mod secondary_network;
mod secure_transports;
mod session_timers;
mod srtp;
mod topology;
mod tracing;
mod transcoding;
mod transfer;
mod trunk_routing;
