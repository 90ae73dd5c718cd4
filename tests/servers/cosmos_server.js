// Starts @vercel/cosmosdb-server over TLS on loopback for the Cosmos contract tests.
//
// Usage: node cosmos_server.js --cert CERT.pem --key KEY.pem [--host 127.0.0.1] [--port 0]
// Prints one line `READY <port>` on stdout once it listens (port 0 picks a free port, so the
// Python fixture never races another process for it) and exits on SIGTERM/SIGINT or when its
// stdin closes (the parent test process died).
//
// Why a script and not the package's CLI: the CLI uses the bundled certificate, which has
// expired, and does not turn on keep-alive; without keep-alive every request pays a new TLS
// handshake and the suite runs about 20x slower.
"use strict";

const fs = require("fs");
const { createHttpsServer } = require("@vercel/cosmosdb-server");

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 0 };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i];
    const value = argv[i + 1];
    if (key === "--cert") args.cert = value;
    else if (key === "--key") args.key = value;
    else if (key === "--host") args.host = value;
    else if (key === "--port") args.port = parseInt(value, 10);
    else {
      process.stderr.write(`unknown argument ${key}\n`);
      process.exit(2);
    }
    i += 1;
  }
  if (!args.cert || !args.key) {
    process.stderr.write("usage: node cosmos_server.js --cert CERT.pem --key KEY.pem [--host H] [--port P]\n");
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const server = createHttpsServer({
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
  keepAlive: true,
});
// Node's default keep-alive timeout (5 s) is shorter than the Python client's idle pool;
// a longer one avoids resets on connections the client still thinks are open.
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;

server.on("error", (err) => {
  process.stderr.write(`cosmosdb-server failed: ${err.message}\n`);
  process.exit(1);
});

server.listen(args.port, args.host, () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  // Open keep-alive sockets would hold close() forever.
  if (server.closeAllConnections) server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.resume();
