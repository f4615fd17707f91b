// The XML SM drivers print for probes, as Python's xml.dom.minidom toprettyxml() lays it out:
// an XML declaration, one element per line, tab indents, leaf text inline, empty elements closed.
export interface XmlNode {
  name: string;
  text?: string;
  children?: XmlNode[];
}

const escapeText = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function render(n: XmlNode, depth: number, out: string[]): void {
  const pad = '\t'.repeat(depth);
  if (n.text !== undefined) {
    out.push(`${pad}<${n.name}>${escapeText(n.text)}</${n.name}>\n`);
  } else if (!n.children?.length) {
    out.push(`${pad}<${n.name}/>\n`);
  } else {
    out.push(`${pad}<${n.name}>\n`);
    for (const c of n.children) render(c, depth + 1, out);
    out.push(`${pad}</${n.name}>\n`);
  }
}

export function prettyXml(root: XmlNode): string {
  const out = ['<?xml version="1.0" ?>\n'];
  render(root, 0, out);
  return out.join('');
}

/** An element whose children are leaves, in the order given (undefined values left out). */
export function record(name: string, fields: [string, string | number | undefined][]): XmlNode {
  return { name, children: fields.filter(([, v]) => v !== undefined).map(([k, v]) => ({ name: k, text: String(v) })) };
}
