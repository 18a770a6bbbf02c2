//! The composition: a cut of an episode, tracks of clips on a timeline (integer microseconds).
//! Its validated types, the one `apply` (the api's 202 preview and the command worker), its rows
//! and its three events (`episode.<episodeId>.composition.<verb>`).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::episode::{self, Episode};
use super::file::{self, File};
use super::{
    At, Bookkeeping, Changes, Rejection, RejectionCode, ResourceType, Slots, Stored, Table,
    Tracked, create, delete, live, misrouted, of_episode, touch,
};
use crate::contracts::{Command, DeleteType, EventData, OutgoingEvent};
use crate::db::sql;
use crate::domain::FieldError;
use crate::entity::composition as entity;

pub const NAME_MAX: usize = 200;
pub const TRACKS_MAX: usize = 16;
pub const CLIPS_MAX: usize = 1_000;

/// 1 to 200 characters, not only white space, no NUL (PostgreSQL text cannot hold it).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CompositionName(String);

impl TryFrom<String> for CompositionName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let chars = value.chars().count();
        if value.trim().is_empty() {
            Err("must not be empty".into())
        } else if value.contains('\0') {
            Err("must not contain the NUL character".into())
        } else if chars > NAME_MAX {
            Err(format!("must be at most {NAME_MAX} characters (got {chars})"))
        } else {
            Ok(Self(value))
        }
    }
}

impl From<CompositionName> for String {
    fn from(n: CompositionName) -> Self {
        n.0
    }
}

impl CompositionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Video,
    Audio,
}

/// A span of one of the episode's files placed on the timeline. The command worker checks that
/// the file is one of the episode's and not deleted ([`apply`]).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clip {
    pub file_id: Uuid,
    pub start_us: i64,
    pub source_in_us: i64,
    pub duration_us: i64,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Track {
    pub kind: TrackKind,
    #[serde(default)]
    pub clips: Vec<Clip>,
}

/// A timeline that keeps the rules: at most 16 tracks of at most 1,000 clips, `startUs` and
/// `sourceInUs` >= 0, `durationUs` > 0, no two clips of a track overlapping.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Track>", into = "Vec<Track>")]
pub struct Tracks(Vec<Track>);

impl Tracks {
    /// The tracks, or every rule they break, each naming its field
    /// (`tracks[1].clips[3].durationUs`).
    pub fn validate(tracks: Vec<Track>) -> Result<Self, Vec<FieldError>> {
        let errors = check(&tracks);
        if errors.is_empty() { Ok(Self(tracks)) } else { Err(errors) }
    }

    pub fn as_slice(&self) -> &[Track] {
        &self.0
    }

    /// The end of the last clip; 0 when there is none.
    pub fn duration_us(&self) -> i64 {
        self.0
            .iter()
            .flat_map(|t| &t.clips)
            .map(|c| c.start_us.saturating_add(c.duration_us))
            .max()
            .unwrap_or(0)
    }
}

impl TryFrom<Vec<Track>> for Tracks {
    type Error = String;
    fn try_from(tracks: Vec<Track>) -> Result<Self, String> {
        Self::validate(tracks).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

impl From<Tracks> for Vec<Track> {
    fn from(t: Tracks) -> Self {
        t.0
    }
}

fn check(tracks: &[Track]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if tracks.len() > TRACKS_MAX {
        errors.push(FieldError::new(
            "tracks",
            format!("at most {TRACKS_MAX} tracks (got {})", tracks.len()),
        ));
        return errors;
    }
    for (t, track) in tracks.iter().enumerate() {
        if track.clips.len() > CLIPS_MAX {
            errors.push(FieldError::new(
                format!("tracks[{t}].clips"),
                format!("at most {CLIPS_MAX} clips a track (got {})", track.clips.len()),
            ));
            continue;
        }
        let mut spans = Vec::with_capacity(track.clips.len());
        for (c, clip) in track.clips.iter().enumerate() {
            let field = |name: &str| format!("tracks[{t}].clips[{c}].{name}");
            let before = errors.len();
            if clip.start_us < 0 {
                errors.push(FieldError::new(field("startUs"), "must be at least 0"));
            }
            if clip.source_in_us < 0 {
                errors.push(FieldError::new(field("sourceInUs"), "must be at least 0"));
            }
            if clip.duration_us <= 0 {
                errors.push(FieldError::new(field("durationUs"), "must be greater than 0"));
            } else if clip.start_us.checked_add(clip.duration_us).is_none()
                || clip.source_in_us.checked_add(clip.duration_us).is_none()
            {
                errors.push(FieldError::new(field("durationUs"), "ends beyond the timeline"));
            }
            if errors.len() == before {
                spans.push((clip.start_us, clip.start_us + clip.duration_us, c));
            }
        }
        // Sorted by start, a clip overlaps another only if it starts before the furthest end
        // seen so far.
        spans.sort_unstable();
        let mut furthest: Option<(i64, usize)> = None;
        for (start, end, c) in spans {
            if let Some((until, other)) = furthest
                && start < until
            {
                errors.push(FieldError::new(
                    format!("tracks[{t}].clips[{c}]"),
                    format!("overlaps tracks[{t}].clips[{other}], which ends at {until}"),
                ));
            }
            if furthest.is_none_or(|(until, _)| end > until) {
                furthest = Some((end, c));
            }
        }
    }
    errors
}

/// The fields a PATCH sets; absent means unchanged. `tracks` replace the whole timeline.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompositionChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CompositionName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks: Option<Tracks>,
}

impl CompositionChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.tracks.is_none()
    }
}

/// The composition resource, as REST answers and events carry it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Composition {
    pub id: Uuid,
    pub episode_id: Uuid,
    pub name: String,
    pub tracks: Vec<Track>,
    pub duration_us: i64,
    pub version: i64,
    pub created_by: Uuid,
    pub updated_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Applies one composition command in the command worker: the episode must exist and be live
/// (a write on a deleted episode is `gone`), every clip must name a live file of the episode
/// (rejected naming the clip otherwise), then [`change`] applies it.
pub fn apply(
    episode: Option<&Episode>,
    files: &Slots<File>,
    state: &mut Option<Composition>,
    command: &Command,
    at: &At<'_>,
) -> Result<OutgoingEvent, Rejection> {
    let episode_id = command.episode_id();
    live(&mut episode.cloned(), episode_id)?;
    let tracks = match command {
        Command::CreateComposition { tracks, .. } => Some(tracks),
        Command::UpdateComposition { changes, .. } => changes.tracks.as_ref(),
        _ => None,
    };
    for (t, track) in tracks.map(Tracks::as_slice).unwrap_or_default().iter().enumerate() {
        for (c, clip) in track.clips.iter().enumerate() {
            if let Some(why) = file::unusable(files.get(clip.file_id), episode_id, clip.file_id) {
                return Err(Rejection::new(
                    RejectionCode::Conflict,
                    format!("tracks[{t}].clips[{c}]: {why}"),
                ));
            }
        }
    }
    change(state, command, at)
}

/// The files a composition command's clips name (the command worker loads them with the
/// batch).
pub fn files_named(command: &Command) -> Vec<Uuid> {
    let tracks = match command {
        Command::CreateComposition { tracks, .. } => Some(tracks),
        Command::UpdateComposition { changes, .. } => changes.tracks.as_ref(),
        _ => None,
    };
    tracks
        .map(Tracks::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|t| t.clips.iter().map(|c| c.file_id))
        .collect()
}

/// Does one of the composition's clips name `file_id`?
pub fn uses(composition: &Composition, file_id: Uuid) -> bool {
    composition.tracks.iter().flat_map(|t| &t.clips).any(|c| c.file_id == file_id)
}

/// The composition's own rules, without its episode's: what the api's preview runs on the
/// composition as it reads it now.
pub fn change(
    state: &mut Option<Composition>,
    command: &Command,
    at: &At<'_>,
) -> Result<OutgoingEvent, Rejection> {
    let actor = at.actor.id;
    let now = at.now;
    match command {
        Command::CreateComposition { episode_id, composition_id, name, tracks } => {
            let row = Composition {
                id: *composition_id,
                episode_id: *episode_id,
                name: name.as_str().to_string(),
                tracks: tracks.as_slice().to_vec(),
                duration_us: tracks.duration_us(),
                version: 1,
                created_by: actor,
                updated_by: actor,
                created_at: at.accepted_at,
                updated_at: at.accepted_at,
                deleted_at: None,
            };
            let composition = create(state, *composition_id, row)?;
            let data = CompositionCreated { composition, created_by: actor, timestamp: now };
            Ok(at.event(episode_id, &data))
        }
        Command::UpdateComposition { episode_id, composition_id, changes, if_version } => {
            let composition =
                live(of_episode(state, *episode_id, *composition_id)?, *composition_id)?;
            if let Some(expected) = if_version
                && *expected != composition.version
            {
                return Err(Rejection::new(
                    RejectionCode::PreconditionFailed,
                    format!(
                        "composition {composition_id} is at version {}, not {expected}",
                        composition.version
                    ),
                ));
            }
            let mut changed_fields = Vec::new();
            if let Some(name) = &changes.name
                && composition.name != name.as_str()
            {
                composition.name = name.as_str().to_string();
                changed_fields.push("name".to_string());
            }
            if let Some(tracks) = &changes.tracks
                && composition.tracks != tracks.as_slice()
            {
                composition.tracks = tracks.as_slice().to_vec();
                composition.duration_us = tracks.duration_us();
                changed_fields.push("tracks".to_string());
            }
            if !changed_fields.is_empty() {
                touch(composition, at);
            }
            let data = CompositionUpdated {
                composition: composition.clone(),
                changed_fields,
                updated_by: actor,
                timestamp: now,
            };
            Ok(at.event(episode_id, &data))
        }
        Command::DeleteComposition { episode_id, composition_id, permanent } => {
            let slot = of_episode(state, *episode_id, *composition_id)?;
            let deleted = delete(slot, *composition_id, *permanent, at)?;
            let data = CompositionDeleted {
                composition_id: *composition_id,
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

impl Tracked for Composition {
    const KIND: ResourceType = ResourceType::Composition;

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
        self.episode_id
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompositionCreated {
    pub composition: Composition,
    pub created_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompositionUpdated {
    pub composition: Composition,
    pub changed_fields: Vec<String>,
    pub updated_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompositionDeleted {
    pub composition_id: Uuid,
    pub episode_id: Uuid,
    pub name: String,
    pub delete_type: DeleteType,
    pub deleted_by: Uuid,
    pub timestamp: DateTime<Utc>,
}

episode::episode_event!(CompositionCreated, "composition_created", "composition.created");
episode::episode_event!(CompositionUpdated, "composition_updated", "composition.updated");
episode::episode_event!(CompositionDeleted, "composition_deleted", "composition.deleted");

/// Routing keys of composition events: `episode.<episodeId>.composition.<verb>`.
pub const TOPIC_WORD: &str = "composition";

impl TryFrom<entity::Model> for Composition {
    type Error = DbErr;
    fn try_from(r: entity::Model) -> Result<Self, DbErr> {
        let tracks = serde_json::from_value(r.tracks)
            .map_err(|e| DbErr::Custom(format!("composition {} tracks: {e}", r.id)))?;
        Ok(Self {
            id: r.id,
            episode_id: r.episode_id,
            name: r.name,
            tracks,
            duration_us: r.duration_us,
            version: r.version,
            created_by: r.created_by,
            updated_by: r.updated_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        })
    }
}

impl Table for Composition {
    type Entity = entity::Entity;
    const ID: entity::Column = entity::Column::Id;
    const EPISODE_ID: entity::Column = entity::Column::EpisodeId;
    const DELETED_AT: entity::Column = entity::Column::DeletedAt;
}

impl Stored for Composition {
    fn id(&self) -> Uuid {
        self.id
    }

    async fn upsert(txn: &DatabaseTransaction, changed: &[&Self]) -> Result<(), DbErr> {
        let tracks: Vec<String> = changed
            .iter()
            .map(|c| serde_json::to_string(&c.tracks).unwrap_or_else(|_| "[]".into()))
            .collect();
        let deleted_at: Vec<String> = changed
            .iter()
            .map(|c| c.deleted_at.map(|d| d.to_rfc3339()).unwrap_or_default())
            .collect();
        txn.execute_raw(sql(
            "INSERT INTO compositions (id, episode_id, name, tracks, duration_us, version, \
             created_by, updated_by, created_at, updated_at, deleted_at) \
             SELECT id, episode_id, name, tracks::jsonb, duration_us, version, created_by, \
             updated_by, created_at, updated_at, NULLIF(deleted_at, '')::timestamptz \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], \
             $6::bigint[], $7::uuid[], $8::uuid[], $9::timestamptz[], $10::timestamptz[], \
             $11::text[]) AS t(id, episode_id, name, tracks, duration_us, version, created_by, \
             updated_by, created_at, updated_at, deleted_at) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, tracks = EXCLUDED.tracks, \
             duration_us = EXCLUDED.duration_us, version = EXCLUDED.version, \
             updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at, \
             deleted_at = EXCLUDED.deleted_at",
            [
                changed.iter().map(|c| c.id).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.episode_id).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.name.clone()).collect::<Vec<_>>().into(),
                tracks.into(),
                changed.iter().map(|c| c.duration_us).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.version).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.created_by).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.updated_by).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.created_at).collect::<Vec<_>>().into(),
                changed.iter().map(|c| c.updated_at).collect::<Vec<_>>().into(),
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

    fn clip(start_us: i64, duration_us: i64) -> Clip {
        Clip { file_id: Uuid::from_u128(9), start_us, source_in_us: 0, duration_us }
    }

    fn video(clips: Vec<Clip>) -> Track {
        Track { kind: TrackKind::Video, clips }
    }

    /// The fields `tracks` break, in order.
    fn fields(tracks: Vec<Track>) -> Vec<String> {
        Tracks::validate(tracks).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn timeline_rules_name_the_field() {
        assert!(fields(vec![]).is_empty());
        assert!(fields(vec![video(vec![clip(0, 10), clip(10, 5)])]).is_empty());
        assert_eq!(fields(vec![video(vec![clip(0, 0)])]), ["tracks[0].clips[0].durationUs"]);
        assert_eq!(fields(vec![video(vec![clip(-1, 5)])]), ["tracks[0].clips[0].startUs"]);
        let mut negative_source = clip(0, 5);
        negative_source.source_in_us = -1;
        assert_eq!(
            fields(vec![video(vec![]), video(vec![clip(0, 5), negative_source])]),
            ["tracks[1].clips[1].sourceInUs"]
        );
        assert_eq!(fields(vec![video(vec![clip(i64::MAX, 1)])]), ["tracks[0].clips[0].durationUs"]);
        // The clip that starts inside another is the one named, wherever it is listed.
        assert_eq!(
            fields(vec![video(vec![clip(0, 10), clip(20, 5), clip(5, 3)])]),
            ["tracks[0].clips[2]"]
        );
        assert_eq!(fields(vec![video(vec![]); TRACKS_MAX + 1]), ["tracks"]);
        assert!(fields(vec![video(vec![]); TRACKS_MAX]).is_empty());
        let many: Vec<Clip> = (0..=CLIPS_MAX as i64).map(|i| clip(i * 10, 10)).collect();
        assert_eq!(fields(vec![video(many[..CLIPS_MAX].to_vec())]), Vec::<String>::new());
        assert_eq!(fields(vec![video(many)]), ["tracks[0].clips"]);
    }

    #[test]
    fn duration_is_the_end_of_the_last_clip() {
        let tracks = Tracks::validate(vec![
            video(vec![clip(0, 10), clip(100, 50)]),
            Track { kind: TrackKind::Audio, clips: vec![clip(30, 40)] },
        ]);
        assert_eq!(tracks.map(|t| t.duration_us()), Ok(150));
        assert_eq!(Tracks::default().duration_us(), 0);
    }

    #[test]
    fn stale_versions_and_deleted_episodes_are_rejected() {
        let actor = Actor { id: Uuid::from_u128(1), name: "Alice".into() };
        let at = At {
            command_id: Uuid::now_v7(),
            actor: &actor,
            accepted_at: Utc::now(),
            now: Utc::now(),
        };
        let (episode_id, id) = (Uuid::now_v7(), Uuid::now_v7());
        let name = CompositionName::try_from("Cut".to_string()).expect("valid");
        let create = Command::CreateComposition {
            episode_id,
            composition_id: id,
            name: name.clone(),
            tracks: Tracks::default(),
        };
        let mut state = None;
        assert!(change(&mut state, &create, &at).is_ok());
        let rename = |if_version| Command::UpdateComposition {
            episode_id,
            composition_id: id,
            changes: CompositionChanges { name: Some(name.clone()), tracks: None },
            if_version,
        };
        let code = |r: Result<OutgoingEvent, Rejection>| r.map(|_| ()).map_err(|r| r.code);
        assert_eq!(
            code(change(&mut state, &rename(Some(2)), &at)),
            Err(RejectionCode::PreconditionFailed)
        );
        assert_eq!(code(change(&mut state, &rename(Some(1)), &at)), Ok(()));
        let other_episode = Command::DeleteComposition {
            episode_id: Uuid::now_v7(),
            composition_id: id,
            permanent: true,
        };
        assert_eq!(code(change(&mut state, &other_episode, &at)), Err(RejectionCode::NotFound));
        let mut gone = None;
        let files = Slots { slots: Default::default() };
        assert_eq!(
            code(apply(None, &files, &mut gone, &create, &at)),
            Err(RejectionCode::NotFound)
        );
    }
}
