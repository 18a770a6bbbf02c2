//! Job types that exist only for tests (and the job benchmark's separate processes): they fail
//! on demand, hang, or sleep, so the worker's retry, parking and recovery can be shown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::anyhow;
use serde::Deserialize;
use serde_json::{Value, json};
use showrunner_shared::jobs::types::JobType;
use showrunner_workers::jobs::{JobContext, JobError, JobHandler, Registry};
use uuid::Uuid;

/// Any JSON at all (the test types that ignore their payload).
fn any() -> Value {
    json!({ "description": "Any JSON." })
}

/// `test.flaky`: fails (retryably) on its first `failures` attempts, then succeeds.
pub struct Flaky;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlakyPayload {
    pub failures: i32,
}

impl JobType for Flaky {
    const NAME: &'static str = "test.flaky";
    const SUMMARY: &'static str = "Fails its first `failures` attempts, then succeeds.";
    type Payload = FlakyPayload;
    fn payload_schema() -> Value {
        json!({"type": "object", "required": ["failures"],
               "properties": {"failures": {"type": "integer"}}})
    }
}

impl JobHandler for Flaky {
    type Job = Self;

    async fn run(&self, ctx: &JobContext, p: FlakyPayload) -> Result<serde_json::Value, JobError> {
        if ctx.attempt <= p.failures {
            return Err(JobError::retryable(anyhow!("attempt {} fails", ctx.attempt)));
        }
        Ok(serde_json::json!({ "attempt": ctx.attempt }))
    }
}

/// `test.switch`: fails retryably while its switch is on (the test turns it off to replay).
#[derive(Clone, Default)]
pub struct Switch(pub Arc<AtomicBool>);

impl JobType for Switch {
    const NAME: &'static str = "test.switch";
    const SUMMARY: &'static str = "Fails while its switch is on.";
    type Payload = Value;
    fn payload_schema() -> Value {
        any()
    }
}

impl JobHandler for Switch {
    type Job = Self;

    async fn run(
        &self,
        ctx: &JobContext,
        _: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(JobError::retryable(anyhow!("switched to fail")));
        }
        Ok(serde_json::json!({ "attempt": ctx.attempt }))
    }
}

/// `test.permanent`: a failure no retry can fix.
pub struct Permanent;

impl JobType for Permanent {
    const NAME: &'static str = "test.permanent";
    const SUMMARY: &'static str = "Fails for good.";
    type Payload = Value;
    fn payload_schema() -> Value {
        any()
    }
}

impl JobHandler for Permanent {
    type Job = Self;

    async fn run(
        &self,
        _: &JobContext,
        _: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        Err(JobError::permanent(anyhow!("the payload can never work")))
    }
}

/// `test.sleep`: the first attempt sleeps `firstAttemptMs`, later ones return at once.
pub struct Sleep;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepPayload {
    pub first_attempt_ms: u64,
}

impl JobType for Sleep {
    const NAME: &'static str = "test.sleep";
    const SUMMARY: &'static str = "The first attempt sleeps `firstAttemptMs`.";
    type Payload = SleepPayload;
    fn payload_schema() -> Value {
        json!({"type": "object", "required": ["firstAttemptMs"],
               "properties": {"firstAttemptMs": {"type": "integer", "minimum": 0}}})
    }
}

impl JobHandler for Sleep {
    type Job = Self;

    async fn run(&self, ctx: &JobContext, p: SleepPayload) -> Result<serde_json::Value, JobError> {
        if ctx.attempt == 1 {
            tokio::time::sleep(Duration::from_millis(p.first_attempt_ms)).await;
        }
        Ok(serde_json::json!({ "attempt": ctx.attempt }))
    }
}

/// `test.steps`: `steps` steps of `stepMs` each, reporting progress after every step; stops
/// when cancelled if `honorCancel`, otherwise runs on regardless (a handler that ignores its
/// token).
pub struct Steps;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepsPayload {
    pub steps: u32,
    pub step_ms: u64,
    #[serde(default)]
    pub honor_cancel: bool,
}

impl JobType for Steps {
    const NAME: &'static str = "test.steps";
    const SUMMARY: &'static str = "Sleeps `steps` times `stepMs`, reporting progress.";
    type Payload = StepsPayload;
    fn payload_schema() -> Value {
        json!({"type": "object", "required": ["steps", "stepMs"],
               "properties": {"steps": {"type": "integer", "minimum": 1},
                              "stepMs": {"type": "integer", "minimum": 0},
                              "honorCancel": {"type": "boolean"}}})
    }
}

impl JobHandler for Steps {
    type Job = Self;

    async fn run(&self, ctx: &JobContext, p: StepsPayload) -> Result<serde_json::Value, JobError> {
        let steps = p.steps.max(1);
        for step in 1..=steps {
            let pause = tokio::time::sleep(Duration::from_millis(p.step_ms));
            if p.honor_cancel {
                tokio::select! {
                    () = pause => {}
                    () = ctx.cancellation().cancelled() => {
                        return Err(JobError::permanent(anyhow!("stopped at step {step}")));
                    }
                }
            } else {
                pause.await;
            }
            let percent = u8::try_from(step * 100 / steps).unwrap_or(100);
            ctx.progress(percent, &format!("step {step} of {steps}"));
        }
        Ok(serde_json::json!({ "steps": steps }))
    }
}

/// `test.count`: counts its runs per job (the test reads them), then sleeps `ms`. Not in
/// [`registry`]: a test adds its own counter with `.with(count.clone())`.
#[derive(Clone, Default)]
pub struct Count(Arc<Mutex<HashMap<Uuid, u32>>>);

impl Count {
    /// How many times each job's handler started so far.
    pub fn runs(&self) -> HashMap<Uuid, u32> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Deserialize)]
pub struct CountPayload {
    pub ms: u64,
}

impl JobType for Count {
    const NAME: &'static str = "test.count";
    const SUMMARY: &'static str = "Counts its runs per job, then sleeps `ms`.";
    type Payload = CountPayload;
    fn payload_schema() -> Value {
        json!({"type": "object", "required": ["ms"],
               "properties": {"ms": {"type": "integer", "minimum": 0}}})
    }
}

impl JobHandler for Count {
    type Job = Self;

    async fn run(&self, ctx: &JobContext, p: CountPayload) -> Result<serde_json::Value, JobError> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(ctx.job_id).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(p.ms)).await;
        Ok(serde_json::json!({ "attempt": ctx.attempt }))
    }
}

/// The built-in job types plus every test type above.
pub fn registry(switch: &Switch) -> Registry {
    Registry::builtin().with(Flaky).with(switch.clone()).with(Permanent).with(Sleep).with(Steps)
}
