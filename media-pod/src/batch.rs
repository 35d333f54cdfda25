//! Batched datagram I/O for the relay workers: one `recvmmsg` fills up to [`BATCH`]
//! datagrams, and the datagrams forwarded from the same local port leave in one `sendmmsg`.
//! nix's safe wrappers carry the system calls; the headers and buffers are allocated once per
//! worker, so the packet path allocates nothing.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest datagram received whole (a jumbo frame); longer ones arrive truncated and are
/// dropped as malformed.
pub const SLOT: usize = 9_000;

/// What one slot holds after a receive.
#[derive(Clone, Copy, Debug, Default)]
struct Received {
    len: usize,
    source: Option<SocketAddr>,
    truncated: bool,
}

/// A worker's receive and send buffers.
pub struct Batch {
    slots: Box<[[u8; SLOT]]>,
    received: [Received; BATCH],
    count: usize,
    receive_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    destinations: [Option<SockaddrStorage>; BATCH],
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Empty buffers for [`BATCH`] datagrams.
    pub fn new() -> Self {
        Self {
            slots: vec![[0u8; SLOT]; BATCH].into_boxed_slice(),
            received: [Received::default(); BATCH],
            count: 0,
            receive_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            destinations: [None; BATCH],
        }
    }

    /// Receives what `socket` has queued, up to [`BATCH`] datagrams, without blocking;
    /// returns how many (an empty queue is `WouldBlock`).
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.count = 0;
        let mut slots = self.slots.iter_mut();
        let mut buffers: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots.next().map(|s| &mut s[..]).unwrap_or_default(),
            )]
        });
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.receive_headers,
            buffers.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for (slot, message) in self.received.iter_mut().zip(results) {
            *slot = Received {
                len: message.bytes,
                source: message.address.as_ref().and_then(socket_addr),
                truncated: message.flags.contains(MsgFlags::MSG_TRUNC),
            };
            self.count += 1;
        }
        Ok(self.count)
    }

    /// Datagrams received by the last [`Self::receive`].
    pub fn len(&self) -> usize {
        self.count
    }

    /// The `index`th datagram received and its source; `None` for a truncated datagram or
    /// one without a usable source address.
    pub fn datagram(&self, index: usize) -> Option<(&[u8], SocketAddr)> {
        if index >= self.count {
            return None;
        }
        let received = self.received.get(index)?;
        if received.truncated {
            return None;
        }
        let source = received.source?;
        let data = self.slots.get(index)?.get(..received.len)?;
        Some((data, source))
    }

    /// Lets `f` rewrite the `index`th datagram in place: it gets the datagram's whole slot
    /// (the datagram and the room after it) and its length, which it may change. `None` for
    /// a datagram [`Self::datagram`] would not return.
    pub fn rewrite<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut [u8], &mut usize) -> R,
    ) -> Option<R> {
        if index >= self.count {
            return None;
        }
        let received = self.received.get_mut(index)?;
        if received.truncated || received.source.is_none() {
            return None;
        }
        let slot = self.slots.get_mut(index)?;
        Some(f(&mut slot[..], &mut received.len))
    }

    /// Sends the received datagrams listed in `run` (indices and destinations) from
    /// `socket`; returns how many the kernel took.
    pub fn send(&mut self, socket: &impl AsRawFd, run: &[Forward]) -> usize {
        let mut sent = 0;
        for chunk in run.chunks(BATCH) {
            let mut slices: [[IoSlice<'_>; 1]; BATCH] = [[IoSlice::new(&[])]; BATCH];
            for ((slice, destination), forward) in
                slices.iter_mut().zip(&mut self.destinations).zip(chunk)
            {
                let data = self
                    .slots
                    .get(forward.index)
                    .and_then(|s| s.get(..self.received.get(forward.index).map_or(0, |r| r.len)))
                    .unwrap_or_default();
                *slice = [IoSlice::new(data)];
                *destination = Some(SockaddrStorage::from(forward.to));
            }
            let count = chunk.len();
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut self.send_headers,
                slices.iter().take(count),
                &self.destinations[..count],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(results) => {
                    let taken = results.count();
                    sent += taken;
                    if taken < count {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sendmmsg failed");
                    break;
                }
            }
        }
        sent
    }
}

/// One datagram of a batch to forward.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    /// Its index in the batch.
    pub index: usize,
    /// The local port it leaves from.
    pub from_port: u16,
    /// Where it goes.
    pub to: SocketAddr,
    /// Whether it is RTCP (for the counters).
    pub rtcp: bool,
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn receives_and_sends_batches_over_loopback() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut batch = Batch::new();
        assert_eq!(
            batch.receive(&relay).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            sender
                .send_to(&[i; 20], relay.local_addr().unwrap())
                .unwrap();
        }
        let mut forwards = Vec::new();
        let mut total = 0;
        while total < 40 {
            let n = batch.receive(&relay).unwrap();
            assert!(n <= BATCH);
            forwards.clear();
            for index in 0..n {
                let (data, source) = batch.datagram(index).unwrap();
                assert_eq!(source, sender.local_addr().unwrap());
                assert_eq!(data, &[u8::try_from(total + index).unwrap(); 20]);
                forwards.push(Forward {
                    index,
                    from_port: 0,
                    to: receiver.local_addr().unwrap(),
                    rtcp: false,
                });
            }
            assert_eq!(batch.send(&relay, &forwards), n);
            total += n;
        }
        let mut buffer = [0u8; 64];
        for i in 0..40u8 {
            let (len, from) = receiver.recv_from(&mut buffer).unwrap();
            assert_eq!(from, relay.local_addr().unwrap());
            assert_eq!(&buffer[..len], &[i; 20]);
        }
    }

    #[test]
    fn oversized_datagrams_are_flagged() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&vec![7u8; SLOT + 100], relay.local_addr().unwrap())
            .unwrap();
        sender
            .send_to(&[1, 2, 3], relay.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = Batch::new();
        assert_eq!(batch.receive(&relay).unwrap(), 2);
        assert!(batch.datagram(0).is_none());
        assert_eq!(batch.datagram(1).unwrap().0, &[1, 2, 3]);
    }
}
