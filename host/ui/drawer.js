// The step drawer: one step's attempts, timings, error, logs, items, input
// and output. Large documents are shown 64 KiB at a time.

import { get, seg } from './api.js';
import { badge, duration, errorBox, facts, h, jsonBlock, replace, timeEl } from './dom.js';

/** Log lines shown before "Show all". */
const LOG_LINES = 200;

export class Drawer {
  /** runId: the run; onClose(id) after the drawer closed on step `id`. */
  constructor(runId, onClose) {
    this.runId = runId;
    this.onClose = onClose;
    this.id = null;
    this.title = h('h2', { id: 'drawer-title', class: 'mono' });
    this.closeButton = h('button', { type: 'button', class: 'close', 'aria-label': 'Close step details' }, '×');
    this.body = h('div', { class: 'drawer-body' });
    this.el = h('aside', {
      id: 'drawer', class: 'drawer', role: 'dialog', 'aria-modal': 'false',
      'aria-labelledby': 'drawer-title', hidden: true,
    }, h('div', { class: 'drawer-head' }, this.title, this.closeButton), this.body);
    this.closeButton.addEventListener('click', () => this.close());
    this.onKey = (e) => {
      if (e.key === 'Escape' && this.id !== null) {
        e.preventDefault();
        this.close();
      }
    };
    document.addEventListener('keydown', this.onKey);
  }

  /** Shows step `id`; `step` is its view in the run JSON (merged with events so far). */
  show(id, step, written) {
    const changed = this.id !== id;
    this.id = id;
    this.el.dataset.step = id;
    this.title.textContent = id;
    this.render(step, written, changed);
    this.el.hidden = false;
    if (changed) this.closeButton.focus();
  }

  /** Shows the step again if the drawer is open on it, keeping open sections open. */
  refresh(id, step, written) {
    if (this.id === id) this.render(step, written, false);
  }

  close() {
    if (this.id === null) return;
    const id = this.id;
    this.id = null;
    this.el.hidden = true;
    delete this.el.dataset.step;
    this.onClose(id);
  }

  destroy() {
    document.removeEventListener('keydown', this.onKey);
  }

  render(step, written, fresh) {
    const open = new Set(fresh ? [] : [...this.body.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    const sections = [
      h('p', {}, badge(step.status),
        step.attempts ? ` attempt ${step.attempts}` : ''),
      facts([
        ['Component', step.component ? h('span', { class: 'mono' }, step.component) : undefined],
        ['Digest', step.digest ? h('span', { class: 'mono digest' }, step.digest) : undefined],
        ['Workflow', step.workflow],
        ['Child run', step.run ? h('a', { href: `#/runs/${encodeURIComponent(step.run)}`, class: 'mono' }, step.run) : undefined],
        ['Depends on', step.depends_on?.length ? step.depends_on.join(', ') : undefined],
        ['Attempts', String(step.attempts ?? 0)],
        ['Started', timeEl(step.started_at)],
        ['Finished', timeEl(step.finished_at)],
        ['Duration', step.duration_ms !== undefined ? duration(step.duration_ms) : undefined],
        ['Reason', step.reason],
      ]),
    ];
    if (step.error) sections.push(errorSection('Error', step.error));
    if (step.items) sections.push(this.items(step));
    if (step.compensation) {
      const c = step.compensation;
      sections.push(h('section', {}, h('h3', {}, 'Compensation'),
        h('p', {}, badge(c.status), ` attempt ${c.attempts}`),
        c.error ? errorSection('Compensation error', c.error) : null));
    }
    sections.push(logs(step.logs ?? []));
    const input = written === undefined
      ? h('p', { class: 'muted' }, 'The input as written is kept with workflow templates only; the run\'s input is on the run page.')
      : jsonBlock('Input (as written)', written);
    sections.push(h('section', {}, h('h3', {}, 'Input'), input));
    sections.push(h('section', {}, h('h3', {}, 'Output'),
      step.output === undefined ? h('p', { class: 'muted' }, 'No output yet.') : jsonBlock('Output', step.output, { open: true })));
    replace(this.body, sections);
    for (const d of this.body.querySelectorAll('details')) {
      d.dataset.key ??= d.querySelector('summary')?.textContent;
      if (open.has(d.dataset.key)) d.open = true;
    }
  }

  items(step) {
    const { total, counts = {}, failed = [] } = step.items;
    const done = (counts.succeeded ?? 0) + (counts.failed ?? 0) + (counts.cancelled ?? 0);
    const table = h('tbody');
    const more = h('button', { type: 'button' }, 'Load items');
    let cursor = null;
    const step_id = this.id;
    more.addEventListener('click', async () => {
      more.disabled = true;
      try {
        const q = new URLSearchParams({ limit: '100' });
        if (cursor) q.set('cursor', cursor);
        const page = await get(`/v1/runs/${seg(this.runId)}/steps/${seg(step_id)}/items?${q}`);
        for (const item of page.items) {
          table.append(h('tr', {},
            h('td', {}, String(item.index)), h('td', {}, badge(item.status)),
            h('td', {}, String(item.attempts)),
            h('td', {}, item.error ? `${item.error.code}: ${item.error.message}` : '')));
        }
        cursor = page.next_cursor ?? null;
        more.textContent = 'Load more items';
        more.disabled = !cursor;
        if (!cursor) more.remove();
      } catch (err) {
        more.replaceWith(errorBox(err));
      }
    });
    return h('section', {}, h('h3', {}, 'Items'),
      h('p', {}, `${done} of ${total} done: `,
        Object.entries(counts).filter(([, v]) => v).map(([k, v]) => `${v} ${k}`).join(', ') || 'none started'),
      h('progress', { max: String(total || 1), value: String(done), 'aria-label': 'Items done' }),
      failed.length ? h('details', { 'data-key': 'failed-items' }, h('summary', {}, `Failed items (${failed.length} shown)`),
        h('ul', {}, failed.map((f) => h('li', {}, `#${f.index} ${f.error.code}: ${f.error.message}`)))) : null,
      h('table', { class: 'list compact' },
        h('thead', {}, h('tr', {}, ['Item', 'Status', 'Attempts', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
        table),
      more);
  }
}

function errorSection(title, error) {
  return h('section', { class: 'step-error' }, h('h3', {}, title),
    h('p', {}, h('span', { class: 'mono' }, error.code), error.retryable ? ' (retryable)' : ''),
    h('p', { class: 'message' }, error.message));
}

function logs(lines) {
  const list = h('ol', { class: 'logs' });
  const add = (from, to) => {
    for (const line of lines.slice(from, to)) {
      list.append(h('li', { class: `log-${line.level}` }, h('span', { class: 'level' }, line.level), ' ', line.message));
    }
  };
  add(0, LOG_LINES);
  const section = h('section', {}, h('h3', {}, `Logs (${lines.length})`),
    lines.length ? list : h('p', { class: 'muted' }, 'No log lines.'));
  if (lines.length > LOG_LINES) {
    const all = h('button', { type: 'button' }, `Show all ${lines.length} lines`);
    all.addEventListener('click', () => { add(LOG_LINES, lines.length); all.remove(); });
    section.append(all);
  }
  return section;
}
