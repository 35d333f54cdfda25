//! Any datagram: parsing, every typed view, validation and printing must not panic, and a
//! parsed message must print to bytes that parse back to the same message.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tandem_sip::parse::{MAX_DATAGRAM_SIZE, parse_datagram};
use tandem_sip::validate::{validate_request, validate_response};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse_datagram(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (msg.call_id(), msg.cseq(), msg.vias(), msg.from(), msg.to());
    let _ = (
        msg.contacts(),
        msg.routes(),
        msg.max_forwards(),
        msg.content_type(),
    );
    let _ = tandem_sip::transaction::transaction_key(&msg);
    let _ = if msg.is_request() {
        validate_request(&msg)
    } else {
        validate_response(&msg)
    };
    let printed = msg.to_bytes();
    if printed.len() <= MAX_DATAGRAM_SIZE {
        let mut again = match parse_datagram(printed) {
            Ok(m) => m,
            Err(e) => panic!("printed form does not parse: {e}"),
        };
        let mut msg = msg;
        again.headers.remove("Content-Length");
        msg.headers.remove("Content-Length");
        assert_eq!(again, msg);
    }
});
