// Every module of the command table; each registers its commands with defineCommand when loaded.
import '../class-commands.js';
import './vm.js';
import './vm-install.js';
import './snapshot.js';
import './template.js';
import './vm-memory.js';
import './vm-devices.js';
