/**
 * An OTLP/HTTP sink for the bench: accepts trace exports (protobuf or JSON) on 127.0.0.1 and discards them,
 * so a gateway with tracing on pays for making, batching, encoding and sending its spans, and nothing
 * downstream slows it. `node dist/bench/otlp-sink.js [port]` prints `listening on http://…`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const server = createServer((req, res) => {
  req.resume(); // read and drop the body
  req.on('end', () => {
    // An empty ExportTraceServiceResponse: zero bytes in protobuf, `{}` in JSON.
    const json = String(req.headers['content-type'] ?? '').startsWith('application/json');
    res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' });
    res.end(json ? '{}' : undefined);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
