//! A `notifications` row: what an event told a user (unique per event and user).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub event_id: Uuid,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub read_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl From<Model> for crate::contracts::Notification {
    fn from(r: Model) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            kind: r.kind,
            title: r.title,
            message: r.message,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            event_id: r.event_id,
            read_at: r.read_at,
            created_at: r.created_at,
        }
    }
}
