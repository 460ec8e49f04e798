// The HTTP API as the console uses it: the key lives in this tab's session
// storage and travels only in the Authorization header, never in a URL.

const KEY = 'weft.api_key';

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An answer of the API that is not a success, with the API's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** Called when the API refuses the key, so that the page can ask for another. */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function fail(response) {
  let code = 'http_error';
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body?.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // Not JSON: the status line says enough.
  }
  if (response.status === 401) onUnauthorized();
  throw new ApiError(response.status, code, message);
}

/** GET a JSON document of the API. */
export async function get(path, { signal, key } = {}) {
  const extra = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { headers: headers(extra), signal, cache: 'no-store' });
  if (!response.ok) return fail(response);
  return response.json();
}

/** POST (an optional JSON body) and read the JSON answer. */
export async function post(path, body) {
  const init = { method: 'POST', headers: headers() };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) return fail(response);
  return response.status === 204 ? null : response.json();
}

/** A path segment, escaped. */
export const seg = encodeURIComponent;

/**
 * Follows a server-sent event stream, read with fetch (EventSource cannot
 * send an Authorization header) in a worker (events.js), so that a busy page
 * never holds the connection up. Calls onEvent(type, data) for each event
 * whose data is JSON; resolves when the server ends the stream.
 */
export function events(path, onEvent, signal) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./events.js', import.meta.url), { type: 'module' });
    const abort = () => {
      worker.terminate();
      reject(new DOMException('The stream was stopped', 'AbortError'));
    };
    if (signal?.aborted) return abort();
    signal?.addEventListener('abort', abort, { once: true });
    const done = () => {
      worker.terminate();
      signal?.removeEventListener('abort', abort);
    };
    worker.onmessage = ({ data }) => {
      if (data.type === 'events') {
        for (const [type, event] of data.events) onEvent(type, event);
      } else if (data.type === 'end') {
        done();
        resolve();
      } else if (data.type === 'error') {
        done();
        if (data.status === 401) onUnauthorized();
        reject(new ApiError(data.status, data.code, data.message));
      }
    };
    worker.onerror = (e) => {
      done();
      reject(new Error(e.message || 'the event stream worker failed'));
    };
    worker.postMessage({ path, key: apiKey() });
  });
}

/** The event-stream format, line by line: `event:` and `data:` fields, comments ignored. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.rest = '';
    this.type = '';
    this.data = [];
  }

  push(chunk) {
    let text = this.rest + chunk;
    // A CR at the end may be the first half of a CRLF still to come.
    let keep = '';
    if (text.endsWith('\r')) {
      keep = '\r';
      text = text.slice(0, -1);
    }
    if (text.includes('\r')) text = text.replace(/\r\n?/g, '\n');
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      this.line(text.slice(start, nl));
      start = nl + 1;
    }
    this.rest = text.slice(start) + keep;
  }

  line(line) {
    if (line === '') {
      if (this.data.length) {
        const text = this.data.join('\n');
        let data = text;
        try {
          data = JSON.parse(text);
        } catch {
          // Not JSON: passed on as text.
        }
        this.onEvent(this.type || 'message', data);
      }
      this.type = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
  }
}
