// The status summary's route.
import { contract, type Route } from '../contract/index.js';
import { summarize } from '../status/summary.js';
import { handlers, type AreaHandlers } from './index.js';

let getRoutes: string[] | undefined;
/** GET routes of the contract that have a handler (the page asks for /faults only when there is one) */
function implementedGetRoutes(): string[] {
  if (getRoutes) return getRoutes;
  const byArea = handlers as unknown as Record<string, Record<string, unknown> | undefined>;
  getRoutes = [];
  for (const [area, routes] of Object.entries(contract)) {
    for (const [op, r] of Object.entries(routes as Record<string, Route>)) {
      if (r.method === 'GET' && typeof byArea[area]?.[op] === 'function') getRoutes.push(r.path);
    }
  }
  return getRoutes;
}

export const statusHandlers: AreaHandlers<'status'> = {
  get: ({ emu }, input) => summarize(emu, { events: input.events, tasks: input.tasks, routes: implementedGetRoutes() }),
};
