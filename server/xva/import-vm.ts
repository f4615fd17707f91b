// A whole VM from an XVA stream (xapi's Import.stream_import), whoever brings the stream: PUT
// /import, or VM.import fetching a URL. ova.xml is read and checked, the objects made, the disks
// received; on failure whatever was made is destroyed (unless forced, as xapi). And the metadata
// alone (Import.metadata_handler), onto the VDIs already in the pool.
import type { Emulator } from '../emulator.js';
import { XapiError } from '../dispatch/errors.js';
import { XvaArchive, importFailure } from './read-archive.js';
import { assertCompatible, cleanup, completeImport, importObjects, parseHeader, type ImportConfig, type ImportState, type XvaHeader } from './import-objects.js';
import { receiveDisks } from './receive-disks.js';
import { beginImport, endImport } from './import-journal.js';

export interface XvaImportRun {
  emu: Emulator;
  session: string;
  host: string;
  /** the task the import runs in (its objects are tagged with it) */
  task: string;
  sr: string;
  fullRestore: boolean;
  force: boolean;
  /** throws when the import must stop (cancellation) */
  check: () => void;
  /** told the bytes of the disks received so far, out of `total` */
  progress: (done: number, total: number) => void;
  /** told once the objects exist (before the disks come) */
  objectsCreated?: () => void;
}

/** Import.assert_can_restore_backup: a restored VM may not share its MAC seed with another VM
 * (the same VM, or a snapshot and its VM, are not "another"). */
export function assertCanRestoreBackup(emu: Emulator, header: XvaHeader): void {
  const seeds = new Map<string, string>(); // mac_seed → uuid of an existing VM
  const snapshots = new Set<string>();
  for (const [, row] of emu.db.table('VM')) {
    const seed = (row.rec.other_config as Record<string, string>).mac_seed;
    if (seed !== undefined) seeds.set(seed, String(row.rec.uuid));
    if (row.rec.is_a_snapshot === true) snapshots.add(String(row.rec.uuid));
  }
  for (const o of header.objects) {
    if (o.cls !== 'VM') continue;
    const s = o.snapshot as Record<string, unknown>;
    const seed = (s.other_config as Record<string, string> | undefined)?.mac_seed;
    const other = seed === undefined ? undefined : seeds.get(seed);
    if (other === undefined || other === s.uuid) continue;
    // (what a snapshot derives from is not followed here: snapshots are taken as compatible)
    if (s.is_a_snapshot === true || snapshots.has(other)) continue;
    throw new XapiError('DUPLICATE_MAC_SEED', [seed!]);
  }
}

/** Import.with_error_handling around one import: the archive opened and checked, the objects made
 * in `mode`, then `rest` (the disks); what fails is undone (unless forced). The imported VMs
 * (Import.complete_import's choice). */
async function runImport(
  run: Omit<XvaImportRun, 'sr' | 'progress' | 'objectsCreated'>,
  input: AsyncIterable<Buffer>,
  mode: ImportConfig['mode'],
  rest: (archive: XvaArchive, state: ImportState) => Promise<void>,
): Promise<string[]> {
  const { emu } = run;
  let archive: XvaArchive | null = null;
  let state: ImportState | null = null;
  try {
    const opened = await XvaArchive.open(input);
    archive = opened.archive;
    const header = parseHeader(opened.ova);
    assertCompatible(emu, run.host, header.version);
    if (run.fullRestore) assertCanRestoreBackup(emu, header);
    const ctx = { emu, session: run.session, host: run.host, task: run.task };
    // (recorded first: a stop of the emulator from here on is undone when it starts again)
    beginImport(emu, run.task);
    state = await importObjects(ctx, header, { mode, fullRestore: run.fullRestore, force: run.force });
    await rest(archive, state);
    run.check();
    return completeImport(emu, run.task, state.createdVms);
  } catch (e) {
    if (state && !run.force) await cleanup(state);
    // what is not an API error is an IMPORT_ERROR
    if (e instanceof XapiError) throw e;
    throw importFailure(String((e as Error)?.message ?? e));
  } finally {
    endImport(emu, run.task);
    archive?.close();
  }
}

/** PUT /import: the VMs of an XVA with their disks. */
export function importXvaStream(run: XvaImportRun, input: AsyncIterable<Buffer>): Promise<string[]> {
  return runImport(run, input, { kind: 'full', sr: run.sr }, async (archive, state) => {
    run.objectsCreated?.();
    run.emu.db.flush();
    const total = state.disks.reduce((t, d) => t + d.size, 0);
    await receiveDisks(run.emu, archive, state.disks, { force: run.force, progress: (done) => run.progress(done, total), check: run.check });
  });
}

/** Import.metadata_handler's import: the objects of ova.xml without disks; the VMs made (none for a
 * dry run, which only checks that everything would be found). */
export function importMetadataStream(
  run: Omit<XvaImportRun, 'sr' | 'progress' | 'objectsCreated'>,
  input: AsyncIterable<Buffer>,
  o: { vdiMap: Map<string, string>; dryRun: boolean },
): Promise<string[]> {
  return runImport(run, input, { kind: 'metadata', vdiMap: o.vdiMap, dryRun: o.dryRun }, async () => undefined);
}
