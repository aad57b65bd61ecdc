//! Real Redis topologies for the fleet tests: a Redis Cluster (3 masters, 3 replicas), a
//! TLS-only Redis, and a master + replica watched by one Sentinel. Every process is a
//! `redis-server` started here on 127.0.0.1 (reserved ports) and killed by its PID on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{client, reserved_port, Gateway};

/// One `redis-server` process, killed by its PID when dropped.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    /// A server `spawn(port)` starts on a reserved port, once `ready(port)` holds. A port can
    /// be taken between its reservation and the server's bind (or a cluster bus port can be),
    /// so a server that exits or stays silent for 10 s is stopped and started again on another
    /// port, up to five times; then its last log is shown.
    pub fn start(dir: &Path, spawn: impl Fn(u16) -> Node, ready: impl Fn(u16) -> bool) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = reserved_port();
            let mut n = spawn(port);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if ready(port) {
                    return n;
                }
                if !n.alive() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            n.kill();
            last =
                std::fs::read_to_string(dir.join(format!("redis-{port}.log"))).unwrap_or_default();
        }
        panic!("redis-server did not start on five ports; its last log:\n{last}");
    }

    /// `redis-server` with these arguments (after a loopback bind, no persistence, `dir`).
    pub fn spawn(port: u16, dir: &Path, args: &[&str]) -> Node {
        Self::spawn_raw(
            port,
            dir,
            args.iter()
                .copied()
                .chain(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .chain(["--dir", dir.to_str().expect("a UTF-8 temp dir")]),
        )
    }

    /// `redis-server` with exactly these arguments, its output in `dir/redis-<port>.log`.
    pub fn spawn_raw<'a>(port: u16, dir: &Path, args: impl IntoIterator<Item = &'a str>) -> Node {
        let log = std::fs::File::create(dir.join(format!("redis-{port}.log"))).expect("log file");
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Node {
            port,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills it by its PID.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args...>` (plain TCP), its stdout; empty when it fails.
pub fn cli(port: u16, args: &[&str]) -> String {
    // coreutils `timeout` bounds every call: a hung node cannot hang the test.
    Command::new("timeout")
        .args([
            "10",
            "redis-cli",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Polls `f` every 50 ms until it holds, for at most `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `PING` answered over plain TCP.
pub fn pings(port: u16) -> bool {
    cli(port, &["PING"]).trim() == "PONG"
}

/// A Redis Cluster of 3 masters and 3 replicas (`--cluster-node-timeout` short, so a replica
/// takes over a killed master within seconds).
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                Node::start(
                    dir.path(),
                    |port| {
                        // The bus port is reserved too: the default (port + 10000) can land in
                        // the kernel's ephemeral range, where an outgoing connection may hold it.
                        let bus = reserved_port();
                        Node::spawn(
                            port,
                            dir.path(),
                            &[
                                "--port",
                                &port.to_string(),
                                "--cluster-port",
                                &bus.to_string(),
                                "--cluster-enabled",
                                "yes",
                                "--cluster-config-file",
                                &format!("nodes-{port}.conf"),
                                "--cluster-node-timeout",
                                "1000",
                            ],
                        )
                    },
                    pings,
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("timeout")
            .args(["60", "redis-cli", "--cluster"])
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes, _dir: dir };
        c.wait_ok();
        c
    }

    /// Every live node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        wait_until("cluster_state:ok", Duration::from_secs(30), || {
            self.nodes
                .iter()
                .filter(|n| n.child.is_some())
                .all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    /// Seed URLs for `GATEWAY_REDIS_URL` (comma-separated, the first `with` a scheme).
    pub fn seeds(&self, count: usize) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .take(count)
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}", hosts.join(","))
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let slot: u16 = cli(live.port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT");
        for line in cli(live.port, &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                let port = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("a node address");
                return port;
            }
        }
        panic!("no master serves slot {slot}");
    }

    pub fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }
}

/// One master, one replica, one Sentinel watching them as `mymaster` (down after 1 s).
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinel: Node,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let master = Node::start(
            d,
            |mp| Node::spawn(mp, d, &["--port", &mp.to_string()]),
            pings,
        );
        let mp = master.port;
        let replica = Node::start(
            d,
            |rp| {
                let args = [
                    "--port",
                    &rp.to_string(),
                    "--replicaof",
                    "127.0.0.1",
                    &mp.to_string(),
                ];
                Node::spawn(rp, d, &args)
            },
            pings,
        );
        let rp = replica.port;
        wait_until("the replica in sync", Duration::from_secs(20), || {
            cli(rp, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let sentinel = Node::start(
            d,
            |sp| {
                let conf: PathBuf = d.join(format!("sentinel-{sp}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {sp}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {mp} 1\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 5000\n"
                    ),
                )
                .expect("write sentinel.conf");
                Node::spawn_raw(sp, d, [conf.to_str().expect("UTF-8 path"), "--sentinel"])
            },
            pings,
        );
        let sp = sentinel.port;
        wait_until(
            "the sentinel to know the replica",
            Duration::from_secs(20),
            || cli(sp, &["SENTINEL", "REPLICAS", "mymaster"]).contains(&rp.to_string()),
        );
        SentinelSet {
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    /// The master's port as the Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        cli(
            self.sentinel.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
    }
}

/// Makes a stored Response through `made_on`: its id.
async fn make_response(made_on: &Gateway, key: &str) -> String {
    let made: serde_json::Value = client()
        .post(made_on.url("/v1/responses"))
        .header("authorization", format!("Bearer {key}"))
        .json(&serde_json::json!({"model": "echo/x", "input": "remember me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    made["id"].as_str().expect("a response id").to_string()
}

/// `GET /v1/responses/<id>` through `gw`: its status and the id its body names.
async fn read_response(gw: &Gateway, id: &str, key: &str) -> (u16, Option<String>) {
    let r = client()
        .get(gw.url(&format!("/v1/responses/{id}")))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["id"].as_str().map(str::to_string))
}

/// Whether a stored Response made through `gw` is read back through it (the state link works).
pub async fn stored_response_reads_back(gw: &Gateway, key: &str) -> bool {
    let id = make_response(gw, key).await;
    read_response(gw, &id, key).await.0 == 200
}

/// A stored Response made through `made_on`, read back through each of `read_on`.
pub async fn stored_response_is_shared(made_on: &Gateway, read_on: &[&Gateway], key: &str) {
    let id = make_response(made_on, key).await;
    for g in read_on {
        let (status, got) = read_response(g, &id, key).await;
        assert_eq!(status, 200, "{}", g.logs());
        assert_eq!(got.as_deref(), Some(id.as_str()));
    }
}
