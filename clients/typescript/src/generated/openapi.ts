// Generated from api/openapi.json by `npm run generate` (clients/typescript/scripts/generate.mjs).
// Do not edit: change the document and regenerate.

export type paths = {
    "/episodes": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * List live (not deleted) episodes, newest first
         * @description Unknown query parameters are refused with 400.
         */
        get: operations["listEpisodes"];
        put?: never;
        /** Create an episode (asynchronously) */
        post: operations["createEpisode"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/episodes/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** Read a live episode and record the caller as one of its viewers */
        get: operations["getEpisode"];
        put?: never;
        post?: never;
        /**
         * Delete an episode (asynchronously): soft by default, permanently for admins
         * @description Unknown query parameters are refused with 400.
         */
        delete: operations["deleteEpisode"];
        options?: never;
        head?: never;
        /**
         * Change an episode (asynchronously)
         * @description Accepted without checking that the episode exists: the episode worker rejects the command later if it does not (visible at `/commands/{id}`, or at once with `Prefer: wait`).
         */
        patch: operations["updateEpisode"];
        trace?: never;
    };
    "/episodes/{id}/viewers": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** Who is looking at a live episode (read it within the presence window) */
        get: operations["listEpisodeViewers"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/commands/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /**
         * What became of an accepted command
         * @description Visible to the caller who issued it and to admins; to anyone else it does not exist.
         */
        get: operations["getCommand"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/jobs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Jobs, newest first
         * @description Members see their own jobs; admins everyone's.
         */
        get: operations["listJobs"];
        put?: never;
        /**
         * Request a job
         * @description The type and payload are checked against the declared job types (422 naming `type` with the known types, or the payload's field as `payload.<field>`); the job is recorded (`queued`, or `scheduled` with `runAt`) with its `job_queued` event, and its request confirmed by RabbitMQ before the answer (a job scheduled further ahead than the longest delay tier, about 55 minutes, is held by its row until the job workers' sweeper publishes it). `Idempotency-Key` (1 to 200 characters, per user): a retry with the same key and body answers with the same job and makes no second one; the same key with another body answers 422.
         */
        post: operations["createJob"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/jobs/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /**
         * A job's state
         * @description Visible to its creator and to admins; to anyone else it does not exist.
         */
        get: operations["getJob"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/jobs/{id}/retry": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Run a failed job again from attempt 1 (admins)
         * @description Writes `job_requeued` (who replayed it is `requeuedBy`).
         */
        post: operations["retryJob"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/jobs/{id}/cancel": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Cancel a job: at once if it waits, by asking its worker if it runs
         * @description Its creator or an admin. A `queued`, `scheduled` or `retrying` job is `cancelled` at once (200) and a copy of its request that comes back later is skipped. A `running` job is asked to stop (202, `cancelRequestedAt` set): its worker cancels the handler and ends it `cancelled`; a handler that does not stop within `jobs.cancel_grace_secs` is abandoned and its late result discarded. Either way `job_cancelled` says who cancelled it (`cancelledBy`).
         */
        post: operations["cancelJob"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/activity": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The activity log, newest first
         * @description Every member reads every episode's history; other rows (jobs, a user's own topics, the system) only their actor and admins see. `actorId` naming another user is for admins only (403). Unknown query parameters are refused with 400.
         */
        get: operations["listActivity"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/notifications": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The caller's notifications, newest first
         * @description Unknown query parameters are refused with 400.
         */
        get: operations["listNotifications"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/notifications/unread-count": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** How many of the caller's notifications are unread */
        get: operations["countUnreadNotifications"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/notifications/read-all": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Mark all the caller's notifications read
         * @description Takes no body (one sent is ignored).
         */
        post: operations["markAllNotificationsRead"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/notifications/{id}/read": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Mark one of the caller's notifications read (idempotent)
         * @description Takes no body (one sent is ignored).
         */
        post: operations["markNotificationRead"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Liveness (also served at `/health`, outside `/api/v1`) */
        get: operations["health"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/ready": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Readiness (also served at `/ready`, outside `/api/v1`) */
        get: operations["ready"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/metrics": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Prometheus metrics of this process (also served at `/metrics`, outside `/api/v1`) */
        get: operations["metrics"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/openapi.json": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** This document */
        get: operations["openapi"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/episodes/{id}/compositions": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** List an episode's live compositions, newest first */
        get: operations["listCompositions"];
        put?: never;
        /** Create a composition (asynchronously), on the episode's partition */
        post: operations["createComposition"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/episodes/{id}/compositions/{cid}": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The composition's id (a UUID). */
                cid: string;
            };
            cookie?: never;
        };
        /** Read a live composition of this episode */
        get: operations["getComposition"];
        put?: never;
        post?: never;
        /** Soft-delete a composition, or with `?permanent=true` (admins) delete it for good */
        delete: operations["deleteComposition"];
        options?: never;
        head?: never;
        /** Change a composition (asynchronously) */
        patch: operations["updateComposition"];
        trace?: never;
    };
    "/episodes/{id}/files": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** List an episode's live files, newest first */
        get: operations["listFiles"];
        put?: never;
        /**
         * Upload a file: the body is its bytes, streamed into storage; recorded asynchronously on the episode's partition
         * @description The body streams into object storage (SHA-256 and size computed on the way); `Content-Type` is the file's media type and must be one of `files.allowed_types`; the name comes from `?name=` or `Content-Disposition: attachment; filename="..."`. Then a `record_file` command goes through the common command path. An upload that fails midway stores nothing.
         */
        post: operations["uploadFile"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/episodes/{id}/files/{fid}": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The file's id (a UUID). */
                fid: string;
            };
            cookie?: never;
        };
        /** Read a live file's record of this episode */
        get: operations["getFile"];
        put?: never;
        post?: never;
        /** Soft-delete a file (its bytes stay), or with `?permanent=true` (admins) delete it and queue a `file.purge` job that removes its bytes */
        delete: operations["deleteFile"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/episodes/{id}/files/{fid}/content": {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The file's id (a UUID). */
                fid: string;
            };
            cookie?: never;
        };
        /** Download a live file's bytes, whole or one range */
        get: operations["downloadFile"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
};
export type webhooks = Record<string, never>;
export type components = {
    schemas: {
        /** @description An RFC 9457 problem detail. Every error answer of this API has this shape and the content type `application/problem+json`. */
        Problem: {
            /**
             * Format: uri
             * @example https://showrunner.dev/problems/validation
             * @enum {string}
             */
            type: "https://showrunner.dev/problems/bad-request" | "https://showrunner.dev/problems/unauthorized" | "https://showrunner.dev/problems/forbidden" | "https://showrunner.dev/problems/not-found" | "https://showrunner.dev/problems/method-not-allowed" | "https://showrunner.dev/problems/conflict" | "https://showrunner.dev/problems/gone" | "https://showrunner.dev/problems/precondition-failed" | "https://showrunner.dev/problems/payload-too-large" | "https://showrunner.dev/problems/unsupported-media-type" | "https://showrunner.dev/problems/validation" | "https://showrunner.dev/problems/internal" | "https://showrunner.dev/problems/unavailable" | "https://showrunner.dev/problems/range-not-satisfiable" | "https://showrunner.dev/problems/request-timeout" | "https://showrunner.dev/problems/too-many-requests";
            /** @example Validation Failed */
            title: string;
            status: number;
            /** @example title: must not be empty */
            detail: string;
            /** @description Present on 400 and 422 answers: the fields (body paths, query parameters, headers) that were refused. */
            errors?: components["schemas"]["FieldError"][];
        };
        FieldError: {
            /**
             * @example title
             * @example categories
             * @example limit
             * @example Idempotency-Key
             */
            field: string;
            message: string;
        };
        /** @enum {string} */
        EpisodeStatus: "draft" | "in_production" | "published" | "archived";
        /**
         * @description 1 to 200 characters (Unicode scalar values), not only white space.
         * @example Pilot
         */
        Title: string;
        /** @description Up to 10,000 characters (Unicode scalar values). */
        Description: string;
        /**
         * @description 1 to 50 characters, not only white space.
         * @example drama
         */
        Category: string;
        /** @description At most 20 distinct categories; their order is kept. */
        Categories: components["schemas"]["Category"][];
        Episode: {
            /** Format: uuid */
            id: string;
            title: components["schemas"]["Title"];
            description: components["schemas"]["Description"];
            status: components["schemas"]["EpisodeStatus"];
            categories: components["schemas"]["Categories"];
            /** Format: uuid */
            createdBy: string;
            /** Format: uuid */
            updatedBy: string;
            /** Format: date-time */
            createdAt: string;
            /** Format: date-time */
            updatedAt: string;
            /** @description Set when the episode was soft-deleted. */
            deletedAt: string | null;
            /** Format: int64 */
            version: number;
        };
        /** @description The episode as an accepted update will leave it. When the episode is not (yet) readable, e.g. its create is still being applied or it is deleted, only `id` and the fields the request sets. */
        EpisodePreview: {
            /** Format: uuid */
            id: string;
            title?: components["schemas"]["Title"];
            description?: components["schemas"]["Description"];
            status?: components["schemas"]["EpisodeStatus"];
            categories?: components["schemas"]["Categories"];
            /** Format: uuid */
            createdBy?: string;
            /** Format: uuid */
            updatedBy?: string;
            /** Format: date-time */
            createdAt?: string;
            /** Format: date-time */
            updatedAt?: string;
            deletedAt?: string | null;
            /** Format: int64 */
            version?: number;
        };
        DeletePreview: {
            /** Format: uuid */
            id: string;
            /** @enum {string} */
            deleteType: "soft" | "permanent";
        };
        EpisodeCreate: {
            title: components["schemas"]["Title"];
            /** @default  */
            description?: components["schemas"]["Description"];
            /** @default draft */
            status?: components["schemas"]["EpisodeStatus"];
            /** @default [] */
            categories?: components["schemas"]["Categories"];
        };
        /** @description The fields to set; an absent or `null` field stays unchanged. At least one field must be given a value. */
        EpisodeChanges: {
            title?: components["schemas"]["Title"] | null;
            description?: components["schemas"]["Description"] | null;
            status?: components["schemas"]["EpisodeStatus"] | null;
            categories?: components["schemas"]["Categories"] | null;
        } | {
            title: components["schemas"]["Title"];
        } | {
            description: components["schemas"]["Description"];
        } | {
            status: components["schemas"]["EpisodeStatus"];
        } | {
            categories: components["schemas"]["Categories"];
        };
        /**
         * Format: uuid
         * @description Id of the accepted command; its state is at `/commands/{id}`.
         */
        CommandId: string;
        EpisodeCreateAccepted: {
            data: components["schemas"]["Episode"];
            commandId: components["schemas"]["CommandId"];
        };
        EpisodeUpdateAccepted: {
            data: components["schemas"]["EpisodePreview"];
            commandId: components["schemas"]["CommandId"];
        };
        EpisodeDeleteAccepted: {
            data: components["schemas"]["DeletePreview"];
            commandId: components["schemas"]["CommandId"];
        };
        EpisodeApplied: {
            data: components["schemas"]["Episode"];
            commandId: components["schemas"]["CommandId"];
        };
        Viewer: {
            /** Format: uuid */
            userId: string;
            userName: string;
        };
        EpisodeWithViewers: {
            data: components["schemas"]["Episode"];
            /** @description Users who read the episode within the presence window, the caller included. */
            viewers: components["schemas"]["Viewer"][];
        };
        ViewerList: {
            data: components["schemas"]["Viewer"][];
        };
        /** @description Pass as `cursor` to get the next page; `null` on the last page. */
        NextCursor: string | null;
        EpisodePage: {
            data: components["schemas"]["Episode"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
        Command: {
            /** Format: uuid */
            id: string;
            /** @enum {string} */
            kind: "create_episode" | "update_episode" | "delete_episode" | "create_composition" | "update_composition" | "delete_composition" | "record_file" | "delete_file";
            /** @enum {string} */
            status: "pending" | "applied" | "rejected";
            /** @description Why the command was rejected; absent otherwise. */
            error?: string;
            /** @enum {string} */
            resourceType: "episode" | "composition" | "file";
            /** Format: uuid */
            resourceId: string;
            /** Format: date-time */
            acceptedAt: string;
            completedAt: string | null;
        };
        Activity: {
            /** Format: uuid */
            id: string;
            /**
             * @example episode_created
             * @example episode_updated
             * @example episode_deleted
             * @example command_rejected
             */
            event: string;
            /**
             * @example episode
             * @example user
             */
            resourceType: string;
            resourceId: string | null;
            actorId: string | null;
            actorName: string | null;
            correlationId: string | null;
            /** @description The event's payload, as the event carried it. */
            data: unknown;
            /** Format: date-time */
            occurredAt: string;
        };
        ActivityPage: {
            data: components["schemas"]["Activity"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
        Notification: {
            /** Format: uuid */
            id: string;
            /**
             * @example episode_created
             * @example episode_deleted
             * @example command_rejected
             */
            kind: string;
            title: string;
            message: string;
            resourceType: string | null;
            resourceId: string | null;
            /** Format: uuid */
            eventId: string;
            readAt: string | null;
            /** Format: date-time */
            createdAt: string;
        };
        NotificationPage: {
            data: components["schemas"]["Notification"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
        Count: {
            /** Format: int64 */
            count: number;
        };
        Health: {
            /** @constant */
            status: "ok";
        };
        Readiness: {
            /** @description PostgreSQL answered a ping. */
            database: boolean;
            /** @description The API holds a confirmed publisher channel to RabbitMQ. */
            broker: boolean;
        };
        /** @enum {string} */
        JobStatus: "queued" | "scheduled" | "running" | "retrying" | "succeeded" | "failed" | "cancelled";
        Job: {
            /** Format: uuid */
            id: string;
            /** @description The job type: one of the declared types (`POST /jobs` lists them), `webhook` and `episode.export` in every deployment. */
            type: string;
            /** @description The job's input, as given. */
            payload: unknown;
            status: components["schemas"]["JobStatus"];
            /** @description Attempts started so far. */
            attempts: number;
            maxAttempts: number;
            lastError: string | null;
            /** @description What the last successful attempt returned, or null. */
            result: unknown;
            /**
             * Format: date-time
             * @description When a retrying job runs again.
             */
            nextAttemptAt: string | null;
            /** Format: uuid */
            episodeId: string | null;
            /** Format: uuid */
            createdBy: string;
            /** Format: date-time */
            createdAt: string;
            /** Format: date-time */
            updatedAt: string;
            /** Format: date-time */
            completedAt: string | null;
            /**
             * Format: date-time
             * @description Not to run before this instant (a `scheduled` job).
             */
            runAt: string | null;
            /** @description The latest progress the running handler reported, or null. */
            progress: null | {
                percent: number;
                message: string;
                /** Format: date-time */
                at: string;
            };
            /**
             * Format: date-time
             * @description When someone asked this job to stop (a running job ends `cancelled` once its handler stopped).
             */
            cancelRequestedAt: string | null;
        };
        JobEnvelope: {
            data: components["schemas"]["Job"];
        };
        /** @description A job request: `type` names one of the declared job types, `payload` must fit that type's schema (422 naming `type`, or the payload's field as `payload.<field>`, otherwise). */
        JobCreate: {
            /** Format: uuid */
            episodeId?: string | null;
            /** @description Absent or null: `jobs.max_attempts`. */
            maxAttempts?: number | null;
            payload: {
                /** Format: uuid */
                compositionId: string;
                /** Format: uuid */
                episodeId: string;
            };
            /**
             * Format: date-time
             * @description Not to run before this instant (RFC 3339, at most `jobs.max_schedule_days` ahead): the job is `scheduled` until then. Absent, null or past: it runs now.
             */
            runAt?: string | null;
            /** @constant */
            type: "composition.export";
        } | {
            /** Format: uuid */
            episodeId?: string | null;
            /** @description Absent or null: `jobs.max_attempts`. */
            maxAttempts?: number | null;
            payload: {
                /** Format: uuid */
                episodeId: string;
            };
            /**
             * Format: date-time
             * @description Not to run before this instant (RFC 3339, at most `jobs.max_schedule_days` ahead): the job is `scheduled` until then. Absent, null or past: it runs now.
             */
            runAt?: string | null;
            /** @constant */
            type: "episode.export";
        } | {
            /** Format: uuid */
            episodeId?: string | null;
            /** @description Absent or null: `jobs.max_attempts`. */
            maxAttempts?: number | null;
            payload: {
                /** Format: uuid */
                episodeId: string;
                /** Format: uuid */
                fileId: string;
            };
            /**
             * Format: date-time
             * @description Not to run before this instant (RFC 3339, at most `jobs.max_schedule_days` ahead): the job is `scheduled` until then. Absent, null or past: it runs now.
             */
            runAt?: string | null;
            /** @constant */
            type: "file.purge";
        } | {
            /** Format: uuid */
            episodeId?: string | null;
            /** @description Absent or null: `jobs.max_attempts`. */
            maxAttempts?: number | null;
            payload: {
                /** @description Any JSON; null when absent. */
                body?: unknown;
                /**
                 * Format: uri
                 * @description An `http://` URL with a host and no credentials.
                 */
                url: string;
            };
            /**
             * Format: date-time
             * @description Not to run before this instant (RFC 3339, at most `jobs.max_schedule_days` ahead): the job is `scheduled` until then. Absent, null or past: it runs now.
             */
            runAt?: string | null;
            /** @constant */
            type: "webhook";
        };
        JobPage: {
            data: components["schemas"]["Job"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
        /** @enum {string} */
        TrackKind: "video" | "audio";
        /** @description A span of one of the episode's files on the timeline, in integer microseconds. The clips of a track do not overlap. Until files exist, `fileId` is checked as a UUID only. */
        Clip: {
            /** Format: uuid */
            fileId: string;
            startUs: number;
            sourceInUs: number;
            durationUs: number;
        };
        Track: {
            kind: components["schemas"]["TrackKind"];
            clips: components["schemas"]["Clip"][];
        };
        /** @description A track as a request gives it: `clips` may be left out (none). */
        TrackInput: {
            kind: components["schemas"]["TrackKind"];
            /** @default [] */
            clips?: components["schemas"]["Clip"][];
        };
        Tracks: components["schemas"]["Track"][];
        TracksInput: components["schemas"]["TrackInput"][];
        /** @description 1 to 200 characters, not only white space. */
        CompositionName: string;
        Composition: {
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            episodeId: string;
            name: components["schemas"]["CompositionName"];
            tracks: components["schemas"]["Tracks"];
            /** @description The end of the last clip; 0 when there is none. */
            durationUs: number;
            version: number;
            /** Format: uuid */
            createdBy: string;
            /** Format: uuid */
            updatedBy: string;
            /** Format: date-time */
            createdAt: string;
            /** Format: date-time */
            updatedAt: string;
            /** Format: date-time */
            deletedAt: string | null;
        };
        CompositionCreate: {
            name: components["schemas"]["CompositionName"];
            tracks?: components["schemas"]["TracksInput"];
        };
        /** @description The fields to set; an absent or `null` field stays unchanged. At least one field must be given a value. `tracks` replace the whole timeline. */
        CompositionUpdate: {
            name?: components["schemas"]["CompositionName"] | null;
            tracks?: components["schemas"]["TracksInput"] | null;
        };
        CompositionApplied: {
            data: components["schemas"]["Composition"];
            commandId: components["schemas"]["CommandId"];
        };
        /** @description The composition as an accepted update will leave it. When it is not (yet) readable, e.g. its create is still being applied, or its rules refuse the change as things stand, only `id`, `episodeId` and the fields the request sets. */
        CompositionPreview: {
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            episodeId: string;
            name?: components["schemas"]["CompositionName"];
            tracks?: components["schemas"]["Tracks"];
            /** @description The end of the last clip; 0 when there is none. */
            durationUs?: number;
            version?: number;
            /** Format: uuid */
            createdBy?: string;
            /** Format: uuid */
            updatedBy?: string;
            /** Format: date-time */
            createdAt?: string;
            /** Format: date-time */
            updatedAt?: string;
            /** Format: date-time */
            deletedAt?: string | null;
        };
        /** @description A file's or composition's delete as accepted. */
        EpisodeItemDeletePreview: {
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            episodeId: string;
            /** @enum {string} */
            deleteType: "soft" | "permanent";
        };
        CompositionCreateAccepted: {
            data: components["schemas"]["Composition"];
            commandId: components["schemas"]["CommandId"];
        };
        CompositionUpdateAccepted: {
            data: components["schemas"]["CompositionPreview"];
            commandId: components["schemas"]["CommandId"];
        };
        CompositionDeleteAccepted: {
            data: components["schemas"]["EpisodeItemDeletePreview"];
            commandId: components["schemas"]["CommandId"];
        };
        CompositionEnvelope: {
            data: components["schemas"]["Composition"];
        };
        CompositionPage: {
            data: components["schemas"]["Composition"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
        /** @description 1 to 255 characters, no `/`, `\\` or control characters. */
        FileName: string;
        File: {
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            episodeId: string;
            name: components["schemas"]["FileName"];
            /** @description The media type it was uploaded with (parameters dropped). */
            contentType: string;
            /** @description Bytes, at most `files.max_bytes`. */
            size: number;
            /** @description SHA-256 of the bytes, computed while they streamed in; the download's `ETag`. */
            sha256: string;
            /** Format: uuid */
            createdBy: string;
            /** Format: date-time */
            createdAt: string;
            deletedAt: string | null;
        };
        FileEnvelope: {
            data: components["schemas"]["File"];
        };
        FileApplied: {
            data: components["schemas"]["File"];
            commandId: components["schemas"]["CommandId"];
        };
        FileUploadAccepted: {
            data: components["schemas"]["File"];
            commandId: components["schemas"]["CommandId"];
        };
        FileDeleteAccepted: {
            data: components["schemas"]["EpisodeItemDeletePreview"];
            commandId: components["schemas"]["CommandId"];
        };
        FilePage: {
            data: components["schemas"]["File"][];
            nextCursor: components["schemas"]["NextCursor"];
        };
    };
    responses: {
        /** @description Malformed input: a path id that is not a UUID, a query parameter that is unknown, repeated, of the wrong type or longer than `limits.max_string_chars`, a `limit` above `limits.max_page_size`, a body that is not JSON, or a bad `Idempotency-Key`. `errors` names the parameter. */
        BadRequest: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description No bearer token, or one that is malformed, forged or expired. */
        Unauthorized: {
            headers: {
                /** @description Always `Bearer`. */
                "WWW-Authenticate"?: "Bearer";
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description The caller's role does not allow this action (see the README's authorization table); nothing was changed. */
        Forbidden: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description No such resource, or one only its owner or an admin may see (another user's command, job or notification): its existence is private. */
        NotFound: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description The server failed; the detail is deliberately opaque. */
        InternalError: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description The message broker is unreachable, or PostgreSQL is (or every pooled connection stayed busy for `database.acquire_timeout_secs`): nothing was accepted, retry after the given delay. */
        Unavailable: {
            headers: {
                /** @description Seconds to wait before retrying. */
                "Retry-After": number;
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description The body's `Content-Type` is not `application/json` (or another `application/*+json`). */
        UnsupportedMediaType: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description The body is larger than `limits.max_body_bytes` (256 KiB by default). */
        PayloadTooLarge: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
        /** @description Over a per-user limit of this api instance: more than `limits.requests_per_sec` requests per second after a burst of `limits.request_burst` (with `Retry-After`), or, on `/ws`, already `limits.max_connections_per_user` WebSocket connections open (no `Retry-After`: close one first). */
        TooManyRequests: {
            headers: {
                /** @description Seconds until the next request would be allowed (rate limit only). */
                "Retry-After"?: number;
                [name: string]: unknown;
            };
            content: {
                "application/problem+json": components["schemas"]["Problem"];
            };
        };
    };
    parameters: {
        /** @description A UUID. */
        Id: string;
        /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
        Limit: number;
        /** @description The `nextCursor` of the previous page. */
        Cursor: string;
        /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
        IdempotencyKey: string;
        /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
        Prefer: string;
    };
    requestBodies: never;
    headers: {
        /** @description `wait=N`: the request carried `Prefer: wait` and waited up to N seconds (RFC 7240). */
        PreferenceApplied: string;
    };
    pathItems: never;
};
export type $defs = Record<string, never>;
export interface operations {
    listEpisodes: {
        parameters: {
            query?: {
                status?: components["schemas"]["EpisodeStatus"];
                /** @description Only episodes with this category. */
                category?: string;
                /** @description Case-insensitive substring of the title. */
                q?: string;
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of episodes. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodePage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    createEpisode: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path?: never;
            cookie?: never;
        };
        /** @description The new episode. */
        requestBody: {
            content: {
                "application/json": components["schemas"]["EpisodeCreate"];
            };
        };
        responses: {
            /** @description Created: with `Prefer: wait`, the command was applied in time. */
            201: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeCreateAccepted"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description With `Prefer: wait`: the episode was applied but deleted again before it could be read. */
            404: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description The body is JSON of the wrong shape: an unknown field, a field of the wrong type, or a value breaking a domain rule (`errors` names it); or the `Idempotency-Key` was used before with a different request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    getEpisode: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The episode and its current viewers. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeWithViewers"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    deleteEpisode: {
        parameters: {
            query?: {
                /** @description Remove the row instead of marking it deleted. Admins only. */
                permanent?: boolean;
            };
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description With `Prefer: wait`, a soft delete was applied in time: the episode with `deletedAt` set. */
            200: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeDeleteAccepted"];
                };
            };
            /** @description With `Prefer: wait`, a permanent delete was applied in time. */
            204: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description `permanent=true` from a caller who is not an admin. */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the command was rejected because the episode does not exist. */
            404: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: a soft delete was rejected because the episode is already soft-deleted. */
            410: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The `Idempotency-Key` was used before with a different request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    updateEpisode: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** @description The fields to change. */
        requestBody: {
            content: {
                "application/json": components["schemas"]["EpisodeChanges"];
            };
        };
        responses: {
            /** @description With `Prefer: wait`, the command was applied in time: the episode as it is now. */
            200: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EpisodeUpdateAccepted"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description With `Prefer: wait`: the command was rejected because the episode does not exist. */
            404: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the command was rejected because the episode is soft-deleted. */
            410: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description The body is JSON of the wrong shape: an unknown field, a field of the wrong type, or a value breaking a domain rule (`errors` names it); or the `Idempotency-Key` was used before with a different request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    listEpisodeViewers: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The current viewers, longest-present first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ViewerList"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    getCommand: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The command's state. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Command"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such command, or it is not the caller's, or its record expired: a command's record (and with it its Idempotency-Key) is kept `retention.commands_secs` after it was accepted (48 hours by default, never less than 24 hours), then deleted. The problem's `detail` says `expired` when the id (a UUIDv7, for commands sent without an Idempotency-Key) is older than that. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    listJobs: {
        parameters: {
            query?: {
                status?: components["schemas"]["JobStatus"];
                type?: string;
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of jobs. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobPage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    createJob: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["JobCreate"];
            };
        };
        responses: {
            /** @description Accepted; `Location` is the job. */
            202: {
                headers: {
                    Location?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description A field is invalid (an unknown `type`, a payload that does not fit its type's schema, `payload.<field>`; `runAt` too far ahead; an `Idempotency-Key` reused with another body), or the body is beyond the limits (nested deeper than `limits.max_json_depth`, a string longer than `limits.max_string_chars`, an array or object larger than `limits.max_list_items`); `errors` names the field. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    getJob: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The job. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    retryJob: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The job. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            /** @description The job is not `failed`. */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    cancelJob: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The job, now `cancelled`. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobEnvelope"];
                };
            };
            /** @description The job is running; its worker was asked to stop it. */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            /** @description The job already ended (`succeeded`, `failed` or `cancelled`). */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    listActivity: {
        parameters: {
            query?: {
                resourceType?: string;
                resourceId?: string;
                /** @description Only another user's activity needs the admin role. */
                actorId?: string;
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of activity. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ActivityPage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description `actorId` names another user and the caller is not an admin. */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    listNotifications: {
        parameters: {
            query?: {
                /** @description Only unread notifications. */
                unread?: boolean;
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of notifications. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NotificationPage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    countUnreadNotifications: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The count. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Count"];
                };
            };
            401: components["responses"]["Unauthorized"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    markAllNotificationsRead: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description How many notifications were unread until now. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Count"];
                };
            };
            401: components["responses"]["Unauthorized"];
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    markNotificationRead: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The notification is read. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such notification, or it is not the caller's. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    health: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The process is up. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
        };
    };
    ready: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description PostgreSQL and RabbitMQ are reachable. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Readiness"];
                };
            };
            /** @description PostgreSQL or RabbitMQ is not reachable; the body says which. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Readiness"];
                };
            };
        };
    };
    metrics: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Prometheus text exposition format 0.0.4. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/plain": string;
                };
            };
        };
    };
    openapi: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The OpenAPI 3.1 document of this API. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": Record<string, never>;
                };
            };
        };
    };
    listCompositions: {
        parameters: {
            query?: {
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of compositions. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionPage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    createComposition: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CompositionCreate"];
            };
        };
        responses: {
            /** @description With `Prefer: wait`, applied in time: the composition, `Location` its URL. */
            201: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionCreateAccepted"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description With `Prefer: wait`: the episode, or the composition under this episode, does not exist. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the episode or the composition is soft-deleted. */
            410: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description A field breaks a rule; `errors[].field` names it, e.g. `tracks[1].clips[3].durationUs` or `tracks[0].clips[2]` for a clip that overlaps another of its track. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    getComposition: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The composition's id (a UUID). */
                cid: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The composition; `ETag` is its version. */
            200: {
                headers: {
                    /** @description `"<version>"`, for `If-Match`. */
                    ETag?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such composition under this episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    deleteComposition: {
        parameters: {
            query?: {
                permanent?: boolean;
            };
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The composition's id (a UUID). */
                cid: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description With `Prefer: wait`, soft-deleted: the composition with `deletedAt`. */
            200: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionDeleteAccepted"];
                };
            };
            /** @description With `Prefer: wait`, permanently deleted. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            /** @description With `Prefer: wait`: the episode, or the composition under this episode, does not exist. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the episode or the composition is soft-deleted. */
            410: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The `Idempotency-Key` was used before with a different request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    updateComposition: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
                /** @description `"<version>"`: apply only if the composition is at this version, else the command is rejected (412 with `Prefer: wait`). `*` is unconditional. */
                "If-Match"?: string;
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The composition's id (a UUID). */
                cid: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CompositionUpdate"];
            };
        };
        responses: {
            /** @description With `Prefer: wait`, applied in time: the composition as it is now. */
            200: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CompositionUpdateAccepted"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description With `Prefer: wait`: the episode, or the composition under this episode, does not exist. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the episode or the composition is soft-deleted. */
            410: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: `If-Match` named another version. */
            412: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description A field breaks a rule; `errors[].field` names it, e.g. `tracks[1].clips[3].durationUs` or `tracks[0].clips[2]` for a clip that overlaps another of its track. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    listFiles: {
        parameters: {
            query?: {
                /** @description Page size, 1 to `limits.max_page_size` (100 by default); a larger one answers 400. */
                limit?: components["parameters"]["Limit"];
                /** @description The `nextCursor` of the previous page. */
                cursor?: components["parameters"]["Cursor"];
            };
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of files. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FilePage"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    uploadFile: {
        parameters: {
            query?: {
                /** @description The file's name (else `Content-Disposition`'s filename). */
                name?: components["schemas"]["FileName"];
            };
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
                /** @description `attachment; filename="..."` (or `filename*=UTF-8''...`): the file's name when `?name=` is absent. */
                "Content-Disposition"?: string;
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
            };
            cookie?: never;
        };
        /** @description The file's bytes. */
        requestBody: {
            content: {
                "application/octet-stream": string;
                "audio/*": string;
                "video/*": string;
                "image/*": string;
                "application/pdf": string;
                "text/plain": string;
            };
        };
        responses: {
            /** @description With `Prefer: wait`, recorded in time: the file, `Location` its URL. */
            201: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FileApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FileUploadAccepted"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description The episode does not exist. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body stopped arriving for `http.body_timeout_secs`. */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the command was rejected as a conflict. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The episode is soft-deleted (also with `Prefer: wait` when the worker found it deleted). */
            410: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The body is larger than `files.max_bytes` (5 GiB by default): answered as soon as it is exceeded; nothing is stored. */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description `Content-Type` is missing or not one of `files.allowed_types`. */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description `name` is missing or breaks its rule (`errors[].field` = `name`), the body was cut off before its end, or the `Idempotency-Key` was used with another request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    getFile: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The file's id (a UUID). */
                fid: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The file. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FileEnvelope"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such file under this episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    deleteFile: {
        parameters: {
            query?: {
                permanent?: boolean;
            };
            header?: {
                /** @description Makes a retried write safe: the same caller and key get the first request's answer; the same key with a different request gets 422. 1 to 200 visible ASCII characters. */
                "Idempotency-Key"?: components["parameters"]["IdempotencyKey"];
                /** @description `wait=N` (RFC 7240): hold the request up to N seconds (at most `http.max_wait_secs`, 30 by default) until the command is applied or rejected. Applied: the final answer (201/200/204); rejected: the problem that rejected it (404, 409 or 410); still pending: 202. Other preferences and malformed values are ignored. A request that waited answers with `Preference-Applied: wait=N`, N being the wait it was given (a larger request is cut to `http.max_wait_secs`). */
                Prefer?: components["parameters"]["Prefer"];
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The file's id (a UUID). */
                fid: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description With `Prefer: wait`, soft-deleted: the file with `deletedAt`. */
            200: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FileApplied"];
                };
            };
            /** @description Accepted: the command is recorded and confirmed by the broker, not applied yet. `data` is the resource as the command will leave it. */
            202: {
                headers: {
                    /** @description `/api/v1/commands/{commandId}`: the command's state. */
                    Location: string;
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["FileDeleteAccepted"];
                };
            };
            /** @description With `Prefer: wait`, permanently deleted. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            /** @description With `Prefer: wait`: the episode, or the file under this episode, does not exist. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description A request with the same `Idempotency-Key` is in flight, or (with `Prefer: wait`) the file is used by a live composition. */
            409: {
                headers: {
                    "Preference-Applied": components["headers"]["PreferenceApplied"];
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description With `Prefer: wait`: the episode or the file is soft-deleted. */
            410: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The `Idempotency-Key` was used before with a different request. */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
    downloadFile: {
        parameters: {
            query?: never;
            header?: {
                /** @description One range, `bytes=a-b`, `bytes=a-` or `bytes=-n`; several ranges or another unit are answered with the whole file. */
                Range?: string;
                /** @description ETags the client holds: 304 if one is the file's. */
                "If-None-Match"?: string;
                /** @description An ETag: `Range` applies only if it is the file's. */
                "If-Range"?: string;
            };
            path: {
                /** @description A UUID. */
                id: components["parameters"]["Id"];
                /** @description The file's id (a UUID). */
                fid: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The bytes, with the file's `Content-Type`. */
            200: {
                headers: {
                    /** @description `"<sha256>"`. */
                    ETag?: string;
                    /** @description `bytes`. */
                    "Accept-Ranges"?: string;
                    /** @description `attachment; filename="..."; filename*=UTF-8''...` with the stored name. */
                    "Content-Disposition"?: string;
                    /** @description `nosniff`. */
                    "X-Content-Type-Options"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "*/*": string;
                };
            };
            /** @description The range asked for. */
            206: {
                headers: {
                    /** @description `bytes a-b/size`. */
                    "Content-Range"?: string;
                    /** @description `"<sha256>"`. */
                    ETag?: string;
                    [name: string]: unknown;
                };
                content: {
                    "*/*": string;
                };
            };
            /** @description `If-None-Match` named the file's ETag. */
            304: {
                headers: {
                    /** @description `"<sha256>"`. */
                    ETag?: string;
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            /** @description No such file under this episode, or it is soft-deleted. */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description The range starts beyond the end; `Content-Range: bytes *\/<size>`. */
            416: {
                headers: {
                    /** @description `bytes *\/size`. */
                    "Content-Range"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            500: components["responses"]["InternalError"];
            503: components["responses"]["Unavailable"];
        };
    };
}
