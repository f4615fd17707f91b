// SR commands of xapi's command table (cli_operations.ml's sr_*): each names its SR by uuid=.
import { XapiError } from '../../dispatch/errors.js';
import { Typed } from '../../transport/typed.js';
import { defineCommand, type CommandContext } from '../commands.js';
import { boolOf, byUuid, bytesOf, failure, mapParams, param, reqd } from './params.js';

/** The host a storage command acts from: host-uuid=, else the master when the SR is shared or
 * the pool has a single host (parse_host_uuid). */
export async function hostParam(ctx: CommandContext, defaultMaster = true): Promise<string> {
  const uuid = param(ctx.params, 'host-uuid');
  if (uuid !== undefined) return byUuid(ctx, 'host', uuid);
  const hosts = (await ctx.call('host.get_all')) as string[];
  if (hosts.length === 1 || defaultMaster) {
    const pools = (await ctx.call('pool.get_all')) as string[];
    return (await ctx.call('pool.get_master', pools[0])) as string;
  }
  throw failure('Required parameter not found: host-uuid');
}

defineCommand({
  name: 'sr-create',
  reqd: ['name-label', 'type'],
  optn: ['name-description', 'host-uuid', 'device-config:', 'shared', 'physical-size', 'content-type', 'sm-config:'],
  help: 'Create an SR and its PBD on the host; device-config:key=value pairs configure the storage.',
  run: async (ctx) => {
    const p = ctx.params;
    const shared = boolOf(p, 'shared');
    const host = await hostParam(ctx, shared);
    // (a size that does not parse counts as none)
    let physicalSize = 0;
    const size = param(p, 'physical-size');
    if (size !== undefined) try { physicalSize = bytesOf('physical-size', size); } catch { physicalSize = 0; }
    const config = mapParams(p, 'device-config');
    // `key-filename=path` asks for the value to be read from a file on the client's side, which
    // this server cannot ask the client for yet
    const fromFile = Object.keys(config).find((k) => k.endsWith('-filename'));
    if (fromFile !== undefined) throw new XapiError('NOT_IMPLEMENTED', [`sr-create device-config:${fromFile}`]);
    const sr = (await ctx.call('SR.create', host, config, physicalSize, reqd(ctx, 'name-label'),
      param(p, 'name-description') ?? '', reqd(ctx, 'type'), param(p, 'content-type') ?? '', shared, mapParams(p, 'sm-config'))) as string;
    // written straight to the client, --minimal or not
    ctx.printer.print({ t: 'raw', text: (await ctx.call('SR.get_uuid', sr)) as string });
  },
});

defineCommand({
  name: 'sr-probe',
  reqd: ['type'],
  optn: ['host-uuid', 'device-config:', 'sm-config:'],
  help: 'Ask a storage driver what SRs it sees with the given device-config; prints its XML answer.',
  run: async (ctx) => {
    const host = await hostParam(ctx);
    const txt = (await ctx.call('SR.probe', host, mapParams(ctx.params, 'device-config'), reqd(ctx, 'type'), mapParams(ctx.params, 'sm-config'))) as string;
    ctx.printer.print({ t: 'list', lines: [txt] });
  },
});

/** One result of SR.probe_ext. */
interface ProbeResult {
  configuration: Record<string, string>;
  complete: boolean;
  sr?: { uuid?: string; name_label: string; name_description: string; free_space: number; total_space: number; clustered: boolean; health: string } | null;
  extra_info: Record<string, string>;
}

defineCommand({
  name: 'sr-probe-ext',
  reqd: ['type'],
  optn: ['host-uuid', 'device-config:', 'sm-config:'],
  help: 'Ask a storage driver what SRs and configurations it sees with the given device-config.',
  run: async (ctx) => {
    const host = await hostParam(ctx);
    const raw = await ctx.call('SR.probe_ext', host, mapParams(ctx.params, 'device-config'), reqd(ctx, 'type'), mapParams(ctx.params, 'sm-config'));
    const results = ((raw instanceof Typed ? raw.value : raw) ?? []) as ProbeResult[];
    // xapi gathers each kind by consing onto a list: each comes out in reverse order
    const srs = results.filter((r) => r.sr).reverse();
    const complete = results.filter((r) => !r.sr && r.complete).reverse();
    const incomplete = results.filter((r) => !r.sr && !r.complete).reverse();
    const msg = (text: string) => ctx.printer.print({ t: 'msg', text });
    const table = (m: Record<string, string>) => ctx.printer.print({ t: 'table', records: [Object.entries(m)] });
    if (srs.length > 0) {
      msg('The following SRs were found:');
      srs.forEach((r, i) => {
        const s = r.sr!;
        msg(`SR ${i}:`);
        ctx.printer.print({ t: 'table', records: [[
          ...(s.uuid ? [['uuid', s.uuid] as [string, string]] : []),
          ['name-label', s.name_label], ['name-description', s.name_description], ['total-space', String(s.total_space)],
          ['free-space', String(s.free_space)], ['clustered', String(s.clustered)], ['health', s.health],
        ]] });
        msg(`SR ${i} configuration:`);
        table(r.configuration);
        msg(`SR ${i} extra information:`);
        table(r.extra_info);
      });
    }
    const configs = (title: string, list: ProbeResult[]) => {
      if (list.length === 0) return;
      msg(title);
      list.forEach((r, i) => {
        msg(`Configuration ${i}:`);
        table(r.configuration);
        msg(`Configuration ${i} extra information:`);
        table(r.extra_info);
      });
    };
    configs('Found the following complete configurations that can be used to create SRs:', complete);
    configs('Found the following incomplete configurations that may contain SRs:', incomplete);
  },
});

defineCommand({
  name: 'sr-introduce',
  reqd: ['name-label', 'type', 'uuid'],
  optn: ['name-description', 'shared', 'content-type'],
  help: 'Record an existing SR in the database (no PBD is made: create and plug one per host).',
  run: async (ctx) => {
    const p = ctx.params;
    const uuid = reqd(ctx, 'uuid');
    await ctx.call('SR.introduce', uuid, reqd(ctx, 'name-label'), param(p, 'name-description') ?? '', reqd(ctx, 'type'),
      param(p, 'content-type') ?? '', boolOf(p, 'shared'), mapParams(p, 'sm-config'));
    ctx.printer.print({ t: 'list', lines: [uuid] });
  },
});

/** A command that calls one SR message on the SR named by uuid=. */
function srOp(name: string, help: string, message: string): void {
  defineCommand({
    name, reqd: ['uuid'], optn: [], help,
    run: async (ctx) => {
      await ctx.call(message, await byUuid(ctx, 'SR', reqd(ctx, 'uuid')));
    },
  });
}

srOp('sr-scan', 'Rescan an SR: VDIs found on the storage are added, vanished ones removed.', 'SR.scan');
srOp('sr-destroy', 'Destroy an SR and everything stored on it.', 'SR.destroy');
srOp('sr-forget', 'Remove an SR and its VDIs from the database, leaving the storage as it is.', 'SR.forget');
srOp('sr-update', 'Refresh the fields of an SR from its storage.', 'SR.update');
