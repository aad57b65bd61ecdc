//! OpenTelemetry traces over OTLP HTTP/protobuf: one server span per request, a child span per
//! upstream attempt (failovers are siblings), spans for the cache lookup and the rate limits,
//! with the GenAI semantic-convention attributes. Off unless an endpoint is set
//! (`config::tracing`): then a request's context holds no trace (`None`) and nothing here runs.
//!
//! The OpenTelemetry crates decide and name: the SDK's sampler (`OTEL_TRACES_SAMPLER`), id
//! generator and resource, the W3C Trace Context propagator for the client's `traceparent`, and
//! the OTLP messages of `opentelemetry-proto`. What is the gateway's own is the cheap path in
//! between, because the SDK's span objects and `opentelemetry-otlp`'s conversion and prost
//! encoding cost ~50k instructions a request, a third of the request itself, against the 10%
//! the issue allows (benches/RESULTS.md, "OpenTelemetry traces"):
//!
//! - a request keeps its spans as plain [`Record`]s and writes each attribute, as it sets it,
//!   in its protobuf form into the span's one buffer ([`Attrs`]): no string is copied per value;
//! - a span that ends is encoded under a short lock into the batch being filled ([`Queue`]), so
//!   nothing of it outlives the request but its bytes;
//! - the `trace-export` thread frames a sealed batch as one `ExportTraceServiceRequest` (the
//!   resource and scope encoded once by prost) and POSTs it.
//!
//! The field numbers are those of `opentelemetry-proto`'s generated messages, and the tests
//! decode every export with those messages and compare every field. A full queue drops the span
//! and counts it (`gateway_trace_spans_total{outcome="dropped"}`); a collector that is down or
//! hangs costs the export thread its timeout, never a request.
//!
//! The `traceparent` sent upstream names the attempt's own span as parent, in the client's
//! trace when it sent a `traceparent` (W3C Trace Context, `tracestate` kept).
//!
//! Prompts and answers are exported only with
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (secrets the gateway knows are cut
//! out first); key names are exported, keys never.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::Context;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1 as proto;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler as SdkSampler, SamplingDecision, ShouldSample,
};
use opentelemetry_sdk::Resource;
use parking_lot::{Condvar, Mutex};
use prost::encoding::{encode_key, encode_varint, WireType};

use crate::api::Usage;
use crate::config::tracing::{Root, Sampler, TracingConfig};

/// Most bytes of a prompt or an answer exported when content capture is on.
const MAX_CONTENT: usize = 16 * 1024;
/// Most distinct finish reasons kept per request.
const MAX_FINISH_REASONS: usize = 8;
/// The instrumentation scope the spans are exported under.
const SCOPE: &str = "ai-gateway";

/// The process's tracer, once tracing is set up (`init`).
static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    sampler: SdkSampler,
    ids: RandomIdGenerator,
    queue: Arc<Queue>,
    encoder: Arc<Encoder>,
    config: TracingConfig,
    propagator: TraceContextPropagator,
    started: AtomicBool,
}

/// Sets up the sampler and the export queue (no thread yet: see [`start_export`]).
pub fn init(config: &TracingConfig) {
    if TRACING.get().is_some() {
        return;
    }
    // Header values (a vendor's API key) never reach a log line.
    crate::redact::set_group(
        "otlp",
        config.headers.iter().map(|(_, v)| v.expose().to_string()),
    );
    let sampler = match config.sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::Ratio(r) => SdkSampler::TraceIdRatioBased(r),
        Sampler::ParentBased(root) => SdkSampler::ParentBased(Box::new(match root {
            Root::AlwaysOn => SdkSampler::AlwaysOn,
            Root::AlwaysOff => SdkSampler::AlwaysOff,
            Root::Ratio(r) => SdkSampler::TraceIdRatioBased(r),
        })),
    };
    let encoder = Encoder::new(&config.service_name);
    let _ = TRACING.set(Tracing {
        sampler,
        ids: RandomIdGenerator::default(),
        queue: Arc::new(Queue::new(
            config.max_queue,
            config.max_batch,
            encoder.room(),
        )),
        encoder: Arc::new(encoder),
        config: config.clone(),
        propagator: TraceContextPropagator::new(),
        started: AtomicBool::new(false),
    });
    log::info!(
        "tracing: OTLP http/protobuf to {} (service {}, sampler {:?})",
        config.endpoint,
        config.service_name,
        config.sampler
    );
}

/// Starts the export thread in this process (after any fork). Later calls do nothing.
pub fn start_export() {
    let Some(t) = TRACING.get() else { return };
    if t.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let config = t.config.clone();
    let queue = t.queue.clone();
    let encoder = t.encoder.clone();
    let spawned = std::thread::Builder::new()
        .name("trace-export".into())
        .spawn(move || export_loop(&config, &queue, &encoder));
    if let Err(e) = spawned {
        log::error!("tracing: cannot start the export thread: {e}");
    }
}

/// Exports what is queued, waiting at most `limit` (before the process exits).
pub fn flush(limit: Duration) {
    if let Some(t) = TRACING.get() {
        if t.started.load(Ordering::Acquire) {
            t.queue.flush(limit);
        }
    }
}

// --- Spans as a request records them ---------------------------------------------------------

/// An attribute's value, borrowed: it is encoded the moment it is set (see [`Attrs`]).
#[derive(Clone, Copy)]
enum Attr<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Strs(&'a [String]),
}

/// A span's attributes, already encoded as OTLP `Span.attributes` fields (`KeyValue`s): a
/// request writes each value into this one buffer as it sets it, so a span costs one buffer,
/// not a string per value, and the export thread copies the bytes as they are.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn with_capacity(n: usize) -> Attrs {
        Attrs(Vec::with_capacity(n))
    }

    /// One call at each call site: the attribute writer is shared, not inlined at each of the
    /// ~25 places a span sets a value (it made the trace code three times as large).
    #[inline]
    fn push(&mut self, (k, v): (&str, Attr<'_>)) {
        put_attribute(k, v, &mut self.0);
    }

    /// The span's name, `first second`, as its `Span.name` field (protobuf reads fields in any
    /// order): a name made of two parts costs no string of its own. The record's own `name`
    /// is then empty.
    fn name(&mut self, first: &str, second: &str) {
        let len = first.len() + 1 + second.len();
        frame(field::NAME, len, &mut self.0);
        self.0.extend_from_slice(first.as_bytes());
        self.0.push(b' ');
        self.0.extend_from_slice(second.as_bytes());
    }
}

/// The trace a request's spans belong to.
#[derive(Clone)]
struct TraceIds {
    trace_id: TraceId,
    flags: TraceFlags,
    /// The client's `tracestate`, as the propagator read it (a header value: sent upstream as
    /// it is, and its bytes exported).
    state: Option<http::HeaderValue>,
}

/// One span while it is open: its ids, times and name, and its attributes already encoded.
struct Record {
    trace: TraceIds,
    span_id: SpanId,
    /// `SpanId::INVALID` for a root span.
    parent: SpanId,
    parent_remote: bool,
    /// Empty when the name was written with the attributes ([`Attrs::name`]).
    name: Cow<'static, str>,
    kind: proto::span::SpanKind,
    start: u64,
    end: u64,
    attrs: Attrs,
    /// An error status and its message.
    error: Option<String>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A span the caller ends (cache lookup, rate limits); `None` inside when the trace is not
/// sampled.
pub struct Span(Option<Record>);

impl Span {
    fn set(&mut self, key: &'static str, value: Attr<'_>) {
        if let Some(r) = self.0.as_mut() {
            r.attrs.push((key, value));
        }
    }

    fn end(self) {
        if let (Some(mut r), Some(t)) = (self.0, TRACING.get()) {
            r.end = unix_nanos();
            t.queue.push(&r);
        }
    }
}

// --- The export queue -------------------------------------------------------------------------

/// Finished spans, already encoded: a span is written into the batch being filled the moment it
/// ends (under a short lock), so nothing of it outlives the request but its bytes; a batch of
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans is sealed for the export thread, which only frames it
/// and POSTs it. A batch's buffer starts with room for the request's envelope
/// ([`Encoder::room`]), so the body is sent from the buffer as it is, and the buffer comes back
/// when the HTTP client drops the body ([`Lent`]).
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the export thread (a sealed batch, or a flush).
    wake: Condvar,
    /// Wakes a flush waiting for the export thread.
    done: Condvar,
    /// Most spans waiting (`OTEL_BSP_MAX_QUEUE_SIZE`).
    max: usize,
    /// Spans per batch (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    batch: usize,
    /// Bytes kept at the start of a batch's buffer for the envelope.
    room: usize,
}

/// `ScopeSpans.spans` fields, encoded after `Queue::room` bytes, and how many spans they hold.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    spans: usize,
}

#[derive(Default)]
struct QueueState {
    /// Sealed batches, oldest first.
    ready: std::collections::VecDeque<Batch>,
    /// The batch being filled.
    current: Batch,
    /// Spans waiting, sealed or not.
    queued: usize,
    /// Buffers the export thread is done with, kept for the next batches.
    spare: Vec<Vec<u8>>,
    /// Flushes asked for, and flushes done (a flush waits until `flushed` reaches its number).
    asked: u64,
    flushed: u64,
    /// The export thread is waiting for spans: worth a notify.
    idle: bool,
}

impl Queue {
    fn new(max: usize, batch: usize, room: usize) -> Self {
        let mut state = QueueState::default();
        state.current.bytes = vec![0; room];
        Queue {
            state: Mutex::new(state),
            wake: Condvar::new(),
            done: Condvar::new(),
            max,
            batch: batch.max(1),
            room,
        }
    }

    /// An empty batch: a buffer given back, or a new one with room for `capacity` bytes.
    fn next_batch(&self, spare: &mut Vec<Vec<u8>>, capacity: usize) -> Batch {
        let bytes = spare.pop().unwrap_or_else(|| {
            let mut b = Vec::with_capacity(capacity.max(self.room));
            b.resize(self.room, 0);
            b
        });
        Batch { bytes, spans: 0 }
    }

    /// Encodes a finished span into the batch being filled (or drops it, counted, when the
    /// queue is full).
    fn push(&self, r: &Record) {
        let len = span_len(r);
        let mut s = self.state.lock();
        if s.queued >= self.max {
            drop(s);
            crate::metrics::trace_spans("dropped", 1);
            return;
        }
        let out = &mut s.current.bytes;
        out.reserve(framed_len(field::SPANS, len));
        frame(field::SPANS, len, out);
        write_span(r, out);
        s.current.spans += 1;
        s.queued += 1;
        let mut wake = false;
        if s.current.spans >= self.batch {
            // A new buffer is made as large as this batch, so it does not grow span by span.
            let capacity = s.current.bytes.len();
            let next = self.next_batch(&mut s.spare, capacity);
            let full = std::mem::replace(&mut s.current, next);
            s.ready.push_back(full);
            wake = s.idle;
        }
        drop(s);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits until a batch is sealed, a flush is asked for, or `delay` has passed; then takes
    /// the sealed batches (and the one being filled, unless a sealed batch came first), and the
    /// number of the last flush asked for.
    fn take(&self, delay: Duration) -> (Vec<Batch>, u64) {
        let mut s = self.state.lock();
        let deadline = Instant::now() + delay;
        let mut timed_out = false;
        while s.ready.is_empty() && s.asked == s.flushed {
            s.idle = true;
            if self.wake.wait_until(&mut s, deadline).timed_out() {
                timed_out = true;
                break;
            }
        }
        s.idle = false;
        let mut out: Vec<Batch> = s.ready.drain(..).collect();
        if (timed_out || s.asked > s.flushed) && s.current.spans > 0 {
            let next = self.next_batch(&mut s.spare, 0);
            out.push(std::mem::replace(&mut s.current, next));
        }
        s.queued -= out.iter().map(|b| b.spans).sum::<usize>();
        (out, s.asked)
    }

    /// A batch's buffer, emptied, for a later batch (two are kept).
    fn give_back(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        bytes.resize(self.room, 0);
        let mut s = self.state.lock();
        if s.spare.len() < 2 {
            s.spare.push(bytes);
        }
    }

    fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut s = self.state.lock();
        s.asked += 1;
        let mine = s.asked;
        self.wake.notify_one();
        while s.flushed < mine {
            if self.done.wait_until(&mut s, deadline).timed_out() {
                return;
            }
        }
    }

    fn flushed(&self, to: u64) {
        let mut s = self.state.lock();
        if to > s.flushed {
            s.flushed = to;
            self.done.notify_all();
        }
    }
}

// --- Export: records to one OTLP request ------------------------------------------------------

/// The body of an OTLP `ExportTraceServiceRequest` around a batch of encoded spans: the
/// resource and the scope are `opentelemetry-proto` messages, encoded once by prost; the spans
/// were written by [`write_span`] with prost's field encoders, each message's length computed
/// once from the leaves up (prost's own `Span` message cost ~7k instructions a span: a nested
/// message's length is computed again at each level it sits under, and every value is copied
/// into the message first).
struct Encoder {
    /// `ResourceSpans.resource` (field 1), encoded.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), encoded.
    scope: Vec<u8>,
}

/// Field numbers of the OTLP messages written here.
mod field {
    // ExportTraceServiceRequest
    pub const RESOURCE_SPANS: u32 = 1;
    // ResourceSpans
    pub const SCOPE_SPANS: u32 = 2;
    // ScopeSpans
    pub const SPANS: u32 = 2;
    // Span
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME: u32 = 7;
    pub const END_TIME: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    // Status
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    // KeyValue
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    // AnyValue
    pub const STRING_VALUE: u32 = 1;
    pub const BOOL_VALUE: u32 = 2;
    pub const INT_VALUE: u32 = 3;
    pub const DOUBLE_VALUE: u32 = 4;
    pub const ARRAY_VALUE: u32 = 5;
    // ArrayValue
    pub const VALUES: u32 = 1;
}

use prost::encoding::{bool as pb_bool, double, fixed32, fixed64, int32, int64};

impl Encoder {
    fn new(service_name: &str) -> Encoder {
        let resource = Resource::builder()
            .with_service_name(service_name.to_string())
            .build();
        let resource = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: ResourceAttributesWithSchema::from(&resource).attributes.0,
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: SCOPE.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let mut r = Vec::new();
        prost::encoding::message::encode(1, &resource, &mut r);
        let mut sc = Vec::new();
        prost::encoding::message::encode(1, &scope, &mut sc);
        Encoder {
            resource: r,
            scope: sc,
        }
    }

    /// The most bytes the envelope before the spans takes: the resource, the scope and two
    /// frames (a one-byte key and a varint length each).
    fn room(&self) -> usize {
        self.resource.len() + self.scope.len() + 2 * (1 + 10)
    }

    /// The request body: a sealed batch's buffer, the envelope written into the room at its
    /// start, handed to the HTTP client as it is (no copy); the buffer goes back to `queue`
    /// when the client drops the body.
    fn body(&self, batch: Batch, queue: &Arc<Queue>) -> Bytes {
        let mut bytes = batch.bytes;
        let room = queue.room;
        let spans = bytes.len().saturating_sub(room);
        // ScopeSpans { scope = 1, spans = 2 }
        let scope_spans_len = self.scope.len() + spans;
        // ResourceSpans { resource = 1, scope_spans = 2 }
        let resource_spans_len =
            self.resource.len() + framed_len(field::SCOPE_SPANS, scope_spans_len);
        let mut head = Vec::with_capacity(room);
        frame(field::RESOURCE_SPANS, resource_spans_len, &mut head);
        head.extend_from_slice(&self.resource);
        frame(field::SCOPE_SPANS, scope_spans_len, &mut head);
        head.extend_from_slice(&self.scope);
        // `room` is the envelope's largest size, and every buffer starts with it (else: a copy).
        let start = match room.checked_sub(head.len()) {
            Some(start) if bytes.len() >= room => start,
            _ => {
                head.extend_from_slice(bytes.get(room..).unwrap_or_default());
                return Bytes::from(head);
            }
        };
        bytes[start..room].copy_from_slice(&head);
        Bytes::from_owner(Lent {
            bytes,
            queue: queue.clone(),
        })
        .slice(start..)
    }
}

/// A batch's buffer while the HTTP client holds it as a request body: back to the queue when
/// dropped.
struct Lent {
    bytes: Vec<u8>,
    queue: Arc<Queue>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.queue.give_back(std::mem::take(&mut self.bytes));
    }
}

/// The bytes a length-delimited field takes: key, length, payload.
fn framed_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// A length-delimited field's key and length (its payload follows).
fn frame(tag: u32, len: usize, out: &mut Vec<u8>) {
    if tag < 16 && len < 0x80 {
        // The common case, key and length one byte each (a varint below 128 is the byte).
        out.extend_from_slice(&[key_byte(tag), len as u8]);
    } else {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    }
}

/// A length-delimited field's key as its one byte (a field number below 16).
const fn key_byte(tag: u32) -> u8 {
    (tag << 3 | WireType::LengthDelimited as u32) as u8
}

/// A string or bytes field (left out when empty, as proto3 does).
fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        framed_len(tag, b.len())
    }
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    if !b.is_empty() {
        frame(tag, b.len(), out);
        out.extend_from_slice(b);
    }
}

/// An `AnyValue`'s length (its `value` oneof, always set).
fn value_len(v: Attr<'_>) -> usize {
    match v {
        Attr::Str(t) => framed_len(field::STRING_VALUE, t.len()),
        Attr::Int(i) => int64::encoded_len(field::INT_VALUE, &i),
        Attr::Float(f) => double::encoded_len(field::DOUBLE_VALUE, &f),
        Attr::Bool(b) => pb_bool::encoded_len(field::BOOL_VALUE, &b),
        Attr::Strs(list) => framed_len(field::ARRAY_VALUE, array_len(list)),
    }
}

/// An `ArrayValue` of strings' length.
fn array_len(list: &[String]) -> usize {
    list.iter()
        .map(|s| framed_len(field::VALUES, framed_len(field::STRING_VALUE, s.len())))
        .sum()
}

fn write_value(v: Attr<'_>, out: &mut Vec<u8>) {
    match v {
        Attr::Str(t) => {
            frame(field::STRING_VALUE, t.len(), out);
            out.extend_from_slice(t.as_bytes());
        }
        Attr::Int(i) => int64::encode(field::INT_VALUE, &i, out),
        Attr::Float(f) => double::encode(field::DOUBLE_VALUE, &f, out),
        Attr::Bool(b) => pb_bool::encode(field::BOOL_VALUE, &b, out),
        Attr::Strs(list) => {
            frame(field::ARRAY_VALUE, array_len(list), out);
            for s in list {
                frame(field::VALUES, framed_len(field::STRING_VALUE, s.len()), out);
                frame(field::STRING_VALUE, s.len(), out);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// One `Span.attributes` field: a `KeyValue` of this key and value.
#[inline(never)]
fn put_attribute(k: &str, v: Attr<'_>, out: &mut Vec<u8>) {
    let value = value_len(v);
    let kv = framed_len(field::KEY, k.len()) + framed_len(field::VALUE, value);
    if kv < 0x80 {
        // The usual attribute: both keys and both lengths one byte each, written at once.
        out.extend_from_slice(&[
            key_byte(field::ATTRIBUTES),
            kv as u8,
            key_byte(field::KEY),
            k.len() as u8,
        ]);
    } else {
        frame(field::ATTRIBUTES, kv, out);
        frame(field::KEY, k.len(), out);
    }
    out.extend_from_slice(k.as_bytes());
    frame(field::VALUE, value, out);
    write_value(v, out);
}

fn status_len(message: &str) -> usize {
    bytes_len(field::STATUS_MESSAGE, message.as_bytes())
        + int32::encoded_len(
            field::STATUS_CODE,
            &(proto::status::StatusCode::Error as i32),
        )
}

/// A `Span`'s length.
fn span_len(r: &Record) -> usize {
    let mut n = bytes_len(field::TRACE_ID, &r.trace.trace_id.to_bytes())
        + bytes_len(field::SPAN_ID, &r.span_id.to_bytes())
        + bytes_len(
            field::TRACE_STATE,
            r.trace.state.as_ref().map_or(&[][..], |v| v.as_bytes()),
        )
        + bytes_len(field::NAME, r.name.as_bytes())
        + int32::encoded_len(field::KIND, &(r.kind as i32))
        + fixed64::encoded_len(field::START_TIME, &r.start)
        + fixed64::encoded_len(field::END_TIME, &r.end)
        + fixed32::encoded_len(field::FLAGS, &span_flags(r));
    if r.parent != SpanId::INVALID {
        n += bytes_len(field::PARENT_SPAN_ID, &r.parent.to_bytes());
    }
    n += r.attrs.0.len();
    if let Some(m) = &r.error {
        n += framed_len(field::STATUS, status_len(m));
    }
    n
}

/// Bits 0-7 the W3C trace flags; bit 8: whether the parent is remote is known; bit 9: it is.
fn span_flags(r: &Record) -> u32 {
    u32::from(r.trace.flags.to_u8())
        | proto::SpanFlags::ContextHasIsRemoteMask as u32
        | if r.parent_remote {
            proto::SpanFlags::ContextIsRemoteMask as u32
        } else {
            0
        }
}

/// A `Span`'s fields, in field order.
fn write_span(r: &Record, out: &mut Vec<u8>) {
    put_bytes(field::TRACE_ID, &r.trace.trace_id.to_bytes(), out);
    put_bytes(field::SPAN_ID, &r.span_id.to_bytes(), out);
    put_bytes(
        field::TRACE_STATE,
        r.trace.state.as_ref().map_or(&[][..], |v| v.as_bytes()),
        out,
    );
    if r.parent != SpanId::INVALID {
        put_bytes(field::PARENT_SPAN_ID, &r.parent.to_bytes(), out);
    }
    put_bytes(field::NAME, r.name.as_bytes(), out);
    int32::encode(field::KIND, &(r.kind as i32), out);
    fixed64::encode(field::START_TIME, &r.start, out);
    fixed64::encode(field::END_TIME, &r.end, out);
    out.extend_from_slice(&r.attrs.0);
    if let Some(m) = &r.error {
        frame(field::STATUS, status_len(m), out);
        put_bytes(field::STATUS_MESSAGE, m.as_bytes(), out);
        int32::encode(
            field::STATUS_CODE,
            &(proto::status::StatusCode::Error as i32),
            out,
        );
    }
    fixed32::encode(field::FLAGS, &span_flags(r), out);
}

fn export_loop(config: &TracingConfig, queue: &Arc<Queue>, encoder: &Encoder) {
    let client = match http_client(config) {
        Ok(c) => c,
        Err(e) => {
            log::error!(
                "tracing: cannot set up TLS for {}: {e}; no spans are exported",
                config.endpoint
            );
            return;
        }
    };
    // Parsed once, not for every batch.
    let url = match reqwest_otlp::Url::parse(&config.endpoint) {
        Ok(u) => u,
        Err(e) => {
            log::error!(
                "tracing: the endpoint {} is not a URL ({e}); no spans are exported",
                config.endpoint
            );
            return;
        }
    };
    let mut headers = reqwest_otlp::header::HeaderMap::new();
    headers.insert(
        reqwest_otlp::header::CONTENT_TYPE,
        reqwest_otlp::header::HeaderValue::from_static("application/x-protobuf"),
    );
    for (k, v) in &config.headers {
        let name = reqwest_otlp::header::HeaderName::from_bytes(k.as_bytes());
        let value = reqwest_otlp::header::HeaderValue::from_str(v.expose());
        match (name, value) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
            _ => log::warn!("tracing: the OTLP header {k:?} is not a valid HTTP header; left out"),
        }
    }
    let mut last_warning: Option<Instant> = None;
    loop {
        let (batches, flush_to) = queue.take(config.schedule_delay);
        for batch in batches {
            let n = batch.spans as u64;
            let body = encoder.body(batch, queue);
            match post(&client, &url, &headers, body) {
                Ok(()) => crate::metrics::trace_spans("exported", n),
                Err(e) => {
                    crate::metrics::trace_spans("failed", n);
                    // At most one warning a minute: a collector that is down says so once.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        log::warn!(
                            "tracing: export to {} failed: {}",
                            config.endpoint,
                            crate::redact::text(&e)
                        );
                    }
                }
            }
        }
        queue.flushed(flush_to);
    }
}

/// One OTLP/HTTP export: `POST` of the protobuf body; any 2xx is success (a partial success
/// names spans the collector refused, which are not sent again).
fn post(
    client: &reqwest_otlp::blocking::Client,
    url: &reqwest_otlp::Url,
    headers: &reqwest_otlp::header::HeaderMap,
    body: Bytes,
) -> Result<(), String> {
    let r = client
        .post(url.clone())
        .headers(headers.clone())
        .body(body)
        .send()
        .map_err(|e| e.without_url().to_string())?;
    let status = r.status();
    if status.is_success() {
        return Ok(());
    }
    let text = r.text().unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!("the collector answered {status}: {text}"))
}

/// The exporter's blocking HTTP client (built on the export thread, outside any async runtime):
/// rustls on the ring provider Pingora uses, trusting the system roots and the configured CA file.
fn http_client(config: &TracingConfig) -> Result<reqwest_otlp::blocking::Client, String> {
    let builder = reqwest_otlp::blocking::Client::builder().timeout(config.export_timeout);
    if !config.endpoint.starts_with("https://") {
        return builder.build().map_err(|e| e.to_string());
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for c in &config.ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("the CA file holds a certificate rustls refuses: {e}"))?;
    }
    log::debug!(
        "tracing: trusting {added} system root certificates and {} from the CA file",
        config.ca_certs.len()
    );
    if roots.is_empty() {
        return Err(
            "no system root certificates and no OTEL_EXPORTER_OTLP_CERTIFICATE file".to_string(),
        );
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    builder
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| e.to_string())
}

// --- One request's trace ------------------------------------------------------------------

/// One request's spans, on its context while tracing is on.
pub struct RequestTrace {
    t: &'static Tracing,
    trace: TraceIds,
    /// The server span (its attributes are set when the request ends).
    server_id: SpanId,
    /// The client's span, when it sent a `traceparent`.
    remote_parent: Option<SpanId>,
    server_start: u64,
    /// Whether the spans are recorded and exported (the sampler's decision).
    sampled: bool,
    /// The server span's attributes set before it ends (the prompt).
    server_attrs: Attrs,
    /// The upstream attempt under way (its span id, and its record when sampled).
    attempt: Option<(SpanId, Option<Record>)>,
    /// An ended attempt's attribute buffer, emptied, for the next attempt.
    spare_attrs: Vec<u8>,
    /// The model the answer names (empty when none was seen yet).
    response_model: String,
    /// The finish reasons seen: the first `reasons` of these (the strings are kept, emptied,
    /// for the next answer, as the whole trace is: see [`SPARE`]).
    finish_reasons: Vec<String>,
    reasons: usize,
    /// The answer's bytes, when content capture is on.
    answer: Option<Vec<u8>>,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C Trace Context headers for one upstream attempt.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub traceparent: http::HeaderValue,
    pub tracestate: Option<http::HeaderValue>,
}

pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Whether tracing is on in this process.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// A request's trace, when tracing is on: the server span, a child of the client's
/// `traceparent` when it sent one.
pub fn start(headers: &http::HeaderMap, method: &str) -> Option<Box<RequestTrace>> {
    let t = TRACING.get()?;
    let parent = headers
        .contains_key(TRACEPARENT)
        .then(|| {
            t.propagator
                .extract_with_context(&Context::new(), &Headers(headers))
        })
        .filter(|cx| cx.span().span_context().is_valid());
    let (trace_id, remote_parent, state) = match &parent {
        Some(cx) => {
            let span = cx.span();
            let sc = span.span_context();
            let state = sc.trace_state().header();
            let state = (!state.is_empty())
                .then(|| http::HeaderValue::from_str(&state).ok())
                .flatten();
            (sc.trace_id(), Some(sc.span_id()), state)
        }
        None => (t.ids.new_trace_id(), None, None),
    };
    let decision = t
        .sampler
        .should_sample(
            parent.as_ref(),
            trace_id,
            method,
            &SpanKind::Server,
            &[],
            &[],
        )
        .decision;
    let sampled = decision == SamplingDecision::RecordAndSample;
    let trace = TraceIds {
        trace_id,
        flags: if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        state,
    };
    let server_id = t.ids.new_span_id();
    let server_start = unix_nanos();
    // A trace this thread ended before, with its buffers (emptied when it was put back).
    let spare = SPARE.with(|s| s.borrow_mut().pop());
    Some(match spare {
        Some(mut r) => {
            r.trace = trace;
            r.server_id = server_id;
            r.remote_parent = remote_parent;
            r.server_start = server_start;
            r.sampled = sampled;
            r
        }
        None => Box::new(RequestTrace {
            t,
            trace,
            server_id,
            remote_parent,
            server_start,
            sampled,
            server_attrs: Attrs::with_capacity(SERVER_ATTRS),
            attempt: None,
            spare_attrs: Vec::new(),
            response_model: String::new(),
            finish_reasons: Vec::new(),
            reasons: 0,
            answer: None,
        }),
    })
}

thread_local! {
    /// Request traces ended on this thread, their buffers kept (emptied) for the next
    /// requests: a traced request then allocates nothing for its spans, and writes them into
    /// memory the thread used a moment ago. At most [`SPARE_MAX`] a thread.
    // The boxes are what is reused: a request's context holds its trace boxed.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<RequestTrace>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}
const SPARE_MAX: usize = 64;
/// The most a kept buffer may hold (larger ones are freed, not kept).
const KEEP_MAX: usize = 4096;

/// The server span's attribute buffer: its ~16 attributes take ~560 bytes with a short model
/// name and key name.
const SERVER_ATTRS: usize = 768;
/// An attempt span's: its name, its attributes and the answer's (~330 bytes).
const ATTEMPT_ATTRS: usize = 512;

/// `chat`, `embeddings`, `text_completion` (GenAI `gen_ai.operation.name`) for an endpoint
/// family; `None` for those that ask no model.
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "chat" | "responses" | "messages" => Some("chat"),
        "embeddings" => Some("embeddings"),
        "completions" => Some("text_completion"),
        _ => None,
    }
}

/// What the request's server span says when it ends (plain values from the request context).
pub struct Summary<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
    pub status: u16,
    pub outcome: &'static str,
    pub request_id: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub cache: Option<&'static str>,
    pub stream: bool,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub ttfb: Option<Duration>,
    pub error: Option<&'a str>,
}

/// The paths of the model endpoints, and their server spans' names.
const POST_ROUTES: [(&str, &str); 5] = [
    ("/v1/chat/completions", "POST /v1/chat/completions"),
    ("/v1/responses", "POST /v1/responses"),
    ("/v1/messages", "POST /v1/messages"),
    ("/v1/embeddings", "POST /v1/embeddings"),
    ("/v1/completions", "POST /v1/completions"),
];

fn content(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_CONTENT)];
    let text = String::from_utf8_lossy(cut);
    crate::redact::text(&text).into_owned()
}

impl RequestTrace {
    /// A record of a span in this trace, started now.
    fn record(
        &self,
        name: Cow<'static, str>,
        kind: proto::span::SpanKind,
        span_id: SpanId,
        parent: SpanId,
        attrs: Attrs,
    ) -> Record {
        Record {
            trace: self.trace.clone(),
            span_id,
            parent,
            parent_remote: false,
            name,
            kind,
            start: unix_nanos(),
            end: 0,
            attrs,
            error: None,
        }
    }

    /// A child of the server span, started now (the caller sets its attributes and ends it).
    pub fn child(&self, name: &'static str) -> Span {
        Span(self.sampled.then(|| {
            self.record(
                Cow::Borrowed(name),
                proto::span::SpanKind::Internal,
                self.t.ids.new_span_id(),
                self.server_id,
                Attrs::with_capacity(48),
            )
        }))
    }

    /// The request body, exported only with content capture on.
    pub fn prompt(&mut self, body: &[u8]) {
        if self.t.config.capture_content && self.sampled {
            self.server_attrs
                .push(("gen_ai.input.messages", Attr::Str(&content(body))));
        }
    }

    /// Starts the span of one upstream attempt (ending the previous one if it is still open).
    pub fn start_attempt(
        &mut self,
        operation: &'static str,
        provider: &str,
        upstream_model: &str,
        number: u32,
    ) {
        if let Some((_, Some(mut prev))) = self.attempt.take() {
            prev.end = unix_nanos();
            self.t.queue.push(&prev);
            self.keep_attrs(prev.attrs);
        }
        self.response_model.clear();
        self.reasons = 0;
        if self.t.config.capture_content {
            self.answer = Some(Vec::new());
        }
        let id = self.t.ids.new_span_id();
        let record = self.sampled.then(|| {
            let mut attrs = Attrs(std::mem::take(&mut self.spare_attrs));
            attrs.0.reserve(ATTEMPT_ATTRS);
            attrs.name(operation, upstream_model);
            attrs.push(("gen_ai.operation.name", Attr::Str(operation)));
            attrs.push(("gen_ai.provider.name", Attr::Str(provider)));
            attrs.push(("gen_ai.request.model", Attr::Str(upstream_model)));
            attrs.push(("gateway.attempt", Attr::Int(i64::from(number))));
            self.record(
                Cow::Borrowed(""),
                proto::span::SpanKind::Client,
                id,
                self.server_id,
                attrs,
            )
        });
        self.attempt = Some((id, record));
    }

    /// An ended span's attribute buffer, emptied, for the next attempt (unless a large value
    /// grew it: kept buffers stay small).
    fn keep_attrs(&mut self, mut attrs: Attrs) {
        if attrs.0.capacity() <= KEEP_MAX {
            attrs.0.clear();
            self.spare_attrs = attrs.0;
        }
    }

    /// `traceparent` (and `tracestate`) for the upstream: the attempt's span as parent (the
    /// W3C `traceparent` written as hex digits into one stack buffer).
    pub fn propagation(&self) -> Propagation {
        let span_id = self.attempt.as_ref().map_or(self.server_id, |(id, _)| *id);
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let hex = |bytes: &[u8], out: &mut [u8]| {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
                o[0] = HEX[usize::from(b >> 4)];
                o[1] = HEX[usize::from(b & 15)];
            }
        };
        hex(&self.trace.trace_id.to_bytes(), &mut tp[3..35]);
        hex(&span_id.to_bytes(), &mut tp[36..52]);
        hex(&[self.trace.flags.to_u8()], &mut tp[53..55]);
        Propagation {
            // Hex digits and dashes: always a valid header value. Owned by its `Bytes` (one
            // allocation), so the upstream request head takes a clone without a copy.
            traceparent: http::HeaderValue::from_maybe_shared(Bytes::from_owner(tp))
                .unwrap_or_else(|_| http::HeaderValue::from_static("")),
            tracestate: self.trace.state.clone(),
        }
    }

    /// Reads the upstream's answer as it passes (the model it names, finish reasons; the text
    /// itself only with content capture on).
    pub fn observe(&mut self, bytes: &[u8]) {
        if self.attempt.is_none() || !self.sampled {
            return;
        }
        if self.response_model.is_empty() {
            if let Some((_, m)) = json_strings(bytes, &FIND_MODEL).next() {
                self.response_model.push_str(m);
            }
        }
        // `finish_reason` (OpenAI, Gemini's compatible API) and `stop_reason` (Anthropic) in one
        // scan for their common tail.
        for (at, r) in json_strings(bytes, &FIND_REASON) {
            let key = &bytes[..at];
            if (key.ends_with(b"\"finish") || key.ends_with(b"\"stop"))
                && self.reasons < MAX_FINISH_REASONS
                && !self.finish_reasons[..self.reasons].iter().any(|f| f == r)
            {
                self.add_reason(r);
            }
        }
        if let Some(a) = self.answer.as_mut() {
            let room = MAX_CONTENT.saturating_sub(a.len());
            a.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Ends the attempt's span: served (`error` None) or failed.
    pub fn end_attempt(
        &mut self,
        error: Option<(&str, &str)>,
        upstream_status: Option<u16>,
        usage: Option<Usage>,
    ) {
        let Some((_, record)) = self.attempt.take() else {
            return;
        };
        let Some(mut r) = record else { return };
        if let Some(s) = upstream_status {
            r.attrs
                .push(("http.response.status_code", Attr::Int(i64::from(s))));
        }
        match error {
            Some((label, message)) => {
                r.attrs.push(("error.type", Attr::Str(label)));
                r.error = Some(crate::redact::text(message).into_owned());
            }
            None => self.gen_ai_answer(&mut r.attrs, usage, None),
        }
        r.end = unix_nanos();
        self.t.queue.push(&r);
        self.keep_attrs(r.attrs);
    }

    /// One more finish reason (its string reused from an earlier answer when there is one).
    fn add_reason(&mut self, reason: &str) {
        match self.finish_reasons.get_mut(self.reasons) {
            Some(kept) => {
                kept.clear();
                kept.push_str(reason);
            }
            None => self.finish_reasons.push(reason.to_string()),
        }
        self.reasons += 1;
    }

    /// The answer's GenAI attributes: the model it names (else `fallback`, the model asked of
    /// the upstream, when it answered with usage), finish reasons, token counts.
    fn gen_ai_answer(&self, a: &mut Attrs, usage: Option<Usage>, fallback: Option<&str>) {
        if !self.response_model.is_empty() {
            a.push(("gen_ai.response.model", Attr::Str(&self.response_model)));
        } else if let (Some(m), Some(_)) = (fallback, usage) {
            a.push(("gen_ai.response.model", Attr::Str(m)));
        }
        if self.reasons > 0 {
            a.push((
                "gen_ai.response.finish_reasons",
                Attr::Strs(&self.finish_reasons[..self.reasons]),
            ));
        }
        if let Some(u) = usage {
            a.push((
                "gen_ai.usage.input_tokens",
                Attr::Int(u.prompt_tokens as i64),
            ));
            a.push((
                "gen_ai.usage.output_tokens",
                Attr::Int(u.completion_tokens as i64),
            ));
        }
    }

    /// A cache hit or the echo provider answered: the answer's model and finish reason, known.
    pub fn answered(&mut self, model: Option<&str>, finish_reason: Option<&str>) {
        if let Some(m) = model {
            self.response_model.clear();
            self.response_model.push_str(m);
        }
        if let Some(f) = finish_reason {
            self.reasons = 0;
            self.add_reason(f);
        }
    }

    /// Ends the server span with what the request came to.
    pub fn finish(mut self: Box<Self>, s: &Summary) {
        if self.attempt.is_some() {
            // An attempt the request left half-way (a timeout dropped it).
            self.end_attempt(Some(("cancelled", "the request ended first")), None, None);
        }
        if self.sampled {
            self.end_server_span(s);
        }
        self.recycle();
    }

    /// Puts this trace back for the thread's next request, its buffers emptied.
    fn recycle(mut self: Box<Self>) {
        self.server_attrs.0.clear();
        if self.server_attrs.0.capacity() > KEEP_MAX {
            // Content capture, or a long value: not kept for every request after.
            self.server_attrs = Attrs::with_capacity(SERVER_ATTRS);
        }
        self.response_model.clear();
        if self.response_model.capacity() > KEEP_MAX
            || self.finish_reasons.iter().any(|r| r.capacity() > KEEP_MAX)
        {
            self.response_model = String::new();
            self.finish_reasons = Vec::new();
        }
        self.reasons = 0;
        self.answer = None;
        self.trace.state = None;
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_MAX {
                spare.push(self);
            }
        });
    }

    fn end_server_span(&mut self, s: &Summary) {
        let route = if s.endpoint == "other" { "" } else { s.path };
        // The model endpoints' names and paths as static strings (nothing copied).
        let known = (s.method == "POST")
            .then(|| POST_ROUTES.iter().find(|(p, _)| *p == route))
            .flatten();
        let name = match known {
            Some((_, name)) => Cow::Borrowed(*name),
            None if route.is_empty() => Cow::Owned(s.method.to_string()),
            None => {
                let mut n = String::with_capacity(s.method.len() + 1 + route.len());
                n.push_str(s.method);
                n.push(' ');
                n.push_str(route);
                Cow::Owned(n)
            }
        };
        let mut a = std::mem::take(&mut self.server_attrs);
        a.0.reserve(SERVER_ATTRS);

        a.push(("http.request.method", Attr::Str(s.method)));
        a.push((
            "url.path",
            match known {
                Some((path, _)) => Attr::Str(path),
                None => Attr::Str(s.path),
            },
        ));
        a.push(("http.response.status_code", Attr::Int(i64::from(s.status))));
        a.push(("gateway.request_id", Attr::Str(s.request_id)));
        a.push(("gateway.outcome", Attr::Str(s.outcome)));
        a.push(("gateway.stream", Attr::Bool(s.stream)));
        a.push(("gateway.attempts", Attr::Int(i64::from(s.attempts))));
        if let Some(op) = operation(s.endpoint) {
            a.push(("gen_ai.operation.name", Attr::Str(op)));
        }
        if let Some(p) = s.provider {
            a.push(("gen_ai.provider.name", Attr::Str(p)));
        }
        if let Some(m) = s.model {
            a.push(("gen_ai.request.model", Attr::Str(m)));
        }
        self.gen_ai_answer(&mut a, s.usage, s.upstream_model);
        if let Some(t) = s.ttfb.filter(|_| s.stream) {
            a.push((
                "gen_ai.server.time_to_first_token",
                Attr::Float(t.as_secs_f64()),
            ));
        }
        if let Some(k) = s.key_name {
            a.push(("gateway.key.name", Attr::Str(k)));
        }
        if let Some(c) = s.cache {
            a.push(("gateway.cache", Attr::Str(c)));
        }
        if let Some(c) = s.cost_usd {
            a.push(("gateway.cost_usd", Attr::Float(c)));
        }
        if let Some(answer) = self.answer.as_deref().filter(|a| !a.is_empty()) {
            a.push(("gen_ai.output.messages", Attr::Str(&content(answer))));
        }
        let error = (s.status >= 500)
            .then(|| crate::redact::text(s.error.unwrap_or(s.outcome)).into_owned());
        let record = Record {
            trace: self.trace.clone(),
            span_id: self.server_id,
            parent: self.remote_parent.unwrap_or(SpanId::INVALID),
            parent_remote: self.remote_parent.is_some(),
            name,
            kind: proto::span::SpanKind::Server,
            start: self.server_start,
            end: unix_nanos(),
            attrs: a,
            error,
        };
        self.t.queue.push(&record);
        self.server_attrs = record.attrs;
    }
}

/// Ends the rate-limit span: whether the limits let the request through.
pub fn end_rate_limit(span: Option<Span>, allowed: bool) {
    if let Some(mut s) = span {
        s.set("gateway.rate_limit.allowed", Attr::Bool(allowed));
        s.end();
    }
}

/// Ends the cache-lookup span with its outcome (`hit`, `miss`, ...).
pub fn end_cache_lookup(span: Option<Span>, outcome: Option<&'static str>) {
    if let Some(mut s) = span {
        s.set("gateway.cache", Attr::Str(outcome.unwrap_or("none")));
        s.end();
    }
}

/// The keys `observe` looks for, their searchers built once.
static FIND_MODEL: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
    once_cell::sync::Lazy::new(|| memchr::memmem::Finder::new(b"\"model\""));
static FIND_REASON: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
    once_cell::sync::Lazy::new(|| memchr::memmem::Finder::new(b"_reason\""));

/// The string values after `finder`'s needle in a JSON text (`...needle: "value"`; `null` and
/// other types are skipped), each with where the needle starts (to check what precedes it). A
/// cheap scan of the upstream's bytes: the answer is not parsed for this.
fn json_strings<'a>(
    hay: &'a [u8],
    finder: &'a memchr::memmem::Finder<'static>,
) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let key = finder.needle();
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let i = at + finder.find(hay.get(at..)?)?;
        at = i + key.len();
        let rest = &hay[at..];
        let skip = |r: &[u8]| r.iter().take_while(|c| c.is_ascii_whitespace()).count();
        let mut j = skip(rest);
        if rest.get(j) != Some(&b':') {
            continue;
        }
        j += 1;
        j += skip(&rest[j..]);
        if rest.get(j) != Some(&b'"') {
            continue;
        }
        let start = j + 1;
        let len = memchr::memchr(b'"', &rest[start..])?;
        let v = &rest[start..start + len];
        at += start + len;
        if v.is_empty() || v.contains(&b'\\') {
            continue;
        }
        if let Ok(s) = std::str::from_utf8(v) {
            return Some((i, s));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_json_string_values() {
        fn values(hay: &[u8], f: &'static memchr::memmem::Finder<'static>) -> Vec<String> {
            json_strings(hay, f).map(|(_, v)| v.to_string()).collect()
        }
        let body = br#"{"model": "gpt-4o-2024", "choices":[{"finish_reason":null},{"finish_reason":"stop"}],"x":{"model":3}}"#;
        assert_eq!(values(body, &FIND_MODEL), ["gpt-4o-2024"]);
        assert_eq!(values(body, &FIND_REASON), ["stop"]);
        let sse = b"data: {\"delta\":{\"stop_reason\":\"end_turn\"}}\n\ndata: {\"model\"";
        assert_eq!(values(sse, &FIND_REASON), ["end_turn"]);
        assert_eq!(values(sse, &FIND_MODEL).len(), 0);
    }

    /// Finish reasons are the values of `finish_reason` and `stop_reason`, not of any key that
    /// ends in `_reason`; each kept once.
    #[test]
    fn observes_finish_and_stop_reasons_only() {
        let mut t = RequestTrace {
            t: Box::leak(Box::new(Tracing {
                sampler: SdkSampler::AlwaysOn,
                ids: RandomIdGenerator::default(),
                queue: Arc::new(Queue::new(8, 8, 0)),
                encoder: Arc::new(Encoder::new("t")),
                config: TracingConfig {
                    endpoint: "http://127.0.0.1:1/v1/traces".into(),
                    headers: Vec::new(),
                    service_name: "t".into(),
                    sampler: Sampler::AlwaysOn,
                    export_timeout: Duration::from_secs(1),
                    max_queue: 8,
                    max_batch: 8,
                    schedule_delay: Duration::from_secs(1),
                    ca_certs: Vec::new(),
                    capture_content: false,
                },
                propagator: TraceContextPropagator::new(),
                started: AtomicBool::new(false),
            })),
            trace: TraceIds {
                trace_id: TraceId::from(1u128),
                flags: TraceFlags::SAMPLED,
                state: None,
            },
            server_id: SpanId::from(1u64),
            remote_parent: None,
            server_start: 0,
            sampled: true,
            server_attrs: Attrs::default(),
            attempt: Some((SpanId::from(2u64), None)),
            spare_attrs: Vec::new(),
            response_model: String::new(),
            finish_reasons: Vec::new(),
            reasons: 0,
            answer: None,
        };
        t.observe(br#"{"model":"m1","refusal_reason":"x","finish_reason":"stop","stop_reason":"end_turn","x_stop_reason":"no"}"#);
        t.observe(br#"{"model":"m2","finish_reason":"stop"}"#);
        assert_eq!(t.response_model, "m1");
        assert_eq!(t.finish_reasons[..t.reasons], ["stop", "end_turn"]);

        // The next attempt starts from nothing: its answer's reasons only, no earlier model,
        // though the strings are kept for reuse.
        t.start_attempt("chat", "openai", "m", 2);
        t.observe(br#"{"finish_reason":"length"}"#);
        assert_eq!(t.response_model, "");
        assert_eq!(t.finish_reasons[..t.reasons], ["length"]);
        let mut attrs = Attrs::default();
        t.gen_ai_answer(&mut attrs, None, None);
        let mut kept = Attrs::default();
        kept.push((
            "gen_ai.response.finish_reasons",
            Attr::Strs(&["length".to_string()]),
        ));
        assert_eq!(attrs.0, kept.0);

        // A trace put back for the thread's next request keeps its buffers, emptied.
        t.end_attempt(None, Some(200), None);
        Box::new(t).recycle();
        let again = SPARE
            .with(|s| s.borrow_mut().pop())
            .expect("the trace was kept");
        assert!(again.attempt.is_none());
        assert!(again.server_attrs.0.is_empty());
        assert!(again.response_model.is_empty() && again.reasons == 0);
        assert!(again.spare_attrs.is_empty() && again.spare_attrs.capacity() >= ATTEMPT_ATTRS);

        // One that a long value grew is not kept at that size.
        let mut big = again;
        big.server_attrs.0.reserve(KEEP_MAX * 4);
        big.response_model.push_str(&"m".repeat(KEEP_MAX * 2));
        big.recycle();
        let again = SPARE
            .with(|s| s.borrow_mut().pop())
            .expect("the trace was kept");
        assert!(again.server_attrs.0.capacity() <= KEEP_MAX);
        assert!(again.response_model.capacity() <= KEEP_MAX);
    }

    /// An attribute value the test owns (what a decoder should find).
    #[derive(Clone)]
    enum Val {
        S(String),
        I(i64),
        F(f64),
        B(bool),
        L(Vec<String>),
    }

    /// A record of these attributes; span 3's name is written with them (`Attrs::name`).
    fn record(id: u64, parent: u64, attrs: &[(&str, Val)]) -> Record {
        let mut encoded = Attrs::default();
        if id == 3 {
            encoded.name("chat", "some-model");
        }
        for (k, v) in attrs {
            encoded.push((
                k,
                match v {
                    Val::S(t) => Attr::Str(t),
                    Val::I(i) => Attr::Int(*i),
                    Val::F(f) => Attr::Float(*f),
                    Val::B(b) => Attr::Bool(*b),
                    Val::L(l) => Attr::Strs(l),
                },
            ));
        }
        Record {
            trace: TraceIds {
                trace_id: TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
                flags: TraceFlags::SAMPLED,
                state: (parent == 7).then(|| http::HeaderValue::from_static("vendor=abc")),
            },
            span_id: SpanId::from(id),
            parent: SpanId::from(parent),
            parent_remote: parent == 7,
            name: Cow::Borrowed(if id == 3 { "" } else { "span" }),
            kind: proto::span::SpanKind::Client,
            start: 10 + id,
            end: 20 + id,
            attrs: encoded,
            error: (id == 2).then(|| "upstream said no".to_string()),
        }
    }

    /// What the encoder writes decodes, with `opentelemetry-proto`'s types, to exactly what was
    /// recorded: every span field, every attribute type (zero, negative, empty values too,
    /// lengths past one varint byte), remote and local parents, a root span, an error status, a
    /// name written with the attributes; twice, the second time in the buffers the first
    /// bodies gave back.
    #[test]
    fn encodes_a_batch_that_decodes_to_the_records() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};
        use prost::Message as _;
        use Val::*;
        let s = |t: &str| S(t.to_string());
        let long_key = "k".repeat(150);
        let attrs: [Vec<(&str, Val)>; 3] = [
            vec![("a", s("static")), ("b", s("owned")), ("c", I(3))],
            vec![
                ("a", B(true)),
                ("zero", I(0)),
                ("negative", I(-5)),
                ("empty", s("")),
                ("none", L(Vec::new())),
            ],
            vec![
                ("x", F(0.5)),
                ("y", L(vec!["stop".into(), "length".into()])),
                ("z", s("a longer string than before")),
                ("w", s("s")),
                ("long", S("x".repeat(300))),
                ("longs", L(vec!["y".repeat(200); 3])),
                (&long_key, s("a key past one varint byte")),
            ],
        ];
        let records = [
            record(1, 7, &attrs[0]),
            record(2, 1, &attrs[1]),
            record(3, 0, &attrs[2]),
        ];
        let enc = Encoder::new("svc");
        let queue = Arc::new(Queue::new(10, 2, enc.room()));
        for round in 0..2 {
            for r in &records {
                queue.push(r);
            }
            // Two spans make a sealed batch, taken at once; the third waits for the delay.
            let (mut batches, _) = queue.take(Duration::from_secs(30));
            batches.extend(queue.take(Duration::from_millis(1)).0);
            assert_eq!(batches.iter().map(|b| b.spans).collect::<Vec<_>>(), [2, 1]);
            let buffers: Vec<usize> = batches.iter().map(|b| b.bytes.as_ptr() as usize).collect();
            let bodies: Vec<Bytes> = batches.into_iter().map(|b| enc.body(b, &queue)).collect();
            for (body, buffer) in bodies.iter().zip(&buffers) {
                let at = body.as_ptr() as usize;
                assert!(
                    (*buffer..*buffer + enc.room()).contains(&at),
                    "the body starts in the room of the batch's own buffer"
                );
            }
            let mut spans = Vec::new();
            for body in &bodies {
                let req = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                assert_eq!(req.resource_spans.len(), 1);
                let rs = &req.resource_spans[0];
                let resource = &rs.resource.as_ref().unwrap().attributes;
                assert!(resource.iter().any(|kv| kv.key == "service.name"
                    && kv.value.as_ref().and_then(|v| v.value.clone())
                        == Some(any_value::Value::StringValue("svc".into()))));
                assert_eq!(rs.scope_spans.len(), 1);
                assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, SCOPE);
                spans.extend(rs.scope_spans[0].spans.iter().cloned());
            }
            drop(bodies);
            assert_eq!(
                queue.state.lock().spare.len(),
                2,
                "dropped bodies give their buffers back (round {round})"
            );
            assert_eq!(spans.len(), 3);
            for ((sp, r), want) in spans.iter().zip(&records).zip(&attrs) {
                assert_eq!(sp.span_id, r.span_id.to_bytes());
                assert_eq!(sp.trace_id, r.trace.trace_id.to_bytes());
                let name = if r.span_id == SpanId::from(3u64) {
                    "chat some-model"
                } else {
                    "span"
                };
                assert_eq!(sp.name, name);
                assert_eq!(sp.start_time_unix_nano, r.start);
                assert_eq!(sp.end_time_unix_nano, r.end);
                assert_eq!(sp.kind, proto::span::SpanKind::Client as i32);
                assert_eq!(sp.attributes.len(), want.len());
                for (kv, (k, v)) in sp.attributes.iter().zip(want) {
                    assert_eq!(kv.key, *k);
                    let got = kv.value.as_ref().and_then(|v| v.value.clone());
                    let want = match v {
                        S(t) => any_value::Value::StringValue(t.clone()),
                        I(i) => any_value::Value::IntValue(*i),
                        F(f) => any_value::Value::DoubleValue(*f),
                        B(b) => any_value::Value::BoolValue(*b),
                        L(l) => any_value::Value::ArrayValue(ArrayValue {
                            values: l
                                .iter()
                                .map(|t| AnyValue {
                                    value: Some(any_value::Value::StringValue(t.clone())),
                                })
                                .collect(),
                        }),
                    };
                    assert_eq!(got, Some(want), "{k}");
                }
            }
            assert_eq!(spans[0].parent_span_id, 7u64.to_be_bytes());
            assert_eq!(spans[0].flags, 0x301);
            assert_eq!(spans[0].trace_state, "vendor=abc");
            assert_eq!(spans[1].flags, 0x101);
            assert_eq!(spans[1].trace_state, "");
            assert_eq!(
                spans[1]
                    .status
                    .as_ref()
                    .map(|s| (s.code, s.message.as_str())),
                Some((2, "upstream said no"))
            );
            assert_eq!(spans[2].status, None);
            assert!(spans[2].parent_span_id.is_empty(), "a root span");
        }
    }

    /// A full queue drops spans (and counts them); a sealed batch wakes the export thread
    /// without waiting for the delay; buffers given back are reused.
    #[test]
    fn the_queue_seals_batches_and_drops_past_its_bound() {
        let queue = Queue::new(3, 2, 40);
        let r = record(1, 0, &[("a", Val::I(1))]);
        for _ in 0..5 {
            queue.push(&r);
        }
        let started = Instant::now();
        let (batches, _) = queue.take(Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a sealed batch is taken at once"
        );
        assert_eq!(batches.iter().map(|b| b.spans).collect::<Vec<_>>(), [2]);
        let (rest, _) = queue.take(Duration::from_millis(1));
        assert_eq!(
            rest.iter().map(|b| b.spans).collect::<Vec<_>>(),
            [1],
            "two were dropped"
        );
        let given = batches
            .into_iter()
            .next()
            .map(|b| b.bytes)
            .unwrap_or_default();
        let at = given.as_ptr();
        queue.give_back(given);
        queue.push(&r);
        queue.push(&r);
        assert_eq!(
            queue.state.lock().current.bytes.as_ptr(),
            at,
            "the batch after a sealed one fills the buffer given back"
        );
    }

    #[test]
    fn operations() {
        assert_eq!(operation("messages"), Some("chat"));
        assert_eq!(operation("embeddings"), Some("embeddings"));
        assert_eq!(operation("health"), None);
    }
}
