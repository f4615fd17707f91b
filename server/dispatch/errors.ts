export class XapiError extends Error {
  constructor(readonly code: string, readonly params: string[] = []) {
    // An error of the API, answered to the client, not a fault of ours: no stack trace to capture,
    // which would cost more than most checks that build one (allowed_operations builds thousands).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(`${code}(${params.join(', ')})`);
    Error.stackTraceLimit = limit;
  }
  get description(): string[] { return [this.code, ...this.params]; }
}
export const internalError = (text: string) => new XapiError('INTERNAL_ERROR', [text]);
