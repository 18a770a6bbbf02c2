//! Who is looking at an episode. A viewer has one `user_presence` row per session ('http' for
//! readers of `GET /episodes/{id}`, the socket's id for a WebSocket subscribed to
//! `episode.<id>.#`), refreshed while it lasts and gone after `http.presence_ttl_secs` without
//! a refresh. `viewer_joined` is published when a user's first session appears, `viewer_left`
//! when the last one goes (deleted by `DELETE ... RETURNING`, so with several api instances
//! each departure is announced once). Both are recorded in the event log like every event, so
//! they reach WebSocket clients in the log's order and a resume replays them.

use chrono::Utc;
use sea_orm::{ConnectionTrait, FromQueryResult};
use showrunner_shared::contracts::{
    Actor, EventData, OutgoingEvent, Presence, Viewer, ViewerJoined, ViewerLeft,
};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use uuid::Uuid;

use crate::state::AppState;

pub const HTTP_SESSION: &str = "http";

#[derive(FromQueryResult)]
struct ViewerRow {
    user_id: Uuid,
    user_name: String,
}

#[derive(FromQueryResult)]
struct Joined {
    first: bool,
}

/// The episode's viewers, earliest first.
pub async fn viewers(state: &AppState, episode_id: Uuid) -> Result<Vec<Viewer>, sea_orm::DbErr> {
    let rows = ViewerRow::find_by_statement(sql(
        "SELECT user_id, min(user_name) AS user_name FROM user_presence \
         WHERE episode_id = $1 AND last_seen > now() - make_interval(secs => $2) \
         GROUP BY user_id ORDER BY min(last_seen), user_id",
        [episode_id.into(), ttl(state).into()],
    ))
    .all(&state.db)
    .await?;
    Ok(rows.into_iter().map(|r| Viewer { user_id: r.user_id, user_name: r.user_name }).collect())
}

/// Records (or refreshes) a session; announces the user if it is their first live session.
pub async fn join(
    state: &AppState,
    episode_id: Uuid,
    user: &Actor,
    session: &str,
) -> Result<(), sea_orm::DbErr> {
    let joined = Joined::find_by_statement(sql(
        "WITH live AS (SELECT 1 FROM user_presence WHERE episode_id = $1 AND user_id = $2 \
           AND last_seen > now() - make_interval(secs => $5)), \
         upsert AS (INSERT INTO user_presence (episode_id, user_id, session, user_name, last_seen) \
           VALUES ($1, $2, $3, $4, now()) ON CONFLICT (episode_id, user_id, session) \
           DO UPDATE SET last_seen = now(), user_name = EXCLUDED.user_name RETURNING 1) \
         SELECT NOT EXISTS (SELECT 1 FROM live) AS first FROM upsert",
        [
            episode_id.into(),
            user.id.into(),
            session.into(),
            user.name.clone().into(),
            ttl(state).into(),
        ],
    ))
    .one(&state.db)
    .await?;
    if joined.is_some_and(|j| j.first) {
        announce(state, episode_id, user, true).await;
    }
    Ok(())
}

/// Keeps sessions alive.
pub async fn refresh(state: &AppState, episodes: &[Uuid], user_id: Uuid, session: &str) {
    if episodes.is_empty() {
        return;
    }
    let result = state
        .db
        .execute_raw(sql(
            "UPDATE user_presence SET last_seen = now() \
             WHERE episode_id = ANY($1) AND user_id = $2 AND session = $3",
            [episodes.to_vec().into(), user_id.into(), session.into()],
        ))
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "presence refresh failed");
    }
}

#[derive(FromQueryResult)]
struct Gone {
    episode_id: Uuid,
    user_id: Uuid,
    user_name: String,
    last: bool,
}

/// Ends a session; announces the user's departure if it was their last one.
pub async fn leave(state: &AppState, episode_id: Uuid, user_id: Uuid, session: &str) {
    remove(
        state,
        "DELETE FROM user_presence WHERE episode_id = $1 AND user_id = $2 AND session = $3 \
         RETURNING episode_id, user_id, user_name, session",
        vec![episode_id.into(), user_id.into(), session.into()],
    )
    .await;
}

/// Ends the sessions that stopped refreshing (vanished without closing).
pub async fn expire(state: &AppState) {
    remove(
        state,
        "DELETE FROM user_presence WHERE last_seen < now() - make_interval(secs => $1) \
         RETURNING episode_id, user_id, user_name, session",
        vec![ttl(state).into()],
    )
    .await;
}

async fn remove(state: &AppState, delete: &str, values: Vec<sea_orm::Value>) {
    // The deleted rows, each marked with whether its user has no other live session. The
    // subquery sees the table as it was before the delete, hence the session test.
    let query = format!(
        "WITH gone AS ({delete}) SELECT DISTINCT g.episode_id, g.user_id, g.user_name, \
         NOT EXISTS (SELECT 1 FROM user_presence p WHERE p.episode_id = g.episode_id \
           AND p.user_id = g.user_id AND p.session <> g.session AND p.last_seen > now() - make_interval(secs => {ttl})) AS last \
         FROM gone g",
        ttl = ttl(state)
    );
    match Gone::find_by_statement(sql(&query, values)).all(&state.db).await {
        Ok(rows) => {
            for row in rows.into_iter().filter(|r| r.last) {
                let actor = Actor { id: row.user_id, name: row.user_name };
                announce(state, row.episode_id, &actor, false).await;
            }
        }
        Err(error) => tracing::warn!(%error, "presence removal failed"),
    }
}

/// Records `viewer_joined` or `viewer_left` with the current viewers in the event log (one
/// statement of its own: presence rows are ephemeral and change no other state).
async fn announce(state: &AppState, episode_id: Uuid, user: &Actor, joined: bool) {
    let viewers = match viewers(state, episode_id).await {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(%error, "presence: cannot list viewers");
            return;
        }
    };
    let presence = Presence { episode_id, user_id: user.id, user_name: user.name.clone(), viewers };
    let now = Utc::now();
    let event = if joined {
        OutgoingEvent::new(&episode_id, &ViewerJoined(presence), Some(user.clone()), None, now)
    } else {
        OutgoingEvent::new(&episode_id, &ViewerLeft(presence), Some(user.clone()), None, now)
    };
    debug_assert_eq!(event.routing_key, ViewerJoined::routing_key(&episode_id));
    let result =
        event_log::record_new(&state.db, &[StoredEvent::from_outgoing(&event, None)]).await;
    if let Err(error) = result {
        tracing::warn!(%error, "presence event not recorded");
    }
}

fn ttl(state: &AppState) -> f64 {
    state.settings.http.presence_ttl_secs as f64
}

/// Runs `expire` every third of the TTL until `cancel`.
pub async fn expire_forever(state: AppState, cancel: tokio_util::sync::CancellationToken) {
    let period = std::time::Duration::from_secs((state.settings.http.presence_ttl_secs / 3).max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => expire(&state).await,
        }
    }
}
