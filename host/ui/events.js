// A run's event stream, read off the page's main thread: the worker keeps
// the connection drained however busy the page is drawing, parses the
// events, and hands them over in batches (at most one message per
// BATCH_MS). Started by api.js `events()`, which passes the key in a
// message, never in a URL.

import { SseParser } from './api.js';

const BATCH_MS = 50;

self.onmessage = async ({ data: { path, key } }) => {
  let batch = [];
  let timer = 0;
  const flush = () => {
    clearTimeout(timer);
    timer = 0;
    if (batch.length) self.postMessage({ type: 'events', events: batch });
    batch = [];
  };
  const parser = new SseParser((type, event) => {
    batch.push([type, event]);
    if (!timer) timer = setTimeout(flush, BATCH_MS);
  });
  try {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${key}`, Accept: 'text/event-stream' },
      cache: 'no-store',
    });
    if (!response.ok) {
      let code = 'http_error';
      let message = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        code = body.error?.code ?? code;
        message = body.error?.message ?? message;
      } catch {
        // Not JSON: the status line says enough.
      }
      self.postMessage({ type: 'error', status: response.status, code, message });
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.push('\n\n');
    flush();
    self.postMessage({ type: 'end' });
  } catch (err) {
    flush();
    self.postMessage({ type: 'error', status: 0, code: 'stream_error', message: String(err?.message ?? err) });
  }
};
