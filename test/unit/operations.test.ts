// The pure parts of server/api/operations.ts: OCaml's variant hashes, which order xapi's enum sets.
import { describe, expect, it } from 'vitest';
import { ocamlSetOrder, ocamlVariantHash } from '../../server/api/operations.js';

describe('ocamlVariantHash', () => {
  it('is caml_hash_variant', () => {
    // one character: its code; two: 223 * first + second
    expect(ocamlVariantHash('A')).toBe(65);
    expect(ocamlVariantHash('ab')).toBe(223 * 97 + 98);
    // long tags wrap to 31 bits, sign-extended
    for (const t of ['clone', 'generate_config', 'resize_online']) {
      const h = ocamlVariantHash(t);
      expect(h).toBeGreaterThanOrEqual(-(2 ** 30));
      expect(h).toBeLessThan(2 ** 30);
    }
  });

  it('orders vdi_operations sets as xapi prints them', () => {
    expect(ocamlSetOrder(['clone', 'copy', 'resize', 'resize_online', 'snapshot', 'destroy', 'forget', 'update', 'generate_config']))
      .toEqual(['copy', 'generate_config', 'clone', 'resize_online', 'forget', 'update', 'resize', 'snapshot', 'destroy']);
  });
});
