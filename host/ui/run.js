// One run: its header (status, times, cancel), its steps as a graph kept
// live from the events stream, and the step drawer.

import { ApiError, events, get, post, seg } from './api.js';
import { Dag } from './dag.js';
import { Drawer } from './drawer.js';
import { badge, errorBox, facts, h, jsonBlock, replace, timeEl, toast } from './dom.js';

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
/** The least time between two reads of the whole run while a drawer is open. */
const REFRESH_MS = 1000;
const ORDER = ['pending', 'queued', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled'];

export function runPage(main, id) {
  document.title = `Run ${id} · Weft`;
  const abort = new AbortController();
  let stopped = false;
  replace(main, h('h1', {}, 'Run ', h('span', { class: 'mono' }, id)), h('p', { class: 'muted' }, 'Loading…'));

  let run = null;
  let dag = null;
  let written = new Map();
  const drawer = new Drawer(id, (step) => {
    dag?.select(null);
    dag?.focus(step);
  });
  const statusEl = h('span', { id: 'run-status', 'aria-live': 'polite' });
  const countsEl = h('p', { class: 'counts', 'aria-live': 'off' });
  const facts_ = h('div');
  const cancel = h('button', { type: 'button', id: 'cancel-run', class: 'danger' }, 'Cancel run');
  const confirmBox = h('span', { class: 'confirm', hidden: true },
    'Cancel this run? ',
    h('button', { type: 'button', id: 'cancel-confirm', class: 'danger' }, 'Yes, cancel'),
    h('button', { type: 'button', id: 'cancel-keep' }, 'Keep running'));
  const live = h('span', { class: 'muted', id: 'live' });
  const graph = h('div', { class: 'graph', id: 'graph' });
  const problem = h('div');

  cancel.addEventListener('click', () => { cancel.hidden = true; confirmBox.hidden = false; confirmBox.querySelector('#cancel-confirm').focus(); });
  confirmBox.querySelector('#cancel-keep').addEventListener('click', () => { confirmBox.hidden = true; cancel.hidden = false; cancel.focus(); });
  confirmBox.querySelector('#cancel-confirm').addEventListener('click', async () => {
    confirmBox.hidden = true;
    try {
      const answer = await post(`/v1/runs/${seg(id)}/cancel`);
      setStatus(answer.status);
      toast(`Run ${answer.status}.`);
    } catch (err) {
      toast(err instanceof ApiError && err.code === 'run_finished' ? 'The run has ended already.' : String(err.message));
      cancel.hidden = false;
    }
  });

  function setStatus(status) {
    if (!run) return;
    run.status = status;
    replace(statusEl, badge(status));
    const ended = FINAL.has(status) || status === 'compensating';
    cancel.hidden = ended;
    if (ended) confirmBox.hidden = true;
  }

  function header() {
    replace(facts_, facts([
      ['Workflow', run.workflow_version ? `${run.workflow}@${run.workflow_version}` : run.workflow],
      ['Created', timeEl(run.created_at)],
      ['Starts at', run.start_at ? timeEl(run.start_at) : undefined],
      ['Started', timeEl(run.started_at)],
      ['Finished', timeEl(run.finished_at)],
      ['Priority', String(run.priority)],
      ['Parent', run.parent ? h('a', { href: `#/runs/${encodeURIComponent(run.parent)}`, class: 'mono' }, run.parent) : undefined],
      ['Schedule', run.schedule ? `${run.schedule} (tick ${run.scheduled_for})` : undefined],
      ['Steps', String(Object.keys(run.steps).length)],
    ]));
    if (run.error) {
      facts_.append(h('p', { class: 'error', id: 'run-error' },
        h('span', { class: 'mono' }, run.error.code), run.error.step ? ` in step ${run.error.step}: ` : ': ', run.error.message));
    }
    facts_.append(jsonBlock('Input', run.input), jsonBlock('Output', run.output));
  }

  function showCounts(counts) {
    const parts = ORDER.filter((k) => counts[k]).map((k) => h('span', { class: `count s-${k}` }, `${counts[k]} ${k}`));
    replace(countsEl, parts);
  }

  function progressOf(step) {
    if (!step.items) return undefined;
    const c = step.items.counts ?? {};
    return { done: (c.succeeded ?? 0) + (c.failed ?? 0) + (c.cancelled ?? 0), total: step.items.total };
  }

  // Events that arrive while the whole run is being read are applied again
  // to what it returns, which may be older than they are.
  let replay = null;
  let lastRead = 0;
  let reading = null;

  async function read() {
    if (reading) return reading;
    replay = [];
    lastRead = performance.now();
    reading = (async () => {
      try {
        const fresh = await get(`/v1/runs/${seg(id)}`, { signal: abort.signal });
        if (stopped) return;
        const events_ = replay;
        replay = null;
        const had = run;
        run = fresh;
        if (had) {
          for (const [sid, step] of Object.entries(run.steps)) {
            if (dag && dag.status(sid) !== step.status) dag.set(sid, step.status);
            const p = progressOf(step);
            if (p && dag) dag.set(sid, null, p);
          }
        }
        for (const [type, data] of events_) apply(type, data);
        header();
        setStatus(run.status);
        if (drawer.id !== null) drawer.refresh(drawer.id, run.steps[drawer.id], written.get(drawer.id));
      } finally {
        reading = null;
        replay = null;
      }
    })();
    return reading;
  }

  function apply(type, data) {
    if (replay) replay.push([type, data]);
    if (!run) return;
    if (type === 'run') {
      setStatus(data.status);
      return;
    }
    const step = run.steps[data.step];
    if (!step) return;
    if (type === 'step') {
      step.status = data.status;
      if (data.attempt) step.attempts = data.attempt;
      if (data.error) step.error = data.error;
      if (data.status === 'running' && !step.started_at) step.started_at = data.at;
      dag.set(data.step, data.status);
      if (drawer.id === data.step) {
        drawer.refresh(data.step, step, written.get(data.step));
        if (FINAL.has(data.status)) maybeRead();
      }
    } else if (type === 'items') {
      step.items ??= { total: data.total, counts: {} };
      step.items.total = data.total;
      step.items.counts = { ...step.items.counts, succeeded: data.succeeded, failed: data.failed };
      dag.set(data.step, null, progressOf(step));
    } else if (type === 'compensation') {
      step.compensation = { ...(step.compensation ?? {}), status: data.status, attempts: data.attempt, error: data.error };
    }
  }

  function maybeRead() {
    if (stopped || FINAL.has(run?.status) && lastRead && run.finished_at) return;
    if (performance.now() - lastRead >= REFRESH_MS) read().catch(() => {});
  }

  function open(step) {
    dag.select(step);
    drawer.show(step, run.steps[step], written.get(step));
    maybeRead();
  }

  async function follow() {
    let wait = 1000;
    while (!stopped && !FINAL.has(run.status)) {
      live.textContent = '● live';
      try {
        await events(`/v1/runs/${seg(id)}/events`, apply, abort.signal);
        wait = 1000;
      } catch (err) {
        if (stopped || err.name === 'AbortError') return;
        live.textContent = 'reconnecting…';
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 15000);
        continue;
      }
      // The stream ends with the run: read its final state once.
      await read().catch(() => {});
      if (!FINAL.has(run.status)) await new Promise((r) => setTimeout(r, wait));
    }
    live.textContent = '';
  }

  (async () => {
    try {
      await read();
    } catch (err) {
      if (!stopped) replace(main, h('h1', {}, 'Run ', h('span', { class: 'mono' }, id)), errorBox(err));
      return;
    }
    if (stopped) return;
    const steps = Object.entries(run.steps).map(([sid, step]) => ({
      id: sid, deps: step.depends_on ?? [], status: step.status, progress: progressOf(step),
    }));
    if (run.workflow_version) {
      get(`/v1/workflows/${seg(run.workflow)}/${seg(run.workflow_version)}`, { signal: abort.signal })
        .then((t) => {
          written = new Map((t.document?.steps ?? []).map((st) => [st.id, st.input ?? {}]));
        })
        .catch(() => {});
    }
    replace(main,
      h('div', { class: 'page-head' },
        h('h1', {}, 'Run ', h('span', { class: 'mono', id: 'run-id' }, id)), statusEl, live, cancel, confirmBox),
      problem, countsEl,
      h('div', { class: 'run-layout' }, h('div', { class: 'run-main' }, graph, facts_), drawer.el));
    setStatus(run.status);
    header();
    dag = new Dag(graph, steps, { onOpen: open, onCounts: showCounts });
    follow();
  })();

  return {
    stop() {
      stopped = true;
      abort.abort();
      drawer.destroy();
    },
  };
}
