// SM's probe XML is what Python's xml.dom.minidom toprettyxml() prints: compared with Python's own.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { prettyXml, record } from '../../server/sm/probe-xml.js';

const PY = `
import sys, xml.dom.minidom
dom = xml.dom.minidom.Document()
root = dom.createElement("iscsi-target-iqns"); dom.appendChild(root)
for i, (ip, iqn) in enumerate([("10.0.0.1", "iqn.2026-01.a:b&c"), ("10.0.0.1", "*")]):
    e = dom.createElement("TGT"); root.appendChild(e)
    for k, v in (("Index", str(i)), ("IPAddress", ip), ("TargetIQN", iqn)):
        s = dom.createElement(k); e.appendChild(s); s.appendChild(dom.createTextNode(v))
empty = xml.dom.minidom.Document(); empty.appendChild(empty.createElement("SRlist"))
sys.stdout.write(dom.toprettyxml() + "\\x00" + empty.toprettyxml())
`;

describe('probe XML', () => {
  it('lays out elements, text and empty lists as minidom does', () => {
    const [iqns, empty] = execFileSync('/usr/bin/python3', ['-c', PY], { encoding: 'utf8' }).split('\0');
    const ours = prettyXml({
      name: 'iscsi-target-iqns',
      children: [['10.0.0.1', 'iqn.2026-01.a:b&c'], ['10.0.0.1', '*']].map(([ip, iqn], i) => record('TGT', [['Index', i], ['IPAddress', ip], ['TargetIQN', iqn]])),
    });
    expect(ours).toBe(iqns);
    expect(prettyXml({ name: 'SRlist', children: [] })).toBe(empty);
  });
});
