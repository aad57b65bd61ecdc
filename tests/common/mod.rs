//! Test harness: the gateway binary started on an ephemeral loopback port, and mock upstreams
//! (real HTTP servers on 127.0.0.1) that record what they receive and answer as told.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// A free loopback port (bound then released).
/// A loopback port below the ephemeral range that no earlier call in this test process returned,
/// for servers a test stops and restarts (Redis): a port from `free_port` can be handed to
/// another test's server as soon as it is released, and a client reconnecting to "its" Redis
/// would then reach someone else's.
#[allow(dead_code)]
pub fn reserved_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // A different block per test process, so test binaries run side by side do not meet.
    let base = 20_000 + (std::process::id() % 400) as u16 * 25;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 25 * 400, "out of reserved ports");
        let port = base.wrapping_add(n) % 12_000 + 20_000;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Whether a started gateway can be asked who it is over plain HTTP on its port, with its
/// request lines in its log (not with HTTPS on that port, a port the test chose, or a log
/// level that hides request lines).
fn identity_checkable(vars: &[(&str, &str)]) -> bool {
    !vars.iter().any(|(k, _)| {
        matches!(
            *k,
            "GATEWAY_LISTEN" | "GATEWAY_TLS_CERT" | "GATEWAY_LOG_LEVEL" | "RUST_LOG"
        )
    })
}

/// A running gateway process. Killed (by its own PID) when dropped.
pub struct Gateway {
    pub port: u16,
    pub child: Child,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Gateway {
    /// Starts the gateway with these variables (and nothing else from the environment that
    /// could configure a provider), and waits until `/health` answers.
    pub fn start(vars: &[(&str, &str)]) -> Gateway {
        Self::try_start(vars).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    pub fn try_start(vars: &[(&str, &str)]) -> Result<Gateway, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::spawn(vars) {
                Ok(g) => return Ok(g),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The command line used to run the gateway binary with a clean environment.
    pub fn command(vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ai-gateway"));
        cmd.env_clear();
        for k in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("GATEWAY_THREADS", "2");
        // The response cache is on by default; tests that count upstream calls for repeated
        // identical requests would see hits. Cache tests turn it on explicitly.
        cmd.env("GATEWAY_CACHE_BACKEND", "off");
        // Active health checks send GET probes to every upstream at start-up and on a timer;
        // health tests turn them on explicitly.
        cmd.env("GATEWAY_HEALTH_CHECK_INTERVAL", "off");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(vars: &[(&str, &str)]) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Self::command(vars);
        if !vars.iter().any(|(k, _)| *k == "GATEWAY_LISTEN") {
            cmd.env("GATEWAY_LISTEN", &listen);
        }
        cmd.env("GATEWAY_UPGRADE_SOCK", dir.path().join("upgrade.sock"))
            .env("GATEWAY_PID_FILE", dir.path().join("gateway.pid"))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .stdin(Stdio::null());
        let child = cmd.spawn().map_err(|e| e.to_string())?;
        let port = vars
            .iter()
            .find(|(k, _)| *k == "GATEWAY_LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(port);
        let mut g = Gateway {
            port,
            child,
            dir,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = g.child.try_wait() {
                return Err(format!("gateway exited with {status}: {}", g.logs()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", g.port)).is_ok() {
                if !identity_checkable(vars) || g.answers_as_itself() {
                    return Ok(g);
                }
                return Err(format!(
                    "port {} answered, but not as this gateway: {}",
                    g.port,
                    g.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("gateway did not listen in time: {}", g.logs()))
    }

    /// The port was free when it was picked, but a server another test in this process
    /// started may have taken it before the gateway bound it (the gateway then fails to bind,
    /// and the connect above reached the other server, which may go away mid-test). A request
    /// whose id shows up in this gateway's own log proves the port is this gateway's.
    fn answers_as_itself(&mut self) -> bool {
        use std::io::Write as _;
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let token = format!(
            "ready-{}-{}-{}",
            std::process::id(),
            self.port,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {token}\r\nConnection: close\r\n\r\n"
        );
        if c.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        self.wait_log(&token, Duration::from_secs(5)) && matches!(self.child.try_wait(), Ok(None))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends a signal to the gateway process (by its PID).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for tests (no proxy, no pooling surprises).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// One request as a mock upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

/// What a mock answers with. Handlers get the recorded request and return a response.
pub type Handler = Arc<dyn Fn(&Recorded) -> Response + Send + Sync>;

#[derive(Clone)]
struct MockState {
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Handler>>,
}

/// A mock upstream: a real HTTP server on 127.0.0.1 with an ephemeral port.
pub struct Mock {
    pub port: u16,
    state: MockState,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    /// Starts a mock on the current tokio runtime.
    pub async fn start(handler: Handler) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let port = listener.local_addr().expect("addr").port();
        let state = MockState {
            calls: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(Mutex::new(Vec::new())),
            handler: Arc::new(Mutex::new(handler)),
        };
        let app = axum::Router::new()
            .fallback(mock_handler)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls received so far, not counting `GET`s (the gateway's health probes and model
    /// listings are `GET`s; everything a client causes is a `POST`).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Every request, `GET`s included.
    pub fn all_calls(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The last `POST` received.
    pub fn last(&self) -> Recorded {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
            .expect("the mock received a POST")
    }

    /// Replaces the handler.
    pub fn set(&self, handler: Handler) {
        *self.state.handler.lock().unwrap() = handler;
    }

    /// Stops the server (connections are refused afterwards).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mock_handler(State(state): State<MockState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers = header_map(&parts.headers);
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body,
    };
    if rec.method != "GET" {
        state.calls.fetch_add(1, Ordering::SeqCst);
    }
    state.requests.lock().unwrap().push(rec.clone());
    let handler = state.handler.lock().unwrap().clone();
    handler(&rec)
}

fn header_map(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// A JSON response.
pub fn json_response(status: u16, body: serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// An SSE response whose events are sent with `gap` between them. If `cut_after` is set, the
/// connection is dropped after that many events (no terminator).
pub fn sse_response(events: Vec<String>, gap: Duration, cut_after: Option<usize>) -> Response {
    let stream = async_stream(events, gap, cut_after);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn async_stream(
    events: Vec<String>,
    gap: Duration,
    cut_after: Option<usize>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(
        (events.into_iter(), 0usize),
        move |(mut it, i)| async move {
            if let Some(n) = cut_after {
                if i == n {
                    return Some((
                        Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "cut")),
                        (it, i + 1),
                    ));
                }
                if i > n {
                    return None;
                }
            }
            let ev = it.next()?;
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(Bytes::from(ev)), (it, i + 1)))
        },
    )
}

/// An OpenAI `chat.completion` body.
pub fn openai_completion(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1727346142,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "system_fingerprint": "fp_mock"
    })
}

/// OpenAI SSE events (each `data: ...\n\n`) for a streamed answer made of `pieces`, with the
/// usage chunk (when `usage`) and `[DONE]`.
pub fn openai_stream_events(model: &str, pieces: &[&str], usage: bool) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let v = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1727346142,
            "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        format!("data: {v}\n\n")
    };
    let mut ev = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )];
    for p in pieces {
        ev.push(chunk(serde_json::json!({"content": p}), None));
    }
    ev.push(chunk(serde_json::json!({}), Some("stop")));
    if usage {
        let v = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1727346142,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": pieces.len(), "total_tokens": 11 + pieces.len()}
        });
        ev.push(format!("data: {v}\n\n"));
    }
    ev.push("data: [DONE]\n\n".to_string());
    ev
}

/// A mock that speaks OpenAI chat completions: JSON, or SSE when the request asks to stream.
pub fn openai_handler(content: &'static str) -> Handler {
    Arc::new(move |r: &Recorded| {
        if r.path.ends_with("/models") {
            return json_response(
                200,
                serde_json::json!({"object":"list","data":[{"id":"mock-model","object":"model","created":1,"owned_by":"mock"}]}),
            );
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("mock").to_string();
        if body["stream"] == serde_json::Value::Bool(true) {
            let pieces: Vec<&str> = content.split_inclusive(' ').collect();
            let usage = body["stream_options"]["include_usage"] == serde_json::Value::Bool(true);
            sse_response(
                openai_stream_events(&model, &pieces, usage),
                Duration::ZERO,
                None,
            )
        } else {
            json_response(200, openai_completion(&model, content))
        }
    })
}

/// Reads a whole SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            let lines: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim_start()))
                .collect();
            if lines.is_empty() {
                None
            } else {
                Some(lines.join("\n"))
            }
        })
        .collect()
}

/// A small chat request body.
pub fn chat_body(model: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// The Python with the `openai` package: `AI_GATEWAY_TEST_PYTHON`, or `.venv/bin/python`
/// (made by `scripts/test.sh`).
#[allow(dead_code)]
pub fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("AI_GATEWAY_TEST_PYTHON") {
        return std::path::PathBuf::from(p);
    }
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai package: run scripts/test.sh (it creates .venv) or set AI_GATEWAY_TEST_PYTHON"
    );
    venv
}

/// Runs the Python SDK checks `args` (a script under `tests/python/`, or `-c CODE`) against
/// `gw` with `GATEWAY_BASE_URL` and `env` set; asserts the run succeeded (showing its output and
/// the gateway's log otherwise) and returns its stdout.
#[allow(dead_code)]
pub async fn run_python(gw: &Gateway, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(python());
    for a in args {
        if a.ends_with(".py") {
            cmd.arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/python")
                    .join(a),
            );
        } else {
            cmd.arg(a);
        }
    }
    cmd.env("GATEWAY_BASE_URL", gw.base())
        .env("NO_PROXY", "127.0.0.1,localhost");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python"))
        .await
        .expect("python task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.logs()
    );
    stdout
}

/// A streamed chat completion: the status and every `data:` payload, parsed as JSON where it is
/// JSON (`[DONE]` stays a string).
pub async fn chat_stream(gw: &Gateway, body: &serde_json::Value) -> (u16, Vec<serde_json::Value>) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let data = sse_data(&text)
        .into_iter()
        .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)))
        .collect();
    (status, data)
}

/// The text of a chat stream's deltas, joined.
pub fn delta_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The ids `GET /v1/models` lists.
pub async fn model_ids(gw: &Gateway) -> Vec<String> {
    let models: serde_json::Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect()
}
