//! A `compositions` row. The domain type is `resource::composition::Composition` (`TryFrom`
//! this: the tracks are JSON and are checked as they are read); the command worker's batch
//! upsert stays one raw statement.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "compositions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub episode_id: Uuid,
    pub name: String,
    pub tracks: Json,
    pub duration_us: i64,
    pub version: i64,
    pub created_by: Uuid,
    pub updated_by: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
