// Generated from api/asyncapi.json by `npm run generate` (clients/typescript/scripts/generate.mjs).
// Do not edit: change the document and regenerate.
/** Every event name of the contract. */
export const EVENT_NAMES = ["episode_created", "episode_updated", "episode_deleted", "composition_created", "composition_updated", "composition_deleted", "file_uploaded", "file_deleted", "viewer_joined", "viewer_left", "command_rejected", "notification_created", "job_processor_started", "job_queued", "job_started", "job_progress", "job_completed", "job_retry", "job_failed", "job_cancelled", "job_requeued"];
