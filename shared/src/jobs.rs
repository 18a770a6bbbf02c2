//! Jobs as every process sees them: the declared job types ([`types`]), and publishing job
//! requests: straight to the jobs queue, or, while their `notBefore` is ahead, into the delay
//! tier that fits what remains (the worker sends them on until it is reached).

pub mod types;

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};

use crate::broker::topology::{
    JOBS_DELAY_EXCHANGE, JOBS_EXCHANGE, JOBS_KEY, job_delay_queue, job_delay_tier,
};
use crate::broker::{Outgoing, PublishError, Publisher, publisher_json_properties};
use crate::contracts::JobRequest;

/// Milliseconds from `now` until the request may run (0 when it may run now).
pub fn remaining_ms(request: &JobRequest, now: DateTime<Utc>) -> u64 {
    request.not_before.map(|at| (at - now).num_milliseconds().max(0) as u64).unwrap_or(0)
}

/// Publishes `request` with a confirm: to a delay tier if it must wait, else to the jobs queue.
pub async fn publish(
    publisher: &Publisher,
    request: &JobRequest,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    publish_traced(publisher, request, now, None).await
}

/// [`publish`] with a W3C `traceparent` header (the trace of the request that made the job).
pub async fn publish_traced(
    publisher: &Publisher,
    request: &JobRequest,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent {
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    }
    // Serializing ids and a timestamp cannot fail.
    let body = serde_json::to_vec(request).unwrap_or_default();
    let tier = job_delay_tier(remaining_ms(request, now)).map(job_delay_queue);
    let (exchange, routing_key) = match &tier {
        Some(queue) => (JOBS_DELAY_EXCHANGE, queue.as_str()),
        None => (JOBS_EXCHANGE, JOBS_KEY),
    };
    publisher
        .publish(Outgoing {
            exchange,
            routing_key,
            body: &body,
            properties: publisher_json_properties(&request.dispatch_id.to_string(), "job", headers),
            mandatory: true,
        })
        .await
}
