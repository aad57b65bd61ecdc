//! Pingora bootstrap: the server, its listener, and signal handling.
//!
//! Signals: SIGTERM stops accepting, lets in-flight requests and streams finish (at most
//! `GATEWAY_SHUTDOWN_GRACE`) and exits as soon as none is left; SIGQUIT hands the listening
//! sockets to a new process started with `--upgrade` (Pingora's graceful upgrade) and then
//! drains the same way; SIGINT exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::ShutdownWatch;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::health::PoolService;
use crate::proxy::App;

/// Command-line switches (everything else is configured through the environment).
#[derive(Debug, Default, Clone)]
pub struct Args {
    /// Take over the listening sockets of a running gateway (graceful upgrade).
    pub upgrade: bool,
    /// Fork into the background once ready and write `GATEWAY_PID_FILE` (for systemd's
    /// `Type=forking` units, whose reload runs the upgrade).
    pub daemon: bool,
}

/// Where a running gateway hands its sockets to its successor.
pub const UPGRADE_SOCK_VAR: &str = crate::config::vars::UPGRADE_SOCK;
pub const PID_FILE_VAR: &str = crate::config::vars::PID_FILE;

struct Signals {
    inflight: Arc<AtomicUsize>,
    grace: Duration,
    /// Pingora's execution phases: draining starts only once its listeners are closed.
    phases: parking_lot::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl Signals {
    /// Exits the process once no request is in flight, or when the grace period ends.
    ///
    /// Counting starts when Pingora has stopped accepting: right away for SIGTERM, but only
    /// after the sockets were handed over and Pingora's close timeout (5 s) for SIGQUIT, since
    /// the old process keeps accepting until then and must serve what it accepted.
    fn exit_when_drained(&self, why: &'static str) {
        let inflight = self.inflight.clone();
        let grace = self.grace;
        let phases = self.phases.lock().take();
        std::thread::spawn(move || {
            if let Some(mut rx) = phases {
                loop {
                    match rx.blocking_recv() {
                        Ok(ExecutionPhase::ShutdownStarted)
                        | Ok(ExecutionPhase::ShutdownGracePeriod)
                        | Err(broadcast::error::RecvError::Closed) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    }
                }
            }
            let start = Instant::now();
            // Connections accepted just before the listeners closed get a moment to become
            // requests (and count as in flight).
            std::thread::sleep(Duration::from_millis(100));
            loop {
                let n = inflight.load(Ordering::Acquire);
                if n == 0 {
                    log::info!("{why}: no request in flight, exiting");
                    break;
                }
                if start.elapsed() >= grace {
                    log::warn!("{why}: grace period over with {n} request(s) in flight, exiting");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            crate::trace::flush(Duration::from_secs(1));
            crate::telemetry::flush_logs();
            std::process::exit(0);
        });
    }
}

/// Starts the batching log writer once the process is the one that serves (after a --daemon
/// fork), and writes out what is left when the server shuts down.
struct LogWriter;

#[async_trait]
impl BackgroundService for LogWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::telemetry::start_log_writer();
        crate::trace::start_export();
        let _ = shutdown.changed().await;
        crate::trace::flush(Duration::from_secs(1));
        crate::telemetry::flush_logs();
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("could not install signal handlers");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                log::info!("SIGQUIT: handing the listeners over, then draining");
                self.exit_when_drained("graceful upgrade");
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                log::info!(
                    "SIGTERM: draining {} in-flight request(s) (grace {:?})",
                    self.inflight.load(Ordering::Acquire),
                    self.grace
                );
                self.exit_when_drained("shutdown");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Builds and runs the server; returns when it has shut down.
pub fn run(config: Config, args: Args) {
    raise_descriptor_limit();
    // An upgrade takes the listening sockets over from the running gateway: they are in use
    // by design. Otherwise every address must be free now, or the start fails here, saying
    // which (Pingora would retry for 30 s, then panic in a thread and serve nothing).
    if !args.upgrade {
        let mut addrs = vec![config.listen.clone()];
        addrs.extend(config.tls.as_ref().and_then(|t| t.listen.clone()));
        addrs.extend(config.metrics_listen.clone());
        for addr in &addrs {
            if let Err(why) = probe_listen(addr) {
                log::error!("{why}");
                crate::telemetry::flush_logs();
                eprintln!("ai-gateway: {why}");
                std::process::exit(1);
            }
        }
    }
    let conf = ServerConf {
        threads: config.threads,
        // A second longer than ours, so the drain thread ends it (and says how many requests
        // were cut) rather than Pingora's runtime shutdown.
        grace_period_seconds: Some(config.shutdown_grace.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.upgrade_sock.clone(),
        pid_file: config.pid_file.clone(),
        daemon: args.daemon,
        // The parent of the fork exits only once the daemon is ready, so systemd's reload
        // sends SIGQUIT to the old process only when the new one waits for its sockets.
        daemon_wait_for_ready: args.daemon,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // A daemon must take the sockets over (and tell the waiting parent it is ready) after the
    // fork, so there the bootstrap runs as a service the listeners depend on.
    let bootstrap = if args.daemon {
        Some(server.bootstrap_as_a_service())
    } else {
        server.bootstrap();
        None
    };

    let listeners = crate::tls::Listeners {
        listen: config.listen.clone(),
        h2c: config.h2c,
        tls: config.tls.clone(),
    };
    let metrics_listen = config.metrics_listen.clone();
    let grace = config.shutdown_grace;
    let max_connections = config.max_connections;
    crate::pricing::set_overrides(config.prices.clone());
    crate::metrics::init(&config);
    if let Some(t) = &config.tracing {
        crate::trace::init(t);
    }
    let mut app = match App::new(config) {
        Ok(a) => a,
        Err(e) => {
            // `main` checks the providers first; this is the same report if it did not.
            eprintln!("ai-gateway: {}", crate::config::ConfigError(vec![e]));
            std::process::exit(2);
        }
    };
    if listeners.h2c {
        app.enable_h2c();
    }
    let inflight = app.inflight();
    app.log_startup();

    // Load each pool's backend list before the first request, then keep it and the active
    // health checks running as background services.
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        for (_, pool) in app.pools() {
            rt.block_on(pool.load());
        }
    }
    for (name, pool) in app.pools() {
        server.add_service(background_service(
            &format!("health {name}"),
            PoolService(pool.clone()),
        ));
    }
    server.add_service(background_service("log writer", LogWriter));
    server.add_service(background_service(
        "api keys",
        crate::auth::KeysWatcher(app.auth()),
    ));
    let tenants = app.tenants();
    server.add_service(background_service(
        "tenants",
        crate::tenants::TenantsService(tenants.clone()),
    ));
    let limit = max_connections.resolve(descriptor_limit());
    let mut service = Service::new(
        "ai-gateway".to_string(),
        crate::proxy::Limited::new(app, limit),
    );
    if let Err(e) = crate::tls::add_listeners(&mut server, &mut service, &listeners) {
        log::error!("cannot set up the listeners: {e}");
        crate::telemetry::flush_logs();
        std::process::exit(2);
    }
    let handle = server.add_service(service);
    if let Some(b) = &bootstrap {
        handle.add_dependency(b);
    }
    if let Some(addr) = &metrics_listen {
        let mut metrics = Service::new(
            "metrics".to_string(),
            crate::proxy::MetricsApp(Some(tenants.clone())),
        );
        metrics.add_tcp(addr);
        let handle = server.add_service(metrics);
        if let Some(b) = &bootstrap {
            handle.add_dependency(b);
        }
        log::info!("metrics on http://{addr}/metrics");
    }
    if args.daemon {
        exit_on_readiness_signal();
    }
    let phases = parking_lot::Mutex::new(Some(server.watch_execution_phase()));
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            inflight,
            grace,
            phases,
        }),
    });
}

/// Binds `addr` and lets it go again: whether the listener can be set up, as one line.
pub fn probe_listen(addr: &str) -> Result<(), String> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("address {addr} is in use"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "cannot listen on {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        )),
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// The open-descriptor soft limit (after [`raise_descriptor_limit`]).
fn descriptor_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// Raises the open-descriptor soft limit to the hard limit: every connection and every upstream
/// connection is a descriptor, and the usual soft limit (1024) is reached long before memory or
/// CPU. The systemd unit sets `LimitNOFILE` for the hard limit.
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                log::debug!(
                    "open descriptor limit raised from {before} to {}",
                    lim.rlim_max
                );
            }
        }
    }
}

/// In `--daemon` mode the parent of the fork waits for the daemon's SIGUSR1 ("ready"), but
/// Pingora 0.9.1 installs its handler only after forking: a daemon that is ready first kills
/// the parent with SIGUSR1's default action, and systemd sees the start or reload fail. Set
/// before the fork, this handler makes an early signal mean what a late one means: exit 0.
/// (The daemon inherits it; SIGUSR1 ended it before as well.)
fn exit_on_readiness_signal() {
    extern "C" fn ready(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: installs a handler that only calls an async-signal-safe function.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            ready as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
