//! W3C trace context (`traceparent`, https://www.w3.org/TR/trace-context/): parsed, validated,
//! generated and continued by hand. It travels from the HTTP request through the command and
//! job headers, the worker's log span and the events to the WebSocket frame's `traceId`, so
//! one id finds every log line of one user action. No OpenTelemetry: nothing here exports
//! spans, the id only has to travel and be logged.

use std::fmt;

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A new trace (sampled), for a request that came without a valid one.
    pub fn new_root() -> Self {
        Self { trace_id: nonzero_u128(), span_id: nonzero_u64(), flags: 0x01 }
    }

    /// The next hop of the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        Self { span_id: nonzero_u64(), ..*self }
    }

    /// Parses a `traceparent` header value. `None` for anything the spec says to ignore:
    /// wrong length or characters, version `ff`, an all-zero trace or span id. Versions above
    /// 00 are accepted when their first four fields have the version-00 shape.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && (value.starts_with("00") || bytes[55] != b'-'))
        {
            return None;
        }
        let mut parts = value[..55].split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex =
            |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if version.len() != 2
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
            || ![version, trace, span, flags].into_iter().all(lower_hex)
            || version == "ff"
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self { trace_id, span_id, flags: u8::from_str_radix(flags, 16).ok()? })
    }

    /// The 32 hex digits that name the whole trace (the WebSocket frame's `traceId`).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// The `traceparent` of something caused by a message carrying `parent`: the same trace with
/// a new span, or a new trace when the message had none (a command republished by a sweeper).
pub fn child_or_new(parent: Option<&str>) -> String {
    parent
        .and_then(TraceParent::parse)
        .map_or_else(TraceParent::new_root, |p| p.child())
        .to_string()
}

/// The `traceparent` header of an AMQP message, if it has one.
pub fn from_amqp(properties: &lapin::BasicProperties) -> Option<String> {
    use lapin::types::AMQPValue;
    match properties.headers().as_ref()?.inner().get("traceparent")? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The trace id of a `traceparent` value, if it is valid.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    TraceParent::parse(traceparent).map(|t| t.trace_id())
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let tp = TraceParent::parse(VALID).expect("valid");
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id(), "00f067aa0ba902b7");
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may add fields after the four it shares with version 00.
        assert!(TraceParent::parse(&format!("01{}-more", &VALID[2..])).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceParent::parse(VALID).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        let continued = child_or_new(Some(VALID));
        assert_eq!(trace_id_of(&continued).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let fresh = child_or_new(None);
        assert!(TraceParent::parse(&fresh).is_some());
        assert_ne!(trace_id_of(&fresh), trace_id_of(VALID));
    }

    #[test]
    fn new_roots_are_valid_and_distinct() {
        let (a, b) = (TraceParent::new_root(), TraceParent::new_root());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
    }
}
