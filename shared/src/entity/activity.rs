//! An `activity_log` row: one recorded event, keyed by the event id. Written by the sequencer's
//! statement (`workers/src/consumers/event_log.rs`), read here.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "activity_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub event: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor_name: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub data: Json,
    pub occurred_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
