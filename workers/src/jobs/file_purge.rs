//! `file.purge`: removes a file's object once no file row (and no pending command) names it.
//! Queued by the command worker in the transaction that deleted the row (or refused to record
//! it), so the bytes go after the row; a storage error is retried like any job.

use anyhow::anyhow;
use showrunner_shared::jobs::types::{self, FilePurgePayload};
use showrunner_shared::resource::file;
use showrunner_shared::storage;

use super::{JobContext, JobError, JobHandler};

pub struct FilePurge;

impl JobHandler for FilePurge {
    type Job = types::FilePurge;

    async fn run(
        &self,
        ctx: &JobContext,
        payload: FilePurgePayload,
    ) -> Result<serde_json::Value, JobError> {
        let named =
            file::existing(&ctx.db, vec![payload.file_id]).await.map_err(JobError::retryable)?;
        if named.contains(&payload.file_id) {
            // A row (or a command about to write one) names the object: it is not garbage.
            return Ok(serde_json::json!({ "deleted": false, "reason": "the file still exists" }));
        }
        let key = storage::file_key(payload.episode_id, payload.file_id);
        ctx.storage
            .delete(&key)
            .await
            .map_err(|e| JobError::retryable(anyhow!("cannot delete {key}: {e}")))?;
        Ok(serde_json::json!({ "deleted": true, "key": key.to_string() }))
    }
}
