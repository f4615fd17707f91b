// The live status page and its event stream, registered on every app beside the control API.
import { registerHttpPlugin } from '../../app.js';
import { statusPagePlugin } from './page.js';

registerHttpPlugin(statusPagePlugin);
