//! Files as jobs see them: an export stored as a file of its episode (object, row and
//! `file_uploaded` written by the job, idempotent per job), and the sweeper of objects that no
//! row names (a crash between storing an upload and recording it leaves one).

use std::time::Duration;

use anyhow::anyhow;
use chrono::{SubsecRound, Utc};
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sea_orm::{FromQueryResult, TransactionTrait};
use sha2::{Digest, Sha256};
use showrunner_shared::contracts::{Actor, OutgoingEvent};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::resource::file::{self, File, FileUploaded};
use showrunner_shared::resource::{self, episode};
use showrunner_shared::storage::{self, Storage};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobContext, JobError};
use crate::runtime::Context;

/// The file a job's export becomes: derived from the job id (still time-ordered), so a
/// repeated attempt writes the same file instead of a second one.
pub fn export_file_id(job_id: Uuid) -> Uuid {
    Uuid::from_u128(job_id.as_u128() ^ 0xf11e)
}

/// Stores `bytes` as the file `file_id` of the episode, named `name`, on behalf of the job's
/// creator: the object, then the row and its `file_uploaded` in one transaction (nothing when
/// the row exists already: an earlier attempt got that far), then the event is published.
pub async fn store(
    ctx: &JobContext,
    episode_id: Uuid,
    file_id: Uuid,
    name: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<File, JobError> {
    // The export belongs to a live episode, like an upload.
    if episode::find(&ctx.db, episode_id, false).await.map_err(JobError::retryable)?.is_none() {
        return Err(JobError::permanent(anyhow!(
            "episode {episode_id} does not exist or is deleted"
        )));
    }
    let creator = creator(ctx).await?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let key = storage::file_key(episode_id, file_id);
    ctx.storage
        .store()
        .put(&key, PutPayload::from(bytes))
        .await
        .map_err(|e| JobError::retryable(anyhow!("cannot store the export: {e}")))?;
    let now = Utc::now().trunc_subsecs(6);
    let file = File {
        id: file_id,
        episode_id,
        name: name.to_string(),
        content_type: content_type.to_string(),
        size,
        sha256,
        created_by: creator.id,
        created_at: now,
        deleted_at: None,
    };
    let txn = ctx.db.begin().await.map_err(JobError::retryable)?;
    if let Some(stored) = resource::find::<File>(&txn, episode_id, file_id, true)
        .await
        .map_err(JobError::retryable)?
    {
        return Ok(stored);
    }
    file::insert(&txn, &file).await.map_err(JobError::retryable)?;
    let data = FileUploaded { file: file.clone(), uploaded_by: creator.id, timestamp: now };
    let event = OutgoingEvent::new(&episode_id, &data, Some(creator), Some(ctx.job_id), now);
    let events = [StoredEvent::from_outgoing(&event, None)];
    // The event log's row, in this transaction: the log shipper publishes it once committed.
    event_log::record_new(&txn, &events).await.map_err(JobError::retryable)?;
    txn.commit().await.map_err(JobError::retryable)?;
    Ok(file)
}

/// The job's creator, the actor of what it writes.
async fn creator(ctx: &JobContext) -> Result<Actor, JobError> {
    #[derive(FromQueryResult)]
    struct Row {
        created_by: Uuid,
        created_by_name: String,
    }
    let row = Row::find_by_statement(sql(
        "SELECT created_by, created_by_name FROM jobs WHERE id = $1",
        [ctx.job_id.into()],
    ))
    .one(&ctx.db)
    .await
    .map_err(JobError::retryable)?
    .ok_or_else(|| JobError::permanent(anyhow!("job {} vanished", ctx.job_id)))?;
    Ok(Actor { id: row.created_by, name: row.created_by_name })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs [`sweep_orphans`] every half `files.orphan_after_secs` (5 s to 5 min).
pub async fn sweep_orphans_forever(ctx: Context, storage: Storage, cancel: CancellationToken) {
    let after = Duration::from_secs(ctx.settings.files.orphan_after_secs);
    let every = (after / 2).clamp(Duration::from_secs(5), Duration::from_secs(300));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_orphans(&ctx, &storage, after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "orphaned file objects removed"),
            Err(error) => tracing::warn!(%error, "orphan sweep failed"),
        }
    }
}

/// Removes the file objects older than `after` that no file row and no pending command name;
/// how many. Several job workers may sweep at once: deleting twice is harmless.
pub async fn sweep_orphans(
    ctx: &Context,
    storage: &Storage,
    after: Duration,
) -> anyhow::Result<usize> {
    let cutoff = Utc::now() - after;
    let mut candidates = Vec::new();
    let mut listing = storage.store().list(Some(&storage::files_prefix()));
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        if meta.last_modified < cutoff
            && let Some((_, file_id)) = storage::parse_file_key(&meta.location)
        {
            candidates.push((meta.location, file_id));
        }
    }
    let mut removed = 0;
    for chunk in candidates.chunks(500) {
        let named = file::existing(&ctx.db, chunk.iter().map(|(_, id)| *id).collect()).await?;
        for (key, file_id) in chunk {
            if !named.contains(file_id) {
                storage.delete(key).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}
