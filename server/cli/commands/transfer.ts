// The commands that move data through the client (cli_operations.ml, cli_util.ml): the server asks
// the client to GET or PUT one of this server's own HTTP handlers (HttpGet / HttpPut) in a task it
// made for the purpose, waits for the client's answer (Wait heartbeats meanwhile), then for the
// task, whose outcome is the command's; and the commands that read a file of the client (Load).
import { defineCommand, type CommandContext } from '../commands.js';
import { boolParam, param } from '../args.js';
import { doVmOp } from '../selectors.js';
import { CliFailure, ExitWithError, ParamNotFound } from '../errors.js';
import { ClientGone, clientOf, type CliClient } from '../exchange.js';
import { XapiError } from '../../dispatch/errors.js';
import type { Typed } from '../../transport/typed.js';
import type { CliRecord } from '../records.js';

type TaskStatus = 'pending' | 'success' | 'failure' | 'cancelling' | 'cancelled';

/** The longest wait for a task once the client is done with its side (wall seconds): the handler
 * ends the task as soon as its connection ends, so this bounds only a lost handler. */
const TASK_SETTLE_S = 30;

/** Waits until `task` leaves pending, for at most `maxS` seconds (event.from on the task). */
async function waitTask(ctx: CommandContext, task: string, maxS: number): Promise<TaskStatus> {
  const deadline = Date.now() + maxS * 1000;
  let token = '';
  for (;;) {
    const status = (await ctx.call('task.get_status', task)) as TaskStatus;
    if ((status !== 'pending' && status !== 'cancelling') || Date.now() >= deadline) return status;
    const left = Math.max(0.05, Math.min(1, (deadline - Date.now()) / 1000));
    const r = (await ctx.call('event.from', [`task/${task}`], token, left)) as Typed;
    token = (r.value as { token: string }).token;
  }
}

/** The task's status once the client answered: after a failure of the client, a task no handler
 * took (progress still -1) is failed here, so that it ends. */
async function settle(ctx: CommandContext, task: string, response: string): Promise<TaskStatus> {
  const status = await waitTask(ctx, task, response === 'OK' ? TASK_SETTLE_S : 1);
  if (status !== 'pending' || response === 'OK' || Number(await ctx.call('task.get_progress', task)) >= 0) return status;
  await ctx.call('task.set_status', task, 'failure').catch(() => undefined);
  return (await ctx.call('task.get_status', task)) as TaskStatus;
}

/** The client's answer to a transfer; 'Gone' when it went away meanwhile (its task still has to end). */
async function transfer(client: CliClient, command: Parameters<CliClient['transfer']>[0]): Promise<'OK' | 'Failed' | 'Gone'> {
  try {
    const r = await client.transfer(command);
    return r === 'OK' ? 'OK' : 'Failed';
  } catch (e) {
    if (e instanceof ClientGone) return 'Gone';
    throw e;
  }
}

/** A query string in xapi's order (values escaped: names and paths may hold any character). */
const query = (pairs: [string, string][]) => pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

/**
 * track_http_operation: the client transfers in a fresh task; a success of both sides answers
 * the task's result, a failure of either the task's error (CLIENT_ERROR when the client failed
 * before the handler knew of the task).
 */
async function trackHttpOperation(ctx: CommandContext, label: string, command: (task: string) => { t: 'HttpGet' | 'HttpPut'; filename: string; path: string }): Promise<string> {
  const task = (await ctx.call('task.create', label, '')) as string;
  try {
    // progress -1 until a handler takes the task (it sets 0): tells a handler that never got it
    await ctx.call('task.set_progress', task, -1);
    const response = await transfer(clientOf(ctx), command(task));
    const status = await settle(ctx, task, response);
    if (response === 'Gone') throw new ClientGone();
    if (response === 'OK' && status === 'success') return (await ctx.call('task.get_result', task)) as string;
    const info = (await ctx.call('task.get_error_info', task)) as string[];
    if (info.length > 0) throw new XapiError(info[0], info.slice(1));
    throw new XapiError(response === 'OK' ? 'INTERNAL_ERROR' : 'CLIENT_ERROR', []);
  } finally {
    await ctx.call('task.destroy', task).catch(() => undefined);
  }
}

const vdiByUuid = (ctx: CommandContext) => ctx.call('VDI.get_by_uuid', param(ctx.params, 'uuid')) as Promise<string>;

defineCommand({
  name: 'vdi-import',
  reqd: ['uuid', 'filename'],
  optn: ['format', 'progress'],
  help: 'Write the content of a local file (raw, or VHD with format=vhd) into a VDI.',
  run: async (ctx) => {
    const vdi = await vdiByUuid(ctx);
    const format = param(ctx.params, 'format');
    await trackHttpOperation(ctx, 'VDI import', (task) => ({
      t: 'HttpPut',
      filename: param(ctx.params, 'filename')!,
      path: `/import_raw_vdi?${query([['session_id', ctx.session], ['task_id', task], ['vdi', vdi], ...(format !== undefined ? [['format', format] as [string, string]] : [])])}`,
    }));
  },
});

defineCommand({
  name: 'vdi-export',
  reqd: ['uuid', 'filename'],
  optn: ['format', 'base', 'progress'],
  help: 'Write the content of a VDI into a local file (raw, or VHD with format=vhd; base= for the differences from another VDI). filename= "" writes to standard output.',
  run: async (ctx) => {
    const vdi = await vdiByUuid(ctx);
    const extra: [string, string][] = [];
    for (const k of ['format', 'base']) {
      const v = param(ctx.params, k);
      if (v !== undefined) extra.push([k, v]);
    }
    await trackHttpOperation(ctx, 'VDI export', (task) => ({
      t: 'HttpGet',
      filename: param(ctx.params, 'filename')!,
      path: `/export_raw_vdi?${query([['session_id', ctx.session], ['task_id', task], ['vdi', vdi], ...extra])}`,
    }));
  },
});

/** compress= as Compression_algorithms.of_string reads it, written back as its to_string. */
function compression(v: string | undefined): string {
  if (v === 'true' || v === 'gzip') return 'gzip';
  if (v === 'zstd') return 'zstd';
  return 'false';
}

/**
 * One VM's export (export_common and download_file): each VM after the first of several goes to
 * `filename` with its number appended. The task is the command's own, destroyed after.
 */
async function exportVm(ctx: CommandContext, vm: CliRecord, filename: string, num: { n: number }): Promise<void> {
  const metadata = boolParam(ctx.params, 'metadata');
  const task = (await ctx.call('task.create', 'Export of VM', vm.field('uuid').get())) as string;
  try {
    await ctx.call('task.set_progress', task, -1);
    const n = num.n++;
    const file = n > 1 ? `${filename}${n}` : filename;
    const pairs: [string, string][] = [
      ['session_id', ctx.session], ['task_id', task], ['ref', vm.ref], ['use_compression', compression(param(ctx.params, 'compress'))],
      ['preserve_power_state', String(boolParam(ctx.params, 'preserve-power-state'))], ['export_snapshots', String(boolParam(ctx.params, 'include-snapshots'))],
    ];
    if (metadata) pairs.push(['excluded_device_types', param(ctx.params, 'excluded-device-types') ?? '']);
    const client = clientOf(ctx);
    const response = await transfer(client, { t: 'HttpGet', filename: file, path: `${metadata ? '/export_metadata' : '/export'}?${query(pairs)}` });
    // a client that failed before the handler took the task: the task fails here
    const status = await settle(ctx, task, response);
    if (response === 'Gone') throw new ClientGone();
    if (status === 'success') {
      if (response !== 'OK') {
        client.send({ t: 'PrintStderr', text: 'Export failed, unknown error.\n' });
        throw new ExitWithError(1);
      }
      if (file !== '') client.send({ t: 'Print', text: 'Export succeeded' });
      return;
    }
    if (status === 'failure') {
      const info = (await ctx.call('task.get_error_info', task)) as string[];
      if (info.length > 0) throw new XapiError(info[0], info.slice(1));
      client.send({ t: 'PrintStderr', text: 'Export failed, unknown error\n' });
      return;
    }
    if (status === 'cancelled') {
      client.send({ t: 'PrintStderr', text: 'Export cancelled\n' });
      throw new ExitWithError(1);
    }
    client.send({ t: 'PrintStderr', text: 'Internal error\n' });
    throw new ExitWithError(1);
  } finally {
    await ctx.call('task.destroy', task).catch(() => undefined);
  }
}

defineCommand({
  name: 'vm-export',
  reqd: ['filename'],
  optn: ['preserve-power-state', 'compress', 'metadata', 'excluded-device-types', 'include-snapshots'],
  help: 'Write a VM (XVA; metadata=true for its metadata only) into a local file. filename= "" writes to standard output.',
  standard: true,
  selectors: 'vm',
  run: async (ctx) => {
    const filename = param(ctx.params, 'filename')!;
    const num = { n: 1 };
    await doVmOp(ctx, (vm) => exportVm(ctx, vm, filename, num), {
      ignore: ['filename', 'metadata', 'compress', 'preserve-power-state', 'include-snapshots', 'excluded-device-types'],
    });
  },
});

/** The pool's default SR, if it names an SR that exists (Cli_util.get_default_sr_uuid). */
async function defaultSr(ctx: CommandContext): Promise<string | null> {
  const [pool] = (await ctx.call('pool.get_all')) as string[];
  const sr = (await ctx.call('pool.get_default_SR', pool)) as string;
  try {
    await ctx.call('SR.get_uuid', sr);
    return sr;
  } catch {
    return null;
  }
}

/** What a task's result says of the VMs it made: an XML-RPC array of refs. */
const refsOfResult = (result: string): string[] => [...result.matchAll(/OpaqueRef:[^<\s]*/g)].map((m) => m[0]);

/** `<name>:<key>=<value>` parameters as (key, value) pairs (read_map_params). */
const mapParams = (ctx: CommandContext, name: string): [string, string][] =>
  ctx.params.filter(([k]) => k.startsWith(`${name}:`)).map(([k, v]) => [k.slice(name.length + 1), v]);

defineCommand({
  name: 'vm-import',
  reqd: [],
  optn: ['filename', 'preserve', 'sr-uuid', 'force', 'host-username', 'host-password', 'type', 'remote-config', 'dry-run', 'metadata', 'url', 'vdi:'],
  help: 'Import a VM from a local XVA file (filename=), or one the pool fetches (url=). metadata=true imports the metadata of a VM whose disks are already in the pool (vdi:<uuid in the export>=<uuid here> maps them); dry-run=true only checks. Prints the uuids of the VMs made.',
  standard: true,
  run: async (ctx) => {
    const client = clientOf(ctx);
    const srUuid = param(ctx.params, 'sr-uuid');
    const sr = srUuid !== undefined ? ((await ctx.call('SR.get_by_uuid', srUuid)) as string) : await defaultSr(ctx);
    if (sr === null) throw new CliFailure('No SR specified and Pool default SR is null');
    const type = param(ctx.params, 'type') ?? 'default';
    const fullRestore = boolParam(ctx.params, 'preserve');
    const metadata = boolParam(ctx.params, 'metadata');
    const force = boolParam(ctx.params, 'force');
    const dryRun = boolParam(ctx.params, 'dry-run');
    const url = param(ctx.params, 'url');
    let filename = param(ctx.params, 'filename');
    if (url !== undefined && filename !== undefined) {
      client.send({ t: 'PrintStderr', text: "Invalid arguments. The 'url' and 'filename' parameters should not both be specified.\n" });
      throw new ExitWithError(1);
    }
    if (!['default', 'XenServer', 'ESXServer', 'VirtualCenter', 'HyperVServer'].includes(type)) throw new XapiError('INVALID_VALUE', [type]);
    if (type !== 'default' && type !== 'XenServer') {
      const need = (k: string) => {
        const v = param(ctx.params, k);
        if (v === undefined) throw new ParamNotFound(k);
        return v;
      };
      await ctx.call('VM.import_convert', type, need('host-username'), need('host-password'), sr, Object.fromEntries(mapParams(ctx, 'remote-config')));
      return;
    }
    const uuidsOf = (refs: string[]) => Promise.all(refs.map((vm) => ctx.call('VM.get_uuid', vm) as Promise<string>));
    if (url !== undefined) {
      const vms = (await ctx.call('VM.import', url, sr, fullRestore, force)) as string[];
      client.send({ t: 'Print', text: (await uuidsOf(vms)).join(',') });
      return;
    }
    if (filename === undefined) throw new ParamNotFound('filename');
    if (!metadata && dryRun) {
      client.send({ t: 'PrintStderr', text: 'Only metadata import function support dry-run\n' });
      throw new ExitWithError(1);
    }
    // filename=<dir>/ova.xml means the unpacked export in <dir>
    if (filename.toLowerCase().endsWith('ova.xml')) filename = filename.slice(0, -'ova.xml'.length);
    const file = filename;
    const pairs: [string, string][] = [['restore', String(fullRestore)], ['force', String(force)], ['dry_run', String(dryRun)], ['sr_id', sr], ...mapParams(ctx, 'vdi').map(([a, b]) => [`vdi:${a}`, b] as [string, string])];
    const result = await trackHttpOperation(ctx, 'VM import', (task) => ({
      t: 'HttpPut',
      filename: file,
      path: `${metadata ? '/import_metadata' : '/import'}?${query([['session_id', ctx.session], ['task_id', task], ...pairs])}`,
    }));
    const uuids = await uuidsOf(refsOfResult(result));
    client.send({ t: 'Print', text: (uuids.length === 0 && dryRun ? ['xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'] : uuids).join(',') });
  },
});

defineCommand({
  name: 'pool-install-ca-certificate',
  reqd: ['filename'],
  optn: [],
  help: 'Install a TLS CA certificate (a local PEM file) for the whole pool.',
  run: async (ctx) => {
    const filename = param(ctx.params, 'filename')!;
    const client = clientOf(ctx);
    const cert = await client.load(filename);
    if (cert === null) {
      client.send({ t: 'PrintStderr', text: 'Failed to read certificate\n' });
      throw new ExitWithError(1);
    }
    await ctx.call('pool.install_ca_certificate', filename.slice(filename.lastIndexOf('/') + 1), cert.toString('utf8'));
  },
});
