//! A `jobs` row as the api reads it (the columns the job routes show or check; the job
//! worker's claim, settle and sweep statements stay raw: each does a batch's or a conditional
//! step's work in one statement).

use sea_orm::entity::prelude::*;

use crate::jobs::JobStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_name = "type")]
    pub job_type: String,
    pub payload: Json,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub result: Option<Json>,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub episode_id: Option<Uuid>,
    pub created_by: Uuid,
    pub created_by_name: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    pub run_at: Option<DateTimeUtc>,
    pub progress_percent: Option<i16>,
    pub progress_message: Option<String>,
    pub progress_at: Option<DateTimeUtc>,
    pub cancel_requested_at: Option<DateTimeUtc>,
    /// The request that may run it now; `None` while a row holds it back (`scheduled`).
    pub dispatch_id: Option<Uuid>,
    /// UUIDv5 of (user, Idempotency-Key) of a keyed `POST /jobs`.
    pub idempotency_id: Option<Uuid>,
    pub request_hash: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
