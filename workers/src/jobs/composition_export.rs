//! `composition.export`: writes a composition as OpenTimelineIO JSON (`.otio`), the format
//! editing tools exchange, as a file of its episode. A Timeline holds a Stack of Tracks (one
//! per composition track, `Video` or `Audio`); each track's children are its clips in time
//! order, with Gaps where the timeline is empty; each Clip has its `source_range` (from
//! `sourceInUs`, `durationUs`) and an `ExternalReference` to its file's download URL. Times are
//! RationalTimes at rate 1,000,000 (the composition's microseconds, exactly).

use anyhow::anyhow;
use serde_json::{Value, json};
use showrunner_shared::jobs::types::{self, CompositionExportPayload};
use showrunner_shared::resource::composition::{Composition, TrackKind};
use showrunner_shared::resource::{self, file};

use super::files::{export_file_id, store};
use super::{JobContext, JobError, JobHandler};

/// Microseconds: OTIO times at this rate are the composition's integers.
const RATE: f64 = 1_000_000.0;

pub struct CompositionExport;

impl JobHandler for CompositionExport {
    type Job = types::CompositionExport;

    async fn run(
        &self,
        ctx: &JobContext,
        payload: CompositionExportPayload,
    ) -> Result<serde_json::Value, JobError> {
        let (episode_id, id) = (payload.episode_id, payload.composition_id);
        ctx.progress(0, "reading the composition");
        let composition = resource::find::<Composition>(&ctx.db, episode_id, id, false)
            .await
            .map_err(JobError::retryable)?
            .ok_or_else(|| JobError::permanent(anyhow!("composition {id} does not exist")))?;
        let mut names = std::collections::HashMap::new();
        for clip in composition.tracks.iter().flat_map(|t| &t.clips) {
            if let Some(f) = resource::find::<file::File>(&ctx.db, episode_id, clip.file_id, true)
                .await
                .map_err(JobError::retryable)?
            {
                names.insert(clip.file_id, f.name);
            }
        }
        ctx.stop_if_cancelled()?;
        ctx.progress(50, "writing the timeline");
        let document = otio(&composition, |file_id| names.get(&file_id).cloned());
        let bytes = serde_json::to_vec_pretty(&document).map_err(JobError::permanent)?;
        let name = format!("composition-{id}.otio");
        let file =
            store(ctx, episode_id, export_file_id(ctx.job_id), &name, "application/json", bytes)
                .await?;
        ctx.progress(100, "written");
        Ok(json!({
            "fileId": file.id,
            "url": format!("/api/v1/episodes/{episode_id}/files/{}/content", file.id),
            "bytes": file.size,
        }))
    }
}

fn time(us: i64) -> Value {
    json!({ "OTIO_SCHEMA": "RationalTime.1", "rate": RATE, "value": us as f64 })
}

fn range(start_us: i64, duration_us: i64) -> Value {
    json!({
        "OTIO_SCHEMA": "TimeRange.1",
        "start_time": time(start_us),
        "duration": time(duration_us),
    })
}

/// The composition as an OTIO Timeline; `file_name` names a clip's file (its id otherwise).
pub fn otio(composition: &Composition, file_name: impl Fn(uuid::Uuid) -> Option<String>) -> Value {
    let episode_id = composition.episode_id;
    let tracks: Vec<Value> = composition
        .tracks
        .iter()
        .enumerate()
        .map(|(t, track)| {
            let mut clips: Vec<_> = track.clips.iter().collect();
            clips.sort_by_key(|c| c.start_us);
            let mut children = Vec::new();
            let mut at = 0;
            for clip in clips {
                if clip.start_us > at {
                    children.push(json!({
                        "OTIO_SCHEMA": "Gap.1",
                        "name": "",
                        "source_range": range(0, clip.start_us - at),
                        "effects": [],
                        "markers": [],
                        "metadata": {},
                    }));
                }
                let url = format!("/api/v1/episodes/{episode_id}/files/{}/content", clip.file_id);
                children.push(json!({
                    "OTIO_SCHEMA": "Clip.2",
                    "name": file_name(clip.file_id).unwrap_or_else(|| clip.file_id.to_string()),
                    "source_range": range(clip.source_in_us, clip.duration_us),
                    "media_references": {
                        "DEFAULT_MEDIA": {
                            "OTIO_SCHEMA": "ExternalReference.1",
                            "name": "",
                            "target_url": url,
                            "available_range": null,
                            "metadata": {},
                        }
                    },
                    "active_media_reference_key": "DEFAULT_MEDIA",
                    "enabled": true,
                    "effects": [],
                    "markers": [],
                    "metadata": { "showrunner": { "fileId": clip.file_id, "startUs": clip.start_us } },
                }));
                at = clip.start_us + clip.duration_us;
            }
            let (kind, prefix) = match track.kind {
                TrackKind::Video => ("Video", "V"),
                TrackKind::Audio => ("Audio", "A"),
            };
            json!({
                "OTIO_SCHEMA": "Track.1",
                "name": format!("{prefix}{}", t + 1),
                "kind": kind,
                "source_range": null,
                "children": children,
                "effects": [],
                "markers": [],
                "metadata": {},
            })
        })
        .collect();
    json!({
        "OTIO_SCHEMA": "Timeline.1",
        "name": composition.name,
        "global_start_time": null,
        "metadata": { "showrunner": {
            "compositionId": composition.id,
            "episodeId": episode_id,
            "version": composition.version,
            "durationUs": composition.duration_us,
        } },
        "tracks": {
            "OTIO_SCHEMA": "Stack.1",
            "name": "tracks",
            "source_range": null,
            "children": tracks,
            "effects": [],
            "markers": [],
            "metadata": {},
        },
    })
}
