// An emulated pool for a test file, started in the test's process on an ephemeral port with a root
// session on it, and the objects of the default pool that tests look up.
import { join } from 'node:path';
import { startServer, type RunningServer, type ServerOptions } from '../../../server/app.js';
import { connect, type Client } from './jsonrpc.js';

/** A server of `opts` (in memory, failed logins answered at once, unless told) and a root session. */
export async function startPool(password: string, opts: ServerOptions = {}): Promise<{ srv: RunningServer; x: Client }> {
  const srv = await startServer({ port: 0, memory: true, password, authFailDelay: 0, ...opts });
  try {
    return { srv, x: await connect(srv.urls[0], 'root', password) };
  } catch (e) {
    await srv.close();
    throw e;
  }
}

/** The first SR named "Local storage" (the master's, in a pool of one host). */
export const localStorage = async (x: Client): Promise<string> => (await x.call('SR.get_by_name_label', 'Local storage'))[0];

/** The network on bridge xenbr0, the one every host's management PIF is on. */
export const xenbr0 = async (x: Client): Promise<string> => (await x.call('network.get_all_where', 'field "bridge" = "xenbr0"'))[0];

/** A shared file SR named "Shared", created from `host`, under the pool's storage directory. */
export const createSharedSr = (x: Client, srv: RunningServer, host: string): Promise<string> =>
  x.call('SR.create', host, { location: join(srv.emu.storageDir, 'shared-sr') }, 0, 'Shared', '', 'file', 'user', true, {});
