// The NBD protocol's numbers (the fixed newstyle handshake and the transmission phase), in the
// protocol document's own names.
export const NBDMAGIC = Buffer.from('NBDMAGIC');
export const IHAVEOPT = Buffer.from('IHAVEOPT');
export const REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 1;
export const FLAG_NO_ZEROES = 2;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
export const REP = {
  ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001, ERR_POLICY: 0x80000002, ERR_INVALID: 0x80000003, ERR_TLS_REQD: 0x80000005, ERR_UNKNOWN: 0x80000006,
} as const;
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const TFLAG = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_DF: 128, CAN_MULTI_CONN: 256 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CMD_FLAG_REQ_ONE = 8;
export const REPLY_FLAG_DONE = 1;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001 } as const;
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
export const ERRNO = { EPERM: 1, EIO: 5, EINVAL: 22, ENOTSUP: 95, ESHUTDOWN: 108, EOVERFLOW: 75 } as const;

export const BASE_ALLOCATION = 'base:allocation';
/** the largest read a client may ask for (the maximum block size advertised) */
export const MAX_REQUEST = 32 * 1024 * 1024;
/** the largest option payload accepted: names and queries are short */
export const MAX_OPTION = 64 * 1024;
