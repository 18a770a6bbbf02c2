//! `episode.export`: writes an episode and its activity history as one JSON document, a file
//! of the episode (`episode-<id>.json`, `file_uploaded`, downloadable like any file). A repeated
//! attempt writes the same file (its id comes from the job's). Reports its progress and stops
//! between steps when cancelled.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use serde::Serialize;
use showrunner_shared::contracts::Episode;
use showrunner_shared::db::{EpisodeRow, sql};
use showrunner_shared::jobs::types::{self, ExportPayload};
use uuid::Uuid;

use super::files::{export_file_id, store};
use super::{JobContext, JobError, JobHandler};

pub struct EpisodeExport;

#[derive(FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivityRow {
    id: Uuid,
    event: String,
    actor_id: Option<Uuid>,
    actor_name: Option<String>,
    data: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

impl JobHandler for EpisodeExport {
    type Job = types::EpisodeExport;

    async fn run(
        &self,
        ctx: &JobContext,
        payload: ExportPayload,
    ) -> Result<serde_json::Value, JobError> {
        let id = payload.episode_id;
        ctx.progress(0, "reading the episode");
        let episode =
            EpisodeRow::find_by_statement(sql("SELECT * FROM episodes WHERE id = $1", [id.into()]))
                .one(&ctx.db)
                .await
                .map_err(JobError::retryable)?
                .ok_or_else(|| JobError::permanent(anyhow!("episode {id} does not exist")))?;
        // The same resource the API serves.
        let episode = Episode::try_from(episode).map_err(JobError::retryable)?;
        ctx.stop_if_cancelled()?;
        ctx.progress(20, "reading its activity");
        let activity = ActivityRow::find_by_statement(sql(
            "SELECT id, event, actor_id, actor_name, data, occurred_at FROM activity_log \
             WHERE resource_type = 'episode' AND resource_id = $1 ORDER BY id",
            [id.into()],
        ))
        .all(&ctx.db)
        .await
        .map_err(JobError::retryable)?;
        ctx.stop_if_cancelled()?;
        ctx.progress(60, &format!("writing {} activity rows", activity.len()));
        let document = serde_json::json!({
            "episode": episode,
            "activity": activity,
            "exportedAt": Utc::now(),
            "jobId": ctx.job_id,
        });
        let bytes = serde_json::to_vec_pretty(&document).map_err(JobError::permanent)?;
        let name = format!("episode-{id}.json");
        let file =
            store(ctx, id, export_file_id(ctx.job_id), &name, "application/json", bytes).await?;
        ctx.progress(100, "written");
        Ok(serde_json::json!({
            "fileId": file.id,
            "url": format!("/api/v1/episodes/{id}/files/{}/content", file.id),
            "activityCount": activity.len(),
            "bytes": file.size,
        }))
    }
}
