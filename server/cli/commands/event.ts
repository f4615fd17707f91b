// event-wait (cli_operations.ml's event_wait): returns once an object of the class has fields as
// given (`field=value`, or `field=/=value` for "differs"), checking the objects as they are now,
// then each change the event system reports.
import { defineCommand, STD_PARAMS, type CommandContext } from '../commands.js';
import { apiClass, makeRecord, recordSpec, type CliRecord } from '../records.js';
import { Typed } from '../../transport/typed.js';
import { failure, reqd } from './params.js';

/** A value as the API answers it in process (a record may come wrapped with its type). */
const plain = <T>(v: unknown): T => (v instanceof Typed ? v.value : v) as T;

/** The classes event-wait listens to, by their CLI names. */
const CLASSES = ['vm', 'vdi', 'sr', 'host', 'network', 'vif', 'pif', 'vbd', 'pbd', 'pool', 'task', 'subject', 'role', 'secret', 'vmss'];

/** Each wait on the event system is this short (wall seconds) so that a client that goes away
 * ends the command soon after. */
const WAIT_S = 5;

type Condition = { equals: boolean; key: string; value: string };

async function matches(ctx: CommandContext, r: CliRecord, conds: Condition[]): Promise<boolean> {
  let all = true;
  // (every condition is read, so a missing field fails even after a mismatch)
  for (const c of conds) {
    const f = r.fields.find((x) => x.name === c.key);
    if (!f) throw failure(`key missing: ${c.key}`);
    await f.load(ctx);
    const v = f.get();
    if (c.equals ? v !== c.value : v === c.value) all = false;
  }
  return all;
}

defineCommand({
  name: 'event-wait',
  reqd: ['class'],
  optn: [],
  help: 'Wait until an object of class= has the given field values (field=value, or field=/=value for "not equal").',
  run: async (ctx) => {
    const record = reqd(ctx, 'class');
    const conds: Condition[] = ctx.params
      .filter(([k]) => k !== 'class' && !STD_PARAMS.includes(k))
      .map(([key, value]) => (value.startsWith('/=') ? { equals: false, key, value: value.slice(2) } : { equals: true, key, value }));
    if (!CLASSES.includes(record)) throw failure(`Cli listening for class '${record}' not currently implemented`);
    const cls = apiClass(recordSpec(record).cls);
    const all = (await ctx.call(`${cls}.get_all_records`)) as Record<string, Record<string, unknown>>;
    for (const [ref, rec] of Object.entries(all)) {
      if (await matches(ctx, await makeRecord(ctx, record, ref, rec), conds)) return;
    }
    let token = '';
    while (!ctx.closed?.()) {
      const batch = plain<{ token: string; events: { ref: string; snapshot?: unknown }[] }>(await ctx.call('event.from', [cls], token, WAIT_S));
      token = batch.token;
      for (const e of batch.events) {
        const snapshot = plain<Record<string, unknown> | undefined>(e.snapshot);
        if (snapshot === undefined || snapshot === null) continue;
        if (await matches(ctx, await makeRecord(ctx, record, e.ref, snapshot), conds)) return;
      }
    }
  },
});
