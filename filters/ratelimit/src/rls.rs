//! Envoy's rate-limit service protocol (`envoy.service.ratelimit.v3`,
//! `RateLimitService/ShouldRateLimit`), encoded and decoded by hand: the
//! few fields global mode needs, without a protobuf runtime in the module.
//! Unknown fields are skipped, as protobuf requires; malformed input is an
//! error, never a panic.

/// Statuses and headers kept from one answer (the rest are skipped): a
/// misbehaving service cannot grow the VM's memory.
const MAX_ENTRIES: usize = 64;

/// gRPC service and method of the call.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `RateLimitRequest{domain, descriptors[]{entries[]{key, value}},
/// hits_addend}`.
pub fn encode_request(domain: &str, descriptors: &[Vec<(&str, &[u8])>], hits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    bytes_field(&mut out, 1, domain.as_bytes());
    let mut d = Vec::new();
    let mut e = Vec::new();
    for entries in descriptors {
        d.clear();
        for (k, v) in entries {
            e.clear();
            bytes_field(&mut e, 1, k.as_bytes());
            bytes_field(&mut e, 2, v);
            bytes_field(&mut d, 1, &e);
        }
        bytes_field(&mut out, 2, &d);
    }
    if hits > 1 {
        varint(&mut out, 3 << 3);
        varint(&mut out, u64::from(hits));
    }
    out
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

/// The parts of a `RateLimitResponse` the filter uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    /// Per descriptor: (code, limit_remaining, seconds until reset,
    /// requests_per_unit).
    pub statuses: Vec<Status>,
    pub response_headers: Vec<(String, Vec<u8>)>,
    pub request_headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub over_limit: bool,
    pub remaining: Option<u32>,
    pub reset_s: Option<u64>,
    pub requests_per_unit: Option<u32>,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.b.is_empty()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.b.split_at_checked(n)?;
        self.b = rest;
        Some(head)
    }

    /// The next field: (number, wire type, payload for length-delimited,
    /// value for varints).
    fn field(&mut self) -> Option<(u32, Field<'a>)> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            _ => return None,
        };
        Some((number, f))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn code(v: u64) -> Code {
    match v {
        1 => Code::Ok,
        2 => Code::OverLimit,
        _ => Code::Unknown,
    }
}

fn header_value(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut r = Reader { b };
    let (mut key, mut value) = (None, Vec::new());
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(k)) => key = Some(String::from_utf8(k.to_vec()).ok()?),
            (2 | 3, Field::Bytes(v)) => value = v.to_vec(),
            _ => {}
        }
    }
    Some((key?, value))
}

fn status(b: &[u8]) -> Option<Status> {
    let mut r = Reader { b };
    let mut s = Status::default();
    while !r.done() {
        match r.field()? {
            (1, Field::Varint(c)) => s.over_limit = code(c) == Code::OverLimit,
            (2, Field::Bytes(limit)) => {
                let mut l = Reader { b: limit };
                while !l.done() {
                    if let (1, Field::Varint(n)) = l.field()? {
                        s.requests_per_unit = u32::try_from(n).ok();
                    }
                }
            }
            (3, Field::Varint(n)) => s.remaining = u32::try_from(n).ok(),
            (4, Field::Bytes(d)) => {
                let mut dr = Reader { b: d };
                let (mut secs, mut nanos) = (0u64, 0u64);
                while !dr.done() {
                    match dr.field()? {
                        (1, Field::Varint(v)) => secs = v,
                        (2, Field::Varint(v)) => nanos = v,
                        _ => {}
                    }
                }
                // Negative durations arrive as huge varints: treat as 0.
                let secs = if secs > i64::MAX as u64 { 0 } else { secs };
                s.reset_s = Some(secs + u64::from(nanos > 0 && nanos < 1_000_000_000));
            }
            _ => {}
        }
    }
    Some(s)
}

/// Decodes a `RateLimitResponse`; `None` if it is not one.
pub fn decode_response(b: &[u8]) -> Option<Response> {
    let mut r = Reader { b };
    let mut out = Response {
        overall: Code::Unknown,
        statuses: Vec::new(),
        response_headers: Vec::new(),
        request_headers: Vec::new(),
    };
    while !r.done() {
        match r.field()? {
            (1, Field::Varint(c)) => out.overall = code(c),
            (2, Field::Bytes(s)) if out.statuses.len() < MAX_ENTRIES => {
                out.statuses.push(status(s)?)
            }
            (3, Field::Bytes(h)) if out.response_headers.len() < MAX_ENTRIES => {
                out.response_headers.push(header_value(h)?)
            }
            (4, Field::Bytes(h)) if out.request_headers.len() < MAX_ENTRIES => {
                out.request_headers.push(header_value(h)?)
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_match_protobuf() {
        // RateLimitRequest{domain: "shop", descriptors: [{entries:
        // [{key: "rule", value: "api"}, {key: "x_user_id", value: "bob"}]}]}
        let b = encode_request(
            "shop",
            &[vec![("rule", b"api".as_slice()), ("x_user_id", b"bob")]],
            1,
        );
        let mut want = vec![0x0a, 4];
        want.extend_from_slice(b"shop");
        let e1 = [&[0x0a, 4][..], b"rule", &[0x12, 3], b"api"].concat();
        let e2 = [&[0x0a, 9][..], b"x_user_id", &[0x12, 3], b"bob"].concat();
        let d = [
            &[0x0a, e1.len() as u8][..],
            &e1,
            &[0x0a, e2.len() as u8],
            &e2,
        ]
        .concat();
        want.extend_from_slice(&[0x12, d.len() as u8]);
        want.extend_from_slice(&d);
        assert_eq!(b, want);
        let with_hits = encode_request("s", &[], 5);
        assert_eq!(with_hits, vec![0x0a, 1, b's', 0x18, 5]);
    }

    #[test]
    fn decodes_a_response_and_skips_unknown_fields() {
        // overall_code OVER_LIMIT; a status {code 2, current_limit
        // {requests_per_unit 10, unit MINUTE}, limit_remaining 0,
        // duration_until_reset {seconds 42}}; a response header; an unknown
        // fixed64 field 9 and a dynamic_metadata (6) message.
        let limit = [0x08, 10, 0x10, 2];
        let dur = [0x08, 42];
        let st = [
            &[0x08, 2, 0x12, limit.len() as u8][..],
            &limit,
            &[0x18, 0, 0x22, dur.len() as u8],
            &dur,
        ]
        .concat();
        let hv = [&[0x0a, 17][..], b"x-ratelimit-limit", &[0x12, 2], b"10"].concat();
        let mut b = vec![0x08, 2, 0x12, st.len() as u8];
        b.extend_from_slice(&st);
        b.extend_from_slice(&[0x1a, hv.len() as u8]);
        b.extend_from_slice(&hv);
        b.extend_from_slice(&[0x49, 1, 2, 3, 4, 5, 6, 7, 8]);
        b.extend_from_slice(&[0x32, 2, 0x0a, 0]);
        let r = decode_response(&b).unwrap();
        assert_eq!(r.overall, Code::OverLimit);
        assert_eq!(
            r.statuses,
            vec![Status {
                over_limit: true,
                remaining: Some(0),
                reset_s: Some(42),
                requests_per_unit: Some(10)
            }]
        );
        assert_eq!(
            r.response_headers,
            vec![("x-ratelimit-limit".to_string(), b"10".to_vec())]
        );
        assert_eq!(decode_response(&[]).unwrap().overall, Code::Unknown);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &[0x12, 200][..],
            &[0x0f],
            &[0x08],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x1a, 2, 0x12, 5],
        ] {
            assert!(decode_response(bad).is_none(), "{bad:?}");
        }
        // Arbitrary bytes: some decode, none panic.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b.push(x as u8);
            }
            let _ = decode_response(&b);
        }
    }
}
