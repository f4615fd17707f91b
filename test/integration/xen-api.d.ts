// The part of Xen Orchestra's `xen-api` client (npm xen-api@4.7.6, ESM, untyped) the integration
// tests use.
declare module 'xen-api' {
  import type { EventEmitter } from 'node:events';

  export interface XapiOptions {
    url: string;
    auth?: { user: string; password: string } | { sessionId: string };
    allowUnauthorized?: boolean;
    transport?: 'auto' | 'json-rpc' | 'xml-rpc';
    readOnly?: boolean;
    watchEvents?: boolean | string[];
    debounce?: number;
    eventPollDelay?: number;
    callTimeout?: number;
  }

  /** A cached record: its fields plus `$id`, `$ref`, `$type` and `$<field>` link getters. */
  export interface XapiObject {
    readonly $id: string;
    readonly $ref: string;
    readonly $type: string;
    [field: string]: any;
  }

  /** xo-collection's Collection: emits 'add', 'update' and 'remove' with { [$id]: object } maps. */
  export interface XapiCollection extends EventEmitter {
    readonly all: Record<string, XapiObject>;
    readonly indexes: { type: Record<string, Record<string, XapiObject>> };
  }

  export interface XapiError extends Error {
    code: string;
    params: string[];
    call?: { method: string; params: unknown[]; duration: number };
    task?: XapiObject;
  }

  export class Xapi extends EventEmitter {
    constructor(opts: XapiOptions);
    connect(): Promise<void>;
    disconnect(): Promise<void>;
    readonly status: 'connected' | 'connecting' | 'disconnected';
    readonly sessionId: string;
    readonly pool: XapiObject;
    readonly objects: XapiCollection;
    readonly objectsFetched: Promise<void>;
    call<T = any>(method: string, ...args: unknown[]): Promise<T>;
    callAsync<T = any>(method: string, ...args: unknown[]): Promise<T>;
    barrier(ref?: string): Promise<XapiObject | undefined>;
    getObject(idOrUuidOrRef: string, defaultValue?: unknown): XapiObject;
    getObjectByRef(ref: string, defaultValue?: unknown): XapiObject;
    getObjectByUuid(uuid: string, defaultValue?: unknown): XapiObject;
    watchTask<T = any>(ref: string): Promise<T>;
  }

  export function createClient(opts: XapiOptions): Xapi;
}
