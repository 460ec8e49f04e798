// Helpers for Weft steps written in JavaScript (componentize-js, world
// `weft:step/step@0.2.0`). A step is a function from the parsed input to a
// JSON-serialisable result, sync or async:
//
//   import { StepError, httpRequest, info, secret, step } from './weft-step.js';
//   export const run = step(async (input) => ({ ok: true }));

import { currentInvocation, log as hostLog } from 'weft:step/host@0.2.0';
import { get as getSecret } from 'weft:step/secrets@0.2.0';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, httpErrorCode } from 'wasi:http/types@0.2.12';

/** The error a step returns: `code` is machine-readable, e.g. "bad_input". */
export class StepError extends Error {
  constructor(code, message, { retryable = false } = {}) {
    super(message);
    this.name = 'StepError';
    this.code = code;
    this.retryable = retryable;
  }
}

/**
 * The `run` export: parses the input, calls `fn` and serialises its result.
 *
 * componentize-js turns a thrown value that is not an Error into the `err`
 * of the export's result, so a StepError is thrown as the plain WIT record;
 * any other exception traps the step (as a panic does in Rust) after its
 * message and stack are logged at error level.
 */
export function step(fn) {
  return async function run(input) {
    let value;
    try {
      value = JSON.parse(input);
    } catch (e) {
      throw witError(new StepError('bad_input', `the input is not JSON: ${e.message}`));
    }
    let output;
    try {
      output = await fn(value);
    } catch (e) {
      if (e instanceof StepError) throw witError(e);
      // The trap that follows does not carry the message: keep it in the log.
      log('error', `uncaught ${e}${e?.stack ? `\n${e.stack}` : ''}`);
      throw e;
    }
    let text;
    try {
      text = JSON.stringify(output);
    } catch (e) {
      throw witError(new StepError('bad_output', `the output is not JSON: ${e.message}`));
    }
    if (text === undefined) {
      throw witError(new StepError('bad_output', `the output is not JSON: ${typeof output}`));
    }
    return text;
  };
}

function witError(e) {
  return { code: e.code, message: e.message, retryable: e.retryable };
}

/** `{ tenant, runId, stepId, attempt }` of the running call; attempts start at 1. */
export function invocation() {
  return currentInvocation();
}

/** One record in the step's log; `level` is trace, debug, info, warn or error. */
export function log(level, message) {
  hostLog(level, String(message));
}
export const trace = (message) => log('trace', message);
export const debug = (message) => log('debug', message);
export const info = (message) => log('info', message);
export const warn = (message) => log('warn', message);
export const error = (message) => log('error', message);

/** The secret's value, or undefined when the step's document does not grant `name`. */
export function secret(name) {
  return getSecret(name);
}

// --- outgoing HTTP over wasi:http -------------------------------------------
//
// `fetch()` works in a step too, but it reports every failure as the same
// TypeError and returns redirects as they are; these helpers keep the
// wasi:http error code (e.g. HTTP-request-denied) and follow redirects.

export const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
// wasi:io streams take at most 4096 bytes per blocking write.
const WRITE_CHUNK = 4096;
const READ_CHUNK = 64n * 1024n;
const dispose = Symbol.dispose || Symbol.for('dispose');

/** A finished HTTP exchange: the last hop's status, headers and whole body. */
export class HttpResponse {
  constructor(url, status, headers, body) {
    this.url = url;
    this.status = status;
    /** `[name, value]` pairs as the server sent them. */
    this.headers = headers;
    /** The body, a Uint8Array. */
    this.body = body;
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The first value of header `name` (any case), or undefined. */
  header(name) {
    const wanted = name.toLowerCase();
    return this.headers.find(([key]) => key.toLowerCase() === wanted)?.[1];
  }

  text() {
    return new TextDecoder().decode(this.body);
  }

  /** The body parsed as JSON; a `bad_response` StepError when it is not JSON. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new StepError('bad_response', `${urlForLog(this.url)} answered ${this.status} with a body that is not JSON: ${e.message}`);
    }
  }

  /** This response when its status is 2xx, else an `http_error` StepError (retryable for 5xx). */
  throwForStatus() {
    if (!this.ok) {
      throw new StepError('http_error', `${urlForLog(this.url)} answered ${this.status}`, {
        retryable: this.status >= 500,
      });
    }
    return this;
  }
}

/** `url` without user info, query or fragment, which may carry credentials. */
export function urlForLog(url) {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return String(url).split(/[?#]/)[0];
  }
}

/**
 * Sends a request through the host and reads the whole response.
 *
 * Follows up to five redirects, each a new request that the host checks
 * against the allowed hosts; `Authorization` goes only to the origin it was
 * given for. Any status comes back as an HttpResponse; a request that gets
 * no response (refused by the host, connection failed, ...) throws an
 * `http_error` StepError, retryable unless the host denied it.
 *
 * @param {string} method
 * @param {string} url
 * @param {{ headers?: Record<string, string>, body?: string | Uint8Array, followRedirects?: boolean }} [options]
 * @returns {HttpResponse}
 */
export function httpRequest(method, url, { headers = {}, body, followRedirects = true } = {}) {
  method = method.toUpperCase();
  headers = { ...headers };
  body = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  const first = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const response = send(method, url, headers, body);
    const location = response.header('location');
    if (!followRedirects || !REDIRECTS.has(response.status) || location === undefined) {
      return response;
    }
    const target = new URL(location, url).href;
    if (new URL(target).origin !== new URL(url).origin) {
      headers = without(headers, ['authorization']);
    }
    // As browsers do: 303, and 301/302 after a POST, go on as a GET without body.
    if (response.status === 303 || ((response.status === 301 || response.status === 302) && method === 'POST')) {
      method = method === 'HEAD' ? 'HEAD' : 'GET';
      body = undefined;
      headers = without(headers, ['content-type', 'content-length']);
    }
    url = target;
  }
  throw new StepError('http_error', `${urlForLog(first)}: more than ${MAX_REDIRECTS} redirects`);
}

function without(headers, names) {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !names.includes(k.toLowerCase())));
}

function send(method, url, headers, body) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new StepError('bad_input', `not a URL: ${urlForLog(url)}`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname) {
    throw new StepError('bad_input', `not an http(s) URL: ${urlForLog(url)}`);
  }
  const encoder = new TextEncoder();
  const entries = Object.entries(headers).map(([k, v]) => [k, encoder.encode(String(v))]);
  if (body !== undefined) {
    entries.push(['content-length', encoder.encode(String(body.length))]);
  }
  let fields;
  try {
    fields = Fields.fromList(entries);
  } catch (e) {
    throw new StepError('bad_input', `a request header is not allowed: ${describe(e.payload)}`);
  }

  const request = new OutgoingRequest(fields);
  request.setMethod(methodOf(method));
  request.setScheme({ tag: u.protocol === 'https:' ? 'HTTPS' : 'HTTP' });
  request.setAuthority(u.host);
  request.setPathWithQuery(`${u.pathname || '/'}${u.search}`);
  const outgoing = request.body();

  const transportError = (code) =>
    new StepError('http_error', `${method} ${urlForLog(url)} failed: ${describe(code)}`, {
      retryable: code?.tag !== 'HTTP-request-denied',
    });

  let future;
  try {
    future = handle(request, undefined);
  } catch (e) {
    outgoing[dispose]();
    throw transportError(e.payload);
  }
  // The body is written after `handle` so the host can stream it out.
  try {
    const stream = outgoing.write();
    for (let start = 0; start < (body?.length ?? 0); start += WRITE_CHUNK) {
      stream.blockingWriteAndFlush(body.subarray(start, start + WRITE_CHUNK));
    }
    stream[dispose]();
    OutgoingBody.finish(outgoing, undefined);
  } catch {
    // the response future below says why the body could not go out
  }

  // The poll loop: wait until the response (or its error) is there.
  let result;
  while ((result = future.get()) === undefined) {
    const ready = future.subscribe();
    ready.block();
    ready[dispose]();
  }
  future[dispose]();
  const inner = result.val; // the outer result only says whether `get` was called twice
  if (inner.tag === 'err') {
    throw transportError(inner.val);
  }
  const response = inner.val;
  const status = response.status();
  const fieldsIn = response.headers();
  const decoder = new TextDecoder();
  const responseHeaders = fieldsIn.entries().map(([k, v]) => [k, decoder.decode(v)]);
  fieldsIn[dispose]();
  const incoming = response.consume();
  const data = readAll(incoming, transportError);
  incoming[dispose]();
  response[dispose]();
  return new HttpResponse(url, status, responseHeaders, data);
}

function readAll(incoming, transportError) {
  const chunks = [];
  let length = 0;
  const stream = incoming.stream();
  try {
    for (;;) {
      let chunk;
      try {
        chunk = stream.blockingRead(READ_CHUNK);
      } catch (e) {
        if (e.payload?.tag === 'closed') break;
        const ioError = e.payload?.val;
        const code = ioError ? httpErrorCode(ioError) : undefined;
        throw transportError(code ?? ioError?.toDebugString() ?? String(e));
      }
      chunks.push(chunk);
      length += chunk.length;
    }
  } finally {
    stream[dispose]();
  }
  const all = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

function methodOf(name) {
  const known = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
  return known.includes(name) ? { tag: name.toLowerCase() } : { tag: 'other', val: name };
}

// e.g. "HTTP-request-denied", or "DNS-error {"rcode":"NXDOMAIN"}"
function describe(code) {
  if (typeof code === 'string') return code;
  if (!code || typeof code.tag !== 'string') return String(code);
  return code.val === undefined ? code.tag : `${code.tag} ${JSON.stringify(code.val)}`;
}
