import type { components } from './generated/openapi.js';

export type FieldError = components['schemas']['FieldError'];
export type Problem = components['schemas']['Problem'];

/** An answer of 4xx or 5xx: the problem+json body, typed, with the field errors of a 422. */
export class ProblemError extends Error {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly detail: string | undefined;
  /** `{field, message}` of each invalid field (validation errors); empty otherwise. */
  readonly errors: FieldError[];
  /** The response's headers (`Retry-After`, `Location`, ...). */
  readonly headers: Headers;

  constructor(status: number, problem: Partial<Problem>, headers: Headers) {
    super(`${status} ${problem.title ?? 'error'}${problem.detail ? `: ${problem.detail}` : ''}`);
    this.name = 'ProblemError';
    this.status = status;
    this.type = problem.type ?? 'about:blank';
    this.title = problem.title ?? '';
    this.detail = problem.detail ?? undefined;
    this.errors = problem.errors ?? [];
    this.headers = headers;
  }

  /** The message of the error on `field`, if any. */
  fieldError(field: string): string | undefined {
    return this.errors.find((e) => e.field === field)?.message;
  }
}

/** The server could not be reached (or kept answering 503) after every retry. */
export class NetworkError extends Error {
  readonly attempts: number;
  constructor(message: string, attempts: number, cause?: unknown) {
    super(message, { cause });
    this.name = 'NetworkError';
    this.attempts = attempts;
  }
}
