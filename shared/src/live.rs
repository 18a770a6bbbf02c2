//! The messages on `showrunner.live`, from the log shipper to the api relays.
//!
//! The shipper publishes what one look at the event log found as few messages as it can: a
//! batch (AMQP `type` [`BATCH_TYPE`], routing key [`BATCH_ROUTING_KEY`]) is a JSON array of
//! consecutive events in `seq` order, each `{"seq", "topic", "traceparent", "event"}` with the
//! envelope as it is in the log; header `x-prev-seq` is the number published before the first
//! one, `x-seq` the last one's. A message per event cost the broker a routing, an enqueue and a
//! delivery per event and per relay, and the shipper and every relay a frame and a confirm: on
//! the write path that was more than a quarter of all the CPU (README, "One message per look").
//! A relay still takes a single event as shippers before this one published it: type `event`,
//! routing key its topic, headers `x-seq` and `x-prev-seq`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The AMQP `type` of a batch.
pub const BATCH_TYPE: &str = "events";
/// The routing key of a batch (relays bind `#`).
pub const BATCH_ROUTING_KEY: &str = "events";

/// One event of a batch, as a relay reads it (borrowed from the message where it can be).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item<'a> {
    pub seq: i64,
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    #[serde(borrow, default)]
    pub traceparent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub event: &'a RawValue,
}

/// The events of a batch body, in order; `Err` says why the body is not a batch.
pub fn decode(body: &[u8]) -> Result<Vec<Item<'_>>, String> {
    let items: Vec<Item<'_>> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if items.is_empty() {
        return Err("an empty batch".into());
    }
    if items.windows(2).any(|pair| pair[1].seq <= pair[0].seq) {
        return Err("numbers not in ascending order".into());
    }
    Ok(items)
}

/// A batch body being built.
#[derive(Debug, Default)]
pub struct Batch {
    pub json: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: usize,
}

/// Packs events, in order, into batch bodies of at most `max_bytes` each (an event that alone
/// is larger goes in a body of its own, which relays refuse as they refuse any message that
/// large: it reaches clients through `resume`, as an event whose publish was lost would).
/// An event whose body is not JSON is left out: it could not be framed for a client either.
pub fn pack<'a>(
    events: impl IntoIterator<Item = (i64, &'a str, Option<&'a str>, &'a str)>,
    max_bytes: usize,
) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut current = Batch::default();
    for (seq, topic, traceparent, body) in events {
        if serde_json::from_str::<&RawValue>(body).is_err() {
            tracing::warn!(seq, topic, "event log row is not JSON: left out of its batch");
            continue;
        }
        // Strings from our own log: serializing a string cannot fail.
        let mut item = format!("{{\"seq\":{seq},\"topic\":");
        item.push_str(&serde_json::to_string(topic).unwrap_or_default());
        if let Some(tp) = traceparent {
            item.push_str(",\"traceparent\":");
            item.push_str(&serde_json::to_string(tp).unwrap_or_default());
        }
        item.push_str(",\"event\":");
        item.push_str(body);
        item.push('}');
        // `[`, `]` and a comma per item.
        if current.count > 0 && current.json.len() + item.len() + 2 > max_bytes {
            current.json.push(']');
            batches.push(std::mem::take(&mut current));
        }
        current.json.push(if current.count == 0 { '[' } else { ',' });
        current.json.push_str(&item);
        if current.count == 0 {
            current.first_seq = seq;
        }
        current.last_seq = seq;
        current.count += 1;
    }
    if current.count > 0 {
        current.json.push(']');
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: i64) -> String {
        format!("{{\"id\":\"{n}\",\"data\":{{\"title\":\"a \\\"quoted\\\" title\"}}}}")
    }

    #[test]
    fn a_packed_batch_decodes_to_the_same_events_in_order() {
        let bodies: Vec<String> = (1..=3).map(body).collect();
        let events = [
            (7, "episode.1.created", Some("00-abc-def-01"), bodies[0].as_str()),
            (8, "user.\"x\".notification", None, bodies[1].as_str()),
            (10, "job.2.completed", None, bodies[2].as_str()),
        ];
        let batches = pack(events, 1 << 20);
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!((batch.first_seq, batch.last_seq, batch.count), (7, 10, 3));
        let items = decode(batch.json.as_bytes()).expect("decodes");
        let seen: Vec<(i64, &str, Option<&str>, &str)> = items
            .iter()
            .map(|i| (i.seq, i.topic.as_ref(), i.traceparent.as_deref(), i.event.get()))
            .collect();
        assert_eq!(seen, events.to_vec());
    }

    #[test]
    fn batches_are_cut_at_the_byte_limit_and_keep_every_event() {
        let bodies: Vec<String> = (1..=50).map(body).collect();
        let events =
            bodies.iter().enumerate().map(|(i, b)| (i as i64 + 1, "t.x", None, b.as_str()));
        let batches = pack(events, 400);
        assert!(batches.len() > 1, "{} batch(es)", batches.len());
        let mut next = 1;
        for batch in &batches {
            assert!(batch.json.len() <= 400, "{} bytes", batch.json.len());
            let items = decode(batch.json.as_bytes()).expect("decodes");
            assert_eq!(items.len(), batch.count);
            for item in items {
                assert_eq!(item.seq, next);
                next += 1;
            }
        }
        assert_eq!(next, 51);
    }

    #[test]
    fn an_event_larger_than_the_limit_goes_alone_and_one_not_json_is_left_out() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(500));
        let small = body(1);
        let events = [
            (1, "t.a", None, small.as_str()),
            (2, "t.b", None, "{not json"),
            (3, "t.c", None, big.as_str()),
            (4, "t.d", None, small.as_str()),
        ];
        let batches = pack(events, 300);
        let counts: Vec<(i64, i64)> = batches.iter().map(|b| (b.first_seq, b.last_seq)).collect();
        assert_eq!(counts, [(1, 1), (3, 3), (4, 4)]);
    }

    #[test]
    fn a_body_that_is_not_an_ascending_batch_is_refused() {
        assert!(decode(b"[]").is_err());
        assert!(decode(b"{\"seq\":1}").is_err());
        let twice = br#"[{"seq":2,"topic":"t.a","event":{}},{"seq":2,"topic":"t.a","event":{}}]"#;
        assert!(decode(twice).is_err());
        let extra = br#"[{"seq":2,"topic":"t.a","event":{},"admin":true}]"#;
        assert!(decode(extra).is_err());
        let fine =
            br#"[{"seq":2,"topic":"t.a","event":{}},{"seq":5,"topic":"t.b","event":{"a":1}}]"#;
        assert_eq!(decode(fine).map(|items| items.len()), Ok(2));
    }
}
