// The path under which the control API lives.
export const CONTROL_PREFIX = '/xapi-emu';
