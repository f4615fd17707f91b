// The committed schema/generated/ must be what the generator produces from the datamodel dump.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generate, defaultSource, outDir } from '../../schema/generator/generate.js';
import { classes, messages, model } from '../../schema/index.js';

describe('schema', () => {
  it.runIf(existsSync(defaultSource))('committed output matches the generator', () => {
    const files = generate(JSON.parse(readFileSync(defaultSource, 'utf8')));
    for (const [name, text] of Object.entries(files)) {
      expect(readFileSync(join(outDir, name), 'utf8'), name).toBe(text);
    }
  });

  it('holds the whole datamodel', () => {
    expect(model.classes).toHaveLength(73);
    expect(model.classes.reduce((n, c) => n + c.fields.length, 0)).toBe(921);
    expect(messages.size).toBe(2258);
    expect(Object.keys(model.errors)).toHaveLength(635);
  });

  it('indexes fields with wire and DB names', () => {
    const f = classes.get('VM')!.field.get('name_label')!;
    expect(f.db).toBe('name__label');
    expect(f.qualifier).toBe('RW');
    expect(classes.get('VM')!.fieldByDb.get('name__label')).toBe(f);
    expect(messages.get('VM.get_name_label')!.field).toBe(f);
    expect(messages.get('VM.start')!.params.map((p) => p.name)).toEqual(['vm', 'start_paused', 'force']);
  });
});
