//! A small reordering jitter buffer for transcoded streams: packets come out in sequence-number
//! order at once when they arrive in order; a gap is held open until `depth` later packets
//! have arrived, then declared lost so the decoder conceals it. Late and duplicate packets
//! are dropped. No clock: delay is counted in packets.

use std::collections::BTreeMap;

/// A sequence jump larger than this is a restarted stream, not loss.
const RESTART: i16 = 200;

/// What the buffer releases, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot<T> {
    /// The next packet.
    Packet(T),
    /// A packet that never came: conceal it.
    Lost,
}

/// Reorders packets by RTP sequence number.
#[derive(Clone, Debug)]
pub struct JitterBuffer<T> {
    depth: usize,
    expected: Option<u16>,
    /// Held packets, keyed by their distance from `expected`.
    pending: BTreeMap<u16, (u16, T)>,
    /// Late or duplicate packets dropped.
    dropped: u64,
}

impl<T> JitterBuffer<T> {
    /// A buffer that waits for a missing packet while up to `depth` later ones arrive.
    pub fn new(depth: usize) -> Self {
        Self {
            depth: depth.max(1),
            expected: None,
            pending: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Late or duplicate packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes packet `seq`, appending what can be released to `out`.
    pub fn push(&mut self, seq: u16, packet: T, out: &mut Vec<Slot<T>>) {
        let expected = *self.expected.get_or_insert(seq);
        let distance = seq.wrapping_sub(expected) as i16;
        if !(-RESTART..=RESTART).contains(&distance) {
            // A new stream: release what is held, then start over at this packet.
            self.release_all(out);
            self.expected = Some(seq);
        } else if distance < 0 || self.pending.contains_key(&(distance as u16)) {
            self.dropped += 1;
            return;
        }
        let expected = self.expected.unwrap_or(seq);
        self.pending
            .insert(seq.wrapping_sub(expected), (seq, packet));
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<Slot<T>>) {
        loop {
            if let Some((_, packet)) = self.pending.remove(&0) {
                out.push(Slot::Packet(packet));
            } else if self.pending.len() > self.depth {
                out.push(Slot::Lost);
            } else {
                return;
            }
            self.advance();
        }
    }

    /// Moves `expected` on by one, re-keying the held packets.
    fn advance(&mut self) {
        let expected = self.expected.unwrap_or(0).wrapping_add(1);
        self.expected = Some(expected);
        let held = std::mem::take(&mut self.pending);
        self.pending = held
            .into_values()
            .map(|(seq, packet)| (seq.wrapping_sub(expected), (seq, packet)))
            .collect();
    }

    fn release_all(&mut self, out: &mut Vec<Slot<T>>) {
        out.extend(
            std::mem::take(&mut self.pending)
                .into_values()
                .map(|(_, packet)| Slot::Packet(packet)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(buffer: &mut JitterBuffer<u16>, seqs: &[u16]) -> Vec<Slot<u16>> {
        let mut out = Vec::new();
        for &seq in seqs {
            buffer.push(seq, seq, &mut out);
        }
        out
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let mut b = JitterBuffer::new(3);
        let out = feed(&mut b, &[10, 11, 12]);
        assert_eq!(
            out,
            vec![Slot::Packet(10), Slot::Packet(11), Slot::Packet(12)]
        );
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut b = JitterBuffer::new(3);
        let out = feed(&mut b, &[65534, 0, 65535, 1]);
        assert_eq!(
            out,
            vec![
                Slot::Packet(65534),
                Slot::Packet(65535),
                Slot::Packet(0),
                Slot::Packet(1)
            ]
        );
    }

    #[test]
    fn a_gap_becomes_a_loss_after_depth_packets_and_late_ones_are_dropped() {
        let mut b = JitterBuffer::new(2);
        let out = feed(&mut b, &[1, 3, 4]);
        assert_eq!(out, vec![Slot::Packet(1)]);
        let out = feed(&mut b, &[5]);
        assert_eq!(
            out,
            vec![
                Slot::Lost,
                Slot::Packet(3),
                Slot::Packet(4),
                Slot::Packet(5)
            ]
        );
        assert!(feed(&mut b, &[2, 5]).is_empty());
        assert_eq!(b.dropped(), 2);
    }

    #[test]
    fn a_jump_restarts_the_stream() {
        let mut b = JitterBuffer::new(3);
        let out = feed(&mut b, &[1, 3, 5000, 5001]);
        assert_eq!(
            out,
            vec![
                Slot::Packet(1),
                Slot::Packet(3),
                Slot::Packet(5000),
                Slot::Packet(5001)
            ]
        );
    }
}
