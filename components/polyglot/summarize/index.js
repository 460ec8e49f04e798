// summarize: GETs a URL and returns its first words.
//
// Input:  {"url": "https://...", "max_words"?: 20, "secret"?: "name" (default "api_token")}
// Output: {"summary": "the first max_words words, joined by spaces", "words": 431, "status": 200}
//
// When the step is granted the secret, the request carries
// `Authorization: Bearer <value>`; otherwise it carries no Authorization
// header. Redirects are followed (at most 5). A status outside 2xx or a
// request that gets no response is an `http_error`, retryable for 5xx and
// transport failures, not for 4xx or a host the step may not reach.

import { StepError, httpRequest, info, secret, step, urlForLog } from '../../../sdk/js/weft-step.js';

function summarize(input) {
  if (typeof input !== 'object' || input === null || typeof input.url !== 'string') {
    throw new StepError('bad_input', 'the input needs "url", a string');
  }
  const maxWords = input.max_words ?? 20;
  if (!Number.isInteger(maxWords) || maxWords < 0) {
    throw new StepError('bad_input', '"max_words" must be a whole number, 0 or more');
  }
  const name = input.secret ?? 'api_token';
  if (typeof name !== 'string') {
    throw new StepError('bad_input', '"secret" must be the name of a secret');
  }

  const headers = { accept: 'text/plain, text/*;q=0.9, */*;q=0.8' };
  const token = secret(name);
  if (token !== undefined) {
    headers.authorization = `Bearer ${token}`;
  }

  info(`fetching ${urlForLog(input.url)}`);
  const response = httpRequest('GET', input.url, { headers }).throwForStatus();
  const words = response.text().split(/\s+/).filter((word) => word !== '');
  return { summary: words.slice(0, maxWords).join(' '), words: words.length, status: response.status };
}

export const run = step(summarize);
