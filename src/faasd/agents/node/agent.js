#!/usr/bin/env node
// faasd Node agent: runs inside a sandbox as the container's main process (Node 18+, no dependencies).
//
//   node /faasd/agent/node/agent.js --socket /run/faasd-io/agent.sock --handler handler.js:handle \
//        --code-dir /function [--function-name NAME]
//
// Loads the user's module once and serves one request per connection on a Unix socket with the frame
// protocol of ../PROTOCOL.md (4-byte big-endian length + JSON header, then body_len bytes of body).
// Handlers run in-process: `module.exports = async (event, context) => ...` or `exports.handle = ...`.
// No connection to the host stays open between requests (CRIU checkpoints must never see one).
'use strict';

const net = require('net');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const Module = require('module');

const PROTOCOL_VERSION = 1;
const MAX_HEADER_BYTES = 1 << 20;
const MAX_BODY_BYTES = 1 << 30;

// ------------------------------------------------------------------------------- faasd_runtime
// `require('faasd_runtime')` from user code resolves to this object.
const afterRestoreHooks = [];
const runtimeApi = {
  registerAfterRestore(fn) {
    if (typeof fn !== 'function') throw new TypeError('registerAfterRestore() needs a function');
    afterRestoreHooks.push(fn);
    return fn;
  },
};
runtimeApi.register_after_restore = runtimeApi.registerAfterRestore;
const RUNTIME_ID = '\0faasd_runtime';
const origResolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'faasd_runtime') return RUNTIME_ID;
  return origResolve.call(this, request, ...rest);
};
{
  const m = new Module(RUNTIME_ID, null);
  m.filename = RUNTIME_ID;
  m.loaded = true;
  m.exports = runtimeApi;
  require.cache[RUNTIME_ID] = m;
}
globalThis.faasd = runtimeApi;

// ------------------------------------------------------------------------------------- framing
function encodeFrame(header, body) {
  const h = body && body.length ? Object.assign({}, header, { body_len: body.length }) : header;
  const raw = Buffer.from(JSON.stringify(h), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(raw.length, 0);
  return body && body.length ? Buffer.concat([len, raw, body]) : Buffer.concat([len, raw]);
}

// Reads exactly one frame from a socket; resolves {header, body}.
function readOneFrame(sock) {
  return new Promise((resolve, reject) => {
    let chunks = [];
    let have = 0;
    let header = null;
    let need = 4;
    let stage = 'len';
    const onData = (data) => {
      chunks.push(data);
      have += data.length;
      while (have >= need) {
        const buf = Buffer.concat(chunks);
        if (stage === 'len') {
          const n = buf.readUInt32BE(0);
          if (n === 0 || n > MAX_HEADER_BYTES) return fail(new Error(`bad header length ${n}`));
          stage = 'header';
          need = 4 + n;
        } else if (stage === 'header') {
          try {
            header = JSON.parse(buf.subarray(4, need).toString('utf8'));
          } catch (e) {
            return fail(new Error(`header is not JSON: ${e.message}`));
          }
          if (!header || typeof header.type !== 'string') return fail(new Error("header needs a string 'type'"));
          const bodyLen = header.body_len || 0;
          if (!Number.isInteger(bodyLen) || bodyLen < 0 || bodyLen > MAX_BODY_BYTES) {
            return fail(new Error(`bad body_len ${bodyLen}`));
          }
          stage = 'body';
          need = need + bodyLen;
        } else {
          const start = need - (header.body_len || 0);
          cleanup();
          return resolve({ header, body: Buffer.from(buf.subarray(start, need)) });
        }
        chunks = [buf];
      }
    };
    const onEnd = () => fail(new Error('connection closed before a full frame'));
    const fail = (err) => { cleanup(); reject(err); };
    const cleanup = () => {
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', fail);
    };
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', fail);
  });
}

// ------------------------------------------------------------------------ handler result -> HTTP
class InvalidResponse extends Error {}

function bodyBytes(value) {
  if (value === undefined || value === null) return [Buffer.alloc(0), null];
  if (Buffer.isBuffer(value)) return [value, 'application/octet-stream'];
  if (value instanceof Uint8Array) return [Buffer.from(value), 'application/octet-stream'];
  if (typeof value === 'string') return [Buffer.from(value, 'utf8'), 'text/plain; charset=utf-8'];
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new InvalidResponse(`handler returned a value that is not JSON-serialisable: ${e.message}`);
  }
  if (text === undefined) throw new InvalidResponse(`handler returned a ${typeof value}, which is not serialisable`);
  return [Buffer.from(text, 'utf8'), 'application/json'];
}

function normalizeResult(value) {
  let status = 200;
  let rawHeaders = null;
  let body;
  let defaultType;
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && 'statusCode' in value) {
    status = Number(value.statusCode);
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new InvalidResponse(`statusCode must be an HTTP status, got ${JSON.stringify(value.statusCode)}`);
    }
    rawHeaders = value.headers || null;
    let b = value.body;
    if (value.isBase64Encoded && typeof b === 'string') b = Buffer.from(b, 'base64');
    [body, defaultType] = bodyBytes(b);
  } else {
    [body, defaultType] = bodyBytes(value);
  }
  const headers = [];
  if (rawHeaders) {
    if (typeof rawHeaders !== 'object') throw new InvalidResponse("'headers' must be an object");
    for (const [k, v] of Object.entries(rawHeaders)) {
      for (const item of Array.isArray(v) ? v : [v]) headers.push([String(k), String(item)]);
    }
  }
  if (defaultType && !headers.some((h) => h[0].toLowerCase() === 'content-type')) {
    headers.push(['content-type', defaultType]);
  }
  return { status, headers, body };
}

// --------------------------------------------------------------------------------------- agent
function parseArgs(argv) {
  const args = { socket: '/run/faasd-io/agent.sock', handler: 'handler.js', codeDir: '/function', functionName: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === '--socket') args.socket = next();
    else if (a === '--handler') args.handler = next();
    else if (a === '--code-dir') args.codeDir = next();
    else if (a === '--function-name') args.functionName = next();
    else if (a === '--direct-timeout-s') args.directTimeoutS = Number(next()) || null;
    else if (a === '--fork') { /* not supported by the node agent: in-process only */ }
    else throw new Error(`unknown argument ${a}`);
  }
  return args;
}

async function loadHandler(spec, codeDir) {
  // "file.js:export" | "file.js" | "module:export"; default export name: handle, then the module itself.
  const idx = spec.lastIndexOf(':');
  const file = idx > 0 ? spec.slice(0, idx) : spec;
  const exportName = idx > 0 ? spec.slice(idx + 1) : null;
  const target = path.isAbsolute(file) ? file : path.resolve(codeDir, file);
  let mod;
  try {
    mod = require(target);
  } catch (e) {
    if (e && e.code === 'ERR_REQUIRE_ESM') mod = await import(require('url').pathToFileURL(target).href);
    else throw e;
  }
  let fn;
  if (exportName) fn = mod && mod[exportName];
  else if (typeof mod === 'function') fn = mod;
  else fn = mod && (mod.handle || mod.handler || mod.default);
  if (typeof fn !== 'function') {
    throw new Error(`${spec}: no handler function found (export ${exportName || 'module.exports / handle'})`);
  }
  return fn;
}

function errorInfo(err) {
  if (err instanceof Error) {
    return { exception: err.name, message: `${err.name}: ${err.message}`, traceback: err.stack || String(err) };
  }
  return { exception: typeof err, message: `thrown value: ${String(err)}`, traceback: '' };
}

// Straight from the kernel: crypto.randomBytes() draws from OpenSSL's in-process generator, whose
// state CRIU restores identically in every copy of a snapshot (so copies would get the same bytes).
function kernelRandomBytes(n) {
  const buf = Buffer.alloc(n);
  const fd = fs.openSync('/dev/urandom', 'r');
  try {
    let got = 0;
    while (got < n) got += fs.readSync(fd, buf, got, n - got, null);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

// xorshift128+ seeded from the kernel (or, for a seeded branch copy, from sha256 of the seed the
// host derived for it); replaces Math.random after a restore so copies differ -- or repeat exactly.
function reseedMathRandom(seedText) {
  const seed = typeof seedText === 'string' && seedText
    ? crypto.createHash('sha256').update(seedText).digest()
    : kernelRandomBytes(16);
  let s0 = seed.readBigUInt64LE(0) | 1n;
  let s1 = seed.readBigUInt64LE(8) | 1n;
  const mask = (1n << 64n) - 1n;
  Math.random = function random() {
    let x = s0;
    const y = s1;
    s0 = y;
    x = (x ^ (x << 23n)) & mask;
    s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(((s1 + y) & mask) >> 11n) / 2 ** 53;
  };
}

class Agent {
  constructor(args) {
    this.args = args;
    this.handler = null;
    this.loadError = null;
    this.requests = 0;
    this.queue = Promise.resolve();
  }

  async load() {
    try {
      if (fs.existsSync(this.args.codeDir)) process.chdir(this.args.codeDir);
      this.handler = await loadHandler(this.args.handler, this.args.codeDir);
    } catch (e) {
      this.loadError = (e && e.stack) || String(e);
      process.stderr.write(`faasd agent: cannot load handler ${this.args.handler}:\n${this.loadError}\n`);
    }
  }

  listen() {
    // Bound directly under its final name (CRIU re-binds a restored listening socket at that path); a
    // host connecting before listen() completes gets ECONNREFUSED and retries.
    const sockPath = this.args.socket;
    fs.mkdirSync(path.dirname(sockPath), { recursive: true });
    try { fs.unlinkSync(sockPath); } catch (_) { /* absent */ }
    const server = net.createServer({ allowHalfOpen: true }, (sock) => {
      // One request at a time: a function instance handles a single invocation, like a Lambda.
      this.queue = this.queue.then(() => this.handleConnection(sock)).catch((e) => {
        process.stderr.write(`faasd agent: ${(e && e.stack) || e}\n`);
      });
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const oldMask = process.umask(0o177); // 0600: only the host (root) and this user may connect
      server.listen(sockPath, () => {
        process.umask(oldMask);
        resolve(server);
      });
    });
  }

  // Direct function address: faasd-init received the host's listening socket over SCM_RIGHTS and
  // passed it as fd FAASD_LISTEN_FD. Requests are served over HTTP/1.1 (keep-alive) one at a time,
  // queued with the agent socket's invocations; their output goes to the sandbox's log.
  serveDirect(fd) {
    const http = require('http');
    this.directRequests = 0;
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        this.queue = this.queue.then(() => this.handleDirect(req, Buffer.concat(chunks), res)).catch((e) => {
          process.stderr.write(`faasd agent: ${(e && e.stack) || e}\n`);
          if (!res.headersSent) { res.statusCode = 500; res.end('internal error\n'); }
        });
      });
    });
    server.keepAliveTimeout = 75000;
    server.on('error', (e) => process.stderr.write(`faasd agent: direct address: ${e.message}\n`));
    server.listen({ fd });
    this.direct = server;
  }

  async handleDirect(req, body, res) {
    this.directRequests += 1;
    if (!this.handler) {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end("the function's handler failed to load\n");
      return;
    }
    const url = req.url || '/';
    const q = url.indexOf('?');
    const header = {
      type: 'invoke', id: crypto.randomBytes(8).toString('hex'), method: req.method,
      path: q < 0 ? url : url.slice(0, q), query: q < 0 ? '' : url.slice(q + 1), headers: req.headers,
      timeout_s: this.args.directTimeoutS || null,
    };
    let final = null;
    await this.invoke(header, body, (buf) => { final = buf; }, false);
    const hlen = final.readUInt32BE(0);
    const out = JSON.parse(final.subarray(4, 4 + hlen).toString('utf8'));
    const outBody = final.subarray(4 + hlen);
    if (out.type === 'result') {
      const headers = {};
      for (const [k, v] of out.headers || []) {
        const name = String(k).toLowerCase();
        if (['content-length', 'transfer-encoding', 'connection', 'keep-alive'].includes(name)) continue;
        headers[name] = name in headers ? [].concat(headers[name], v) : v;
      }
      res.writeHead(out.status || 200, headers);
      res.end(outBody);
    } else {
      if (out.traceback) process.stderr.write(`${out.traceback}\n`);
      res.writeHead(out.kind === 'timeout' ? 504 : 500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${out.kind}: ${out.message || ''}\n`);
    }
  }

  async handleConnection(sock) {
    sock.on('error', () => {});
    const send = (buf) => { if (!sock.destroyed) sock.write(buf); };
    try {
      let frame;
      try {
        frame = await readOneFrame(sock);
      } catch (e) {
        send(encodeFrame({ type: 'error', kind: 'bad_request', message: e.message }));
        return;
      }
      const { header, body } = frame;
      if (header.type === 'ping') {
        const pong = {
          type: 'pong', protocol: PROTOCOL_VERSION, runtime: 'node', runtime_version: process.version,
          pid: process.pid, handler: this.args.handler, fork: false, ready: this.handler !== null,
          requests: this.requests, direct: !!this.direct, direct_requests: this.directRequests || 0,
        };
        if (this.loadError) pong.error = this.loadError;
        send(encodeFrame(pong));
      } else if (header.type === 'invoke') {
        this.requests += 1;
        if (!this.handler) {
          send(encodeFrame({ type: 'error', kind: 'not_ready', message: `handler ${this.args.handler} failed to load`,
            traceback: this.loadError || '' }));
        } else {
          await this.invoke(header, body, send);
        }
      } else if (header.type === 'unlisten') {
        // Before a checkpoint: the listening socket belongs to the host's network namespace.
        if (this.direct) { this.direct.close(); this.direct = null; }
        send(encodeFrame({ type: 'ack', of: 'unlisten' }));
      } else if (header.type === 'restored') {
        reseedMathRandom(header.seed);
        const errors = [];
        for (const fn of afterRestoreHooks) {
          try { await fn(); } catch (e) { errors.push(errorInfo(e).traceback); }
        }
        send(encodeFrame({ type: 'ack', of: 'restored', hooks_run: afterRestoreHooks.length, hook_errors: errors }));
      } else {
        send(encodeFrame({ type: 'error', kind: 'bad_request', message: `unknown frame type ${header.type}` }));
      }
    } finally {
      await new Promise((resolve) => {
        if (sock.destroyed) return resolve();
        sock.end(resolve);
      });
    }
  }

  async invoke(header, body, send, capture = true) {
    const started = process.hrtime.bigint();
    const runMs = () => Math.round(Number(process.hrtime.bigint() - started) / 1000) / 1000;
    const rawHeaders = header.headers && typeof header.headers === 'object' ? header.headers : {};
    const headers = {};
    for (const [k, v] of Object.entries(rawHeaders)) headers[String(k).toLowerCase()] = String(v);
    const event = {
      body,
      headers,
      method: header.method || 'POST',
      path: header.path || '/',
      query: header.query || '',
      get text() { return body.toString('utf8'); },
      json() { return body.length ? JSON.parse(body.toString('utf8')) : null; },
    };
    const timeoutS = header.timeout_s ? Number(header.timeout_s) : null;
    const deadline = timeoutS ? Date.now() + timeoutS * 1000 : null;
    const context = {
      requestId: String(header.id || ''),
      functionName: this.args.functionName,
      timeoutS,
      getRemainingTimeInMillis: () => (deadline ? Math.max(0, deadline - Date.now()) : 2 ** 31 - 1),
    };

    // Per-request environment and output capture, restored afterwards.
    const env = header.env && typeof header.env === 'object' ? header.env : {};
    const savedEnv = {};
    for (const k of Object.keys(env)) savedEnv[k] = Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : undefined;
    for (const [k, v] of Object.entries(env)) process.env[k] = String(v);
    const savedWrite = { stdout: process.stdout.write, stderr: process.stderr.write };
    const captureTo = (kind) => function write(chunk, encoding, cb) {
      if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), encoding || 'utf8');
      if (buf.length) send(encodeFrame({ type: kind }, buf));
      if (cb) process.nextTick(cb);
      return true;
    };
    if (capture) {
      process.stdout.write = captureTo('stdout');
      process.stderr.write = captureTo('stderr');
    }

    let timer = null;
    let final;
    try {
      const timeout = new Promise((_, reject) => {
        if (timeoutS) timer = setTimeout(() => reject(new HandlerTimeout()), timeoutS * 1000);
      });
      const value = await Promise.race([Promise.resolve().then(() => this.handler(event, context)), timeout]);
      const { status, headers: outHeaders, body: outBody } = normalizeResult(value);
      final = encodeFrame({ type: 'result', status, headers: outHeaders, run_ms: runMs() }, outBody);
    } catch (e) {
      if (e instanceof HandlerTimeout) {
        final = encodeFrame({ type: 'error', kind: 'timeout', message: `the handler did not return within ${timeoutS} s`,
          run_ms: runMs() });
      } else if (e instanceof InvalidResponse) {
        final = encodeFrame({ type: 'error', kind: 'invalid_response', message: e.message, run_ms: runMs() });
      } else {
        final = encodeFrame(Object.assign({ type: 'error', kind: 'exception', run_ms: runMs() }, errorInfo(e)));
      }
    } finally {
      if (timer) clearTimeout(timer);
      process.stdout.write = savedWrite.stdout;
      process.stderr.write = savedWrite.stderr;
      for (const [k, v] of Object.entries(savedEnv)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    send(final);
  }
}

class HandlerTimeout extends Error {}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // An exception escaping a handler's background work must not kill the warm instance.
  process.on('unhandledRejection', (e) => process.stderr.write(`faasd agent: unhandled rejection: ${(e && e.stack) || e}\n`));
  process.on('uncaughtException', (e) => process.stderr.write(`faasd agent: uncaught exception: ${(e && e.stack) || e}\n`));
  const agent = new Agent(args);
  await agent.load();
  await agent.listen();
  const listenFd = process.env.FAASD_LISTEN_FD;
  delete process.env.FAASD_LISTEN_FD;
  if (listenFd) agent.serveDirect(Number(listenFd));
}

main().catch((e) => {
  process.stderr.write(`faasd agent: fatal: ${(e && e.stack) || e}\n`);
  process.exit(1);
});
