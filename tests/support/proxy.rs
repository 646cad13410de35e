//! A fault-injecting TCP proxy between serena and the real broker, for tests: it forwards
//! bytes both ways and, on command from the test while traffic flows, cuts every connection,
//! cuts one in the middle of a frame, stalls a direction (sockets stay open, nothing moves,
//! so heartbeats starve), adds latency, or refuses new connections.
//!
//! A test starts a [`Proxy`] (it listens on an ephemeral port of 127.0.0.1 and forwards to
//! [`broker_addr`](crate::broker_addr)), points the client at [`Proxy::client_config`], and
//! pulls the levers on the handle. Dropping the handle stops the accept loop and every
//! connection task with it: both sockets of every connection close, nothing outlives it.
//!
//! ```text
//!  serena ──TCP──► Proxy 127.0.0.1:<port> ──TCP──► broker_addr()
//!
//!  one task per connection, two pumps in it:
//!   client ─read─► [chunk, read at t] ─► wait t+latency ─► wait while stalled ─► frame ─► server
//!   client ◄─ frame ◄─ wait while stalled ◄─ wait t+latency ◄─ [chunk, read at t] ◄─read─ server
//!                                                              tracker
//!  Proxy (the handle) ──watch: stalls, latencies, cut-all epoch, refusing──► every task
//!                     ──armed mid-frame cut (one per direction)──► the first pump that meets
//!                       a frame at least `min_payload` long: it forwards the frame's header and
//!                       half its payload, reports a CutReport, and the connection closes.
//! ```
//!
//! The frame tracker follows the AMQP 0-9-1 framing of each direction (the client's 8-byte
//! protocol header first, then frames of a 7-byte header — type, channel, payload size — the
//! payload and the frame-end octet), so a cut lands inside a frame, never between two.
//! A stalled direction stops reading as well as writing, so the sender's socket buffers fill
//! as they would behind a dead link. A cut closes the sockets (FIN to both ends).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serena::ConnectionConfig;
use serena::proto::frame::{FRAME_HEADER_SIZE, PROTOCOL_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest read a pump makes at once.
const READ_CHUNK: usize = 64 * 1024;

/// Chunks a pump holds between reading and writing (what latency keeps in flight).
const QUEUE_CHUNKS: usize = 256;

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (serena) to the server (the broker).
    ClientToServer,
    /// From the server (the broker) to the client (serena).
    ServerToClient,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];

    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// What a mid-frame cut did, reported once it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// When the partial frame had been written and the connection was about to close.
    pub at: std::time::Instant,
    /// The direction of the cut frame.
    pub direction: Direction,
    /// The frame's type octet (1 method, 2 content header, 3 body, 8 heartbeat).
    pub frame_type: u8,
    /// The frame's channel.
    pub channel: u16,
    /// The payload size the frame's header announced.
    pub payload_size: u32,
    /// Bytes of that frame that went through (its header and half its payload).
    pub forwarded: usize,
}

/// Counters of a proxy's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted and connected to the server.
    pub connections: u64,
    /// Of those, the ones still open.
    pub open: u64,
    /// Connections turned away while refusing.
    pub refused: u64,
    /// Connections closed by [`Proxy::cut_all`] or a mid-frame cut.
    pub cut: u64,
    /// Bytes forwarded from clients to the server.
    pub to_server: u64,
    /// Bytes forwarded from the server to clients.
    pub to_client: u64,
}

/// What every connection task watches.
#[derive(Debug, Clone, Default)]
struct Settings {
    stalled: [bool; 2],
    latency: [Duration; 2],
    /// Bumped by `cut_all`: connections opened under an older value close.
    cut_epoch: u64,
    refusing: bool,
}

/// A mid-frame cut waiting for a frame big enough.
struct ArmedCut {
    min_payload: u32,
    report: oneshot::Sender<CutReport>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    bytes: [AtomicU64; 2],
}

struct Shared {
    upstream: String,
    settings: watch::Sender<Settings>,
    armed: Mutex<[Option<ArmedCut>; 2]>,
    counters: Counters,
}

/// A running proxy. Every method takes effect at once on the connections open now and on
/// later ones; dropping the handle closes them all.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it drops them, and
        // each one's sockets with it.
        self.accept.abort();
    }
}

impl Proxy {
    /// A proxy to the test broker ([`broker_addr`](crate::broker_addr)).
    pub async fn start() -> io::Result<Proxy> {
        Proxy::to(crate::broker_addr()).await
    }

    /// A proxy to `upstream` (`host:port`), listening on an ephemeral port of 127.0.0.1.
    pub async fn to(upstream: impl Into<String>) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.into(),
            settings: watch::channel(Settings::default()).0,
            armed: Mutex::new([None, None]),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The default client configuration, pointed at the proxy and named `name` (the name the
    /// broker lists the connection under).
    pub fn client_config(&self, name: &str) -> ConnectionConfig {
        ConnectionConfig::default()
            .with_host(self.addr.ip().to_string())
            .with_port(self.addr.port())
            .with_connection_name(Some(name.to_owned()))
    }

    /// Closes every open connection now (both sockets). New connections are accepted as
    /// before.
    pub fn cut_all(&self) {
        self.shared.settings.send_modify(|s| s.cut_epoch += 1);
    }

    /// Arms a cut inside the next frame going `direction` whose payload is at least
    /// `min_payload` bytes: its header and half its payload are forwarded, then that
    /// connection closes. The receiver gets the [`CutReport`] once it happened (an error if
    /// the proxy went first). A new call replaces a cut armed earlier in that direction.
    pub fn cut_mid_frame(
        &self,
        direction: Direction,
        min_payload: u32,
    ) -> oneshot::Receiver<CutReport> {
        let (report, rx) = oneshot::channel();
        lock(&self.shared.armed)[direction.index()] = Some(ArmedCut {
            min_payload,
            report,
        });
        rx
    }

    /// Stops forwarding in `direction`: nothing is read or written that way until
    /// [`resume`](Self::resume), and the sockets stay open.
    pub fn stall(&self, direction: Direction) {
        self.shared
            .settings
            .send_modify(|s| s.stalled[direction.index()] = true);
    }

    /// Forwards in `direction` again; what was held back goes first.
    pub fn resume(&self, direction: Direction) {
        self.shared
            .settings
            .send_modify(|s| s.stalled[direction.index()] = false);
    }

    /// Delays every chunk going `direction` by `latency` (zero for none) from the moment it
    /// was read. Chunks keep their order; many are in flight at once, as on a long link.
    pub fn set_latency(&self, direction: Direction, latency: Duration) {
        self.shared
            .settings
            .send_modify(|s| s.latency[direction.index()] = latency);
    }

    /// While `refusing`, new connections are accepted and closed at once, before a byte
    /// is forwarded (as a broker that is down, seen through a load balancer). Open
    /// connections are left alone.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.settings.send_modify(|s| s.refusing = refusing);
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyStats {
            connections: get(&c.connections),
            open: get(&c.open),
            refused: get(&c.refused),
            cut: get(&c.cut),
            to_server: get(&c.bytes[0]),
            to_client: get(&c.bytes[1]),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    connections.spawn(serve(socket, shared.clone()));
                }
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its source closed (or failed) and everything read was forwarded.
    Drained,
    /// Its destination failed.
    Broken,
    /// It cut a frame in the middle.
    Cut,
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut settings = shared.settings.subscribe();
    let (epoch, refusing) = {
        let s = settings.borrow_and_update();
        (s.cut_epoch, s.refusing)
    };
    let counters = &shared.counters;
    if refusing {
        counters.refused.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let Ok(server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.connections.fetch_add(1, Ordering::SeqCst);
    counters.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(&counters.open);

    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        Direction::ClientToServer,
        &shared,
    );
    let down = pump(
        server_read,
        client_write,
        Direction::ServerToClient,
        &shared,
    );
    let cut_all = settings.wait_for(|s| s.cut_epoch != epoch);
    tokio::pin!(up, down, cut_all);
    let (mut up_done, mut down_done) = (false, false);
    // Both directions drain on their own (a FIN is passed on as a FIN); a cut or a broken
    // socket ends the connection at once, dropping all four halves.
    while !(up_done && down_done) {
        let end = tokio::select! {
            end = &mut up, if !up_done => { up_done = true; end }
            end = &mut down, if !down_done => { down_done = true; end }
            _ = &mut cut_all => End::Cut,
        };
        match end {
            End::Drained => {}
            End::Broken => return,
            End::Cut => {
                counters.cut.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Moves bytes from `src` to `dst` under the proxy's settings until `src` ends, `dst` fails,
/// or an armed cut fires.
async fn pump(
    src: OwnedReadHalf,
    dst: OwnedWriteHalf,
    direction: Direction,
    shared: &Shared,
) -> End {
    let (tx, rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let reader = read_side(src, tx, direction, shared.settings.subscribe());
    let writer = write_side(dst, rx, direction, shared);
    tokio::pin!(reader, writer);
    let mut reader_done = false;
    loop {
        tokio::select! {
            () = &mut reader, if !reader_done => reader_done = true,
            end = &mut writer => return end,
        }
    }
}

/// Reads chunks while the direction is not stalled, stamping each with the time it came.
async fn read_side(
    mut src: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Bytes)>,
    direction: Direction,
    mut settings: watch::Receiver<Settings>,
) {
    let i = direction.index();
    loop {
        if settings.wait_for(|s| !s.stalled[i]).await.is_err() {
            return;
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match src.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send((Instant::now(), buf.freeze())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes each chunk once its latency has passed and the direction is not stalled, watching
/// frame boundaries for an armed mid-frame cut.
async fn write_side(
    mut dst: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Bytes)>,
    direction: Direction,
    shared: &Shared,
) -> End {
    let i = direction.index();
    let mut settings = shared.settings.subscribe();
    let mut tracker = FrameTracker::new(direction);
    // Stream offset of the next byte to write, and the cut decided on, if any: the offset
    // to stop at, the frame it is in, and where to report.
    let mut written: u64 = 0;
    let mut cut: Option<(u64, FrameInfo, oneshot::Sender<CutReport>)> = None;
    while let Some((read_at, chunk)) = rx.recv().await {
        let latency = settings.borrow().latency[i];
        tokio::time::sleep_until(read_at + latency).await;
        if settings.wait_for(|s| !s.stalled[i]).await.is_err() {
            return End::Broken;
        }
        for frame in tracker.scan(&chunk, written) {
            if cut.is_some() {
                break;
            }
            let mut armed = lock(&shared.armed);
            if armed[i]
                .as_ref()
                .is_some_and(|a| frame.payload_size >= a.min_payload)
                && let Some(a) = armed[i].take()
            {
                let stop_at = frame.payload_start + u64::from(frame.payload_size / 2);
                cut = Some((stop_at, frame, a.report));
            }
        }
        let end = written + chunk.len() as u64;
        if let Some((stop_at, frame, report)) = cut.take_if(|(stop_at, ..)| *stop_at < end) {
            let keep = (stop_at - written) as usize;
            if dst.write_all(&chunk[..keep]).await.is_err() {
                return End::Broken;
            }
            shared.counters.bytes[i].fetch_add(keep as u64, Ordering::SeqCst);
            let _ = report.send(CutReport {
                at: std::time::Instant::now(),
                direction,
                frame_type: frame.frame_type,
                channel: frame.channel,
                payload_size: frame.payload_size,
                forwarded: (stop_at - frame.start) as usize,
            });
            return End::Cut;
        }
        if dst.write_all(&chunk).await.is_err() {
            return End::Broken;
        }
        written = end;
        shared.counters.bytes[i].fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    // The source ended: pass the FIN on.
    let _ = dst.shutdown().await;
    End::Drained
}

/// Where a frame sits in a direction's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameInfo {
    frame_type: u8,
    channel: u16,
    payload_size: u32,
    /// Stream offset of the frame's first header byte.
    start: u64,
    /// Stream offset of its first payload byte.
    payload_start: u64,
}

/// Follows AMQP framing across chunks: the client's protocol header, then frames.
#[derive(Debug)]
struct FrameTracker {
    /// Protocol-header bytes still to skip (client to server only).
    skip: usize,
    header: [u8; FRAME_HEADER_SIZE],
    have: usize,
    /// Payload and frame-end bytes of the current frame still to come.
    body_left: u64,
    start: u64,
}

impl FrameTracker {
    fn new(direction: Direction) -> Self {
        FrameTracker {
            skip: match direction {
                Direction::ClientToServer => PROTOCOL_HEADER.len(),
                Direction::ServerToClient => 0,
            },
            header: [0; FRAME_HEADER_SIZE],
            have: 0,
            body_left: 0,
            start: 0,
        }
    }

    /// Follows `chunk`, which starts at stream offset `base`, and returns every frame whose
    /// header completed in it.
    fn scan(&mut self, chunk: &[u8], base: u64) -> Vec<FrameInfo> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            let left = chunk.len() - i;
            if self.skip > 0 {
                let n = self.skip.min(left);
                self.skip -= n;
                i += n;
            } else if self.body_left > 0 {
                let n = usize::try_from(self.body_left).map_or(left, |b| b.min(left));
                self.body_left -= n as u64;
                i += n;
            } else {
                if self.have == 0 {
                    self.start = base + i as u64;
                }
                let n = (FRAME_HEADER_SIZE - self.have).min(left);
                self.header[self.have..self.have + n].copy_from_slice(&chunk[i..i + n]);
                self.have += n;
                i += n;
                if self.have == FRAME_HEADER_SIZE {
                    self.have = 0;
                    let h = &self.header;
                    let payload_size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
                    self.body_left = u64::from(payload_size) + 1;
                    found.push(FrameInfo {
                        frame_type: h[0],
                        channel: u16::from_be_bytes([h[1], h[2]]),
                        payload_size,
                        start: self.start,
                        payload_start: base + i as u64,
                    });
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    //! The proxy against a local upstream (no broker needed): forwarding, counters, latency,
    //! stalls, cuts, refusal, and that dropping the handle closes everything.

    use super::*;
    use tokio::time::timeout;

    const LIMIT: Duration = Duration::from_secs(5);

    /// An upstream that echoes every connection, and a proxy in front of it.
    async fn echo_proxy() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Proxy::to(addr.to_string()).await.expect("proxy")
    }

    async fn read_exactly(socket: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        timeout(LIMIT, socket.read_exact(&mut buf))
            .await
            .expect("bytes within the limit")
            .expect("read");
        buf
    }

    /// Reads until the proxy closes the socket; returns what came before.
    async fn read_to_eof(socket: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        timeout(LIMIT, socket.read_to_end(&mut all))
            .await
            .expect("closed within the limit")
            .expect("read");
        all
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts() {
        let proxy = echo_proxy().await;
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"hello").await.expect("write");
        assert_eq!(read_exactly(&mut c, 5).await, b"hello");
        let stats = proxy.stats();
        assert_eq!((stats.connections, stats.open), (1, 1), "{stats:?}");
        assert_eq!((stats.to_server, stats.to_client), (5, 5), "{stats:?}");
        drop(c);
        timeout(LIMIT, async {
            while proxy.stats().open > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the connection task ends when the client leaves");
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = echo_proxy().await;
        proxy.set_latency(Direction::ClientToServer, Duration::from_millis(100));
        proxy.set_latency(Direction::ServerToClient, Duration::from_millis(50));
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        let start = std::time::Instant::now();
        c.write_all(b"x").await.expect("write");
        read_exactly(&mut c, 1).await;
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_stall_holds_bytes_until_resumed() {
        let proxy = echo_proxy().await;
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.stall(Direction::ServerToClient);
        c.write_all(b"held").await.expect("write");
        let mut byte = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(300), c.read(&mut byte))
                .await
                .is_err(),
            "nothing comes back while stalled"
        );
        assert_eq!(proxy.stats().to_client, 0);
        proxy.resume(Direction::ServerToClient);
        assert_eq!(read_exactly(&mut c, 4).await, b"held");
    }

    #[tokio::test]
    async fn cut_all_closes_open_connections_and_accepts_new_ones() {
        let proxy = echo_proxy().await;
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"a").await.expect("write");
        read_exactly(&mut c, 1).await;
        proxy.cut_all();
        assert!(read_to_eof(&mut c).await.is_empty());
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        again.write_all(b"b").await.expect("write");
        assert_eq!(read_exactly(&mut again, 1).await, b"b");
        assert_eq!(proxy.stats().cut, 1);
    }

    #[tokio::test]
    async fn refusing_closes_new_connections_at_once() {
        let proxy = echo_proxy().await;
        proxy.set_refusing(true);
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(read_to_eof(&mut c).await.is_empty());
        assert_eq!(proxy.stats().refused, 1);
        proxy.set_refusing(false);
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"b").await.expect("write");
        assert_eq!(read_exactly(&mut c, 1).await, b"b");
    }

    fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![frame_type];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        f
    }

    #[tokio::test]
    async fn a_mid_frame_cut_forwards_the_header_and_half_the_payload() {
        let proxy = echo_proxy().await;
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        let report = proxy.cut_mid_frame(Direction::ServerToClient, 500);
        // The echo sends the server-to-client stream back: frames from its first byte on.
        let small = frame(8, 0, &[]);
        let big = frame(3, 7, &[0xAB; 1000]);
        // Sent byte by byte in pieces, so headers straddle reads.
        let mut stream = small.clone();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&small);
        for piece in stream.chunks(3) {
            c.write_all(piece).await.expect("write");
        }
        let got = read_to_eof(&mut c).await;
        assert_eq!(
            got.len(),
            small.len() + 7 + 500,
            "cut in the big frame's middle"
        );
        assert_eq!(&got[..small.len()], &small[..]);
        let report = timeout(LIMIT, report)
            .await
            .expect("reported")
            .expect("a report");
        assert_eq!(
            (
                report.frame_type,
                report.channel,
                report.payload_size,
                report.forwarded
            ),
            (3, 7, 1000, 507),
            "{report:?}"
        );
    }

    #[test]
    fn the_tracker_skips_the_protocol_header_client_side() {
        let mut t = FrameTracker::new(Direction::ClientToServer);
        let mut stream = PROTOCOL_HEADER.to_vec();
        stream.extend_from_slice(&frame(1, 0, &[1, 2, 3]));
        stream.extend_from_slice(&frame(3, 2, &[9; 10]));
        let found = t.scan(&stream, 0);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].frame_type, found[0].start, found[0].payload_start),
            (1, 8, 15)
        );
        assert_eq!(
            (found[1].frame_type, found[1].channel, found[1].payload_size),
            (3, 2, 10)
        );
        assert_eq!(found[1].start, 8 + 11);
    }

    #[tokio::test]
    async fn dropping_the_handle_closes_every_connection_and_the_listener() {
        let proxy = echo_proxy().await;
        let addr = proxy.addr();
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"a").await.expect("write");
        read_exactly(&mut c, 1).await;
        // Stalled, so only the end of the connection task can close the socket.
        proxy.stall(Direction::ServerToClient);
        drop(proxy);
        assert!(read_to_eof(&mut c).await.is_empty());
        timeout(LIMIT, async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the listener is gone");
    }
}
