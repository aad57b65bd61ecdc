//! Logs: the logger set-up (`GATEWAY_LOG_LEVEL`/`RUST_LOG`, `GATEWAY_LOG_FORMAT=text|json`) and
//! the one structured line written per request. Keys never appear: only key names.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use serde::Serialize;

use crate::config::LogFormat;

/// Target of the per-request line, so the formatter can tell it from other messages.
pub const ACCESS_TARGET: &str = "access";

/// Installs the global logger. Safe to call once; later calls are ignored.
pub fn init_logging(level: &str, format: LogFormat) {
    let mut b = env_logger::Builder::new();
    b.parse_filters(level);
    // Pingora's own info lines (per listener, per service) repeat ours.
    if !level.contains("pingora") {
        b.filter_module("pingora_core", log::LevelFilter::Warn);
    }
    // Through the batching sink: synchronous until `start_log_writer` runs (after a --daemon
    // fork), then one write(2) per batch instead of one per line.
    b.target(env_logger::Target::Pipe(Box::new(SinkWriter)));
    match format {
        LogFormat::Text => {
            b.format(|buf, r| {
                let mut ts = Vec::with_capacity(24);
                push_rfc3339_now(&mut ts);
                writeln!(
                    buf,
                    "{} {} {}",
                    String::from_utf8_lossy(&ts),
                    r.level(),
                    r.args()
                )
            });
        }
        LogFormat::Json => {
            b.format(|buf, r| {
                if r.target() == ACCESS_TARGET {
                    // Already a JSON object.
                    writeln!(buf, "{}", r.args())
                } else {
                    let line = serde_json::json!({
                        "ts": rfc3339_now(),
                        "level": r.level().as_str(),
                        "target": r.target(),
                        "msg": r.args().to_string(),
                    });
                    writeln!(buf, "{line}")
                }
            });
        }
    }
    let _ = b.try_init();
}

/// Lines wait at most this long in memory before they are written.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// A batch this large wakes the writer at once; twice this and the logging thread writes it
/// itself (back-pressure instead of unbounded memory when stderr blocks).
const BATCH_BYTES: usize = 256 * 1024;

/// Log lines on their way to stderr. A request appends its line under a short lock; a writer
/// thread writes what gathered every `BATCH_WINDOW`, so a busy gateway makes one write(2) per
/// batch instead of one per request. Stderr is written only under `write_lock`, in order.
struct Sink {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    write_lock: Mutex<()>,
    started: AtomicBool,
}

static SINK: Sink = Sink {
    buf: Mutex::new(Vec::new()),
    wake: Condvar::new(),
    write_lock: Mutex::new(()),
    started: AtomicBool::new(false),
};

impl Sink {
    fn append(&self, bytes: &[u8]) {
        self.append_with(|b| b.extend_from_slice(bytes));
    }

    fn append_with(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut b = self.buf.lock();
        let was_empty = b.is_empty();
        f(&mut b);
        let len = b.len();
        drop(b);
        if len >= 2 * BATCH_BYTES {
            self.flush();
        } else if was_empty || len >= BATCH_BYTES {
            self.wake.notify_one();
        }
    }

    /// Writes everything gathered so far, in order, before returning.
    fn flush(&self) {
        let _w = self.write_lock.lock();
        let batch = std::mem::take(&mut *self.buf.lock());
        if !batch.is_empty() {
            let _ = std::io::stderr().lock().write_all(&batch);
        }
    }

    fn run(&self) {
        loop {
            {
                let mut b = self.buf.lock();
                while b.is_empty() {
                    self.wake.wait(&mut b);
                }
            }
            std::thread::sleep(BATCH_WINDOW);
            self.flush();
        }
    }
}

/// The logger's target: the sink once the writer runs, stderr directly before.
struct SinkWriter;

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if SINK.started.load(Ordering::Acquire) {
            SINK.append(buf);
            Ok(buf.len())
        } else {
            std::io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if SINK.started.load(Ordering::Acquire) {
            Ok(())
        } else {
            std::io::stderr().flush()
        }
    }
}

/// Writes one line (`f` writes it without the newline) through the sink, or to stderr before
/// the writer runs.
fn write_line(f: impl FnOnce(&mut Vec<u8>)) {
    if SINK.started.load(Ordering::Acquire) {
        SINK.append_with(|b| {
            f(b);
            b.push(b'\n');
        });
    } else {
        let mut line = Vec::with_capacity(256);
        f(&mut line);
        line.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// Starts the log writer thread in this process (call it after any fork: threads do not
/// survive one). Later calls do nothing.
pub fn start_log_writer() {
    if SINK.started.load(Ordering::Acquire) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(|| SINK.run());
    if spawned.is_ok() {
        SINK.started.store(true, Ordering::Release);
    }
}

/// Writes out every buffered log line (before the process exits).
pub fn flush_logs() {
    SINK.flush();
}

/// `2026-11-24T16:18:07.123Z`.
pub fn rfc3339_now() -> String {
    let mut s = Vec::with_capacity(24);
    push_rfc3339_now(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// The time now in UTC, RFC 3339 with milliseconds (`2026-12-05T01:02:03.456Z`), written with
/// integer arithmetic (the text log line carries it on every request).
pub fn push_rfc3339_now(s: &mut Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    push_rfc3339(s, now);
}

fn push_rfc3339(s: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400) as u64;
    push_digits(s, y.clamp(0, 9999) as u64, 4);
    s.push(b'-');
    push_digits(s, u64::from(mo), 2);
    s.push(b'-');
    push_digits(s, u64::from(d), 2);
    s.push(b'T');
    push_digits(s, rem / 3600, 2);
    s.push(b':');
    push_digits(s, rem % 3600 / 60, 2);
    s.push(b':');
    push_digits(s, rem % 60, 2);
    s.push(b'.');
    push_digits(s, u64::from(since_epoch.subsec_millis()), 3);
    s.push(b'Z');
}

/// A float rounded to `10^-decimals` for JSON: `0.223`, never `0.22277000000000002`.
fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

fn ms3<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rounded(*x, 3))
}

fn opt_ms3<S: serde::Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => s.serialize_f64(rounded(*x, 3)),
        None => s.serialize_none(),
    }
}

fn opt_usd6<S: serde::Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => s.serialize_f64(rounded(*x, 6)),
        None => s.serialize_none(),
    }
}

// Howard Hinnant's days -> civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Everything the per-request line says.
#[derive(Debug, Default, Serialize)]
pub struct RequestLog<'a> {
    pub req: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    pub status: u16,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub stream: bool,
    #[serde(serialize_with = "ms3")]
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_ms3")]
    pub ttfb_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_usd6")]
    pub cost_usd: Option<f64>,
    pub bytes: usize,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Tools a translated request left out (comma-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_tools: Option<&'a str>,
    /// The backend of a pool of several that served the request, and why it was picked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick: Option<&'a str>,
}

/// `1.23ms` under 10 ms, `320ms` above, written with integer arithmetic (float formatting with
/// a precision is slow, and this runs for every request).
struct Ms(f64);

impl Ms {
    fn push(&self, s: &mut Vec<u8>) {
        let d = self.0.max(0.0);
        let mut n = itoa::Buffer::new();
        if d < 10.0 {
            let h = (d * 100.0).round() as u64;
            s.extend_from_slice(n.format(h / 100).as_bytes());
            s.push(b'.');
            push_digits(s, h % 100, 2);
        } else {
            s.extend_from_slice(n.format(d.round() as u64).as_bytes());
        }
        s.extend_from_slice(b"ms");
    }
}

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.push(&mut v);
        f.write_str(&String::from_utf8_lossy(&v))
    }
}

/// A non-negative amount with six decimals, in integer arithmetic.
struct Fixed6(f64);

impl Fixed6 {
    fn push(&self, s: &mut Vec<u8>) {
        if !(self.0.is_finite() && (0.0..1e12).contains(&self.0)) {
            let _ = write!(s, "{:.6}", self.0);
            return;
        }
        let u = (self.0 * 1e6).round() as u64;
        s.extend_from_slice(itoa::Buffer::new().format(u / 1_000_000).as_bytes());
        s.push(b'.');
        push_digits(s, u % 1_000_000, 6);
    }
}

impl std::fmt::Display for Fixed6 {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.push(&mut v);
        f.write_str(&String::from_utf8_lossy(&v))
    }
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(s: &mut Vec<u8>, n: u64, width: u32) {
    let mut div = 10u64.pow(width.saturating_sub(1));
    while div > 0 {
        s.push(b'0' + ((n / div) % 10) as u8);
        div /= 10;
    }
}

pub fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quote_if_needed(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_empty() || s.contains([' ', '"', '=']) {
        format!("{s:?}").into()
    } else {
        s.into()
    }
}

impl RequestLog<'_> {
    pub fn text(&self) -> String {
        let mut v = Vec::with_capacity(256);
        self.write_text(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// The text line, written piece by piece (no formatting machinery: it runs for every
    /// request).
    fn write_text(&self, s: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        let put = |s: &mut Vec<u8>, parts: &[&[u8]]| {
            for p in parts {
                s.extend_from_slice(p);
            }
        };
        if let Some(m) = self.model {
            put(s, &[b"model=", quote_if_needed(m).as_bytes(), b" "]);
        }
        if let Some(p) = self.provider {
            put(s, &[b"provider=", p.as_bytes(), b" "]);
        }
        if let Some(c) = self.cache {
            put(s, &[b"cache=", c.as_bytes(), b" "]);
        }
        put(s, &[b"status=", n.format(self.status).as_bytes()]);
        put(s, &[b" outcome=", self.outcome.as_bytes(), b" latency="]);
        Ms(self.latency_ms).push(s);
        if let Some(t) = self.ttfb_ms {
            s.extend_from_slice(b" ttfb=");
            Ms(t).push(s);
        }
        put(s, &[b" tokens=", n.format(self.tokens).as_bytes()]);
        if let (Some(p), Some(c)) = (self.prompt_tokens, self.completion_tokens) {
            put(s, &[b" prompt_tokens=", n.format(p).as_bytes()]);
            put(s, &[b" completion_tokens=", n.format(c).as_bytes()]);
        }
        if let Some(c) = self.cost_usd {
            s.extend_from_slice(b" cost_usd=");
            Fixed6(c).push(s);
        }
        if let Some(k) = self.key {
            put(s, &[b" key=", quote_if_needed(k).as_bytes()]);
        }
        put(
            s,
            &[b" stream=", if self.stream { b"true" } else { b"false" }],
        );
        put(s, &[b" attempts=", n.format(self.attempts).as_bytes()]);
        if let Some(b) = self.backend {
            put(s, &[b" backend=", quote_if_needed(b).as_bytes()]);
        }
        if let Some(p) = self.pick {
            put(s, &[b" pick=", p.as_bytes()]);
        }
        put(s, &[b" bytes=", n.format(self.bytes).as_bytes()]);
        put(s, &[b" method=", self.method.as_bytes()]);
        put(s, &[b" path=", quote_if_needed(self.path).as_bytes()]);
        put(s, &[b" req=", self.req.as_bytes()]);
        if let Some(d) = self.dropped_tools {
            put(s, &[b" dropped_tools=", quote_if_needed(d).as_bytes()]);
        }
        if let Some(e) = self.error {
            let _ = write!(s, " error={:?}", e);
        }
    }

    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("ts".into(), rfc3339_now().into());
            o.insert("level".into(), "INFO".into());
        }
        v.to_string()
    }

    pub fn emit(&self, format: LogFormat) {
        if !log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
            return;
        }
        // Formatted straight into the sink (no trip through the logger's own buffer): the same
        // bytes the logger's formatter writes for this target.
        write_line(|buf| match format {
            LogFormat::Text => {
                push_rfc3339_now(buf);
                buf.extend_from_slice(b" INFO ");
                self.write_text(buf);
            }
            LogFormat::Json => buf.extend_from_slice(self.json().as_bytes()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_costs_format_like_fixed_precision() {
        for (d, want) in [
            (0.0, "0.00ms"),
            (1.234, "1.23ms"),
            (9.99, "9.99ms"),
            (320.4, "320ms"),
            (1234.6, "1235ms"),
        ] {
            assert_eq!(Ms(d).to_string(), want);
        }
        assert_eq!(Fixed6(0.0001234).to_string(), "0.000123");
        assert_eq!(Fixed6(12.5).to_string(), "12.500000");
        assert_eq!(Fixed6(f64::NAN).to_string(), "NaN");
    }

    #[test]
    fn text_line_has_the_documented_fields() {
        let l = RequestLog {
            req: "req_1",
            method: "POST",
            path: "/v1/chat/completions",
            model: Some("gpt-4o"),
            provider: Some("openai"),
            status: 200,
            outcome: "ok",
            cache: Some("miss"),
            key: Some("team-a"),
            latency_ms: 320.0,
            ttfb_ms: Some(95.0),
            tokens: 847,
            ..Default::default()
        };
        let t = l.text();
        assert!(
            t.starts_with("model=gpt-4o provider=openai cache=miss status=200"),
            "{t}"
        );
        assert!(t.contains("latency=320ms ttfb=95ms tokens=847"));
        assert!(t.contains("key=team-a") && t.contains("req=req_1"));
        let j: serde_json::Value = serde_json::from_str(&l.json()).unwrap();
        assert_eq!(j["model"], "gpt-4o");
        assert_eq!(j["status"], 200);
        assert_eq!(j["level"], "INFO");
    }

    #[test]
    fn times_are_rfc3339_utc_and_json_numbers_are_rounded() {
        let mut s = Vec::new();
        push_rfc3339(&mut s, Duration::from_millis(1_796_346_123_456));
        assert_eq!(String::from_utf8_lossy(&s), "2026-12-04T01:02:03.456Z");
        let now = rfc3339_now();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        let l = RequestLog {
            latency_ms: 0.22277 + 1e-13,
            ttfb_ms: Some(95.4 + 1e-11),
            cost_usd: Some(0.00012345678),
            ..Default::default()
        };
        let j = l.json();
        assert!(j.contains("\"latency_ms\":0.223"), "{j}");
        assert!(j.contains("\"ttfb_ms\":95.4,"), "{j}");
        assert!(j.contains("\"cost_usd\":0.000123"), "{j}");
    }

    #[test]
    fn text_line_exactly() {
        let l = RequestLog {
            req: "req_1",
            method: "POST",
            path: "/v1/chat/completions",
            model: Some("gpt-4o"),
            provider: Some("openai"),
            status: 200,
            outcome: "ok",
            cache: Some("miss"),
            key: Some("team a"),
            stream: true,
            latency_ms: 1.234,
            ttfb_ms: Some(95.4),
            prompt_tokens: Some(800),
            completion_tokens: Some(47),
            tokens: 847,
            cost_usd: Some(0.0012345),
            bytes: 1234,
            attempts: 2,
            error: Some("boom \"x\""),
            dropped_tools: None,
            backend: Some("http://10.0.0.5:8000/v1"),
            pick: Some("affinity"),
        };
        assert_eq!(
            l.text(),
            "model=gpt-4o provider=openai cache=miss status=200 outcome=ok latency=1.23ms \
             ttfb=95ms tokens=847 prompt_tokens=800 completion_tokens=47 cost_usd=0.001235 \
             key=\"team a\" stream=true attempts=2 backend=http://10.0.0.5:8000/v1 \
             pick=affinity bytes=1234 method=POST \
             path=/v1/chat/completions req=req_1 error=\"boom \\\"x\\\"\""
        );
        let bare = RequestLog {
            req: "r",
            method: "GET",
            path: "/v1/models",
            status: 404,
            outcome: "error",
            ..Default::default()
        };
        assert_eq!(
            bare.text(),
            "status=404 outcome=error latency=0.00ms tokens=0 stream=false attempts=0 bytes=0 \
             method=GET path=/v1/models req=r"
        );
    }

    #[test]
    fn text_line_names_dropped_tools() {
        let l = RequestLog {
            req: "r",
            method: "POST",
            path: "/v1/responses",
            status: 200,
            outcome: "ok",
            dropped_tools: Some("web_search,tool_search"),
            ..Default::default()
        };
        assert!(
            l.text()
                .ends_with(" req=r dropped_tools=web_search,tool_search"),
            "{}",
            l.text()
        );
        let j: serde_json::Value = serde_json::from_str(&l.json()).unwrap();
        assert_eq!(j["dropped_tools"], "web_search,tool_search");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20781), (2026, 11, 24));
    }
}
