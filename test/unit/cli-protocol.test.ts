// The thin-CLI framing against the byte vectors of xapi's protocol (int32 little-endian).
import { describe, expect, it } from 'vitest';
import { Decoder, encodeCommand, encodeHandshake, encodeMessage, ProtocolError, type Message } from '../../server/cli/protocol.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('thin CLI protocol framing', () => {
  it('encodes the reference vectors', () => {
    expect(encodeCommand({ t: 'Print', text: 'hi' })).toEqual(hex('0e000000 09000000 00000000 02000000 6869'));
    expect(encodeCommand({ t: 'Exit', code: 0 })).toEqual(hex('0c000000 09000000 04000000 00000000'));
    expect(encodeMessage({ kind: 'Response', response: 'OK' })).toEqual(hex('08000000 0a000000 05000000'));
    expect(encodeMessage({ kind: 'Blob', blob: { t: 'End' } })).toEqual(hex('08000000 0b000000 08000000'));
  });

  it('writes the 35-byte handshake: prefix, major 0, minor 2', () => {
    const h = encodeHandshake();
    expect(h.length).toBe(35);
    expect(h.toString('latin1', 0, 27)).toBe('XenSource thin CLI protocol');
    expect(h.subarray(27)).toEqual(hex('00000000 02000000'));
  });

  it('round-trips every command, response and blob header', () => {
    const all: Message[] = [
      { kind: 'Command', command: { t: 'Print', text: 'héllo' } },
      { kind: 'Command', command: { t: 'Debug', text: 'd' } },
      { kind: 'Command', command: { t: 'Load', filename: 'disk.img' } },
      { kind: 'Command', command: { t: 'HttpGet', filename: 'out', path: '/export?uuid=x' } },
      { kind: 'Command', command: { t: 'HttpPut', filename: 'in', path: '/import' } },
      { kind: 'Command', command: { t: 'HttpConnect', path: '/console' } },
      { kind: 'Command', command: { t: 'Prompt' } },
      { kind: 'Command', command: { t: 'Exit', code: 1 } },
      { kind: 'Command', command: { t: 'Error', code: 'SOME_CODE', params: ['a', 'b'] } },
      { kind: 'Command', command: { t: 'PrintStderr', text: 'err\n' } },
      { kind: 'Response', response: 'OK' },
      { kind: 'Response', response: 'Failed' },
      { kind: 'Response', response: 'Wait' },
      { kind: 'Blob', blob: { t: 'End' } },
    ];
    const d = new Decoder({ handshake: false });
    const got = d.push(Buffer.concat(all.map(encodeMessage)));
    expect(got).toEqual(all.map((message) => ({ t: 'message', message })));
    // Error: code, then a list of strings
    expect(encodeCommand({ t: 'Error', code: 'E', params: ['p'] })).toEqual(hex('16000000 09000000 0e000000 01000000 45 01000000 01000000 70'));
  });

  it('decodes byte by byte, handshake first, raw bytes after a chunk header', () => {
    const stream = Buffer.concat([
      encodeHandshake(),
      encodeMessage({ kind: 'Blob', blob: { t: 'Chunk', length: 5 } }),
      Buffer.from('abcde'),
      encodeMessage({ kind: 'Blob', blob: { t: 'End' } }),
    ]);
    expect(encodeMessage({ kind: 'Blob', blob: { t: 'Chunk', length: 5 } })).toEqual(hex('0c000000 0b000000 07000000 05000000'));
    const d = new Decoder();
    const got = [];
    for (const byte of stream) got.push(...d.push(Buffer.from([byte])));
    expect(got[0]).toEqual({ t: 'handshake', major: 0, minor: 2 });
    expect(got[1]).toEqual({ t: 'message', message: { kind: 'Blob', blob: { t: 'Chunk', length: 5 } } });
    expect(Buffer.concat(got.filter((g) => g.t === 'data').map((g) => (g as { data: Buffer }).data)).toString()).toBe('abcde');
    expect(got.at(-1)).toEqual({ t: 'message', message: { kind: 'Blob', blob: { t: 'End' } } });
    expect(d.pending).toBe(0);
  });

  it('rejects what is not the protocol', () => {
    expect(() => new Decoder().push(Buffer.from('HTTP/1.1 200 OK\r\n'))).toThrow(ProtocolError);
    expect(() => new Decoder({ handshake: false }).push(hex('08000000 63000000 00000000'))).toThrow(ProtocolError);
    expect(() => new Decoder({ handshake: false }).push(hex('ffffffff'))).toThrow(ProtocolError);
  });
});
