/** An answer of 4xx or 5xx: the problem+json body, typed, with the field errors of a 422. */
export class ProblemError extends Error {
    status;
    type;
    title;
    detail;
    /** `{field, message}` of each invalid field (validation errors); empty otherwise. */
    errors;
    /** The response's headers (`Retry-After`, `Location`, ...). */
    headers;
    constructor(status, problem, headers) {
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
    fieldError(field) {
        return this.errors.find((e) => e.field === field)?.message;
    }
}
/** The server could not be reached (or kept answering 503) after every retry. */
export class NetworkError extends Error {
    attempts;
    constructor(message, attempts, cause) {
        super(message, { cause });
        this.name = 'NetworkError';
        this.attempts = attempts;
    }
}
