// A PUT's body as the importers read it: streamed, never buffered whole, and kept whole up to a
// client's cut.
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { XapiError } from '../dispatch/errors.js';
import { VhdError } from '../../storage/vhd/index.js';
import { vdiIoFaults } from '../xenopsd/tapdisk.js';
import { vdiIoError } from './vdi.js';
import type { HttpCall } from './auth.js';

/** The plugin's bodies are its handlers' to stream: no parsing, no size limit, whatever the
 * content-type. */
export function bodiesToStream(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));
  app.addHook('onRequest', (req, _reply, done) => {
    req.headers['content-type'] = 'application/octet-stream';
    done();
  });
}

/** Bytes queued from the socket before it is paused (backpressure on the client). */
const HIGH_WATER = 8 * 1024 * 1024;

/**
 * The request body as the VHD library reads it, streamed (never buffered whole). Chunks are taken
 * off the request as they come and queued here: a request the client cuts is destroyed by Node
 * with whatever it still buffers, and the data before the cut must not be lost (XO cuts right after
 * its last byte). While the queue is full the request is paused, and so is reading the socket: the
 * cut is only seen once the bytes before it are queued. A cut ends the input where it stopped (the
 * importer decides whether what came is complete); bytes beyond `limit` fail it at once.
 */
export class Body implements AsyncIterable<Buffer> {
  received = 0;
  /** the input failed (too long, or cancelled) */
  failed = false;
  limit: number | undefined;
  /** the uuid of the VDI written (for datapath faults) */
  vdi = '';
  progress: ((n: number) => void) | undefined;
  private queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private cancelled = false;
  /** the consumer stopped: later bytes are dropped */
  private done = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly raw: IncomingMessage,
    private readonly task: string,
    clientGone: AbortSignal,
  ) {
    if (raw.destroyed || raw.readableEnded || clientGone.aborted) this.ended = true;
    clientGone.addEventListener('abort', () => this.end(), { once: true });
    raw.on('data', (c: Buffer) => {
      if (this.done) return;
      this.queue.push(c);
      this.queued += c.length;
      if (this.queued >= HIGH_WATER) raw.pause();
      this.notify();
    });
    // held back until the import reads (the client waits for the 200 anyway): the server's
    // connection timeouts then know the wait is ours, not the client's
    raw.pause();
    const end = () => this.end();
    raw.on('end', end);
    raw.on('close', end);
    raw.on('error', end);
  }

  /** The input ends here: complete, or cut by the client. */
  private end(): void {
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Nobody reads any more: later bytes are dropped. */
  dispose(): void {
    this.done = true;
    this.queue = [];
    this.queued = 0;
    if (this.raw.isPaused()) this.raw.resume();
  }

  cancel(): void {
    this.cancelled = true;
    this.raw.destroy();
    this.notify();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    if (this.queued < HIGH_WATER && this.raw.isPaused()) this.raw.resume();
    try {
      for (;;) {
        if (this.cancelled) {
          this.failed = true;
          throw new XapiError('TASK_CANCELLED', [this.task]);
        }
        const c = this.queue.shift();
        if (c) {
          this.queued -= c.length;
          if (this.queued < HIGH_WATER && this.raw.isPaused()) this.raw.resume();
          this.received += c.length;
          if (this.limit !== undefined && this.received > this.limit) {
            this.failed = true;
            throw new VhdError('BAD_INPUT', `input larger than the disk (${this.limit} bytes)`);
          }
          if (vdiIoFaults.fails !== null && vdiIoFaults.fails(this.vdi, c.length)) {
            this.failed = true;
            throw vdiIoError();
          }
          this.progress?.(this.received);
          yield c;
          continue;
        }
        // complete, or cut by the client: the input ends here either way
        if (this.ended) return;
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      this.dispose();
    }
  }
}

/** Runs `use` with the request's body, taken off the socket from now on (a client may cut right
 * after its last byte); cancelling the task cancels the input, and the body is let go after. */
export async function withBody<T>(call: HttpCall, use: (body: Body) => Promise<T>): Promise<T> {
  const body = new Body(call.req.raw, call.task, call.clientGone);
  call.onCancel(() => body.cancel());
  try {
    return await use(body);
  } finally {
    body.dispose();
  }
}
