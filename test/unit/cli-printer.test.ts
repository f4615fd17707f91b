// The CLI's command-line parsing and record printer, as xapi's cli_frontend and cli_printer.
import { describe, expect, it } from 'vitest';
import { parseBody, parseCommandLine } from '../../server/cli/args.js';
import { ParseError } from '../../server/cli/errors.js';
import { escapeCommas, formatRecord, Printer } from '../../server/cli/printer.js';
import type { Command } from '../../server/cli/protocol.js';

describe('command line', () => {
  it('reads k=v (the value may hold "="), --flag as true, and the two-word switches', () => {
    expect(parseCommandLine(['vm-list', 'name-label=a=b', '--minimal', '-u', 'root', 'other-config:k=v', 'bare'])).toEqual({
      cmdname: 'vm-list',
      params: [['name-label', 'a=b'], ['minimal', 'true'], ['username', 'root'], ['other-config:k', 'v'], ['bare', '']],
    });
  });
  it('fails as xapi does on a missing command name, an unknown switch, a switch without value', () => {
    expect(() => parseCommandLine(['uuid=1'])).toThrow(new ParseError('command name is missing'));
    expect(() => parseCommandLine(['vm-list', '-z', 'x'])).toThrow(ParseError);
    expect(() => parseCommandLine(['vm-list', '-u'])).toThrow(ParseError);
  });
  it('takes a first session_id= line apart and strips CRs', () => {
    expect(parseBody('session_id=OpaqueRef:abc\r\nvm-list\r\n--minimal')).toEqual({ session: 'OpaqueRef:abc', args: ['vm-list', '--minimal'] });
    expect(parseBody('vm-list\nusername=root\npassword=p')).toEqual({ session: null, args: ['vm-list', 'username=root', 'password=p'] });
  });
});

describe('record printer', () => {
  it('aligns keys to 4 + the longest: the first padded on the right, the others on the left', () => {
    expect(formatRecord([['uuid ( RO)', 'u'], ['name-label ( RW)', 'n'], ['power-state ( RO)', 'running']])).toBe(
      'uuid ( RO)           : u\n     name-label ( RW): n\n    power-state ( RO): running\n',
    );
  });
  it('escapes commas and backslashes for --minimal', () => {
    expect(escapeCommas('a,b\\c')).toBe('a\\,b\\\\c');
  });
  it('prints each record as one Print; --minimal one line at the end, prints stacked last first', () => {
    const sent: Command[] = [];
    const p = new Printer((c) => sent.push(c), false);
    p.print({ t: 'table', records: [[['k', 'v']], [['k', 'w']]] });
    p.print({ t: 'stderr', text: 'oops' });
    p.flush();
    expect(sent).toEqual([{ t: 'Print', text: 'k    : v\n\n' }, { t: 'Print', text: 'k    : w\n\n' }, { t: 'PrintStderr', text: 'oops\n' }]);
    const min: Command[] = [];
    const m = new Printer((c) => min.push(c), true);
    m.print({ t: 'table', records: [[['k', 'a,1']], [['k', 'b']]] });
    m.print({ t: 'msg', text: 'left out' });
    m.print({ t: 'list', lines: ['c', 'd'] });
    expect(min).toEqual([]);
    m.flush();
    expect(min).toEqual([{ t: 'Print', text: 'c,d,a\\,1,b' }]);
  });
});
