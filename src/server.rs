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
use pingora::proxy::http_proxy_service;
use pingora::services::background::background_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::health::PoolService;
use crate::proxy::Gateway;

/// Command-line switches (everything else is configured through the environment).
#[derive(Debug, Default, Clone)]
pub struct Args {
    /// Take over the listening sockets of a running gateway (graceful upgrade).
    pub upgrade: bool,
}

/// Where a running gateway hands its sockets to its successor.
pub const UPGRADE_SOCK_VAR: &str = "GATEWAY_UPGRADE_SOCK";
pub const PID_FILE_VAR: &str = "GATEWAY_PID_FILE";

struct Signals {
    inflight: Arc<AtomicUsize>,
    grace: Duration,
}

impl Signals {
    /// Exits the process once no request is in flight, or when the grace period ends.
    fn exit_when_drained(&self, why: &'static str) {
        let inflight = self.inflight.clone();
        let grace = self.grace;
        std::thread::spawn(move || {
            let start = Instant::now();
            // Give Pingora a moment to stop its listeners first.
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
            std::process::exit(0);
        });
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
    let mut conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    if let Ok(s) = std::env::var(UPGRADE_SOCK_VAR) {
        conf.upgrade_sock = s;
    } else {
        conf.upgrade_sock = "/tmp/ai-gateway-upgrade.sock".into();
    }
    if let Ok(p) = std::env::var(PID_FILE_VAR) {
        conf.pid_file = p;
    } else {
        conf.pid_file = "/tmp/ai-gateway.pid".into();
    }
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listeners = crate::tls::Listeners {
        listen: config.listen.clone(),
        h2c: config.h2c,
        tls: config.tls.clone(),
    };
    let grace = config.shutdown_grace;
    let gateway = Gateway::new(config);
    let inflight = gateway.inflight.clone();
    log_startup(&gateway);

    // Load each pool's backend list before the first request, then keep it and the active
    // health checks running as background services.
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
        for pool in gateway.router.pools.values() {
            rt.block_on(pool.load());
        }
    }
    for (name, pool) in &gateway.router.pools {
        server.add_service(background_service(
            &format!("health {name}"),
            PoolService(pool.clone()),
        ));
    }
    let mut service = http_proxy_service(&server.configuration, gateway);
    if let Err(e) = crate::tls::add_listeners(&mut server, &mut service, &listeners) {
        log::error!("cannot set up the listeners: {e}");
        std::process::exit(2);
    }
    server.add_service(service);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { inflight, grace }),
    });
}

fn log_startup(gw: &Gateway) {
    let names: Vec<&str> = gw.router.providers.keys().map(String::as_str).collect();
    log::info!("providers: {}", names.join(", "));
}
