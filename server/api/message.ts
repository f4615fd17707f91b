// message: alerts attached to objects (xapi_message.ml). xapi keeps them outside its database;
// here they are stored like any object, with the same API.
import { classes, type MessageTag } from '../../schema/index.js';
import { registerProvider, type Call } from '../dispatch/registry.js';
import { XapiError } from '../dispatch/errors.js';
import { genericHandler } from './generic.js';
import { xapiDate } from '../clock.js';

const cls = classes.get('message')!;
// message's accessors are custom in the datamodel but behave as the generic ones
const byTag = (name: MessageTag) => genericHandler({ ...cls.message.get(name)!, tag: name })!;

/** The class whose uuid a message's obj_uuid must name, by `cls` value. */
const classOfCls: Record<string, string> = { VM: 'VM', Host: 'host', SR: 'SR', Pool: 'pool', VMPP: 'VMPP', VMSS: 'VMSS', PVS_proxy: 'PVS_proxy', VDI: 'VDI', Certificate: 'Certificate' };

function since(call: Call, t: string, pred: (r: Record<string, unknown>) => boolean = () => true) {
  const out: Record<string, unknown> = {};
  for (const [ref, row] of call.emu.db.table('message')) if ((row.rec.timestamp as string) > t && pred(row.rec)) out[ref] = row.rec;
  return out;
}

registerProvider('message', {
  create(call, name: string, priority: number, c: string, objUuid: string, body: string) {
    const target = classOfCls[c];
    if (target && !call.emu.db.refByUuid(target, objUuid)) throw new XapiError('UUID_INVALID', [target, objUuid]);
    const ref = call.emu.ids.ref();
    call.emu.db.create('message', ref, {
      uuid: call.emu.ids.uuid(), name, priority, cls: c, obj_uuid: objUuid, timestamp: xapiDate(call.emu.clock.now()), body,
    });
    return ref;
  },
  destroy(call, self: string) {
    if (!call.emu.db.has('message', self)) throw new XapiError('HANDLE_INVALID', ['message', self]);
    call.emu.db.destroy('message', self);
  },
  destroy_many(call, refs: string[]) {
    for (const r of refs) call.emu.db.destroy('message', r);
  },
  get_all: (call) => [...call.emu.db.table('message').keys()],
  get_all_records: byTag('get_all_records'),
  get_all_records_where: byTag('get_all_records_where'),
  get_record: byTag('get_record'),
  get_by_uuid: byTag('get_by_uuid'),
  get_since: (call, t: string) => since(call, t),
  get: (call, c: string, objUuid: string, t: string) => since(call, t, (r) => r.cls === c && r.obj_uuid === objUuid),
});
