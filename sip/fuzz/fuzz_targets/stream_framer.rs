//! Any byte stream, fed in two pieces: the framer must not panic or loop.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_sip::parse::StreamFramer;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut framer = StreamFramer::new(16 * 1024);
    let mut produced = 0usize;
    for piece in [&data[..split], &data[split..]] {
        framer.push(piece);
        while framer.next_message().is_some() {
            produced += 1;
            assert!(produced <= data.len() + 1);
        }
    }
});
