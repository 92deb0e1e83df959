// Loaded with `node -r` before the processor's reference server (main.js), which is run
// unchanged. That sample calls `https.createServer` without requiring `https` and gives it no
// certificate, so it serves plain HTTP on 127.0.0.1:1080: `https` is bound to the `http`
// module here. PERF_REFERENCE_PORT moves the port, so a run does not depend on 1080 being free.
"use strict";
const http = require("http");
globalThis.https = http;
const port = Number(process.env.PERF_REFERENCE_PORT || 1080);
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (p, ...rest) {
  return listen.call(this, typeof p === "number" ? port : p, ...rest);
};
