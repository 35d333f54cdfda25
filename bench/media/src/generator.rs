//! One benchmark step: N one-way G.711 streams through an engine for a fixed time.
//!
//! All streams leave from one sender socket (batched with `sendmmsg`, each datagram to its
//! stream's relay port) and arrive on one receiver socket (batched with `recvmmsg`): every
//! callee SDP advertises the same receiver address. Stream `i` is SSRC `i`; its packets
//! are spread evenly over the 20 ms period so the load is smooth. Each packet carries its
//! send time (`CLOCK_REALTIME`, taken just before the `sendmmsg`), and the added latency is
//! the kernel receive timestamp minus that.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::SockRef;
use tandem_ng::{Reply, Request};
use tandem_sip::sdp::SessionDescription;

const BATCH: usize = 64;
const PACKET: usize = 172;
const PERIOD: Duration = Duration::from_millis(20);
/// Sub-slots of the 20 ms period that the streams are spread over.
const SLOTS: u32 = 20;
/// Latency histogram resolution and range: 10 µs buckets up to 1 s.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 100_000;
const SOCKET_BUFFER: usize = 4 << 20;

/// Options of `generate`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Concurrent streams.
    #[arg(long)]
    streams: u32,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The engine's ng address; without it, the raw forwarder's fixed ports are used.
    #[arg(long)]
    ng: Option<SocketAddr>,
    /// Raw forwarder: its first port (stream i goes to first + 2i).
    #[arg(long, required_unless_present = "ng")]
    raw_first_port: Option<u16>,
    /// Address of the generator's sockets (and the engine's, for the raw forwarder).
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Port the receiver socket binds (the raw forwarder sends there).
    #[arg(long, default_value_t = 40000)]
    receive_port: u16,
    /// Processes of the engine, whose CPU time is read from /proc just before and after
    /// the traffic (call set-up is not counted).
    #[arg(long, value_delimiter = ',')]
    engine_pids: Vec<u32>,
}

/// Runs the step and prints one line of `key=value` results.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let sender = UdpSocket::bind((options.address, 0)).context("sender socket")?;
    let receiver =
        UdpSocket::bind((options.address, options.receive_port)).context("receiver socket")?;
    for socket in [&sender, &receiver] {
        let s = SockRef::from(socket);
        s.set_send_buffer_size(SOCKET_BUFFER)?;
        s.set_recv_buffer_size(SOCKET_BUFFER)?;
    }
    setsockopt(&receiver, sockopt::ReceiveTimestampns, &true)?;
    receiver.set_read_timeout(Some(Duration::from_millis(100)))?;

    let targets = match options.ng {
        Some(ng) => set_up_calls(
            ng,
            options.streams,
            sender.local_addr()?,
            receiver.local_addr()?,
        )?,
        None => {
            let first = options.raw_first_port.context("--raw-first-port")?;
            (0..options.streams)
                .map(|i| {
                    let port = u32::from(first) + 2 * i;
                    u16::try_from(port)
                        .map(|p| SocketAddr::new(options.address, p))
                        .context("raw ports beyond 65535")
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
    };

    let duration = Duration::from_secs(options.seconds);
    let engine_before = cpu_seconds(&options.engine_pids)?;
    let generator_before = own_cpu_seconds()?;
    let sending = AtomicBool::new(true);
    let (sent, receive) = std::thread::scope(|scope| {
        let receive = scope.spawn(|| receive_all(&receiver, options.streams, &sending));
        let sent = send_all(&sender, &targets, duration);
        // Packets still in flight get a moment to arrive.
        std::thread::sleep(Duration::from_millis(500));
        sending.store(false, Ordering::Relaxed);
        (sent, receive.join())
    });
    let engine_cpu = cpu_seconds(&options.engine_pids)? - engine_before;
    let generator_cpu = own_cpu_seconds()? - generator_before;
    let sent = sent?;
    let received = receive.map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;

    let offered = u64::from(options.streams) * 50 * options.seconds;
    let loss = 1.0 - received.packets as f64 / sent.packets.max(1) as f64;
    let achieved = sent.packets as f64
        / sent.elapsed.as_secs_f64()
        / (offered as f64 / duration.as_secs_f64());
    println!(
        "streams={} offered={} sent={} received={} loss={:.6} p50_us={} p99_us={} max_us={} \
         send_ratio={:.4} late_ticks={} generator_limited={} engine_cpu_s={:.3} \
         engine_us_per_packet={:.3} generator_cpu_s={:.3} generator_us_per_packet={:.3}",
        options.streams,
        offered,
        sent.packets,
        received.packets,
        loss.max(0.0),
        received.percentile(0.50),
        received.percentile(0.99),
        received.max_us,
        achieved,
        sent.late_ticks,
        u8::from(achieved < 0.99 || sent.packets < offered * 99 / 100),
        engine_cpu,
        engine_cpu * 1e6 / received.packets.max(1) as f64,
        generator_cpu,
        generator_cpu * 1e6 / sent.packets.max(1) as f64,
    );
    Ok(())
}

/// CPU seconds (user + system, all threads) of `pids`, from /proc/PID/stat.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let ticks_per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK unknown")? as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("engine process {pid} is gone"))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        for index in [11, 12] {
            ticks += fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .context("unexpected /proc/PID/stat")?;
        }
    }
    Ok(ticks as f64 / ticks_per_second)
}

fn own_cpu_seconds() -> anyhow::Result<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Offers and answers one call per stream; returns where each stream's packets go (the
/// caller-facing relay port).
fn set_up_calls(
    ng: SocketAddr,
    streams: u32,
    caller: SocketAddr,
    callee: SocketAddr,
) -> anyhow::Result<Vec<SocketAddr>> {
    let control = UdpSocket::bind((ng.ip(), 0))?;
    control.set_read_timeout(Some(Duration::from_secs(5)))?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut targets = Vec::with_capacity(usize::try_from(streams)?);
    let mut buffer = vec![0u8; 65_536];
    let mut cookie = 0u64;
    let mut request = |request: Request| -> anyhow::Result<SocketAddr> {
        cookie += 1;
        let cookie = format!("b{cookie}");
        control.send_to(&request.encode(&cookie), ng)?;
        let len = control.recv(&mut buffer).context("no ng reply")?;
        let (_, reply) = Reply::decode(buffer.get(..len).unwrap_or_default())?;
        if !reply.is_success() {
            bail!("ng {}: {:?}", request.command, reply.error_reason());
        }
        let sdp = SessionDescription::parse(reply.sdp().context("ng reply without SDP")?)?;
        let media = sdp.media().first().context("ng reply SDP without media")?;
        let ip: IpAddr = media
            .connection()
            .or_else(|| sdp.connection())
            .context("ng reply SDP without c=")?
            .address
            .parse()?;
        let port = media.media().port;
        Ok(SocketAddr::new(ip, port))
    };
    for i in 0..streams {
        let call_id = format!("bench-{nonce}-{i}");
        request(Request::offer(&call_id, "caller", sdp(caller, i)))?;
        let target = request(Request::answer(
            &call_id,
            "caller",
            "callee",
            sdp(callee, i),
        ))?;
        targets.push(target);
    }
    Ok(targets)
}

fn sdp(at: SocketAddr, session: u32) -> String {
    format!(
        "v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = at.ip(),
        port = at.port()
    )
}

struct Sent {
    packets: u64,
    elapsed: Duration,
    /// 1 ms ticks that started more than one period late.
    late_ticks: u64,
}

/// Sends every stream's packets for `duration`, one sub-slot of the period per millisecond.
fn send_all(
    socket: &UdpSocket,
    targets: &[SocketAddr],
    duration: Duration,
) -> anyhow::Result<Sent> {
    let streams = u32::try_from(targets.len())?;
    let tick = PERIOD / SLOTS;
    let ticks = u64::try_from(duration.as_micros() / tick.as_micros())?;
    let destinations: Vec<SockaddrStorage> =
        targets.iter().map(|t| SockaddrStorage::from(*t)).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut packets = vec![[0u8; PACKET]; BATCH];
    let mut addresses: Vec<Option<SockaddrStorage>> = vec![None; BATCH];
    let mut sent = 0u64;
    let mut late_ticks = 0u64;
    let start = Instant::now() + Duration::from_millis(50);
    for k in 0..ticks {
        let due = start + tick * u32::try_from(k % u64::from(u32::MAX))?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > PERIOD {
            late_ticks += 1;
        }
        let slot = u32::try_from(k % u64::from(SLOTS))?;
        let sequence = u16::try_from((k / u64::from(SLOTS)) % 65_536)?;
        // Streams whose offset in the period falls in this slot.
        let first = (slot * streams).div_ceil(SLOTS);
        let last = ((slot + 1) * streams).div_ceil(SLOTS);
        let mut stream = first;
        while stream < last {
            let count = usize::try_from((last - stream).min(BATCH as u32))?;
            let send_time = realtime_ns();
            for (j, (packet, address)) in packets
                .iter_mut()
                .zip(addresses.iter_mut())
                .take(count)
                .enumerate()
            {
                let ssrc = stream + u32::try_from(j)?;
                rtp_packet(packet, ssrc, sequence, send_time);
                *address = destinations.get(usize::try_from(ssrc)?).copied();
            }
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|j| [IoSlice::new(packets.get(j).map_or(&[][..], |p| &p[..]))]);
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter().take(count),
                &addresses[..count],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += u64::try_from(results.count())?,
                Err(e) => eprintln!("bench-media: sendmmsg: {e}"),
            }
            stream += u32::try_from(count)?;
        }
    }
    Ok(Sent {
        packets: sent,
        elapsed: start.elapsed().max(Duration::from_millis(1)),
        late_ticks,
    })
}

fn rtp_packet(packet: &mut [u8; PACKET], ssrc: u32, sequence: u16, send_time: u64) {
    packet[0] = 0x80;
    packet[1] = 0; // PCMU
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    packet[12..20].copy_from_slice(&send_time.to_be_bytes());
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Received {
    packets: u64,
    histogram: Vec<u64>,
    max_us: u64,
}

impl Received {
    fn percentile(&self, q: f64) -> u64 {
        let wanted = (self.packets as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= wanted.max(1) {
                return u64::try_from(i).unwrap_or(0) * BUCKET_US;
            }
        }
        self.max_us
    }
}

/// Receives until `sending` is lowered, recording each packet's added latency.
fn receive_all(socket: &UdpSocket, streams: u32, sending: &AtomicBool) -> anyhow::Result<Received> {
    let mut received = Received {
        packets: 0,
        histogram: vec![0; BUCKETS],
        max_us: 0,
    };
    let mut slots = vec![[0u8; 2048]; BATCH];
    let mut headers =
        MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec)));
    while sending.load(Ordering::Relaxed) {
        let mut iter = slots.iter_mut();
        let mut buffers: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                iter.next().map(|s| &mut s[..]).unwrap_or_default(),
            )]
        });
        let results = match recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            buffers.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(results) => results,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut arrivals = [(0u64, 0usize); BATCH];
        let mut count = 0;
        for (arrival, message) in arrivals.iter_mut().zip(results) {
            let stamp = message.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                    _ => None,
                })
            });
            let ns = stamp.map_or(0, |ts| {
                u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(ts.tv_nsec()).unwrap_or(0)
            });
            *arrival = (ns, message.bytes);
            count += 1;
        }
        for (slot, (arrival, len)) in slots.iter().zip(arrivals).take(count) {
            if len != PACKET
                || u32::from_be_bytes([slot[8], slot[9], slot[10], slot[11]]) >= streams
            {
                continue;
            }
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&slot[12..20]);
            let latency_us = arrival.saturating_sub(u64::from_be_bytes(sent)) / 1_000;
            received.packets += 1;
            received.max_us = received.max_us.max(latency_us);
            let bucket = usize::try_from(latency_us / BUCKET_US).unwrap_or(BUCKETS - 1);
            if let Some(count) = received.histogram.get_mut(bucket.min(BUCKETS - 1)) {
                *count += 1;
            }
        }
    }
    Ok(received)
}
