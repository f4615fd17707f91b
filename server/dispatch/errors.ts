export class XapiError extends Error {
  constructor(readonly code: string, readonly params: string[] = []) { super(`${code}(${params.join(', ')})`); }
  get description(): string[] { return [this.code, ...this.params]; }
}
export const internalError = (text: string) => new XapiError('INTERNAL_ERROR', [text]);
