// What a data directory remembers of pool membership: the journal of a hand-over under way
// (pool-join.json: the joiner stays standalone until the master has committed) and the member
// marker (pool-member.json: this instance's host now belongs to the pool whose master is named,
// and the instance serves as a door to it).
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface JoinJournal {
  /** the master's base URL */
  master: string;
  /** the joining host's uuid */
  host: string;
  /** the pool secret the master gave */
  secret: string;
}

export interface MemberMarker {
  master: string;
  host: string;
  /** the host's address, where the instance keeps listening */
  address: string;
  /** the pool secret, for the pool-internal calls of a restart */
  secret: string;
}

const JOURNAL = 'pool-join.json';
const MEMBER = 'pool-member.json';

function readJson<T>(file: string): T | undefined {
  try {
    return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined;
  } catch {
    return undefined;
  }
}

/** Written whole or not at all (a rename), so that a kill never leaves half a file. */
function writeJson(file: string, v: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(v));
  renameSync(`${file}.tmp`, file);
}

export const readJournal = (dataDir: string): JoinJournal | undefined => readJson<JoinJournal>(join(dataDir, JOURNAL));
export const writeJournal = (dataDir: string, j: JoinJournal): void => writeJson(join(dataDir, JOURNAL), j);
export const clearJournal = (dataDir: string): void => rmSync(join(dataDir, JOURNAL), { force: true });
export const readMember = (dataDir: string): MemberMarker | undefined => readJson<MemberMarker>(join(dataDir, MEMBER));
export const writeMember = (dataDir: string, m: MemberMarker): void => writeJson(join(dataDir, MEMBER), m);
export const clearMember = (dataDir: string): void => rmSync(join(dataDir, MEMBER), { force: true });
