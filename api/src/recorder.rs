//! Group insert of accepted commands: the `commands` rows of concurrent requests are written
//! many per statement. A request still waits for its own row to be committed before it
//! publishes, so nothing changes for the guarantees; PostgreSQL sees one statement and one
//! commit per batch instead of one per request, which is most of the api's database work.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult};
use showrunner_shared::db::sql;
use showrunner_shared::resource::ResourceType;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most rows written by one statement.
const BATCH_MAX: usize = 256;

/// One `pending` command row, as the api records it before publishing.
pub struct NewCommand {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: &'static str,
    pub resource_type: ResourceType,
    pub resource_id: Uuid,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    /// The command message, kept for the sweeper that republishes forgotten commands.
    pub message: String,
    /// The first answer, kept only when a retry may ask for it again (keyed commands).
    pub response: Option<String>,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the command recorder stopped")]
    Stopped,
    #[error(transparent)]
    Db(#[from] DbErr),
}

type Reply = oneshot::Sender<Result<bool, RecordError>>;

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    rows: mpsc::Sender<(NewCommand, Reply)>,
}

impl Recorder {
    /// Starts the writer loop; it ends when every handle is dropped.
    pub fn start(db: DatabaseConnection) -> Self {
        let (rows, rx) = mpsc::channel(BATCH_MAX);
        tokio::spawn(write_forever(rx, db));
        Self { rows }
    }

    /// Inserts `row` unless a row with its id exists: `true` when this call inserted it.
    pub async fn insert(&self, row: NewCommand) -> Result<bool, RecordError> {
        let (reply, answer) = oneshot::channel();
        self.rows.send((row, reply)).await.map_err(|_| RecordError::Stopped)?;
        answer.await.map_err(|_| RecordError::Stopped)?
    }
}

async fn write_forever(mut rx: mpsc::Receiver<(NewCommand, Reply)>, db: DatabaseConnection) {
    while let Some(first) = rx.recv().await {
        // Whatever queued while the last statement ran goes in this one.
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (rows, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match insert_many(&db, &rows).await {
            Ok(inserted) => {
                let mut inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
                for (row, reply) in rows.iter().zip(replies) {
                    // Two requests with one key in one batch: only the first inserted the row.
                    let _ = reply.send(Ok(inserted.remove(&row.id)));
                }
            }
            Err(error) if rows.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(error.into())));
            }
            Err(error) => {
                // One bad row must not fail its neighbours: each is tried alone.
                tracing::warn!(%error, rows = rows.len(), "batch insert of commands failed, one by one");
                for (row, reply) in rows.iter().zip(replies) {
                    let result = insert_many(&db, std::slice::from_ref(row)).await;
                    let _ = reply
                        .send(result.map(|ids| ids.contains(&row.id)).map_err(RecordError::from));
                }
            }
        }
    }
}

#[derive(FromQueryResult)]
struct Inserted {
    id: Uuid,
}

async fn insert_many(db: &DatabaseConnection, rows: &[NewCommand]) -> Result<Vec<Uuid>, DbErr> {
    // Text columns; NULL travels as '' (an empty key or answer is never stored).
    let column = |f: &dyn Fn(&NewCommand) -> Option<String>| -> Vec<String> {
        rows.iter().map(|r| f(r).unwrap_or_default()).collect()
    };
    let statement = sql(
        "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, \
         idempotency_key, request_hash, message, response, accepted_at) \
         SELECT id, user_id, kind, resource_type, resource_id, 'pending', \
         NULLIF(idempotency_key, ''), request_hash, message::jsonb, NULLIF(response, '')::jsonb, \
         accepted_at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::timestamptz[], $10::text[]) \
         AS t(id, user_id, kind, resource_id, idempotency_key, request_hash, message, response, \
         accepted_at, resource_type) \
         ON CONFLICT (id) DO NOTHING RETURNING id",
        [
            rows.iter().map(|r| r.id).collect::<Vec<_>>().into(),
            rows.iter().map(|r| r.user_id).collect::<Vec<_>>().into(),
            column(&|r| Some(r.kind.to_string())).into(),
            rows.iter().map(|r| r.resource_id).collect::<Vec<_>>().into(),
            column(&|r| r.idempotency_key.clone()).into(),
            column(&|r| Some(r.request_hash.clone())).into(),
            column(&|r| Some(r.message.clone())).into(),
            column(&|r| r.response.clone()).into(),
            rows.iter().map(|r| r.accepted_at).collect::<Vec<_>>().into(),
            column(&|r| Some(r.resource_type.as_str().to_string())).into(),
        ],
    );
    Ok(Inserted::find_by_statement(statement).all(db).await?.into_iter().map(|r| r.id).collect())
}
