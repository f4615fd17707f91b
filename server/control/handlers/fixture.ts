// The fixture routes.
import type { AreaHandlers } from './index.js';
import { ControlError } from '../errors.js';
import { exportFixture, fixtureText } from '../fixture/export.js';
import { loadFixture } from '../fixture/load.js';
import { FixtureError } from '../fixture/schema.js';

export const fixtureHandlers: AreaHandlers<'fixture'> = {
  export: async ({ emu, reply }, input) => {
    const doc = await exportFixture(emu);
    if (input.format !== 'yaml') return doc;
    reply.header('cache-control', 'no-store').type('application/yaml; charset=utf-8').send(fixtureText(doc, 'yaml'));
    return doc;
  },
  load: async ({ emu }, input) => {
    const before = new Set(emu.db.table('VM').keys());
    try {
      await loadFixture(emu, input.fixture, { files: false });
    } catch (e) {
      if (e instanceof FixtureError) throw new ControlError(400, 'INVALID_FIXTURE', e.message, e.problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)));
      throw e;
    }
    const made = [...emu.db.table('VM')].filter(([ref, row]) => !before.has(ref) && row.rec.is_a_snapshot !== true);
    return { vms: made.map(([, row]) => String(row.rec.uuid)) };
  },
};
