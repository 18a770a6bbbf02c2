//! The episode: its resource type, the changes a PATCH makes, the one `apply` that both the
//! api's 202 preview and the command worker use, its rows and its events.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};

use crate::entity::episode as entity;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    At, Bookkeeping, Changes, Rejection, ResourceType, Stored, Table, Tracked, create, delete,
    live, misrouted, touch,
};
use crate::contracts::{Command, DeleteType, EventData, OutgoingEvent};
use crate::db::sql;
use crate::domain::{Categories, Description, EpisodeStatus, Title};

/// The episode resource, as REST answers and events carry it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Episode {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub status: EpisodeStatus,
    pub categories: Vec<String>,
    pub created_by: Uuid,
    pub updated_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// The fields a PATCH sets; absent means unchanged.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EpisodeChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Title>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EpisodeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Categories>,
}

impl EpisodeChanges {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.status.is_none()
            && self.categories.is_none()
    }
}

/// Applies one episode command to the episode's current state (`None`: it does not exist);
/// the event it causes, or why not.
pub fn apply(
    state: &mut Option<Episode>,
    command: &Command,
    at: &At<'_>,
) -> Result<OutgoingEvent, Rejection> {
    let actor = at.actor.id;
    let now = at.now;
    match command {
        Command::CreateEpisode { episode_id, title, description, status, categories } => {
            let created_at = at.accepted_at.trunc_subsecs(6);
            let row = Episode {
                id: *episode_id,
                title: title.as_str().to_string(),
                description: description.as_str().to_string(),
                status: *status,
                categories: categories.as_slice().to_vec(),
                created_by: actor,
                updated_by: actor,
                created_at,
                updated_at: created_at,
                deleted_at: None,
                version: 1,
            };
            let episode = create(state, *episode_id, row)?;
            Ok(at.event(episode_id, &EpisodeCreated { episode, created_by: actor, timestamp: now }))
        }
        Command::UpdateEpisode { episode_id, changes } => {
            let episode = live(state, *episode_id)?;
            let changed_fields = apply_changes(episode, changes);
            if !changed_fields.is_empty() {
                touch(episode, at);
            }
            let data = EpisodeUpdated {
                episode: episode.clone(),
                changed_fields,
                updated_by: actor,
                timestamp: now,
            };
            Ok(at.event(episode_id, &data))
        }
        Command::DeleteEpisode { episode_id, permanent } => {
            let deleted = delete(state, *episode_id, *permanent, at)?;
            let data = EpisodeDeleted {
                episode_id: *episode_id,
                title: deleted.title,
                delete_type: DeleteType::of(*permanent),
                deleted_by: actor,
                timestamp: now,
            };
            Ok(at.event(episode_id, &data))
        }
        other => Err(misrouted(other)),
    }
}

impl Tracked for Episode {
    const KIND: ResourceType = ResourceType::Episode;

    fn bookkeeping(&mut self) -> Bookkeeping<'_> {
        Bookkeeping {
            deleted_at: &mut self.deleted_at,
            changes: Some(Changes {
                updated_by: &mut self.updated_by,
                updated_at: &mut self.updated_at,
                version: &mut self.version,
            }),
        }
    }

    fn episode_id(&self) -> Uuid {
        self.id
    }
}

/// Sets the fields that differ; returns their names, in the contract's spelling.
fn apply_changes(episode: &mut Episode, changes: &EpisodeChanges) -> Vec<String> {
    let mut changed = Vec::new();
    if let Some(title) = &changes.title
        && episode.title != title.as_str()
    {
        episode.title = title.as_str().to_string();
        changed.push("title".to_string());
    }
    if let Some(description) = &changes.description
        && episode.description != description.as_str()
    {
        episode.description = description.as_str().to_string();
        changed.push("description".to_string());
    }
    if let Some(status) = changes.status
        && episode.status != status
    {
        episode.status = status;
        changed.push("status".to_string());
    }
    if let Some(categories) = &changes.categories
        && episode.categories != categories.as_slice()
    {
        episode.categories = categories.as_slice().to_vec();
        changed.push("categories".to_string());
    }
    changed
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeCreated {
    pub episode: Episode,
    pub created_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeUpdated {
    pub episode: Episode,
    pub changed_fields: Vec<String>,
    pub updated_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeDeleted {
    pub episode_id: Uuid,
    pub title: String,
    pub delete_type: DeleteType,
    pub deleted_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

macro_rules! episode_event {
    ($ty:ty, $name:literal, $suffix:literal) => {
        impl EventData for $ty {
            const NAME: &'static str = $name;
            type Subject = Uuid;
            fn routing_key(episode_id: &Uuid) -> String {
                format!("episode.{episode_id}.{}", $suffix)
            }
        }
    };
}
pub(crate) use episode_event;

episode_event!(EpisodeCreated, "episode_created", "created");
episode_event!(EpisodeUpdated, "episode_updated", "updated");
episode_event!(EpisodeDeleted, "episode_deleted", "deleted");

/// An `episodes` row: its entity's model.
pub use crate::entity::episode::Model as EpisodeRow;

impl TryFrom<EpisodeRow> for Episode {
    type Error = DbErr;
    fn try_from(r: EpisodeRow) -> Result<Self, DbErr> {
        let status = EpisodeStatus::parse(&r.status)
            .ok_or_else(|| DbErr::Custom(format!("unknown episode status {:?}", r.status)))?;
        Ok(Episode {
            id: r.id,
            title: r.title,
            description: r.description,
            status,
            categories: r.categories,
            created_by: r.created_by,
            updated_by: r.updated_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
            version: r.version,
        })
    }
}

/// The episode; soft-deleted ones only when `include_deleted`.
pub async fn find(
    db: &impl ConnectionTrait,
    id: Uuid,
    include_deleted: bool,
) -> Result<Option<Episode>, DbErr> {
    super::find(db, id, id, include_deleted).await
}

impl Table for Episode {
    type Entity = entity::Entity;
    const ID: entity::Column = entity::Column::Id;
    /// An episode is its own episode.
    const EPISODE_ID: entity::Column = entity::Column::Id;
    const DELETED_AT: entity::Column = entity::Column::DeletedAt;
}

impl Stored for Episode {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn upsert(txn: &DatabaseTransaction, changed: &[&Self]) -> Result<(), DbErr> {
        let column = |f: &dyn Fn(&Episode) -> String| -> Vec<String> {
            changed.iter().map(|e| f(e)).collect()
        };
        // Arrays of arrays do not unnest row by row, so categories travel as JSON text.
        let categories =
            column(&|e| serde_json::to_string(&e.categories).unwrap_or_else(|_| "[]".into()));
        let deleted_at = column(&|e| e.deleted_at.map(|d| d.to_rfc3339()).unwrap_or_default());
        txn.execute_raw(sql(
            "INSERT INTO episodes (id, title, description, status, categories, created_by, \
             updated_by, created_at, updated_at, deleted_at, version) \
             SELECT id, title, description, status, \
             ARRAY(SELECT jsonb_array_elements_text(categories::jsonb)), created_by, updated_by, \
             created_at, updated_at, NULLIF(deleted_at, '')::timestamptz, version \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], \
             $7::uuid[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::bigint[]) \
             AS t(id, title, description, status, categories, created_by, updated_by, created_at, \
             updated_at, deleted_at, version) \
             ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, \
             description = EXCLUDED.description, status = EXCLUDED.status, \
             categories = EXCLUDED.categories, updated_by = EXCLUDED.updated_by, \
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at, \
             version = EXCLUDED.version",
            [
                changed.iter().map(|e| e.id).collect::<Vec<_>>().into(),
                column(&|e| e.title.clone()).into(),
                column(&|e| e.description.clone()).into(),
                column(&|e| e.status.as_str().to_string()).into(),
                categories.into(),
                changed.iter().map(|e| e.created_by).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.updated_by).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.created_at).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.updated_at).collect::<Vec<_>>().into(),
                deleted_at.into(),
                changed.iter().map(|e| e.version).collect::<Vec<_>>().into(),
            ],
        ))
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::Actor;
    use crate::resource::RejectionCode;

    fn at(actor: &Actor) -> At<'_> {
        At { command_id: Uuid::now_v7(), actor, accepted_at: Utc::now(), now: Utc::now() }
    }

    fn create(id: Uuid) -> Command {
        Command::CreateEpisode {
            episode_id: id,
            title: "Pilot".to_string().try_into().unwrap_or_else(|_| unreachable!()),
            description: Default::default(),
            status: EpisodeStatus::Draft,
            categories: Default::default(),
        }
    }

    fn code(result: Result<OutgoingEvent, Rejection>) -> Result<(), RejectionCode> {
        result.map(|_| ()).map_err(|r| r.code)
    }

    #[test]
    fn create_update_delete_in_order() {
        let actor = Actor { id: Uuid::from_u128(1), name: "Alice".into() };
        let id = Uuid::now_v7();
        let mut state = None;
        assert!(apply(&mut state, &create(id), &at(&actor)).is_ok());
        let update = Command::UpdateEpisode {
            episode_id: id,
            changes: EpisodeChanges {
                status: Some(EpisodeStatus::Published),
                ..Default::default()
            },
        };
        let event = apply(&mut state, &update, &at(&actor)).expect("applies");
        let crate::event::Event::EpisodeUpdated(updated) = &event.envelope.event else {
            panic!("not an update: {event:?}");
        };
        assert_eq!(updated.changed_fields, ["status"]);
        assert_eq!(state.as_ref().map(|e| e.version), Some(2));
        let delete = Command::DeleteEpisode { episode_id: id, permanent: false };
        assert!(apply(&mut state, &delete, &at(&actor)).is_ok());
        assert!(state.as_ref().is_some_and(|e| e.deleted_at.is_some()));
        assert_eq!(code(apply(&mut state, &update, &at(&actor))), Err(RejectionCode::Gone));
    }

    #[test]
    fn commands_on_a_missing_episode_are_rejected() {
        let actor = Actor { id: Uuid::from_u128(1), name: "Alice".into() };
        let id = Uuid::now_v7();
        let mut state = None;
        let update = Command::UpdateEpisode { episode_id: id, changes: Default::default() };
        assert_eq!(code(apply(&mut state, &update, &at(&actor))), Err(RejectionCode::NotFound));
        let delete = Command::DeleteEpisode { episode_id: id, permanent: true };
        assert_eq!(code(apply(&mut state, &delete, &at(&actor))), Err(RejectionCode::NotFound));
        assert!(apply(&mut state, &create(id), &at(&actor)).is_ok());
        assert_eq!(code(apply(&mut state, &create(id), &at(&actor))), Err(RejectionCode::Conflict));
    }
}
