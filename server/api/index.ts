// Loads every class provider (each registers its handlers for its class's custom messages).
import './session.js';
import './task.js';
import './event.js';
import './message.js';
import './pool.js';
import './VM.js';
import './SR.js';
import './PBD.js';
import './VDI.js';
import './VBD.js';
import './VIF.js';
import './network.js';
import './host.js';
import './pool-ops.js';
import './vm-migrate.js';
