//! The file: media or a document attached to an episode, its bytes in object storage
//! (`crate::storage`), its row here. Its validated types, the one `apply` (recording an
//! uploaded file, deleting one), its rows, its two events (`episode.<episodeId>.file.<verb>`),
//! and the purge jobs that remove the bytes once no row names them.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, FromQueryResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::episode::{self, Episode};
use super::{
    At, Bookkeeping, Rejection, ResourceType, Stored, Table, Tracked, create, delete, misrouted,
    of_episode,
};
use crate::contracts::{Command, DeleteType, EventData, OutgoingEvent};
use crate::db::sql;
use crate::entity::file as entity;

pub const NAME_MAX: usize = 255;
/// The job type that removes a file's object (`crate::jobs::types::FilePurge`).
pub const PURGE_JOB: &str = "file.purge";

/// 1 to 255 characters, no `/`, no control characters (NUL included), not only white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileName(String);

impl TryFrom<String> for FileName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let chars = value.chars().count();
        if value.trim().is_empty() {
            Err("must not be empty".into())
        } else if chars > NAME_MAX {
            Err(format!("must be at most {NAME_MAX} characters (got {chars})"))
        } else if value.contains('/') || value.contains('\\') {
            Err("must not contain / or \\".into())
        } else if value.chars().any(char::is_control) {
            Err("must not contain control characters".into())
        } else {
            Ok(Self(value))
        }
    }
}

impl From<FileName> for String {
    fn from(n: FileName) -> Self {
        n.0
    }
}

impl FileName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A media type `type/subtype` (lowercase, RFC 6838 token characters, no parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaType(String);

impl TryFrom<String> for MediaType {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 127
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        match value.split_once('/') {
            Some((t, s)) if token(t) && token(s) => Ok(Self(value.to_ascii_lowercase())),
            _ => Err("must be a media type type/subtype".into()),
        }
    }
}

impl From<MediaType> for String {
    fn from(m: MediaType) -> Self {
        m.0
    }
}

impl MediaType {
    /// The media type of a `Content-Type` header value: parameters (`; charset=...`) dropped.
    pub fn from_header(value: &str) -> Result<Self, String> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        Self::try_from(essence.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does one of `patterns` (`audio/*`, `application/pdf`) admit this type?
    pub fn allowed_by(&self, patterns: &[String]) -> bool {
        patterns.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            match p.strip_suffix("/*") {
                Some(kind) => self.0.split('/').next() == Some(kind),
                None => p == self.0,
            }
        })
    }
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.len() == 64
            && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(value))
        } else {
            Err("must be 64 lowercase hex digits".into())
        }
    }
}

impl From<Sha256Hex> for String {
    fn from(s: Sha256Hex) -> Self {
        s.0
    }
}

impl Sha256Hex {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The file resource, as REST answers and events carry it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub id: Uuid,
    pub episode_id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Applies one file command in the command worker: the episode must exist and be live, then
/// [`change`] applies it. `used_by` is a live composition whose clips name the file, if any.
pub fn apply(
    episode: Option<&Episode>,
    state: &mut Option<File>,
    used_by: Option<Uuid>,
    command: &Command,
    at: &At<'_>,
) -> Result<OutgoingEvent, Rejection> {
    super::live(&mut episode.cloned(), command.episode_id())?;
    change(state, used_by, command, at)
}

/// The file's own rules, without its episode's: what the api's preview runs.
pub fn change(
    state: &mut Option<File>,
    used_by: Option<Uuid>,
    command: &Command,
    at: &At<'_>,
) -> Result<OutgoingEvent, Rejection> {
    let actor = at.actor.id;
    let now = at.now;
    match command {
        Command::RecordFile { episode_id, file_id, name, content_type, size, sha256 } => {
            let row = File {
                id: *file_id,
                episode_id: *episode_id,
                name: name.as_str().to_string(),
                content_type: content_type.as_str().to_string(),
                size: *size,
                sha256: sha256.as_str().to_string(),
                created_by: actor,
                created_at: at.accepted_at,
                deleted_at: None,
            };
            let file = create(state, *file_id, row)?;
            Ok(at.event(episode_id, &FileUploaded { file, uploaded_by: actor, timestamp: now }))
        }
        Command::DeleteFile { episode_id, file_id, permanent } => {
            if let Some(composition) = used_by {
                return Err(Rejection::new(
                    super::RejectionCode::Conflict,
                    format!("file {file_id} is used by composition {composition}"),
                ));
            }
            let slot = of_episode(state, *episode_id, *file_id)?;
            let deleted = delete(slot, *file_id, *permanent, at)?;
            let data = FileDeleted {
                file_id: *file_id,
                episode_id: *episode_id,
                name: deleted.name,
                delete_type: DeleteType::of(*permanent),
                deleted_by: actor,
                timestamp: now,
            };
            Ok(at.event(episode_id, &data))
        }
        other => Err(misrouted(other)),
    }
}

/// A file is only created and deleted, never changed: no version, nothing a change records.
impl Tracked for File {
    const KIND: ResourceType = ResourceType::File;

    fn bookkeeping(&mut self) -> Bookkeeping<'_> {
        Bookkeeping { deleted_at: &mut self.deleted_at, changes: None }
    }

    fn episode_id(&self) -> Uuid {
        self.episode_id
    }
}

/// Why a clip may not name `file_id` in a composition of `episode_id`: the file is missing,
/// of another episode, or deleted. `None` if it may.
pub fn unusable(file: Option<&File>, episode_id: Uuid, file_id: Uuid) -> Option<String> {
    match file {
        Some(f) if f.episode_id == episode_id && f.deleted_at.is_none() => None,
        Some(f) if f.episode_id == episode_id => Some(format!("file {file_id} is deleted")),
        _ => Some(format!("file {file_id} is not a file of episode {episode_id}")),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUploaded {
    pub file: File,
    pub uploaded_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDeleted {
    pub file_id: Uuid,
    pub episode_id: Uuid,
    pub name: String,
    pub delete_type: DeleteType,
    pub deleted_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

episode::episode_event!(FileUploaded, "file_uploaded", "file.uploaded");
episode::episode_event!(FileDeleted, "file_deleted", "file.deleted");

/// Routing keys of file events: `episode.<episodeId>.file.<verb>`.
pub const TOPIC_WORD: &str = "file";

/// Which file a file event is about (`data.file.id` or `data.fileId`), for the activity row.
pub fn subject(data: &serde_json::Value) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct Id {
        id: Uuid,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Subject {
        file: Option<Id>,
        file_id: Option<Uuid>,
    }
    let s = Subject::deserialize(data).ok()?;
    s.file.map(|f| f.id).or(s.file_id)
}

impl TryFrom<entity::Model> for File {
    type Error = DbErr;
    fn try_from(r: entity::Model) -> Result<Self, DbErr> {
        Ok(Self {
            id: r.id,
            episode_id: r.episode_id,
            name: r.name,
            content_type: r.content_type,
            size: r.size,
            sha256: r.sha256,
            created_by: r.created_by,
            created_at: r.created_at,
            deleted_at: r.deleted_at,
        })
    }
}

impl Table for File {
    type Entity = entity::Entity;
    const ID: entity::Column = entity::Column::Id;
    const EPISODE_ID: entity::Column = entity::Column::EpisodeId;
    const DELETED_AT: entity::Column = entity::Column::DeletedAt;
}

/// Which of `file_ids` have a row (deleted or not): the objects that must stay. Raw: one
/// statement asks both tables (a row, or a pending record that will write one).
pub async fn existing(
    db: &impl ConnectionTrait,
    file_ids: Vec<Uuid>,
) -> Result<std::collections::HashSet<Uuid>, DbErr> {
    #[derive(FromQueryResult)]
    struct Id {
        id: Uuid,
    }
    Ok(Id::find_by_statement(sql(
        "SELECT id FROM files WHERE id = ANY($1) UNION \
         SELECT resource_id AS id FROM commands WHERE resource_id = ANY($1) \
         AND resource_type = 'file' AND status = 'pending'",
        [file_ids.into()],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

/// The live compositions whose clips name one of `file_ids` (to lock and check them when a
/// file is deleted). Raw: the clips are JSON inside the row, unnested in the statement.
pub async fn compositions_using(
    txn: &DatabaseTransaction,
    file_ids: Vec<Uuid>,
) -> Result<Vec<Uuid>, DbErr> {
    #[derive(FromQueryResult)]
    struct Id {
        id: Uuid,
    }
    if file_ids.is_empty() {
        return Ok(Vec::new());
    }
    let strings: Vec<String> = file_ids.iter().map(Uuid::to_string).collect();
    Ok(Id::find_by_statement(sql(
        "SELECT DISTINCT c.id FROM compositions c, jsonb_array_elements(c.tracks) t, \
         jsonb_array_elements(t->'clips') clip \
         WHERE c.deleted_at IS NULL AND clip->>'fileId' = ANY($1)",
        [strings.into()],
    ))
    .all(txn)
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

/// Queues a `file.purge` job for each (episode, file): the job removes the object once no row
/// names it. Written as `scheduled` for now without a dispatch id, so the job workers' sweeper
/// publishes it within a second (and again, like any job, if that publish is lost). Raw: one
/// statement for the batch's purges.
pub async fn queue_purges(txn: &DatabaseTransaction, purges: &[(Uuid, Uuid)]) -> Result<(), DbErr> {
    if purges.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = purges.iter().map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<String> = purges
        .iter()
        .map(|(e, f)| serde_json::json!({ "episodeId": e, "fileId": f }).to_string())
        .collect();
    let episodes: Vec<Uuid> = purges.iter().map(|(e, _)| *e).collect();
    txn.execute_raw(sql(
        "INSERT INTO jobs (id, type, payload, status, max_attempts, episode_id, created_by, \
         created_by_name, run_at) \
         SELECT id, $4, payload::jsonb, 'scheduled', 10, episode_id, $5, 'showrunner', now() \
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) AS t(id, payload, episode_id)",
        [ids.into(), payloads.into(), episodes.into(), PURGE_JOB.into(), Uuid::nil().into()],
    ))
    .await?;
    Ok(())
}

/// Queues the purge of every file of these episodes (their permanent delete cascades to the
/// rows).
pub async fn queue_purges_of_episodes(
    txn: &DatabaseTransaction,
    episode_ids: Vec<Uuid>,
) -> Result<(), DbErr> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    if episode_ids.is_empty() {
        return Ok(());
    }
    let purges: Vec<(Uuid, Uuid)> = entity::Entity::find()
        .select_only()
        .columns([entity::Column::EpisodeId, entity::Column::Id])
        .filter(entity::Column::EpisodeId.is_in(episode_ids))
        .into_tuple()
        .all(txn)
        .await?;
    queue_purges(txn, &purges).await
}

/// Inserts a file row outside the command path (a job's export, written by the job worker in
/// its own transaction); a row already there (the job ran before) is left as it is.
pub async fn insert(db: &impl ConnectionTrait, file: &File) -> Result<(), DbErr> {
    use sea_orm::{EntityTrait, IntoActiveModel};
    let model = entity::Model {
        id: file.id,
        episode_id: file.episode_id,
        name: file.name.clone(),
        content_type: file.content_type.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
        created_by: file.created_by,
        created_at: file.created_at,
        deleted_at: file.deleted_at,
    };
    entity::Entity::insert(model.into_active_model()).on_conflict_do_nothing().exec(db).await?;
    Ok(())
}

impl Stored for File {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn upsert(txn: &DatabaseTransaction, changed: &[&Self]) -> Result<(), DbErr> {
        let deleted_at: Vec<String> = changed
            .iter()
            .map(|f| f.deleted_at.map(|d| d.to_rfc3339()).unwrap_or_default())
            .collect();
        txn.execute_raw(sql(
            "INSERT INTO files (id, episode_id, name, content_type, size, sha256, created_by, \
             created_at, deleted_at) \
             SELECT id, episode_id, name, content_type, size, sha256, created_by, created_at, \
             NULLIF(deleted_at, '')::timestamptz \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::uuid[], $8::timestamptz[], $9::text[]) AS t(id, episode_id, name, \
             content_type, size, sha256, created_by, created_at, deleted_at) \
             ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
            [
                changed.iter().map(|f| f.id).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.episode_id).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.name.clone()).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.content_type.clone()).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.size).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.sha256.clone()).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.created_by).collect::<Vec<_>>().into(),
                changed.iter().map(|f| f.created_at).collect::<Vec<_>>().into(),
                deleted_at.into(),
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

    #[test]
    fn names_and_media_types() {
        let name = |s: &str| FileName::try_from(s.to_string()).is_ok();
        assert!(name("take 1.wav"));
        assert!(name(&"é".repeat(NAME_MAX)));
        assert!(!name(&"a".repeat(NAME_MAX + 1)));
        assert!(!name("a/b") && !name("a\\b") && !name("a\u{0}b") && !name("a\nb") && !name(" "));
        let allowed = ["audio/*".to_string(), "application/pdf".to_string()];
        let admits = |t: &str| MediaType::from_header(t).is_ok_and(|m| m.allowed_by(&allowed));
        assert!(admits("audio/wav"));
        assert!(admits("Audio/X-Wav; rate=44100"));
        assert!(admits("application/pdf"));
        assert!(!admits("application/pdfx"));
        assert!(!admits("video/mp4"));
        assert!(!admits("audio"));
        assert!(!admits("audio/"));
    }

    #[test]
    fn a_file_used_by_a_composition_is_not_deleted() {
        let actor = Actor { id: Uuid::from_u128(1), name: "Alice".into() };
        let at = At {
            command_id: Uuid::now_v7(),
            actor: &actor,
            accepted_at: Utc::now(),
            now: Utc::now(),
        };
        let (episode_id, file_id) = (Uuid::now_v7(), Uuid::now_v7());
        let record = Command::RecordFile {
            episode_id,
            file_id,
            name: FileName::try_from("a.wav".to_string()).expect("valid"),
            content_type: MediaType::try_from("audio/wav".to_string()).expect("valid"),
            size: 3,
            sha256: Sha256Hex::try_from("0".repeat(64)).expect("valid"),
        };
        let mut state = None;
        assert!(change(&mut state, None, &record, &at).is_ok());
        let code = |r: Result<OutgoingEvent, Rejection>| r.map(|_| ()).map_err(|r| r.code);
        assert_eq!(code(change(&mut state, None, &record, &at)), Err(RejectionCode::Conflict));
        let delete = |permanent| Command::DeleteFile { episode_id, file_id, permanent };
        let used = Some(Uuid::now_v7());
        assert_eq!(
            code(change(&mut state, used, &delete(false), &at)),
            Err(RejectionCode::Conflict)
        );
        assert_eq!(code(change(&mut state, None, &delete(false), &at)), Ok(()));
        assert_eq!(code(change(&mut state, None, &delete(false), &at)), Err(RejectionCode::Gone));
        assert_eq!(code(change(&mut state, None, &delete(true), &at)), Ok(()));
        assert_eq!(state, None);
        assert!(unusable(None, episode_id, file_id).is_some());
    }
}
