// Identifiers: uuids, refs and MAC addresses. With a seed they are a deterministic sequence
// (HMAC-SHA256 of the seed and a counter), and the counter is kept in the database so that a
// restarted emulator continues the sequence instead of repeating it.
import { createHmac, randomUUID } from 'node:crypto';

export class Ids {
  counter: number;

  constructor(readonly seed: string | undefined, counter = 0) {
    this.counter = counter;
  }

  private bytes(kind: string): Buffer {
    return createHmac('sha256', this.seed!).update(`${kind}:${this.counter++}`).digest();
  }

  uuid(): string {
    if (this.seed === undefined) return randomUUID();
    const b = this.bytes('uuid');
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const h = b.subarray(0, 16).toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  }

  ref(): string {
    return `OpaqueRef:${this.uuid()}`;
  }

  /** A locally administered unicast MAC, as xapi generates for VIFs. */
  mac(): string {
    const b = this.seed === undefined ? Buffer.from(randomUUID().replace(/-/g, ''), 'hex') : this.bytes('mac');
    b[0] = (b[0] & 0xfc) | 0x02;
    return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
  }
}
