// Every module of the command table; each registers its commands with defineCommand when loaded.
import '../class-commands.js';
import './vm.js';
import './sr.js';
import './pbd.js';
import './vdi.js';
import './vbd.js';
import './vif.js';
import './network.js';
import './host.js';
import './pool.js';
import './task.js';
import './event.js';
import './message.js';
import './misc.js';
