//! Resources: one module per resource (its rules as one pure `apply`, its stored rows, its
//! events), and what they share: the rejection a rule answers with, the batch state the
//! command worker applies a batch to, and the one dispatch from a command to its resource.
//!
//! Adding a resource: its module here (types, `apply`, `Stored`, events), its command variants
//! in [`crate::contracts::Command`], one field and one line in each of [`Batch::load`],
//! [`Batch::apply`] and [`Batch::write`], its migration and its routes (see the README).

pub mod composition;
pub mod episode;
pub mod file;

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, DeriveActiveEnum, EntityTrait,
    EnumIter, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contracts::{Actor, Command, CommandEnvelope, OutgoingEvent};
use composition::Composition;
use episode::Episode;
use file::File;

/// What a command acts on, as the `commands` and `activity_log` rows name it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, EnumIter, DeriveActiveEnum,
)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum ResourceType {
    Episode,
    Composition,
    File,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Episode => "episode",
            Self::Composition => "composition",
            Self::File => "file",
        }
    }
}

/// Where a command is, as `commands.status` stores it: `pending` until the worker applied or
/// rejected it (then it is that command's inbox mark: never applied again).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, EnumIter, DeriveActiveEnum)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Applied,
    Rejected,
}

impl CommandStatus {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Applied, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a command was rejected, stored as `commands.error_code`; the api picks its HTTP status
/// from it when the caller waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, EnumIter, DeriveActiveEnum)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum RejectionCode {
    /// The resource (or its episode) does not exist: 404.
    NotFound,
    /// The resource (or its episode) is soft-deleted: 410.
    Gone,
    /// It exists already, or the request contradicts it: 409.
    Conflict,
    /// `If-Match` named another version: 412.
    PreconditionFailed,
}

impl RejectionCode {
    pub const ALL: [Self; 4] =
        [Self::NotFound, Self::Gone, Self::Conflict, Self::PreconditionFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a command could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectionCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: RejectionCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

/// What an `apply` needs beside the state and the command: who, which command, and when.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub command_id: Uuid,
    pub actor: &'a Actor,
    pub accepted_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl<'a> At<'a> {
    pub fn of(envelope: &'a CommandEnvelope, now: DateTime<Utc>) -> Self {
        Self {
            command_id: envelope.id,
            actor: &envelope.actor,
            // At the database's precision, like `now`: a row as the batch holds it is then the
            // row as it is read back, which a write that waited is answered with (`answer`).
            accepted_at: envelope.accepted_at.trunc_subsecs(6),
            now,
        }
    }

    /// An event this command caused, correlated with it.
    pub fn event<D: crate::contracts::EventData>(
        &self,
        subject: &D::Subject,
        data: &D,
    ) -> OutgoingEvent {
        OutgoingEvent::new(subject, data, Some(self.actor.clone()), Some(self.command_id), self.now)
    }
}

/// The bookkeeping fields a resource row carries, borrowed for a change.
pub struct Bookkeeping<'a> {
    pub deleted_at: &'a mut Option<DateTime<Utc>>,
    /// Who changed it last, when, and its version: `None` for a resource that is only created
    /// and deleted, never changed (the file).
    pub changes: Option<Changes<'a>>,
}

/// The fields a change of a resource row sets.
pub struct Changes<'a> {
    pub updated_by: &'a mut Uuid,
    pub updated_at: &'a mut DateTime<Utc>,
    pub version: &'a mut i64,
}

/// A resource row with [`Bookkeeping`]: what [`create`], [`of_episode`], [`live`], [`touch`]
/// and [`delete`] need, so the rules of existence, soft deletion and versions are written once
/// for every resource.
pub trait Tracked: Clone {
    const KIND: ResourceType;
    fn bookkeeping(&mut self) -> Bookkeeping<'_>;
    /// The episode it belongs to (an episode: itself).
    fn episode_id(&self) -> Uuid;
}

/// The rejection of a command on a resource that does not exist (404).
pub fn missing(kind: ResourceType, id: Uuid) -> Rejection {
    Rejection::new(RejectionCode::NotFound, format!("{} {id} does not exist", kind.as_str()))
}

/// A create: the slot must be empty (a second create of one id is a conflict); the row as
/// created, for the event.
pub fn create<R: Tracked>(slot: &mut Option<R>, id: Uuid, row: R) -> Result<R, Rejection> {
    if slot.is_some() {
        return Err(Rejection::new(
            RejectionCode::Conflict,
            format!("{} {id} already exists", R::KIND.as_str()),
        ));
    }
    *slot = Some(row.clone());
    Ok(row)
}

/// The slot, unless it holds a row of another episode: that one does not exist as far as this
/// episode's path is concerned (404).
pub fn of_episode<R: Tracked>(
    slot: &mut Option<R>,
    episode_id: Uuid,
    id: Uuid,
) -> Result<&mut Option<R>, Rejection> {
    match slot {
        Some(row) if row.episode_id() != episode_id => Err(missing(R::KIND, id)),
        _ => Ok(slot),
    }
}

/// The row if it exists and is not soft-deleted; what a write on it is rejected with if not
/// (404 missing, 410 deleted).
pub fn live<R: Tracked>(slot: &mut Option<R>, id: Uuid) -> Result<&mut R, Rejection> {
    let Some(row) = slot else {
        return Err(missing(R::KIND, id));
    };
    if row.bookkeeping().deleted_at.is_some() {
        return Err(Rejection::new(
            RejectionCode::Gone,
            format!("{} {id} is deleted", R::KIND.as_str()),
        ));
    }
    Ok(row)
}

/// Records a change by the command's actor: who, when, and a new version (nothing for a
/// resource without versions).
pub fn touch<R: Tracked>(row: &mut R, at: &At<'_>) {
    if let Some(c) = row.bookkeeping().changes {
        *c.updated_by = at.actor.id;
        *c.updated_at = at.now;
        *c.version += 1;
    }
}

/// A delete: a permanent one empties the slot (the row must exist, deleted or not), a soft one
/// marks the live row deleted (a change, so a new version). The row as it was last, for the
/// event.
pub fn delete<R: Tracked>(
    slot: &mut Option<R>,
    id: Uuid,
    permanent: bool,
    at: &At<'_>,
) -> Result<R, Rejection> {
    if permanent {
        return slot.take().ok_or_else(|| missing(R::KIND, id));
    }
    let row = live(slot, id)?;
    *row.bookkeeping().deleted_at = Some(at.now);
    touch(row, at);
    Ok(row.clone())
}

/// A resource whose rows are an entity's (`crate::entity`): the reads every resource makes the
/// same way ([`find`], [`list_of_episode`], the batch's locked load) are written once over it.
pub trait Table: Sized + TryFrom<<Self::Entity as EntityTrait>::Model, Error = DbErr> {
    type Entity: EntityTrait;
    const ID: <Self::Entity as EntityTrait>::Column;
    const EPISODE_ID: <Self::Entity as EntityTrait>::Column;
    const DELETED_AT: <Self::Entity as EntityTrait>::Column;
}

/// The row `id` of `episode_id`; soft-deleted ones only when `include_deleted`.
pub async fn find<R: Table>(
    db: &impl ConnectionTrait,
    episode_id: Uuid,
    id: Uuid,
    include_deleted: bool,
) -> Result<Option<R>, DbErr> {
    let mut select = R::Entity::find().filter(R::ID.eq(id)).filter(R::EPISODE_ID.eq(episode_id));
    if !include_deleted {
        select = select.filter(R::DELETED_AT.is_null());
    }
    select.one(db).await?.map(R::try_from).transpose()
}

/// The episode's live rows, newest first (ids are UUIDv7), from before `cursor`; `limit` of
/// them.
pub async fn list_of_episode<R: Table>(
    db: &impl ConnectionTrait,
    episode_id: Uuid,
    cursor: Option<Uuid>,
    limit: u64,
) -> Result<Vec<R>, DbErr> {
    let mut select =
        R::Entity::find().filter(R::EPISODE_ID.eq(episode_id)).filter(R::DELETED_AT.is_null());
    if let Some(cursor) = cursor {
        select = select.filter(R::ID.lt(cursor));
    }
    select.order_by_desc(R::ID).limit(limit).all(db).await?.into_iter().map(R::try_from).collect()
}

/// A resource's rows as the command worker reads and writes them, inside the batch's
/// transaction. Multi-row statements: one batch is one statement per resource, not one per
/// command.
pub trait Stored: Table + Clone + PartialEq + Send + Sync {
    fn id(&self) -> Uuid;

    /// The rows with these ids, locked (`FOR UPDATE`) in id order, so two transactions never
    /// deadlock on them.
    fn load(
        txn: &DatabaseTransaction,
        ids: Vec<Uuid>,
    ) -> impl Future<Output = Result<Vec<Self>, DbErr>> + Send {
        async move {
            Self::Entity::find()
                .filter(Self::ID.is_in(ids))
                .order_by_asc(Self::ID)
                .lock_exclusive()
                .all(txn)
                .await?
                .into_iter()
                .map(Self::try_from)
                .collect()
        }
    }

    /// Inserts or updates these rows: one raw statement (UNNEST + ON CONFLICT) for the batch's
    /// rows, not one per row as an entity's save would be.
    fn upsert(
        txn: &DatabaseTransaction,
        rows: &[&Self],
    ) -> impl Future<Output = Result<(), DbErr>> + Send;

    /// Deletes the rows with these ids.
    fn remove(
        txn: &DatabaseTransaction,
        ids: Vec<Uuid>,
    ) -> impl Future<Output = Result<(), DbErr>> + Send {
        async move {
            Self::Entity::delete_many().filter(Self::ID.is_in(ids)).exec(txn).await?;
            Ok(())
        }
    }
}

/// The rows of one resource a batch touches: each as it was before the batch, and as the
/// batch leaves it (`None` after a permanent delete).
pub struct Slots<R> {
    slots: HashMap<Uuid, (Option<R>, Option<R>)>,
}

impl<R: Stored> Slots<R> {
    async fn load(txn: &DatabaseTransaction, ids: Vec<Uuid>) -> Result<Self, DbErr> {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        let mut slots = HashMap::new();
        // Most batches touch one or two of the tables: no round trip for the others.
        if ids.is_empty() {
            return Ok(Self { slots });
        }
        for row in R::load(txn, ids).await? {
            slots.insert(row.id(), (Some(row.clone()), Some(row)));
        }
        Ok(Self { slots })
    }

    /// The current state of `id` (absent: `None`), for an `apply` to change.
    pub fn get_mut(&mut self, id: Uuid) -> &mut Option<R> {
        &mut self.slots.entry(id).or_insert((None, None)).1
    }

    pub fn get(&self, id: Uuid) -> Option<&R> {
        self.slots.get(&id).and_then(|(_, after)| after.as_ref())
    }

    /// Every row as the batch leaves it so far.
    pub fn current(&self) -> impl Iterator<Item = &R> {
        self.slots.values().filter_map(|(_, after)| after.as_ref())
    }

    /// The ids of the rows the batch deleted.
    fn removed(&self) -> Vec<Uuid> {
        self.slots
            .iter()
            .filter(|(_, (before, after))| before.is_some() && after.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    async fn upsert(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        let changed: Vec<&R> = self
            .slots
            .values()
            .filter_map(|(before, after)| after.as_ref().filter(|a| before.as_ref() != Some(*a)))
            .collect();
        if changed.is_empty() { Ok(()) } else { R::upsert(txn, &changed).await }
    }

    async fn remove(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        let deleted = self.removed();
        if deleted.is_empty() { Ok(()) } else { R::remove(txn, deleted).await }
    }
}

/// Everything a batch of commands reads and changes, each resource's rows in its [`Slots`].
/// Commands of one episode (its own, its compositions') are applied in order against this one
/// state, so a composition command after its episode's delete in the same batch sees the
/// delete.
pub struct Batch {
    pub episodes: Slots<Episode>,
    pub compositions: Slots<Composition>,
    pub files: Slots<File>,
    /// (episode, file) whose object must go: permanently deleted files, rejected records.
    purges: Vec<(Uuid, Uuid)>,
}

impl Batch {
    /// Loads and locks the rows the commands touch: episodes first, then compositions (also
    /// those using a file a command deletes), then files (also those a clip names), each in id
    /// order (one lock order for every batch).
    pub async fn load<'a>(
        txn: &DatabaseTransaction,
        commands: impl Iterator<Item = &'a Command> + Clone,
    ) -> Result<Self, DbErr> {
        let of = |t: ResourceType| {
            commands
                .clone()
                .map(Command::resource)
                .filter(move |(ty, _)| *ty == t)
                .map(|(_, id)| id)
        };
        let episodes =
            Slots::load(txn, commands.clone().map(Command::episode_id).collect()).await?;
        let deleted_files = commands
            .clone()
            .filter(|c| matches!(c, Command::DeleteFile { .. }))
            .map(|c| c.resource().1)
            .collect();
        let mut composition_ids: Vec<Uuid> = of(ResourceType::Composition).collect();
        composition_ids.extend(file::compositions_using(txn, deleted_files).await?);
        let compositions = Slots::load(txn, composition_ids).await?;
        let mut file_ids: Vec<Uuid> = of(ResourceType::File).collect();
        file_ids.extend(commands.clone().flat_map(composition::files_named));
        let files = Slots::load(txn, file_ids).await?;
        Ok(Self { episodes, compositions, files, purges: Vec::new() })
    }

    /// Applies one command to the batch's state: the event it causes, or why not.
    pub fn apply(
        &mut self,
        envelope: &CommandEnvelope,
        now: DateTime<Utc>,
    ) -> Result<OutgoingEvent, Rejection> {
        let at = At::of(envelope, now);
        let command = &envelope.command;
        match command.resource() {
            (ResourceType::Episode, id) => episode::apply(self.episodes.get_mut(id), command, &at),
            (ResourceType::Composition, id) => composition::apply(
                self.episodes.get(command.episode_id()),
                &self.files,
                self.compositions.get_mut(id),
                command,
                &at,
            ),
            (ResourceType::File, id) => {
                let episode_id = command.episode_id();
                let used_by = match command {
                    Command::DeleteFile { .. } => self
                        .compositions
                        .current()
                        .find(|c| c.deleted_at.is_none() && composition::uses(c, id))
                        .map(|c| c.id),
                    _ => None,
                };
                let result = file::apply(
                    self.episodes.get(episode_id),
                    self.files.get_mut(id),
                    used_by,
                    command,
                    &at,
                );
                // Its bytes are stored already: a record refused leaves them to purge.
                let purge = match command {
                    Command::RecordFile { .. } => result.is_err(),
                    Command::DeleteFile { permanent, .. } => *permanent && result.is_ok(),
                    _ => false,
                };
                if purge {
                    self.purges.push((episode_id, id));
                }
                result
            }
        }
    }

    /// The resource `command` names as the batch holds it now, as the JSON a write that waited
    /// for it answers with (the api reads the same types back); `None` once it is deleted for
    /// good.
    pub fn answer(&self, command: &Command) -> Option<String> {
        let (kind, id) = command.resource();
        let json = match kind {
            ResourceType::Episode => self.episodes.get(id).map(serde_json::to_string),
            ResourceType::Composition => self.compositions.get(id).map(serde_json::to_string),
            ResourceType::File => self.files.get(id).map(serde_json::to_string),
        };
        // Serializing plain values does not fail; were it to, the api reads the row instead.
        json.and_then(Result::ok)
    }

    /// Writes what the batch changed: upserts parents before children, deletes children before
    /// parents (an episode's permanent delete cascades to its compositions and files), and
    /// queues the purge of the objects no row will name.
    pub async fn write(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        self.episodes.upsert(txn).await?;
        self.compositions.upsert(txn).await?;
        self.files.upsert(txn).await?;
        self.files.remove(txn).await?;
        file::queue_purges(txn, &self.purges).await?;
        self.compositions.remove(txn).await?;
        file::queue_purges_of_episodes(txn, self.episodes.removed()).await?;
        self.episodes.remove(txn).await
    }
}

/// A command variant handed to a resource's `apply` that is not one of its own: the dispatch
/// in [`Batch::apply`] never does this; answered as a conflict rather than a panic.
fn misrouted(command: &Command) -> Rejection {
    Rejection::new(
        RejectionCode::Conflict,
        format!("{} is not a command of this resource", command.kind()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_applied_at_the_database_precision() {
        // A hand-published command may carry nanoseconds; the row the batch holds must be the
        // row as read back (`Batch::answer`), so `At` keeps microseconds only.
        let accepted_at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        let envelope = CommandEnvelope {
            id: Uuid::now_v7(),
            version: crate::contracts::COMMAND_VERSION,
            actor: crate::contracts::Actor { id: Uuid::from_u128(1), name: "Alice".into() },
            accepted_at,
            command: Command::DeleteEpisode { episode_id: Uuid::now_v7(), permanent: false },
        };
        let at = At::of(&envelope, accepted_at.trunc_subsecs(6));
        assert_eq!(at.accepted_at.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn stored_names_round_trip() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
        }
        for c in RejectionCode::ALL {
            assert_eq!(RejectionCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(CommandStatus::parse("done"), None);
        assert_eq!(RejectionCode::parse("teapot"), None);
    }
}
