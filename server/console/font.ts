// The glyphs the simulated VGA text mode draws with: the "seven plus" pixel font of js-pixel-fonts
// (5 pixels wide at most, 7 high plus descenders), placed in the 9x16 character cells of VGA's
// 80x25 text mode.
import { createRequire } from 'node:module';

export const CELL_WIDTH = 9;
export const CELL_HEIGHT = 16;
/** where a glyph's top row sits in its cell (the font's tallest glyphs, with descenders, are 9 high) */
const TOP = 3;
const LEFT = 2;

interface FontGlyph {
  offset: number;
  pixels: number[][];
}

const { fonts } = createRequire(import.meta.url)('js-pixel-fonts') as { fonts: { sevenPlus: { glyphs: Record<string, FontGlyph> } } };

/** A character's cell: CELL_WIDTH x CELL_HEIGHT bytes, 1 where the glyph is lit. */
export type Cell = Uint8Array;

const cells = new Map<string, Cell>();
const BLANK: Cell = new Uint8Array(CELL_WIDTH * CELL_HEIGHT);

function cellOf(g: FontGlyph): Cell {
  const c = new Uint8Array(CELL_WIDTH * CELL_HEIGHT);
  g.pixels.forEach((row, y) => {
    row.forEach((on, x) => {
      const cy = TOP + g.offset + y;
      const cx = LEFT + x;
      if (on && cy < CELL_HEIGHT && cx < CELL_WIDTH) c[cy * CELL_WIDTH + cx] = 1;
    });
  });
  return c;
}

for (const [ch, g] of Object.entries(fonts.sevenPlus.glyphs)) if (ch.length === 1) cells.set(ch, cellOf(g));
// the font has no cursor: VGA's underline cursor
const CURSOR = new Uint8Array(CELL_WIDTH * CELL_HEIGHT);
CURSOR.fill(1, 13 * CELL_WIDTH, 15 * CELL_WIDTH);
cells.set('\u2581', CURSOR);

/** The cell of a character (a box for those the font lacks, as a VGA font's missing glyph). */
export function glyph(ch: string): Cell {
  if (ch === ' ') return BLANK;
  return cells.get(ch) ?? cells.get('?') ?? BLANK;
}

/** The character drawn as the cursor. */
export const CURSOR_CHAR = '\u2581';
