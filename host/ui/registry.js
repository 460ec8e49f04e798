// What a tenant has published and scheduled: components (versions, digests,
// sizes), workflow templates (versions and documents) and schedules (pause,
// resume).

import { get, post, seg } from './api.js';
import { badge, bytes, errorBox, h, jsonBlock, replace, timeEl, toast } from './dom.js';

/** Version details read at once, at most. */
const DETAILS_AT_ONCE = 4;
/** Component versions whose details are read; more are listed by version only. */
const MAX_DETAILED = 300;

/** Runs `f` over `items`, `n` at a time. */
async function pool(items, n, f) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

function table(caption, columns, body) {
  return h('table', { class: 'list' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    body);
}

export function componentsPage(main) {
  document.title = 'Components · Weft';
  const abort = new AbortController();
  const body = h('tbody');
  const problem = h('div');
  replace(main, h('h1', {}, 'Components'), problem,
    table('Published components, by name and version',
      ['Name', 'Version', 'Digest', 'Size', 'Published'], body));
  (async () => {
    try {
      const { components } = await get('/v1/components', { signal: abort.signal });
      const rows = [];
      for (const c of components) {
        // Newest version first.
        for (const version of [...c.versions].reverse()) {
          const cells = [h('td', {}, '…'), h('td', {}, '…'), h('td', {}, '…')];
          const row = h('tr', { 'data-component': `${c.name}@${version}` },
            h('th', { scope: 'row', class: 'mono' }, c.name), h('td', { class: 'mono' }, version), ...cells);
          rows.push({ name: c.name, version, cells, row });
        }
      }
      if (!rows.length) body.append(h('tr', {}, h('td', { colspan: '5', class: 'muted' }, 'No components.')));
      body.append(...rows.map((r) => r.row));
      await pool(rows.slice(0, MAX_DETAILED), DETAILS_AT_ONCE, async (r) => {
        const d = await get(`/v1/components/${seg(r.name)}/${seg(r.version)}`, { signal: abort.signal });
        replace(r.cells[0], h('span', { class: 'mono digest', title: d.digest }, d.digest));
        replace(r.cells[1], bytes(d.size));
        replace(r.cells[2], timeEl(d.published_at));
      });
    } catch (err) {
      if (err.name !== 'AbortError') replace(problem, errorBox(err));
    }
  })();
  return { stop: () => abort.abort() };
}

export function workflowsPage(main) {
  document.title = 'Workflows · Weft';
  const abort = new AbortController();
  const list = h('div', { class: 'templates' });
  const detail = h('section', { class: 'template-detail', 'aria-live': 'polite' });
  const problem = h('div');
  replace(main, h('h1', {}, 'Workflow templates'), problem, h('div', { class: 'split' }, list, detail));

  async function show(name, version, button) {
    for (const b of list.querySelectorAll('button[aria-pressed]')) b.setAttribute('aria-pressed', 'false');
    button.setAttribute('aria-pressed', 'true');
    replace(detail, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const t = await get(`/v1/workflows/${seg(name)}/${seg(version)}`, { signal: abort.signal });
      replace(detail,
        h('h2', { class: 'mono' }, `${t.name}@${t.version}`),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Digest'), h('dd', { class: 'mono digest' }, t.digest),
          h('dt', {}, 'Published'), h('dd', {}, timeEl(t.published_at)),
          h('dt', {}, 'Steps'), h('dd', {}, String(t.document?.steps?.length ?? 0))),
        h('p', {}, h('a', { href: `#/runs?workflow=${encodeURIComponent(t.name)}` }, 'Runs of this workflow')),
        jsonBlock('Document', t.document, { open: true }));
    } catch (err) {
      if (err.name !== 'AbortError') replace(detail, errorBox(err));
    }
  }

  (async () => {
    try {
      const { workflows } = await get('/v1/workflows', { signal: abort.signal });
      if (!workflows.length) {
        replace(list, h('p', { class: 'muted' }, 'No workflow templates. Publish one with PUT /v1/workflows/{name}/{version}.'));
        return;
      }
      replace(list, table('Workflow templates', ['Name', 'Versions'], h('tbody', {},
        workflows.map((w) => h('tr', {},
          h('th', { scope: 'row', class: 'mono' }, w.name),
          h('td', {}, [...w.versions].reverse().map((v) => {
            const b = h('button', { type: 'button', class: 'chip', 'aria-pressed': 'false', 'data-template': `${w.name}@${v}` }, v);
            b.addEventListener('click', () => show(w.name, v, b));
            return b;
          })))))));
      const first = list.querySelector('button[data-template]');
      if (first) first.click();
    } catch (err) {
      if (err.name !== 'AbortError') replace(problem, errorBox(err));
    }
  })();
  return { stop: () => abort.abort() };
}

export function schedulesPage(main) {
  document.title = 'Schedules · Weft';
  const abort = new AbortController();
  const body = h('tbody');
  const problem = h('div');
  replace(main, h('h1', {}, 'Schedules'), problem,
    table('Schedules, by name',
      ['Name', 'Cron', 'Workflow', 'Overlap', 'State', 'Next tick', 'Last tick', 'Last run', ''], body));

  function row(sc) {
    const toggle = h('button', {
      type: 'button', 'data-action': sc.paused ? 'resume' : 'pause',
      'aria-label': `${sc.paused ? 'Resume' : 'Pause'} schedule ${sc.name}`,
    }, sc.paused ? 'Resume' : 'Pause');
    const tr = h('tr', { 'data-schedule': sc.name },
      h('th', { scope: 'row', class: 'mono' }, sc.name),
      h('td', { class: 'mono' }, `${sc.cron} (${sc.timezone})`),
      h('td', { class: 'mono' }, sc.workflow),
      h('td', {}, sc.overlap),
      h('td', {}, badge(sc.paused ? 'paused' : 'active'),
        sc.last_error ? h('p', { class: 'error' }, `${sc.last_error.code} at ${sc.last_error.tick}: ${sc.last_error.message}`) : null),
      h('td', {}, timeEl(sc.next_tick)),
      h('td', {}, timeEl(sc.last_tick)),
      h('td', {}, sc.last_run ? h('a', { href: `#/runs/${encodeURIComponent(sc.last_run)}`, class: 'mono' }, sc.last_run) : '–'),
      h('td', {}, toggle));
    toggle.addEventListener('click', async () => {
      toggle.disabled = true;
      try {
        const updated = await post(`/v1/schedules/${seg(sc.name)}/${sc.paused ? 'resume' : 'pause'}`);
        const fresh = row(updated);
        tr.replaceWith(fresh);
        fresh.querySelector('button').focus();
        toast(`Schedule ${updated.name} ${updated.paused ? 'paused' : 'resumed'}.`);
      } catch (err) {
        toggle.disabled = false;
        toast(String(err.message));
      }
    });
    return tr;
  }

  (async () => {
    try {
      const { schedules } = await get('/v1/schedules', { signal: abort.signal });
      replace(body, schedules.length
        ? schedules.map(row)
        : h('tr', {}, h('td', { colspan: '9', class: 'muted' }, 'No schedules.')));
    } catch (err) {
      if (err.name !== 'AbortError') replace(problem, errorBox(err));
    }
  })();
  return { stop: () => abort.abort() };
}
