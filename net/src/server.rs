//! Starting and stopping: one SO_REUSEPORT listener and one glommio executor per shard, each pinned to a
//! CPU, joined by a full mesh of bounded channels; SIGINT/SIGTERM stop them gracefully.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};
use tickwire_fanout::interest::InterestMap;

use crate::auth::{Authenticator, Role};
use crate::config::Config;
use crate::feed::simulator;
use crate::lag::{self, LagProbe};
use crate::shard::{Shard, ShardMsg, ShardStats, Shared};
use crate::util::{now_micros, now_secs};

use crate::system::{IO_MEMORY, SPARE_DESCRIPTORS};
/// Submission-queue entries of each of a shard's io_uring rings (glommio's default is 128). The kernel sizes
/// a ring's table of pending polls from its completion queue: 2^(log2(entries) - 4) buckets, at most 256.
/// Every connection has a poll pending there (its read readiness), and every cancellation the runtime
/// submits (it re-arms a timer on each pass of its loop) walks one bucket. With 128 entries that is 8
/// buckets: 1,250 polls each at 10,000 connections, and 7-8% of a shard's CPU at the product load went to
/// that walk (`io_poll_find` in perf/reports/cpu). 4,096 gives the 256 buckets; the rings then take about
/// 400 KiB of kernel memory each.
const RING_DEPTH: usize = 4096;
/// Capacity of each cross-shard channel, in batches.
const MESH_CAPACITY: usize = 1024;
/// How long the shards have to start and join their mesh.
const SHARD_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Updates and acks from the bus waiting for each shard (the bus thread waits while a shard's is full).
const BUS_INBOX: usize = 4096;
/// How long a stopping shard waits for its peers' in-flight messages.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(1);
/// The range a shutdown picks each connection's reconnect hint from (`retry_after_ms`), spreading the reconnects.
const RETRY_AFTER_MS: std::ops::RangeInclusive<u64> = 500..=5000;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    // First, while this process has a single thread (see `reserve_descriptors`).
    reserve_descriptors(config.max_connections + SPARE_DESCRIPTORS);
    let shards = config.shard_count();
    let (secret, generated) = match &config.jwt_secret {
        Some(s) => (s.clone(), false),
        None => (random_secret(), true),
    };
    let rules = crate::auth::ClaimRules { issuer: config.jwt_issuer.clone(), audience: config.jwt_audience.clone() };
    let mut files = crate::auth::KeyFiles { public_key: None, jwks: config.jwt_jwks.clone() };
    if let (Some(path), Some(alg)) = (&config.jwt_public_key, &config.jwt_algorithm) {
        let alg = crate::auth::parse_algorithm(alg).context("--jwt-algorithm must be RS256 or ES256")?;
        files.public_key = Some((alg, path.clone()));
    }
    let auth = Authenticator::new(secret.as_bytes(), rules).with_key_files(files)?;
    let security = crate::security::Security::from_config(&config)?;
    // What this host lacks for this server, said once (check-system says it all, with the fixes).
    crate::system::log_at_start(&config);
    // Pre-flight: an executor that cannot start here (io_uring off, locked memory too low) would fail every
    // shard; say so once, before listening.
    LocalExecutorBuilder::new(Placement::Unbound).io_memory(IO_MEMORY).make().map_err(|e| start_error(0, &e))?;
    let listeners = bind(config.listen, shards).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listeners.1;
    // The cluster bus, when configured: its thread connects in the background.
    let mut bus = match config.bus.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(url) => {
            Some(crate::bus::Bus::start(url, &config, security.signer.clone()).context("cannot start the bus thread")?)
        }
        None => None,
    };
    let (store, recovered) = crate::store::open(&config, bus.as_ref(), addr)?;
    // A node the bus sequences for gets, for each topic its clients subscribe to, the updates the streams
    // store (every node's) and the acks made anywhere, each at the shard that owns the topic.
    let mut bus_inbox = Vec::new();
    if let (Some(bus), true) = (bus.as_ref(), store.sequences()) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| tokio::sync::mpsc::channel(BUS_INBOX)).map(|(tx, rx)| (tx, Some(rx))).unzip();
        bus.attach(senders)?;
        bus_inbox = receivers;
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shutdown.clone()).context("cannot install signal handlers")?;
    }
    // SIGHUP (systemctl reload): the TLS certificate and key and the JWT key files are read again; nothing
    // stops.
    let hangups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("cannot install the SIGHUP handler")?;
    let shared = Arc::new(Shared {
        shards,
        auth: auth.clone(),
        interest: InterestMap::new(16 * 1024),
        stats: (0..shards).map(|_| ShardStats::default()).collect(),
        shutdown,
        // With a bus the epoch is the cluster's (its streams'), so that clients resume across nodes.
        epoch: recovered.epoch.unwrap_or_else(|| format!("{:x}", now_micros())),
        started: Instant::now(),
        store,
        recovered: std::sync::Mutex::new(recovered.critical),
        recovered_public: std::sync::Mutex::new(recovered.public),
        handover: std::sync::Mutex::new(Vec::new()),
        symbols: simulator::symbols(if config.simulator { config.simulator_symbols } else { 0 }),
        security,
        bus: bus.as_ref().map(|b| b.state.clone()),
        bus_inbox: std::sync::Mutex::new(bus_inbox),
        config,
    });
    if generated && shared.config.log_format == "json" {
        // Logs for machines carry no token.
        tracing::warn!(
            "no --jwt-secret given: a random secret for this run; no token made outside this process is valid"
        );
    } else if generated {
        let now = now_secs();
        eprintln!("no --jwt-secret given: using a random secret for this run. Tokens valid for 24 h:");
        eprintln!(
            "  demo user ({}): {}",
            simulator::DEMO_USER,
            auth.issue(simulator::DEMO_USER, Role::User, now, 86_400)
        );
        eprintln!("  publisher:          {}", auth.issue("publisher", Role::Publisher, now, 86_400));
    }
    {
        let certificate = shared.security.certificate.clone();
        let auth = shared.auth.clone();
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || reload_on_hangup(hangups, certificate, &auth))
            .context("cannot start the reload thread")?;
    }
    let cpus = allowed_cpus();
    let mesh = MeshBuilder::full(shards, MESH_CAPACITY);
    let mut handles = Vec::with_capacity(shards);
    // Each shard says it is ready (executor made, mesh joined) and drops its sender; a shard that cannot
    // start drops it unsent. Without this, one failed shard would leave the others waiting in the mesh
    // forever while its listening socket takes connections that nobody accepts.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<usize>();
    for (i, fd) in listeners.0.into_iter().enumerate() {
        let shared = shared.clone();
        let mesh = mesh.clone();
        let started = started_tx.clone();
        let placement = match cpus.get(i % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
            .preempt_timer(Duration::from_micros(shared.config.preempt_us))
            .spawn(move || shard_main(shared, mesh, fd, (i, started)))
            .map_err(|e| start_error(i, &e))?;
        handles.push(handle);
    }
    drop(started_tx);
    let mut ready = Vec::with_capacity(shards);
    let deadline = Instant::now() + SHARD_START_TIMEOUT;
    while ready.len() < shards {
        match started_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(i) => ready.push(i),
            // Every sender is gone: a shard ended before it was ready.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let i = (0..shards).find(|i| !ready.contains(i)).unwrap_or(0);
                // Its thread has ended, so the join returns at once.
                return Err(match handles.swap_remove(i).join() {
                    Err(e) => start_error(i, &e),
                    Ok(Err(e)) => anyhow::anyhow!("shard {i} failed: {e}"),
                    Ok(Ok(())) => anyhow::anyhow!("shard {i} stopped while starting"),
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => anyhow::bail!(
                "shards {:?} did not start within {} s; try again",
                (0..shards).filter(|i| !ready.contains(i)).collect::<Vec<_>>(),
                SHARD_START_TIMEOUT.as_secs()
            ),
        }
    }
    let sim = if shared.config.simulator {
        format!("simulated feed at {} events/s over {} symbols", shared.config.simulator_rate, shared.symbols.len())
    } else {
        "simulated feed off".to_owned()
    };
    let observer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("stall-observer".into())
            .spawn(move || crate::lag::observe(&shared))
            .context("cannot start the stall observer")?
    };
    let scheme = shared.security.ws_scheme();
    let config = &shared.config;
    config
        .say(&format!("tickwire listening on {addr} ({shards} shards, {sim}); stream at {scheme}://{addr}/v1/stream"));
    let page = if scheme == "wss" { "https" } else { "http" };
    config.say(&format!("monitor page at {page}://{addr}/ (add ?token=<a user token> to see that user's account)"));
    crate::security::log_summary(&shared.config, &shared.security, &shared.auth);
    tracing::info!(%addr, shards, "listening");
    let mut failed = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow::anyhow!("shard {i} failed: {e}")),
            Err(e) => failed = Some(start_error(i, &e)),
        }
    }
    // Every shard has ended; so does the observer (a failed shard may have ended without a signal).
    shared.shutdown.store(true, Ordering::Relaxed);
    let _ = observer.join();
    if let Some(bus) = bus.as_mut() {
        bus.stop();
    }
    match failed {
        Some(e) => Err(e),
        None => {
            handover(&shared, addr);
            shared.config.say("tickwire stopped");
            Ok(())
        }
    }
}

/// Leaves the epoch and the public topics' last sequences for the process that takes over `addr`
/// (docs/deploy/restart.md): with a database, it continues them, so that clients resume there without a
/// reset. Every shard has drained: nothing is sequenced any more.
fn handover(shared: &Shared, addr: SocketAddr) {
    let public: Vec<tickwire_persistence::PublicSequence> =
        std::mem::take(&mut *shared.handover.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|(topic, sequence)| tickwire_persistence::PublicSequence {
                channel: topic.channel,
                symbol: topic.key.to_string(),
                interval: topic.interval.map_or("", |i| i.as_str()).to_owned(),
                sequence,
            })
            .collect();
    match shared.store.handover(&shared.epoch, &public) {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(epoch = %shared.epoch, public_topics = public.len(), "handed over to the next process at {addr}")
        }
        Err(e) => tracing::error!(error = %e, "the hand-over was not written: the next process starts a new epoch"),
    }
}

/// Reads the TLS certificate and key and the JWT key files again at each SIGHUP: new handshakes and tokens
/// are checked with them, connections already made keep going. A file that does not load leaves the one in
/// use.
fn reload_on_hangup(
    mut hangups: signal_hook::iterator::Signals,
    certificate: Option<Arc<crate::tls::Certificate>>,
    auth: &Authenticator,
) {
    for _ in hangups.forever() {
        match certificate.as_deref().map(crate::tls::Certificate::reload) {
            None => tracing::info!("SIGHUP: no TLS certificate to reload"),
            Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it"),
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: the TLS certificate was not reloaded; the one in use stays")
            }
        }
        match auth.reload() {
            Ok(accepted) => tracing::info!(jwt = %accepted, "SIGHUP: JWT keys reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the JWT keys were not reloaded; the ones in use stay"),
        }
    }
}

fn start_error<T>(shard: usize, e: &glommio::GlommioError<T>) -> anyhow::Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let hint = if lower.contains("memlock") || lower.contains("enomem") || lower.contains("cannot allocate memory") {
        "raise the locked-memory limit (ulimit -l, or LimitMEMLOCK= in systemd) or run fewer --shards"
    } else if lower.contains("io_uring") || lower.contains("operation not permitted") || lower.contains("enosys") {
        "io_uring is unavailable: use Linux >= 5.8 with io_uring enabled (sysctl kernel.io_uring_disabled=0; containers may need a seccomp profile that allows io_uring)"
    } else {
        "check that the kernel supports io_uring and that the locked-memory limit (ulimit -l) is at least 1 MiB per shard"
    };
    anyhow::anyhow!("cannot start shard {shard}: {text}; {hint}")
}

/// One listening socket per shard on the same address (SO_REUSEPORT). Port 0 is resolved by the first.
fn bind(addr: SocketAddr, shards: usize) -> anyhow::Result<(Vec<RawFd>, SocketAddr)> {
    let mut fds = Vec::with_capacity(shards);
    let mut actual = addr;
    for _ in 0..shards {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&actual.into())?;
        s.listen(4096)?;
        if actual.port() == 0 {
            actual = s.local_addr()?.as_socket().context("listener has no IP address")?;
        }
        fds.push(s.into_raw_fd());
    }
    Ok((fds, actual))
}

/// Raises the soft `RLIMIT_NOFILE` toward `n` (up to the hard limit: a shell's 1,024 would refuse
/// connections long before `max_connections`), then grows this process's descriptor table to hold that
/// many descriptors at once.
///
/// The kernel grows the table by doubling as descriptors are opened, and in a process with several
/// threads each growth waits for an RCU grace period (`expand_fdtable` calls `synchronize_rcu`): a shard
/// accepting connections slept 20-40 ms in `accept4` at 64, 128, 256... connections (seen with
/// `perf sched timehist`: `synchronize_rcu_normal <- expand_files <- alloc_fd <- __sys_accept4`). Called
/// while the process has one thread, the growth costs no grace period, and a table never shrinks.
/// It costs 8 bytes per descriptor (800 KiB for 100,000).
fn reserve_descriptors(n: usize) {
    // SAFETY: getrlimit writes the limit into `limit`; dup2 onto a descriptor number this process has not
    // opened (the table's top, checked free with fcntl) and close it again touch no descriptor in use.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < n as u64 {
            let raised = libc::rlimit { rlim_cur: (n as u64).min(limit.rlim_max), rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        let top = (n as u64).min(limit.rlim_cur).saturating_sub(1) as libc::c_int;
        if top < 3 || libc::fcntl(top, libc::F_GETFD) != -1 {
            return;
        }
        if libc::dup2(libc::STDERR_FILENO, top) == top {
            libc::close(top);
        }
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask owned by this frame; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads bit `i` of the initialized `set`, for i below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn shard_main(
    shared: Arc<Shared>,
    mesh: MeshBuilder<Vec<ShardMsg>, glommio::channels::channel_mesh::Full>,
    fd: RawFd,
    ready: (usize, std::sync::mpsc::Sender<usize>),
) -> anyhow::Result<()> {
    // SAFETY: `fd` is a listening TCP socket made by `bind`, handed to this shard alone, owned from here on.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let (senders, mut receivers) = mesh.join().await.map_err(|_| anyhow::anyhow!("cannot join the shard mesh"))?;
    let _ = ready.1.send(ready.0);
    drop(ready);
    let id = senders.peer_id();
    let shard = Rc::new(Shard::new(id, shared.clone()));
    let senders = Rc::new(senders);
    for (peer, rx) in receivers.streams() {
        let handler = shard.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = rx.recv().await {
                for msg in batch {
                    handler.handle(msg);
                }
                // A busy peer keeps the channel full: take turns with the shard's other tasks.
                glommio::yield_if_needed().await;
            }
        })
        .detach();
        glommio::spawn_local(pump(shard.clone(), senders.clone(), peer)).detach();
    }
    glommio::spawn_local(ticker(shard.clone())).detach();
    let inbox = shared.bus_inbox.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id).and_then(Option::take);
    if let Some(mut inbox) = inbox {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(applied) = inbox.recv().await {
                shard.apply(applied);
                glommio::yield_if_needed().await;
            }
        })
        .detach();
    }
    if shared.store.durable() {
        glommio::spawn_local(crate::store::record_metrics(shard.clone())).detach();
    }
    if shared.config.simulator {
        glommio::spawn_local(simulator::run(shard.clone())).detach();
    }
    accept_loop(&shard, &listener).await;
    // Stop accepting before the drain: from now on the kernel hands new connections to the other listeners
    // of this address (a process taking over: docs/deploy/restart.md), not to a backlog nobody accepts.
    drop(listener);
    drain(&shard).await;
    shard.shared.store.flush();
    // For the process that takes over this address (docs/deploy/restart.md): written once every shard is
    // here, by `run`.
    let public = shard.public_sequences();
    shard.shared.handover.lock().unwrap_or_else(|e| e.into_inner()).extend(public);
    Ok(())
}

/// Sends a peer's queued messages, one batch per send.
async fn pump(shard: Rc<Shard>, senders: Rc<Senders<Vec<ShardMsg>>>, peer: usize) {
    let outbox = shard.outbox(peer);
    loop {
        outbox.ready().await;
        loop {
            let batch = outbox.take();
            if batch.is_empty() {
                break;
            }
            if senders.send_to(peer, batch).await.is_err() {
                return;
            }
        }
    }
}

/// Periodic work: the loop-lag measurement ([`lag`]), throttled flushes, bar closes, liveness for
/// /healthz, queue gauges for /metrics. When the server stops, it wakes the accept loop and ends.
async fn ticker(shard: Rc<Shard>) {
    let mut last_queues = 0;
    let mut last_second = 0;
    let mut probe = LagProbe::new();
    let stats = shard.stats();
    stats.alive_ms.store(shard.shared.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    // SAFETY: gettid has no preconditions.
    stats.tid.store(unsafe { libc::gettid() } as u64, Ordering::Release);
    while !shard.stopping() {
        probe.start(Instant::now());
        glommio::timer::sleep(lag::TICK).await;
        let (late, stall) = probe.woke(Instant::now());
        shard.stats().loop_lag.record(late.as_micros() as u64);
        if let Some(stall) = stall {
            shard.stalled(&mut probe, &stall);
        }
        let now = now_micros();
        shard.tick(now);
        // A walk over the shard's connections, so once a second rather than per push.
        if now - last_queues >= 1_000_000 {
            shard.sample_queues();
            last_queues = now;
        }
        if now / 1_000_000 != last_second {
            last_second = now / 1_000_000;
            shard.heartbeat_tick(now);
            shard.sweep_slow_consumers(now);
        }
        shard.stats().alive_ms.store(shard.shared.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    shard.notify_stop();
}

/// Accepts connections until the server stops (the ticker wakes [`Shard::stop`]).
async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener) {
    loop {
        let next = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopped().await;
            None
        });
        match next.await {
            Some(Ok(stream)) => {
                serve_accepted(shard, stream);
                // A full backlog accepts at once, again and again (and each new connection's task runs
                // at once too): take turns with the shard's other tasks, as the preempt timer says.
                glommio::yield_if_needed().await;
            }
            Some(Err(e)) => {
                // Out of descriptors, mostly: give the connections a moment to end.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
            None => return,
        }
    }
}

/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn serve_accepted(shard: &Rc<Shard>, stream: glommio::net::TcpStream) {
    let ip = stream.peer_addr().ok().map(|a| a.ip());
    let _ = stream.set_nodelay(true);
    let fd = Some(stream.as_raw_fd());
    // The connection's id in logs from here on, and its key in the shard once it upgrades.
    let key = shard.next_id();
    glommio::spawn_local(crate::routes::accept(shard.clone(), stream, fd, ip, key)).detach();
}

/// Graceful stop: tell every connection (a `system` notice with a jittered `retry_after_ms`, so that
/// clients do not all come back at once), close it with 1001 after flushing it, then wait for them to go.
async fn drain(shard: &Rc<Shard>) {
    use rand::Rng;
    // First let what peers sent arrive: an update acknowledged to its publisher may still be on its way
    // from its owner to this shard's subscribers. Each peer's `Quiesce` comes after all it sent before
    // stopping (bounded, in case a peer is gone). Two rounds: after the first, every event a peer forwarded
    // here before it stopped has been sequenced here; the second comes after the updates its owner sent
    // for events this shard forwarded (no shard sequences anything once stopping: `shard::STOPPING`).
    let peers = shard.shared.shards - 1;
    let quiet_by = Instant::now() + QUIESCE_TIMEOUT;
    for round in 1..=2 {
        shard.send_quiesce();
        while shard.quiesced() < round * peers && Instant::now() < quiet_by {
            let _ = glommio::timer::timeout(Duration::from_millis(10), async {
                shard.quiesce_arrived().await;
                Ok(())
            })
            .await;
        }
    }
    let conns = shard.connections();
    tracing::info!(shard = shard.id, connections = conns.len(), "stopping");
    let mut rng = rand::rng();
    for c in &conns {
        c.shutdown(rng.random_range(RETRY_AFTER_MS));
    }
    let deadline = Instant::now() + Duration::from_millis(shard.shared.config.shutdown_timeout_ms);
    while shard.sessions() > 0 && Instant::now() < deadline {
        let _ = glommio::timer::timeout(Duration::from_millis(50), async {
            shard.drained().await;
            Ok(())
        })
        .await;
    }
}

/// The runtime under the shards never parks while it has work to run.
///
/// glommio 0.9.0 parked an executor in `io_uring_enter`, with no timeout, when its preempt timer had already
/// fired before it ran its task queues: the queues still held runnable tasks, but nothing was left to wake
/// the thread (vendor/README.md). tickwire carries a patched copy; these tests pin the fix. A preempt timer
/// of 1 ns makes the timer fire before every pass, so each pass takes the path that hung. On unpatched
/// 0.9.0 both tests fail at their deadline (the executor thread is left parked; the test process still
/// ends).
#[cfg(test)]
mod runtime_tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use glommio::{LocalExecutorBuilder, Placement};

    /// Far beyond what the work takes (milliseconds), short enough to fail a hung run promptly.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// Runs `work` on a thread of its own and fails the test if it does not finish by [`DEADLINE`].
    fn finishes_in_time(what: &str, work: impl FnOnce() + Send + 'static) {
        let (done_tx, done_rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            work();
            let _ = done_tx.send(());
        });
        match done_rx.recv_timeout(DEADLINE) {
            Ok(()) => worker.join().expect("the executor thread panicked"),
            Err(_) => panic!("{what}: no progress within {DEADLINE:?}; the executor parked with runnable work"),
        }
    }

    fn executor_preempted_every_pass() -> glommio::LocalExecutor {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 * 1024)
            .preempt_timer(Duration::from_nanos(1))
            .make()
            .expect("an executor starts (io_uring and the locked-memory limit allow it)")
    }

    #[test]
    fn a_thousand_runs_complete_when_the_preempt_timer_fires_before_each_pass() {
        finishes_in_time("1,000 empty runs", || {
            let ex = executor_preempted_every_pass();
            for _ in 0..1_000 {
                ex.run(async {});
            }
        });
    }

    #[test]
    fn timers_and_spawned_tasks_complete_when_the_preempt_timer_fires_before_each_pass() {
        finishes_in_time("a timer loop beside spawned tasks", || {
            let ex = executor_preempted_every_pass();
            let (fired, spawned) = ex.run(async {
                let mut fired = 0u32;
                let mut spawned = 0u32;
                for i in 0..200u32 {
                    glommio::timer::sleep(Duration::from_micros(50)).await;
                    fired += 1;
                    spawned += glommio::spawn_local(async move { i % 2 }).await;
                }
                (fired, spawned)
            });
            assert_eq!((fired, spawned), (200, 100));
        });
    }
}
