// The console's shell: sign-in, navigation and the hash routes
// (#/runs, #/runs/<id>, #/components, #/workflows, #/schedules).

import { apiKey, get, setApiKey, signOut, whenUnauthorized } from './api.js';
import { h, replace } from './dom.js';
import { runsPage } from './runs.js';
import { runPage } from './run.js';
import { componentsPage, schedulesPage, workflowsPage } from './registry.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOutButton = document.getElementById('sign-out');

/** The page shown now; its stop() ends its timers and streams. */
let current = null;

const routes = [
  [/^#\/runs\/([^/]+)$/, (m) => runPage(main, decodeURIComponent(m[1])), 'runs'],
  [/^#\/runs(?:\?(.*))?$/, (m) => runsPage(main, new URLSearchParams(m[1] ?? '')), 'runs'],
  [/^#\/components$/, () => componentsPage(main), 'components'],
  [/^#\/workflows$/, () => workflowsPage(main), 'workflows'],
  [/^#\/schedules$/, () => schedulesPage(main), 'schedules'],
];

function stopCurrent() {
  if (current?.stop) current.stop();
  current = null;
}

function show() {
  stopCurrent();
  document.getElementById('toast').textContent = '';
  if (!apiKey()) {
    signInPage();
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  const hash = location.hash || '#/runs';
  for (const [pattern, page, section] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of nav.querySelectorAll('a')) {
      if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    current = page(m);
    return;
  }
  location.replace('#/runs');
}

function signInPage() {
  nav.hidden = true;
  signOutButton.hidden = true;
  document.title = 'Sign in · Weft';
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', required: true,
    autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'api-key-help',
  });
  const message = h('p', { class: 'error', role: 'alert', id: 'sign-in-error' });
  const form = h('form', { class: 'sign-in', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h('p', { id: 'api-key-help', class: 'muted' },
      'A tenant\'s key (weft_…). It stays in this tab only, and is forgotten when the tab closes.'),
    h('button', { type: 'submit' }, 'Sign in'),
    message);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    message.textContent = '';
    try {
      await get('/v1/runs?limit=1', { key });
    } catch (err) {
      message.textContent = err.status === 401 ? 'That key is not valid.' : String(err.message);
      input.focus();
      return;
    }
    setApiKey(key);
    show();
  });
  replace(main, form);
  input.focus();
}

whenUnauthorized(() => {
  if (!apiKey()) return;
  signOut();
  show();
});

signOutButton.addEventListener('click', () => {
  signOut();
  location.hash = '#/runs';
  show();
});

window.addEventListener('hashchange', show);
show();
