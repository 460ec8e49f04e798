// The runs list: filters by status and workflow, pages by cursor, and
// refreshes the page shown every few seconds while the tab is visible.

import { get } from './api.js';
import { badge, errorBox, h, replace, timeEl } from './dom.js';

const STATUSES = ['scheduled', 'queued', 'running', 'compensating', 'succeeded', 'failed', 'cancelled'];
const PAGE = 25;
const REFRESH_MS = 3000;

export function runsPage(main, params) {
  document.title = 'Runs · Weft';
  const status = params.get('status') ?? '';
  const workflow = params.get('workflow') ?? '';

  const statusSelect = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));
  const workflowInput = h('input', {
    id: 'filter-workflow', name: 'workflow', type: 'search', value: workflow,
    placeholder: 'name', autocomplete: 'off',
  });
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
    h('label', { for: 'filter-status' }, 'Status'), statusSelect,
    h('label', { for: 'filter-workflow' }, 'Workflow'), workflowInput,
    h('button', { type: 'submit' }, 'Filter'));
  const apply = (e) => {
    e?.preventDefault();
    const q = new URLSearchParams();
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (workflowInput.value.trim()) q.set('workflow', workflowInput.value.trim());
    const hash = q.toString() ? `#/runs?${q}` : '#/runs';
    if (location.hash !== hash) location.hash = hash;
  };
  filters.addEventListener('submit', apply);
  statusSelect.addEventListener('change', apply);

  const body = h('tbody');
  const table = h('table', { class: 'list', 'aria-describedby': 'runs-caption' },
    h('caption', { id: 'runs-caption', class: 'visually-hidden' }, 'Runs, newest first'),
    h('thead', {}, h('tr', {},
      ['Run', 'Workflow', 'Status', 'Created', 'Finished', 'Parent'].map((c) => h('th', { scope: 'col' }, c)))),
    body);
  const note = h('p', { class: 'muted', 'aria-live': 'polite' });
  const previous = h('button', { type: 'button', disabled: true }, '← Newer');
  const next = h('button', { type: 'button', disabled: true }, 'Older →');
  const problem = h('div');

  replace(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs'), note),
    filters, problem, table,
    h('div', { class: 'pager' }, previous, next));

  // cursors[i] is where page i starts; page 0 starts at the newest run.
  const cursors = [null];
  let page = 0;
  let nextCursor = null;
  let stopped = false;
  let timer = null;
  let inFlight = null;

  async function load() {
    clearTimeout(timer);
    inFlight?.abort();
    const controller = new AbortController();
    inFlight = controller;
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (status) q.set('status', status);
    if (workflow) q.set('workflow', workflow);
    if (cursors[page]) q.set('cursor', cursors[page]);
    try {
      const answer = await get(`/v1/runs?${q}`, { signal: controller.signal });
      if (stopped) return;
      replace(problem);
      render(answer);
    } catch (err) {
      if (err.name === 'AbortError' || stopped) return;
      replace(problem, errorBox(err));
    }
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  }

  function tick() {
    if (document.hidden) {
      timer = setTimeout(tick, REFRESH_MS);
      return;
    }
    load();
  }

  function render(answer) {
    nextCursor = answer.next_cursor ?? null;
    const rows = answer.runs.map((run) => h('tr', { 'data-run': run.id },
      h('td', {}, h('a', { href: `#/runs/${encodeURIComponent(run.id)}`, class: 'mono' }, run.id)),
      h('td', {}, run.workflow),
      h('td', {}, badge(run.status)),
      h('td', {}, timeEl(run.created_at)),
      h('td', {}, timeEl(run.finished_at)),
      h('td', {}, run.parent
        ? h('a', { href: `#/runs/${encodeURIComponent(run.parent)}`, class: 'mono' }, run.parent)
        : '–')));
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: '6', class: 'muted' },
        nextCursor ? 'No matching run on this page; older ones may match.' : 'No runs.')));
    }
    replace(body, rows);
    previous.disabled = page === 0;
    next.disabled = !nextCursor;
    note.textContent = `Page ${page + 1} · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  }

  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors[page + 1] = nextCursor;
    page += 1;
    load();
  });
  previous.addEventListener('click', () => {
    if (page === 0) return;
    page -= 1;
    load();
  });

  load();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      inFlight?.abort();
    },
  };
}
