// The shape of the CLI's record tables (server/cli/generated/records.ts): a CLI record is a list of
// named fields, each read from an API field of the object (or of the object its `via` field points
// at, e.g. VM_metrics), and written through the API message a client would call.

/** How a value is printed when the API type alone does not say (records.ml's own conversions). */
export type CliFormat = 'name' | 'comma' | 'lower' | 'uuid_or_null';

export interface CliField {
  /** the CLI's name: name-label, power-state, other-config ... */
  name: string;
  /** the API field it shows; absent: a value xapi computes by other calls (not shown here yet) */
  field?: string;
  /** a value read from every host (a host field), shown when they all agree, else "<inconsistent>" */
  hosts?: string;
  /** the class of a record reached through a ref field of the object (VM_metrics, VM_guest_metrics) */
  via?: string;
  /** printed when that record is absent */
  none?: string;
  fmt?: CliFormat;
  /** an enum shown under names of the CLI's own (generated cliEnumNames) */
  names?: string;
  /** `Class.message` that each operation calls ('' when xapi does it by other means) */
  set?: string;
  add_to_map?: string;
  remove_from_map?: string;
  add_to_set?: string;
  remove_from_set?: string;
  set_in_map?: string;
  set_map?: string;
  clear_map?: string;
  /** a set or map field (filters `f:contains=`, `f:key=`; suffixes (SRO) (MRW) ...) */
  is?: 'set' | 'map';
  hidden?: boolean;
  deprecated?: boolean;
  expensive?: boolean;
  case_insensitive?: boolean;
}

export interface CliClass {
  /** the name in commands: vm, template, vdi, host-cpu ... */
  cli: string;
  /** the records.ml record it shows */
  record: string;
  /** the API class */
  class: string;
  /** filters always applied by <cli>-list */
  filters: [string, string][];
  /** the columns of <cli>-list without params= */
  list: string[];
}
