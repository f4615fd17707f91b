// xenopsd's UPDATES channel (xapi-idl lib/updates.ml): a level-triggered dirty set. Each changed
// object id is stamped with the next counter value, so repeated changes coalesce; a consumer asks
// for the ids changed since its last token and re-reads their state (xapi's events_watch).

export type UpdateId = string; // "VM/<uuid>", "VBD/<uuid>/<device>", "VIF/<uuid>/<device>", "HOST"

export class Updates {
  private counter = 0;
  private readonly dirty = new Map<UpdateId, number>();
  private readonly listeners = new Set<() => void>();
  private scheduled = false;

  /** Marks an object changed and wakes the consumers (once per turn of the event loop). */
  add(id: UpdateId): void {
    this.dirty.set(id, ++this.counter);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const l of [...this.listeners]) l();
    });
  }

  /** The ids changed after `from`, and the token to pass next time (UPDATES.get). */
  get(from: number): { ids: UpdateId[]; next: number } {
    const ids: UpdateId[] = [];
    for (const [id, n] of this.dirty) if (n > from) ids.push(id);
    return { ids, next: this.counter };
  }

  lastId(): number {
    return this.counter;
  }

  /** Drops an id (VM.remove: the consumer has seen its end). */
  remove(id: UpdateId): void {
    this.dirty.delete(id);
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
