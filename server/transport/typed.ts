// A value that carries its own XAPI type. The XML-RPC encoder encodes it with `ty` whatever the
// surrounding type says (event snapshots, whose class varies); JSON needs no type, so it unwraps.
import type { Ty } from '../../schema/index.js';

export class Typed {
  constructor(readonly ty: Ty, readonly value: unknown) {}
  toJSON(): unknown {
    return this.value;
  }
}
