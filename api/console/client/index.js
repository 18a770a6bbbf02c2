export * from './errors.js';
export * from './rest.js';
export * from './realtime.js';
export { EVENT_NAMES } from './generated/messages.js';
