//! What SRTP adds to a relayed G.711 packet (20 ms, 160-byte payload), per suite: the
//! unprotect of the packet from an SRTP party plus the protect towards another (re-keying),
//! and each half alone (RTP<->SRTP bridging pays one). Prints nanoseconds per packet on one
//! core; run with `cargo run --release -p tandem-srtp --example cost`.

use std::hint::black_box;
use std::time::Instant;

use tandem_srtp::{Context, MasterKey, Suite};

const PACKETS: u32 = 200_000;

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x08];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("suite                      protect ns  unprotect ns  re-key ns (per packet)");
    for suite in Suite::ALL {
        let a = MasterKey::generate(suite).map_err(|e| e.to_string())?;
        let b = MasterKey::generate(suite).map_err(|e| e.to_string())?;
        let (mut sender, mut relay_in) = (Context::new(&a), Context::new(&a));
        let mut relay_out = Context::new(&b);
        // Pre-protect the inbound stream so only the relay's work is timed.
        let mut wire = Vec::with_capacity(PACKETS as usize);
        for i in 0..PACKETS {
            let plain = packet(i as u16);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 32, 0);
            let len = sender
                .protect_rtp(&mut buf, plain.len())
                .map_err(|e| e.to_string())?;
            buf.truncate(len);
            wire.push(buf);
        }

        let mut buf = vec![0u8; 256];
        let mut unprotect_ns = 0u128;
        let mut protect_ns = 0u128;
        for srtp in &wire {
            buf[..srtp.len()].copy_from_slice(srtp);
            let t = Instant::now();
            let len = relay_in
                .unprotect_rtp(&mut buf, srtp.len())
                .map_err(|e| e.to_string())?;
            let mid = Instant::now();
            let len = relay_out
                .protect_rtp(&mut buf, len)
                .map_err(|e| e.to_string())?;
            let end = Instant::now();
            black_box(len);
            unprotect_ns += (mid - t).as_nanos();
            protect_ns += (end - mid).as_nanos();
        }
        let n = u128::from(PACKETS);
        println!(
            "{:<26} {:>10} {:>13} {:>10}",
            suite.name(),
            protect_ns / n,
            unprotect_ns / n,
            (protect_ns + unprotect_ns) / n
        );
    }
    Ok(())
}
