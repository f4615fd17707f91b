// Every module of the command table; each registers its commands with defineCommand when loaded.
import '../class-commands.js';
import './vm.js';
import './transfer.js';
