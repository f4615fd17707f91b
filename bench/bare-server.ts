// The baseline of bench section 1: a bare Fastify server answering POST / with a fixed XML body and
// POST /jsonrpc with a fixed JSON body (the emulator's own VM.get_record responses, same bytes and
// content types), reading the request body as the emulator does. Run as a child process:
//   node --import tsx bench/bare-server.ts XML_FILE JSON_FILE   → prints "LISTENING http://127.0.0.1:PORT/"
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';

const [xmlFile, jsonFile] = process.argv.slice(2);
const xml = readFileSync(xmlFile);
const json = readFileSync(jsonFile);

const app = Fastify({ logger: false, keepAliveTimeout: 300_000, requestTimeout: 0 });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 300 * 1024 }, (_req, body, done) => done(null, body));
app.post('/', (_req, reply) => {
  reply.header('content-type', 'text/xml').send(xml);
});
app.post('/jsonrpc', (_req, reply) => {
  reply.header('content-type', 'application/json').send(json);
});

await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };
console.log(`LISTENING http://127.0.0.1:${port}/`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
