// Generated from api/asyncapi.json by `npm run generate` (clients/typescript/scripts/generate.mjs).
// Do not edit: change the document and regenerate.

/**
 * What to do, tagged by `type`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "AnyCommand".
 */
export type AnyCommand =
  | CreateEpisodeCommand
  | UpdateEpisodeCommand
  | DeleteEpisodeCommand
  | CreateCompositionCommand
  | UpdateCompositionCommand
  | DeleteCompositionCommand
  | RecordFileCommand
  | DeleteFileCommand;
/**
 * 1 to 200 characters (Unicode scalar values), not only white space.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Title".
 */
export type Title = string;
/**
 * Up to 10,000 characters (Unicode scalar values).
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Description".
 */
export type Description = string;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeStatus".
 */
export type EpisodeStatus = "draft" | "in_production" | "published" | "archived";
/**
 * 1 to 50 characters, not only white space.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Category".
 */
export type Category = string;
/**
 * At most 20 distinct categories; their order is kept.
 *
 * @maxItems 20
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Categories".
 */
export type Categories = Category[];
/**
 * The fields to set; an absent or `null` field stays unchanged. At least one field must be given a value.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeChanges".
 */
export type EpisodeChanges = EpisodeChanges1 & EpisodeChanges2;
export type EpisodeChanges1 =
  | {
      title: Title;
    }
  | {
      description: Description;
    }
  | {
      status: EpisodeStatus;
    }
  | {
      categories: Categories;
    };
/**
 * 1 to 200 characters, not only white space.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionName".
 */
export type CompositionName = string;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "TrackKind".
 */
export type TrackKind = "video" | "audio";
/**
 * @maxItems 16
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Tracks".
 */
export type Tracks = Track[];
/**
 * 1 to 255 characters, no `/`, `\\` or control characters.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileName".
 */
export type FileName = string;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ClientFrame".
 */
export type ClientFrame = SubscribeFrame | UnsubscribeFrame | ResumeFrame | PingFrame;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "DeleteType".
 */
export type DeleteType = "soft" | "permanent";
/**
 * An event the connection is subscribed to, tagged by `event`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EventFrame".
 */
export type EventFrame =
  | EpisodeCreatedFrame
  | EpisodeUpdatedFrame
  | EpisodeDeletedFrame
  | CompositionCreatedFrame
  | CompositionUpdatedFrame
  | CompositionDeletedFrame
  | FileUploadedFrame
  | FileDeletedFrame
  | ViewerJoinedFrame
  | ViewerLeftFrame
  | CommandRejectedFrame
  | NotificationCreatedFrame
  | JobProcessorStartedFrame
  | JobQueuedFrame
  | JobStartedFrame
  | JobProgressFrame
  | JobCompletedFrame
  | JobRetryFrame
  | JobFailedFrame
  | JobCancelledFrame
  | JobRequeuedFrame;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobStatus".
 */
export type JobStatus = "queued" | "scheduled" | "running" | "retrying" | "succeeded" | "failed" | "cancelled";
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ServerFrame".
 */
export type ServerFrame = EventFrame | SubscribedFrame | UnsubscribedFrame | ResumedFrame | PongFrame | ErrorFrame;
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Uuid".
 */
export type Uuid = string;
/**
 * Consecutive events of the event log in ascending `seq` (holes are numbers no event will ever have). A batch is at most `amqp.max_message_bytes` long; an event alone larger than that is left to `resume`.
 *
 * @minItems 1
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EventBatch".
 */
export type EventBatch = [
  {
    /**
     * The event's place in the event log.
     */
    seq: number;
    /**
     * The event's routing key, which is its WebSocket topic (the channels on `showrunner.events` list them).
     */
    topic: string;
    /**
     * W3C trace context of the request that caused it.
     */
    traceparent?: string;
    /**
     * The event envelope, as the message of its topic's channel describes it.
     */
    event: {};
  },
  ...{
    /**
     * The event's place in the event log.
     */
    seq: number;
    /**
     * The event's routing key, which is its WebSocket topic (the channels on `showrunner.events` list them).
     */
    topic: string;
    /**
     * W3C trace context of the request that caused it.
     */
    traceparent?: string;
    /**
     * The event envelope, as the message of its topic's channel describes it.
     */
    event: {};
  }[]
];
/**
 * Every event envelope, tagged by `event`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "AnyEvent".
 */
export type AnyEvent =
  | CommandRejectedEvent
  | CompositionCreatedEvent
  | CompositionDeletedEvent
  | CompositionUpdatedEvent
  | EpisodeCreatedEvent
  | EpisodeDeletedEvent
  | EpisodeUpdatedEvent
  | FileDeletedEvent
  | FileUploadedEvent
  | JobCancelledEvent
  | JobCompletedEvent
  | JobFailedEvent
  | JobProcessorStartedEvent
  | JobProgressEvent
  | JobQueuedEvent
  | JobRequeuedEvent
  | JobRetryEvent
  | JobStartedEvent
  | NotificationCreatedEvent
  | ViewerJoinedEvent
  | ViewerLeftEvent;

/**
 * Who did it: the token's subject and display name.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Actor".
 */
export interface Actor {
  id: string;
  name: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CreateEpisodeCommand".
 */
export interface CreateEpisodeCommand {
  type: "create_episode";
  episodeId: string;
  title: Title;
  description: Description;
  status: EpisodeStatus;
  categories: Categories;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "UpdateEpisodeCommand".
 */
export interface UpdateEpisodeCommand {
  type: "update_episode";
  episodeId: string;
  changes: EpisodeChanges;
}
export interface EpisodeChanges2 {
  title?: Title | null;
  description?: Description | null;
  status?: EpisodeStatus | null;
  categories?: Categories | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "DeleteEpisodeCommand".
 */
export interface DeleteEpisodeCommand {
  type: "delete_episode";
  episodeId: string;
  permanent: boolean;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CreateCompositionCommand".
 */
export interface CreateCompositionCommand {
  type: "create_composition";
  episodeId: string;
  compositionId: string;
  name: CompositionName;
  tracks?: Tracks;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Track".
 */
export interface Track {
  kind: TrackKind;
  /**
   * @maxItems 1000
   */
  clips: Clip[];
}
/**
 * A span of one of the episode's files on the timeline, in integer microseconds. The clips of a track do not overlap. Until files exist, `fileId` is checked as a UUID only.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Clip".
 */
export interface Clip {
  fileId: string;
  startUs: number;
  sourceInUs: number;
  durationUs: number;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "UpdateCompositionCommand".
 */
export interface UpdateCompositionCommand {
  type: "update_composition";
  episodeId: string;
  compositionId: string;
  changes: CompositionChanges;
  /**
   * Applied only if the composition is at this version.
   */
  ifVersion?: number;
}
/**
 * `tracks` replace the whole timeline.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionChanges".
 */
export interface CompositionChanges {
  name?: CompositionName;
  tracks?: Tracks;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "DeleteCompositionCommand".
 */
export interface DeleteCompositionCommand {
  type: "delete_composition";
  episodeId: string;
  compositionId: string;
  permanent: boolean;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "RecordFileCommand".
 */
export interface RecordFileCommand {
  type: "record_file";
  episodeId: string;
  fileId: string;
  name: FileName;
  contentType: string;
  size: number;
  sha256: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "DeleteFileCommand".
 */
export interface DeleteFileCommand {
  type: "delete_file";
  episodeId: string;
  fileId: string;
  permanent: boolean;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "SubscribeFrame".
 */
export interface SubscribeFrame {
  op: "subscribe";
  /**
   * AMQP topic patterns: `*` one word, `#` zero or more.
   */
  topics: string[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "UnsubscribeFrame".
 */
export interface UnsubscribeFrame {
  op: "unsubscribe";
  /**
   * AMQP topic patterns: `*` one word, `#` zero or more.
   */
  topics: string[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ResumeFrame".
 */
export interface ResumeFrame {
  op: "resume";
  lastEventId: string;
  /**
   * AMQP topic patterns: `*` one word, `#` zero or more.
   */
  topics?: string[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "PingFrame".
 */
export interface PingFrame {
  op: "ping";
}
/**
 * A command as the api publishes it; `id` is the `commandId` of the 202 answer and the AMQP `message_id`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CommandEnvelope".
 */
export interface CommandEnvelope {
  id: string;
  version: 1;
  actor: Actor;
  acceptedAt: string;
  command: AnyCommand;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CommandHeaders".
 */
export interface CommandHeaders {
  traceparent?: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CommandRejectedData".
 */
export interface CommandRejectedData {
  commandId: string;
  reason: string;
}
/**
 * `command_rejected`: A worker refused the user's accepted command. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CommandRejectedEvent".
 */
export interface CommandRejectedEvent {
  id: string;
  event: "command_rejected";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: CommandRejectedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CommandRejectedFrame".
 */
export interface CommandRejectedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "command_rejected";
  data: CommandRejectedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Composition".
 */
export interface Composition {
  id: string;
  episodeId: string;
  name: CompositionName;
  tracks: Tracks;
  /**
   * The end of the last clip; 0 when there is none.
   */
  durationUs: number;
  version: number;
  createdBy: string;
  updatedBy: string;
  createdAt: string;
  updatedAt: string;
  deletedAt: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionCreatedData".
 */
export interface CompositionCreatedData {
  composition: Composition;
  createdBy: string;
  timestamp: string;
}
/**
 * `composition_created`: A composition was created in the episode. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionCreatedEvent".
 */
export interface CompositionCreatedEvent {
  id: string;
  event: "composition_created";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: CompositionCreatedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionCreatedFrame".
 */
export interface CompositionCreatedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "composition_created";
  data: CompositionCreatedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionDeletedData".
 */
export interface CompositionDeletedData {
  compositionId: string;
  episodeId: string;
  name: string;
  deleteType: DeleteType;
  deletedBy: string;
  timestamp: string;
}
/**
 * `composition_deleted`: A composition was deleted. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionDeletedEvent".
 */
export interface CompositionDeletedEvent {
  id: string;
  event: "composition_deleted";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: CompositionDeletedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionDeletedFrame".
 */
export interface CompositionDeletedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "composition_deleted";
  data: CompositionDeletedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionUpdatedData".
 */
export interface CompositionUpdatedData {
  composition: Composition;
  changedFields: string[];
  updatedBy: string;
  timestamp: string;
}
/**
 * `composition_updated`: A composition changed. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionUpdatedEvent".
 */
export interface CompositionUpdatedEvent {
  id: string;
  event: "composition_updated";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: CompositionUpdatedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "CompositionUpdatedFrame".
 */
export interface CompositionUpdatedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "composition_updated";
  data: CompositionUpdatedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Episode".
 */
export interface Episode {
  id: string;
  title: Title;
  description: Description;
  status: EpisodeStatus;
  categories: Categories;
  createdBy: string;
  updatedBy: string;
  createdAt: string;
  updatedAt: string;
  /**
   * Set when the episode was soft-deleted.
   */
  deletedAt: string | null;
  version: number;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeCreatedData".
 */
export interface EpisodeCreatedData {
  episode: Episode;
  createdBy: string;
  timestamp: string;
}
/**
 * `episode_created`: An episode was created. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeCreatedEvent".
 */
export interface EpisodeCreatedEvent {
  id: string;
  event: "episode_created";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: EpisodeCreatedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeCreatedFrame".
 */
export interface EpisodeCreatedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "episode_created";
  data: EpisodeCreatedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeDeletedData".
 */
export interface EpisodeDeletedData {
  episodeId: string;
  title: string;
  deleteType: DeleteType;
  deletedBy: string;
  timestamp: string;
}
/**
 * `episode_deleted`: An episode was deleted (soft or permanent). The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeDeletedEvent".
 */
export interface EpisodeDeletedEvent {
  id: string;
  event: "episode_deleted";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: EpisodeDeletedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeDeletedFrame".
 */
export interface EpisodeDeletedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "episode_deleted";
  data: EpisodeDeletedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeUpdatedData".
 */
export interface EpisodeUpdatedData {
  episode: Episode;
  changedFields: string[];
  updatedBy: string;
  timestamp: string;
}
/**
 * `episode_updated`: An episode changed; `changedFields` names what. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeUpdatedEvent".
 */
export interface EpisodeUpdatedEvent {
  id: string;
  event: "episode_updated";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: EpisodeUpdatedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EpisodeUpdatedFrame".
 */
export interface EpisodeUpdatedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "episode_updated";
  data: EpisodeUpdatedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ErrorFrame".
 */
export interface ErrorFrame {
  op: "error";
  code:
    | "bad_request"
    | "unsupported"
    | "invalid_topic"
    | "forbidden"
    | "too_many_subscriptions"
    | "resume_unavailable"
    | "resume_too_far"
    | "unavailable";
  message: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileUploadedFrame".
 */
export interface FileUploadedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "file_uploaded";
  data: FileUploadedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileUploadedData".
 */
export interface FileUploadedData {
  file: File;
  uploadedBy: string;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "File".
 */
export interface File {
  id: string;
  episodeId: string;
  name: FileName;
  /**
   * The media type it was uploaded with (parameters dropped).
   */
  contentType: string;
  /**
   * Bytes, at most `files.max_bytes`.
   */
  size: number;
  /**
   * SHA-256 of the bytes, computed while they streamed in; the download's `ETag`.
   */
  sha256: string;
  createdBy: string;
  createdAt: string;
  deletedAt: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileDeletedFrame".
 */
export interface FileDeletedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "file_deleted";
  data: FileDeletedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileDeletedData".
 */
export interface FileDeletedData {
  fileId: string;
  episodeId: string;
  name: string;
  deleteType: DeleteType;
  deletedBy: string;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerJoinedFrame".
 */
export interface ViewerJoinedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "viewer_joined";
  data: ViewerJoinedData;
  traceId: string | null;
}
/**
 * Who joined or left, and every viewer of the episode after the change.
 */
export interface ViewerJoinedData {
  episodeId: string;
  userId: string;
  userName: string;
  viewers: Viewer[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Viewer".
 */
export interface Viewer {
  userId: string;
  userName: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerLeftFrame".
 */
export interface ViewerLeftFrame {
  op: "event";
  id: string;
  topic: string;
  event: "viewer_left";
  data: ViewerLeftData;
  traceId: string | null;
}
/**
 * Who joined or left, and every viewer of the episode after the change.
 */
export interface ViewerLeftData {
  episodeId: string;
  userId: string;
  userName: string;
  viewers: Viewer[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "NotificationCreatedFrame".
 */
export interface NotificationCreatedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "notification_created";
  data: NotificationCreatedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "NotificationCreatedData".
 */
export interface NotificationCreatedData {
  notification: Notification;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Notification".
 */
export interface Notification {
  id: string;
  userId: string;
  kind: string;
  title: string;
  message: string;
  resourceType: string | null;
  resourceId: string | null;
  eventId: string;
  readAt: string | null;
  createdAt: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProcessorStartedFrame".
 */
export interface JobProcessorStartedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_processor_started";
  data: JobProcessorStartedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProcessorStartedData".
 */
export interface JobProcessorStartedData {
  instance: string;
  prefetch: number;
  maxConcurrent: number;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobQueuedFrame".
 */
export interface JobQueuedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_queued";
  data: JobQueuedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobQueuedData".
 */
export interface JobQueuedData {
  jobId: string;
  type: string;
  maxAttempts: number;
  episodeId: string | null;
  runAt?: string | null;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobStartedFrame".
 */
export interface JobStartedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_started";
  data: JobStartedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobStartedData".
 */
export interface JobStartedData {
  jobId: string;
  attempt: number;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProgressFrame".
 */
export interface JobProgressFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_progress";
  data: JobProgressData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProgressData".
 */
export interface JobProgressData {
  jobId: string;
  attempt: number;
  percent: number;
  message: string;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCompletedFrame".
 */
export interface JobCompletedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_completed";
  data: JobCompletedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCompletedData".
 */
export interface JobCompletedData {
  jobId: string;
  results: unknown;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRetryFrame".
 */
export interface JobRetryFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_retry";
  data: JobRetryData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRetryData".
 */
export interface JobRetryData {
  jobId: string;
  retryCount: number;
  /**
   * milliseconds
   */
  delay: number;
  error: string;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobFailedFrame".
 */
export interface JobFailedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_failed";
  data: JobFailedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobFailedData".
 */
export interface JobFailedData {
  jobId: string;
  error: string;
  retriesExhausted: boolean;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCancelledFrame".
 */
export interface JobCancelledFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_cancelled";
  data: JobCancelledData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCancelledData".
 */
export interface JobCancelledData {
  jobId: string;
  cancelledBy: Actor;
  previousStatus: JobStatus;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRequeuedFrame".
 */
export interface JobRequeuedFrame {
  op: "event";
  id: string;
  topic: string;
  event: "job_requeued";
  data: JobRequeuedData;
  traceId: string | null;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRequeuedData".
 */
export interface JobRequeuedData {
  jobId: string;
  requeuedBy: Actor;
  previousAttempts: number;
  timestamp: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EventHeaders".
 */
export interface EventHeaders {
  /**
   * W3C trace context of the request that caused it.
   */
  traceparent: string;
}
/**
 * `file_deleted`: A file was deleted. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileDeletedEvent".
 */
export interface FileDeletedEvent {
  id: string;
  event: "file_deleted";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: FileDeletedData;
}
/**
 * `file_uploaded`: A file was uploaded to the episode. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "FileUploadedEvent".
 */
export interface FileUploadedEvent {
  id: string;
  event: "file_uploaded";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: FileUploadedData;
}
/**
 * `job_cancelled`: A job was cancelled. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCancelledEvent".
 */
export interface JobCancelledEvent {
  id: string;
  event: "job_cancelled";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobCancelledData;
}
/**
 * `job_completed`: A job succeeded with `results`. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobCompletedEvent".
 */
export interface JobCompletedEvent {
  id: string;
  event: "job_completed";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobCompletedData;
}
/**
 * `job_failed`: A job failed for good. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobFailedEvent".
 */
export interface JobFailedEvent {
  id: string;
  event: "job_failed";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobFailedData;
}
/**
 * `job_processor_started`: A job worker started (admins only on the WebSocket). The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProcessorStartedEvent".
 */
export interface JobProcessorStartedEvent {
  id: string;
  event: "job_processor_started";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobProcessorStartedData;
}
/**
 * `job_progress`: A running job reported progress. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobProgressEvent".
 */
export interface JobProgressEvent {
  id: string;
  event: "job_progress";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobProgressData;
}
/**
 * `job_queued`: A job was accepted (`runAt`: scheduled for then). The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobQueuedEvent".
 */
export interface JobQueuedEvent {
  id: string;
  event: "job_queued";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobQueuedData;
}
/**
 * A job to run (its row in PostgreSQL holds the rest); `notBefore` delays it through the delay tiers.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRequest".
 */
export interface JobRequest {
  jobId: string;
  dispatchId: string;
  notBefore: string | null;
}
/**
 * `job_requeued`: A failed job was sent to run again (admin retry). The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRequeuedEvent".
 */
export interface JobRequeuedEvent {
  id: string;
  event: "job_requeued";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobRequeuedData;
}
/**
 * `job_retry`: An attempt failed; the job runs again after `delay` ms. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobRetryEvent".
 */
export interface JobRetryEvent {
  id: string;
  event: "job_retry";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobRetryData;
}
/**
 * `job_started`: An attempt of a job started. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "JobStartedEvent".
 */
export interface JobStartedEvent {
  id: string;
  event: "job_started";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: JobStartedData;
}
/**
 * `notification_created`: A notification for the user. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "NotificationCreatedEvent".
 */
export interface NotificationCreatedEvent {
  id: string;
  event: "notification_created";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: NotificationCreatedData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "PongFrame".
 */
export interface PongFrame {
  op: "pong";
}
/**
 * Who joined or left, and every viewer of the episode after the change.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "Presence".
 */
export interface Presence {
  episodeId: string;
  userId: string;
  userName: string;
  viewers: Viewer[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ResumedFrame".
 */
export interface ResumedFrame {
  op: "resumed";
  lastEventId: string;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "SubscribedFrame".
 */
export interface SubscribedFrame {
  op: "subscribed";
  /**
   * AMQP topic patterns: `*` one word, `#` zero or more.
   */
  topics: string[];
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "UnsubscribedFrame".
 */
export interface UnsubscribedFrame {
  op: "unsubscribed";
  /**
   * AMQP topic patterns: `*` one word, `#` zero or more.
   */
  topics: string[];
}
/**
 * Who joined or left, and every viewer of the episode after the change.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerJoinedData".
 */
export interface ViewerJoinedData1 {
  episodeId: string;
  userId: string;
  userName: string;
  viewers: Viewer[];
}
/**
 * `viewer_joined`: A user started viewing the episode. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerJoinedEvent".
 */
export interface ViewerJoinedEvent {
  id: string;
  event: "viewer_joined";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: ViewerJoinedData;
}
/**
 * Who joined or left, and every viewer of the episode after the change.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerLeftData".
 */
export interface ViewerLeftData1 {
  episodeId: string;
  userId: string;
  userName: string;
  viewers: Viewer[];
}
/**
 * `viewer_left`: A user stopped viewing the episode. The envelope every event travels in, with its payload in `data`.
 *
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "ViewerLeftEvent".
 */
export interface ViewerLeftEvent {
  id: string;
  event: "viewer_left";
  version: 1;
  occurredAt: string;
  actor: Actor | null;
  correlationId: string | null;
  causationId: string | null;
  data: ViewerLeftData;
}
/**
 * This interface was referenced by `Messages`'s JSON-Schema
 * via the `definition` "EventBatchHeaders".
 */
export interface EventBatchHeaders {
  /**
   * The number of the batch's last event.
   */
  "x-seq": number;
  /**
   * The number the shipper published before the batch's first event: a relay whose last number is below it missed something and reads it from the event log.
   */
  "x-prev-seq": number;
}

/** Every event name of the contract. */
export const EVENT_NAMES = ["episode_created","episode_updated","episode_deleted","composition_created","composition_updated","composition_deleted","file_uploaded","file_deleted","viewer_joined","viewer_left","command_rejected","notification_created","job_processor_started","job_queued","job_started","job_progress","job_completed","job_retry","job_failed","job_cancelled","job_requeued"] as const;

/** An event name. */
export type EventName = (typeof EVENT_NAMES)[number];
