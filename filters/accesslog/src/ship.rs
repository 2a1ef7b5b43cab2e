//! Shipping records in batches to a collector from the root context:
//! OTLP/HTTP JSON logs (`/v1/logs`) or Elasticsearch `_bulk` NDJSON.
//!
//! - Records are encoded once, when logged, into the batch format's
//!   fragment (an OTLP `logRecord`, or a bulk action + source line pair)
//!   and wait in a bounded buffer. The buffer counts every record byte
//!   held: waiting, in flight and waiting for a retry (plus, per batch, an
//!   envelope of a few hundred bytes). A record that does not fit
//!   is dropped (and counted): memory stays bounded when the collector is
//!   down.
//! - A batch goes out on a tick when it is full (`batch_max_records` or
//!   `batch_max_bytes`), its oldest record has waited `flush_interval_ms`,
//!   or the buffer is half full;
//!   at most `max_in_flight` batches are in flight.
//! - Answers (PROTOCOLS §E): 2xx is accepted (OTLP `partialSuccess` and
//!   bulk item errors count as dropped, not retried); a failed call, 429,
//!   502, 503 and 504 are retried with exponential backoff, honouring
//!   `Retry-After` (seconds); other statuses are not retried.
//! - Nothing here runs on a request's path except [`Shipper::push`]: a
//!   request never waits for the collector.
//!
//! Each worker (VM) has its own shipper: proxy-wasm shared queues are not
//! part of the stage shape, and batching per worker needs no cross-VM copy.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshguard_stage::{CalloutError, HttpCallout, Reply, Token};

use crate::config::{ShipConfig, ShipFormat, Tags};
use crate::json;
use crate::record::Rendered;
use crate::SCHEMA;

/// What a shipper call did, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records the collector accepted.
    pub shipped: u64,
    /// Records lost: retries exhausted, or rejected by the collector.
    pub dropped: u64,
    /// Send attempts that failed (no answer, or a non-2xx answer).
    pub failures: u64,
    /// Batches sent again after a failure.
    pub retries: u64,
}

#[derive(Debug, Clone)]
struct Batch {
    body: Vec<u8>,
    records: u64,
    /// Bytes of the records in it (what the buffer bound counts).
    record_bytes: usize,
    /// Failed attempts so far.
    failed: u32,
    next_at: SystemTime,
}

/// One worker's batches.
#[derive(Debug)]
pub struct Shipper {
    cfg: ShipConfig,
    /// OTLP: everything before the log records; bulk: empty.
    prefix: String,
    suffix: &'static str,
    content_type: &'static str,
    /// (when logged, encoded fragment)
    pending: VecDeque<(SystemTime, Vec<u8>)>,
    pending_bytes: usize,
    retry: Vec<Batch>,
    in_flight: Vec<(Token, Batch)>,
    /// Record bytes of batches in flight or waiting to be retried (each
    /// batch also has its envelope: OTLP's resource and scope, ~300 bytes).
    held_bytes: usize,
}

/// Why a record was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferFull;

impl Shipper {
    pub fn new(cfg: &ShipConfig, tags: &Tags) -> Self {
        let (prefix, suffix, content_type) = match cfg.format {
            ShipFormat::Otlp => {
                let mut p = String::from("{\"resourceLogs\":[{\"resource\":{\"attributes\":[");
                let service = if tags.workload.is_empty() {
                    "meshguard-accesslog"
                } else {
                    &tags.workload
                };
                let mut first = true;
                for (k, v) in [
                    ("service.name", service),
                    ("deployment.environment.name", tags.environment.as_str()),
                    ("k8s.cluster.name", tags.cluster.as_str()),
                    ("k8s.namespace.name", tags.namespace.as_str()),
                ] {
                    if v.is_empty() {
                        continue;
                    }
                    if !first {
                        p.push(',');
                    }
                    first = false;
                    let _ = write!(p, "{{\"key\":\"{k}\",\"value\":{{\"stringValue\":");
                    json::string(&mut p, v);
                    p.push_str("}}");
                }
                p.push_str(
                    "]},\"scopeLogs\":[{\"scope\":{\"name\":\"meshguard-accesslog\",\"version\":\"",
                );
                p.push_str(env!("CARGO_PKG_VERSION"));
                p.push_str("\"},\"logRecords\":[");
                (p, "]}]}]}", "application/json")
            }
            ShipFormat::Bulk => (String::new(), "", "application/x-ndjson"),
        };
        Self {
            cfg: cfg.clone(),
            prefix,
            suffix,
            content_type,
            pending: VecDeque::new(),
            pending_bytes: 0,
            retry: Vec::new(),
            in_flight: Vec::new(),
            held_bytes: 0,
        }
    }

    /// How often the shell should tick: often enough that a full batch or
    /// an old record waits at most a quarter of the flush interval more.
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(self.cfg.flush_interval_ms / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    /// Bytes held: buffered, in flight and waiting for a retry.
    pub fn held_bytes(&self) -> usize {
        self.pending_bytes + self.held_bytes
    }

    /// Records waiting for a batch.
    pub fn pending_records(&self) -> usize {
        self.pending.len()
    }

    /// Buffers one record; `Err` if it does not fit (the caller counts it).
    pub fn push(&mut self, r: &Rendered, now: SystemTime) -> Result<(), BufferFull> {
        let fragment = self.fragment(r, now);
        if self.held_bytes() + fragment.len() > self.cfg.buffer_max_bytes {
            return Err(BufferFull);
        }
        self.pending_bytes += fragment.len();
        self.pending.push_back((now, fragment));
        Ok(())
    }

    fn fragment(&self, r: &Rendered, now: SystemTime) -> Vec<u8> {
        match self.cfg.format {
            ShipFormat::Otlp => {
                let nanos = |t: SystemTime| {
                    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos())
                        .unwrap_or(u64::MAX)
                };
                let (sev, text) = match r.status {
                    Some(s) if s >= 500 => ("17", "ERROR"),
                    None | Some(0) => ("17", "ERROR"),
                    _ if r.error => ("13", "WARN"),
                    _ => ("9", "INFO"),
                };
                let mut f = String::with_capacity(r.line.len() * 9 / 8 + 320);
                f.push_str("{\"timeUnixNano\":\"");
                json::push_u64(&mut f, nanos(r.time));
                f.push_str("\",\"observedTimeUnixNano\":\"");
                json::push_u64(&mut f, nanos(now));
                f.push_str("\",\"severityNumber\":");
                f.push_str(sev);
                f.push_str(",\"severityText\":\"");
                f.push_str(text);
                f.push_str("\",\"body\":{\"stringValue\":");
                json::string(&mut f, &r.line);
                f.push_str(
                    "},\"attributes\":[{\"key\":\"log.schema\",\"value\":{\"stringValue\":\"",
                );
                f.push_str(SCHEMA);
                f.push_str("\"}}");
                if let Some(s) = r.status.filter(|s| *s != 0) {
                    f.push_str(
                        ",{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"",
                    );
                    json::push_u64(&mut f, u64::from(s));
                    f.push_str("\"}}");
                }
                f.push(']');
                // Ids are validated hex: no escaping needed.
                if let (Some(t), Some(s)) = (&r.trace_id, &r.span_id) {
                    f.push_str(",\"traceId\":\"");
                    f.push_str(t);
                    f.push_str("\",\"spanId\":\"");
                    f.push_str(s);
                    f.push('"');
                }
                f.push('}');
                f.into_bytes()
            }
            ShipFormat::Bulk => {
                let mut f = String::with_capacity(r.line.len() + 48);
                f.push_str("{\"create\":{\"_index\":");
                json::string(&mut f, &self.cfg.index);
                f.push_str("}}\n");
                f.push_str(&r.line);
                f.push('\n');
                f.into_bytes()
            }
        }
    }

    fn due(&self, now: SystemTime) -> bool {
        let Some((oldest, _)) = self.pending.front() else {
            return false;
        };
        self.pending.len() >= self.cfg.batch_max_records
            || self.pending_bytes >= self.cfg.batch_max_bytes
            // Under pressure (collector slow): send what there is rather
            // than drop records while waiting for a full batch.
            || self.held_bytes() >= self.cfg.buffer_max_bytes / 2
            || now
                .duration_since(*oldest)
                .is_ok_and(|age| age >= Duration::from_millis(self.cfg.flush_interval_ms))
    }

    fn take_batch(&mut self, now: SystemTime) -> Batch {
        let mut body = self.prefix.clone().into_bytes();
        let mut records = 0u64;
        let mut record_bytes = 0usize;
        while let Some((_, f)) = self.pending.front() {
            let full = records as usize >= self.cfg.batch_max_records
                || (records > 0 && body.len() + f.len() + 1 > self.cfg.batch_max_bytes);
            if full {
                break;
            }
            let Some((_, f)) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= f.len();
            record_bytes += f.len();
            if records > 0 && self.cfg.format == ShipFormat::Otlp {
                body.push(b',');
            }
            body.extend_from_slice(&f);
            records += 1;
        }
        body.extend_from_slice(self.suffix.as_bytes());
        self.held_bytes += record_bytes;
        Batch {
            body,
            records,
            record_bytes,
            failed: 0,
            next_at: now,
        }
    }

    /// On a timer: sends what is due (retries first), within `max_in_flight`.
    pub fn tick(
        &mut self,
        now: SystemTime,
        send: &mut dyn FnMut(&HttpCallout<'_>) -> Result<Token, CalloutError>,
    ) -> Counts {
        let mut counts = Counts::default();
        while self.in_flight.len() < self.cfg.max_in_flight {
            let batch = if let Some(i) = self.retry.iter().position(|b| b.next_at <= now) {
                counts.retries += 1;
                self.retry.swap_remove(i)
            } else if self.due(now) {
                self.take_batch(now)
            } else {
                break;
            };
            let call = HttpCallout {
                cluster: &self.cfg.cluster,
                headers: vec![
                    (":method", "POST"),
                    (":path", self.cfg.path()),
                    (":authority", self.cfg.authority()),
                    ("content-type", self.content_type),
                ],
                body: Some(&batch.body),
                timeout: Duration::from_millis(self.cfg.timeout_ms),
            };
            match send(&call) {
                Ok(token) => self.in_flight.push((token, batch)),
                Err(e) => {
                    log::warn!(
                        "accesslog: cannot send a batch to cluster {}: {e:?}",
                        self.cfg.cluster
                    );
                    self.failed(batch, None, now, &mut counts);
                }
            }
        }
        counts
    }

    /// The collector answered (or the call failed). False if the token is
    /// not one of this shipper's calls.
    pub fn on_reply(
        &mut self,
        token: Token,
        reply: Reply<'_>,
        now: SystemTime,
        counts: &mut Counts,
    ) -> bool {
        let Some(pos) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, batch) = self.in_flight.swap_remove(pos);
        match reply {
            Reply::Response { status, body, .. } if (200..300).contains(&status) => {
                let rejected = self.rejected(body).min(batch.records);
                if rejected > 0 {
                    log::warn!(
                        "accesslog: the collector rejected {rejected} of {} records",
                        batch.records
                    );
                }
                counts.shipped += batch.records - rejected;
                counts.dropped += rejected;
                self.release(&batch);
            }
            Reply::Response {
                status: 429 | 502 | 503 | 504,
                headers,
                ..
            } => {
                use meshguard_common::headers::HeaderSource;
                let after = headers
                    .first("retry-after")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                self.failed(batch, after, now, counts);
            }
            Reply::Response { status, .. } => {
                log::warn!(
                    "accesslog: the collector answered {status}; {} records dropped (not retryable)",
                    batch.records
                );
                counts.failures += 1;
                counts.dropped += batch.records;
                self.release(&batch);
            }
            Reply::Failed | Reply::Grpc { .. } => self.failed(batch, None, now, counts),
        }
        true
    }

    /// Records of an accepted batch the collector still refused.
    fn rejected(&self, body: &[u8]) -> u64 {
        let Ok(v) = meshguard_common::config::json_value(body) else {
            return 0;
        };
        match self.cfg.format {
            ShipFormat::Otlp => match v.pointer("/partialSuccess/rejectedLogRecords") {
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                Some(n) => n.as_u64().unwrap_or(0),
                None => 0,
            },
            ShipFormat::Bulk => {
                if v.get("errors").and_then(|e| e.as_bool()) != Some(true) {
                    return 0;
                }
                let items = v.get("items").and_then(|i| i.as_array());
                items
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| {
                                item.as_object()?.values().next()?.get("status")?.as_u64()
                            })
                            .filter(|s| *s >= 300)
                            .count() as u64
                    })
                    .unwrap_or(0)
            }
        }
    }

    fn failed(
        &mut self,
        mut batch: Batch,
        retry_after: Option<Duration>,
        now: SystemTime,
        counts: &mut Counts,
    ) {
        counts.failures += 1;
        batch.failed += 1;
        if batch.failed > self.cfg.max_retries {
            log::warn!(
                "accesslog: giving up on a batch of {} records after {} attempts",
                batch.records,
                batch.failed
            );
            counts.dropped += batch.records;
            self.release(&batch);
            return;
        }
        let max = Duration::from_millis(self.cfg.retry_backoff_max_ms);
        let backoff = Duration::from_millis(self.cfg.retry_backoff_ms)
            .checked_mul(1u32 << (batch.failed - 1).min(20))
            .unwrap_or(max);
        let wait = retry_after.unwrap_or(backoff).min(max);
        batch.next_at = now.checked_add(wait).unwrap_or(now);
        self.retry.push(batch);
    }

    fn release(&mut self, batch: &Batch) {
        self.held_bytes = self.held_bytes.saturating_sub(batch.record_bytes);
    }
}
