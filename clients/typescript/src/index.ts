export * from './errors.js';
export * from './rest.js';
export * from './realtime.js';
export type * as Messages from './generated/messages.js';
export type { paths, components, operations } from './generated/openapi.js';
export { EVENT_NAMES } from './generated/messages.js';
