//! The raw baseline: one thread, one epoll set, N sockets; every readable socket is drained
//! with `recvmmsg` and its datagrams leave from the same socket with one `sendmmsg` to the
//! single destination. No session table, no statistics: the cost of the kernel stack alone.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::Context as _;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

const BATCH: usize = 32;
const SLOT: usize = 2048;

/// Options of `forward`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Address the sockets bind.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// First port; sockets bind every second port from here (RTP ports).
    #[arg(long)]
    first_port: u16,
    /// Number of sockets.
    #[arg(long)]
    count: u16,
    /// Where every datagram goes.
    #[arg(long)]
    to: SocketAddr,
}

/// Forwards until killed.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut sockets = Vec::with_capacity(usize::from(options.count));
    for i in 0..options.count {
        let port = options
            .first_port
            .checked_add(i.saturating_mul(2))
            .context("port range beyond 65535")?;
        let socket = UdpSocket::bind((options.address, port))
            .with_context(|| format!("cannot bind port {port}"))?;
        socket.set_nonblocking(true)?;
        epoll.add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, u64::from(i)))?;
        sockets.push(socket);
    }
    let mut slots = vec![[0u8; SLOT]; BATCH];
    let mut lengths = [0usize; BATCH];
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let destinations = [Some(SockaddrStorage::from(options.to)); BATCH];
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        let ready = epoll.wait(&mut events, EpollTimeout::NONE)?;
        for event in events.iter().take(ready) {
            let Some(socket) = usize::try_from(event.data())
                .ok()
                .and_then(|i| sockets.get(i))
            else {
                continue;
            };
            let count = {
                let mut iter = slots.iter_mut();
                let mut buffers: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                    [IoSliceMut::new(
                        iter.next().map(|s| &mut s[..]).unwrap_or_default(),
                    )]
                });
                match recvmmsg(
                    socket.as_raw_fd(),
                    &mut receive_headers,
                    buffers.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        let mut n = 0;
                        for (length, message) in lengths.iter_mut().zip(results) {
                            *length = message.bytes;
                            n += 1;
                        }
                        n
                    }
                    Err(_) => 0,
                }
            };
            if count == 0 {
                continue;
            }
            let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                let len = lengths.get(i).copied().unwrap_or(0);
                [IoSlice::new(
                    slots.get(i).and_then(|s| s.get(..len)).unwrap_or_default(),
                )]
            });
            // A full send queue drops the rest, as a relay would.
            let _ = sendmmsg(
                socket.as_raw_fd(),
                &mut send_headers,
                slices.iter().take(count),
                &destinations[..count],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
        }
    }
}
