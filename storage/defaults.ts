// Default values of fields: the schema's default, else the zero of the field's type.
import { model, type FieldMeta, type Ty } from '../schema/index.js';

export const EPOCH = '19700101T00:00:00Z';

export function cloneValue<T>(v: T): T {
  if (v === null || typeof v !== 'object') return v;
  return structuredClone(v);
}

export function zeroOf(ty: Ty): unknown {
  switch (ty.k) {
    case 'string': return '';
    case 'int': case 'float': case 'int32': return 0;
    case 'bool': return false;
    case 'datetime': return EPOCH;
    case 'ref': return 'OpaqueRef:NULL';
    case 'enum': return model.enums[ty.name]?.[0] ?? '';
    case 'set': return [];
    case 'map': case 'struct': case 'record': return {};
    case 'option': return undefined;
    default: return '';
  }
}

export function defaultFor(f: FieldMeta): unknown {
  return f.default !== undefined ? cloneValue(f.default) : zeroOf(f.ty);
}
