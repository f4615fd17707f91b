// The guest's display as qemu's VGA shows it in text mode: 80x25 cells of 9x16 pixels (720x400),
// light grey on black. Pixels are kept as palette indices; each client's encoder turns them into
// its own pixel format.
import { CELL_HEIGHT, CELL_WIDTH, CURSOR_CHAR, glyph } from './font.js';
import { COLS, ROWS } from './terminal.js';

export const WIDTH = COLS * CELL_WIDTH;
export const HEIGHT = ROWS * CELL_HEIGHT;
/** the VGA text palette entries in use: black, light grey */
export const PALETTE: readonly [number, number, number][] = [
  [0, 0, 0],
  [170, 170, 170],
];

export interface Band {
  y0: number;
  /** exclusive */
  y1: number;
}

export interface Screen {
  rows: string[];
  cursor: { row: number; col: number } | null;
}

export class Framebuffer {
  readonly pixels = new Uint8Array(WIDTH * HEIGHT);
  private readonly drawn: string[] = new Array<string>(ROWS).fill('');

  /** Draws a screen; returns the band of pixel rows that changed (null: none). */
  draw(screen: Screen): Band | null {
    let band: Band | null = null;
    for (let r = 0; r < ROWS; r++) {
      let text = (screen.rows[r] ?? '').slice(0, COLS);
      if (screen.cursor && screen.cursor.row === r) text = text.padEnd(screen.cursor.col, ' ') + CURSOR_CHAR;
      if (text === this.drawn[r]) continue;
      this.drawn[r] = text;
      this.drawRow(r, text);
      const y0 = r * CELL_HEIGHT;
      band = band ? { y0: band.y0, y1: y0 + CELL_HEIGHT } : { y0, y1: y0 + CELL_HEIGHT };
    }
    return band;
  }

  private drawRow(r: number, text: string): void {
    const top = r * CELL_HEIGHT * WIDTH;
    this.pixels.fill(0, top, top + CELL_HEIGHT * WIDTH);
    for (let c = 0; c < text.length && c < COLS; c++) {
      const cell = glyph(text[c]);
      const left = top + c * CELL_WIDTH;
      for (let y = 0; y < CELL_HEIGHT; y++) {
        const row = left + y * WIDTH;
        for (let x = 0; x < CELL_WIDTH; x++) if (cell[y * CELL_WIDTH + x]) this.pixels[row + x] = 1;
      }
    }
  }

  /** The screen as RGBA (for a JPEG snapshot). */
  rgba(): Buffer {
    const out = Buffer.alloc(WIDTH * HEIGHT * 4);
    for (let i = 0; i < this.pixels.length; i++) {
      const [r, g, b] = PALETTE[this.pixels[i]];
      out[i * 4] = r;
      out[i * 4 + 1] = g;
      out[i * 4 + 2] = b;
      out[i * 4 + 3] = 255;
    }
    return out;
  }
}
