// A run's steps as a graph: laid out once in the page (layers by longest
// path from the steps without dependencies, wide layers wrapped into a
// grid), drawn as SVG, and then updated in place: a status change sets one
// node's class, batched to one pass per animation frame.

import { s } from './dom.js';

const PAD = 16;
const NODE_W = 168;
const NODE_H = 46;
const GAP_X = 14;
const GAP_Y = 54;
const ROW_GAP = 12;
const CELL = 16;
const CELL_GAP = 4;
/** A layer of more steps than this is drawn as small cells, without labels. */
const COMPACT_FROM = 240;
/** Past this many edges, the rest are left out (the layers still show the order). */
const MAX_EDGES = 4000;
/**
 * A graph of more steps than this is repainted at most every PAINT_MS
 * instead of every frame: repainting thousands of nodes 60 times a second
 * would take a core from the server the page watches.
 */
const LARGE = 500;
const PAINT_MS = 250;

/**
 * The layout of `steps` ([{id, deps: [id]}], document order) for a drawing
 * `width` pixels wide: per step its layer and box, per layer its box, and
 * the edges to draw.
 */
export function layout(steps, width) {
  const n = steps.length;
  const index = new Map(steps.map((st, i) => [st.id, i]));
  const deps = steps.map((st) => (st.deps ?? []).map((d) => index.get(d)).filter((d) => d !== undefined));
  const children = Array.from({ length: n }, () => []);
  const indegree = new Array(n).fill(0);
  deps.forEach((ds, i) => {
    for (const d of ds) { children[d].push(i); indegree[i] += 1; }
  });
  // Kahn's order; a step's layer is one past its deepest dependency.
  const layerOf = new Array(n).fill(0);
  const queue = [];
  for (let i = 0; i < n; i += 1) if (indegree[i] === 0) queue.push(i);
  for (let head = 0; head < queue.length; head += 1) {
    const i = queue[head];
    for (const c of children[i]) {
      layerOf[c] = Math.max(layerOf[c], layerOf[i] + 1);
      indegree[c] -= 1;
      if (indegree[c] === 0) queue.push(c);
    }
  }
  const layers = [];
  for (let i = 0; i < n; i += 1) (layers[layerOf[i]] ??= []).push(i);

  // Within a layer, steps sit near their dependencies (mean position of
  // those in the layers above), ties in document order.
  const rank = new Float64Array(n);
  layers.forEach((members, l) => {
    if (l > 0) {
      const key = new Map(members.map((i) => [i, deps[i].length
        ? deps[i].reduce((sum, d) => sum + rank[d], 0) / deps[i].length
        : 0.5]));
      members.sort((a, b) => key.get(a) - key.get(b) || a - b);
    }
    members.forEach((i, k) => { rank[i] = members.length > 1 ? k / (members.length - 1) : 0.5; });
  });

  const inner = Math.max(width - 2 * PAD, NODE_W);
  const cols = Math.max(1, Math.floor((inner + GAP_X) / (NODE_W + GAP_X)));
  const cellCols = Math.max(10, Math.floor((inner + CELL_GAP) / (CELL + CELL_GAP)));
  const boxes = new Array(n);
  const layerBoxes = [];
  let y = PAD;
  let drawnWidth = 0;
  for (const members of layers) {
    const compact = members.length > COMPACT_FROM;
    const perRow = compact ? cellCols : cols;
    const w = compact ? CELL : NODE_W;
    const h = compact ? CELL : NODE_H;
    const gx = compact ? CELL_GAP : GAP_X;
    const gy = compact ? CELL_GAP : ROW_GAP;
    const across = Math.min(perRow, members.length);
    const rowWidth = across * w + (across - 1) * gx;
    const rows = Math.ceil(members.length / perRow);
    const x0 = PAD + Math.max(0, (inner - rowWidth) / 2);
    members.forEach((i, k) => {
      boxes[i] = {
        x: x0 + (k % perRow) * (w + gx), y: y + Math.floor(k / perRow) * (h + gy),
        w, h, compact,
      };
    });
    const height = rows * h + (rows - 1) * gy;
    layerBoxes.push({ x: x0, y, w: rowWidth, h: height, wrapped: rows > 1, count: members.length, compact });
    drawnWidth = Math.max(drawnWidth, rowWidth);
    y += height + GAP_Y;
  }

  // An edge into or out of a wrapped layer goes to the layer's box instead,
  // once: a fan-out of thousands draws as one line.
  const edges = [];
  const seen = new Set();
  let left = 0;
  for (let i = 0; i < n && edges.length < MAX_EDGES; i += 1) {
    for (const d of deps[i]) {
      const from = layerBoxes[layerOf[d]].wrapped ? `L${layerOf[d]}` : `S${d}`;
      const to = layerBoxes[layerOf[i]].wrapped ? `L${layerOf[i]}` : `S${i}`;
      const key = `${from}>${to}`;
      if (seen.has(key)) continue;
      seen.add(key);
      if (edges.length >= MAX_EDGES) { left += 1; continue; }
      const a = from[0] === 'L' ? layerBoxes[layerOf[d]] : boxes[d];
      const b = to[0] === 'L' ? layerBoxes[layerOf[i]] : boxes[i];
      edges.push([a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y]);
    }
  }
  return {
    boxes, layers, layerBoxes, edges, left,
    width: Math.max(width, drawnWidth + 2 * PAD),
    height: y - GAP_Y + PAD,
  };
}

/** The text of a label cut to fit a node. */
function fit(text, max) {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** The graph of one run, drawn into `container`. */
export class Dag {
  /**
   * steps: [{id, deps, status, progress?}]; onOpen(id) is called when a step
   * is chosen (click, Enter or Space); onCounts(counts) after each batch.
   */
  constructor(container, steps, { onOpen, onCounts }) {
    this.onOpen = onOpen;
    this.onCounts = onCounts;
    this.nodes = new Map();
    this.pending = new Map();
    this.frame = 0;
    this.selected = null;
    this.counts = {};
    const width = container.clientWidth || 1000;
    const plan = layout(steps, width);
    this.order = plan.layers.flat().map((i) => steps[i].id);
    this.layerOf = new Map();
    plan.layers.forEach((members, l) => members.forEach((i) => this.layerOf.set(steps[i].id, l)));
    this.layers = plan.layers.map((members) => members.map((i) => steps[i].id));

    const svg = s('svg', {
      class: 'dag', width: plan.width, height: plan.height,
      viewBox: `0 0 ${plan.width} ${plan.height}`,
      role: 'group', 'aria-label': `Steps of the run (${steps.length}); arrow keys move between them`,
    });
    const edges = s('g', { class: 'edges', 'aria-hidden': 'true' });
    for (const [x1, y1, x2, y2] of plan.edges) {
      const dy = Math.max(12, (y2 - y1) / 2);
      edges.append(s('path', { d: `M${x1} ${y1} C${x1} ${y1 + dy} ${x2} ${y2 - dy} ${x2} ${y2}` }));
    }
    const groups = s('g', { class: 'layers', 'aria-hidden': 'true' });
    for (const box of plan.layerBoxes) {
      if (!box.wrapped) continue;
      groups.append(s('rect', {
        class: 'layer', x: box.x - 6, y: box.y - 6, width: box.w + 12, height: box.h + 12, rx: 8,
      }));
    }
    const nodes = s('g', { class: 'nodes' });
    const fragment = document.createDocumentFragment();
    steps.forEach((st, i) => {
      const box = plan.boxes[i];
      const el = box.compact ? this.cell(st, box) : this.node(st, box);
      this.nodes.set(st.id, { el, status: st.status, compact: box.compact, progress: null });
      this.count(st.status, 1);
      if (st.progress) this.progress(st.id, st.progress);
      fragment.append(el);
    });
    nodes.append(fragment);
    svg.append(groups, edges, nodes);
    /** Edges left out of the drawing (past MAX_EDGES). */
    this.edgesLeft = plan.left;
    const first = this.nodes.get(this.order[0]);
    if (first) first.el.setAttribute('tabindex', '0');
    this.focusable = this.order[0];

    svg.addEventListener('click', (e) => {
      const el = e.target.closest('[data-step]');
      if (el) this.choose(el.dataset.step);
    });
    svg.addEventListener('keydown', (e) => this.key(e));
    container.replaceChildren(svg);
    this.svg = svg;
    this.onCounts?.(this.counts);
  }

  node(st, box) {
    const el = s('g', {
      class: `node s-${st.status}`, 'data-step': st.id, transform: `translate(${box.x} ${box.y})`,
      tabindex: '-1', role: 'button', 'aria-label': `${st.id}: ${st.status}`,
    },
    s('rect', { class: 'box', width: box.w, height: box.h, rx: 6 }),
    s('text', { class: 'label', x: 10, y: 19 }, fit(st.id, 20)),
    s('text', { class: 'state', x: 10, y: 36 }, st.status));
    return el;
  }

  cell(st, box) {
    return s('rect', {
      class: `cell s-${st.status}`, 'data-step': st.id, x: box.x, y: box.y,
      width: box.w, height: box.h, rx: 3, tabindex: '-1', role: 'button',
      'aria-label': `${st.id}: ${st.status}`,
    });
  }

  count(status, by) {
    this.counts[status] = (this.counts[status] ?? 0) + by;
    if (!this.counts[status]) delete this.counts[status];
  }

  /** Queues a step's new status (and for_each progress) for the next frame. */
  set(id, status, progress) {
    const entry = this.pending.get(id) ?? {};
    if (status) entry.status = status;
    if (progress) entry.progress = progress;
    this.pending.set(id, entry);
    if (this.frame) return;
    if (this.nodes.size > LARGE) {
      this.frame = setTimeout(() => requestAnimationFrame(() => this.flush()), PAINT_MS);
    } else {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.frame = 0;
    for (const [id, { status, progress }] of this.pending) {
      const node = this.nodes.get(id);
      if (!node) continue;
      if (status && status !== node.status) {
        this.count(node.status, -1);
        this.count(status, 1);
        node.status = status;
        this.paint(id, node);
      }
      if (progress) this.progress(id, progress);
    }
    this.pending.clear();
    this.onCounts?.(this.counts);
  }

  paint(id, node) {
    const base = node.compact ? 'cell' : 'node';
    const selected = this.selected === id ? ' selected' : '';
    node.el.setAttribute('class', `${base} s-${node.status}${selected}`);
    const progress = node.progressText ? ` (${node.progressText})` : '';
    node.el.setAttribute('aria-label', `${id}: ${node.status}${progress}`);
    if (!node.compact) node.el.querySelector('.state').textContent = `${node.status}${progress ? ` · ${node.progressText}` : ''}`;
  }

  /** for_each progress: done of total items, as a bar under the label. */
  progress(id, { done, total }) {
    const node = this.nodes.get(id);
    if (!node || !total) return;
    node.progressText = `${done}/${total} items`;
    if (!node.compact) {
      if (!node.bar) {
        node.el.append(s('rect', { class: 'bar-bg', x: 10, y: NODE_H - 7, width: NODE_W - 20, height: 3 }));
        node.bar = s('rect', { class: 'bar', x: 10, y: NODE_H - 7, width: 0, height: 3 });
        node.el.append(node.bar);
      }
      node.bar.setAttribute('width', String(((NODE_W - 20) * Math.min(done, total)) / total));
    }
    this.paint(id, node);
  }

  status(id) {
    return this.nodes.get(id)?.status;
  }

  /** Marks `id` as the step the drawer shows (null for none). */
  select(id) {
    const before = this.selected;
    this.selected = id;
    for (const one of [before, id]) {
      const node = one && this.nodes.get(one);
      if (node) this.paint(one, node);
    }
  }

  choose(id) {
    this.moveFocus(id, false);
    this.onOpen(id);
  }

  focus(id) {
    this.moveFocus(id, true);
  }

  moveFocus(id, focus) {
    const node = this.nodes.get(id);
    if (!node) return;
    const old = this.nodes.get(this.focusable);
    if (old && old !== node) old.el.setAttribute('tabindex', '-1');
    node.el.setAttribute('tabindex', '0');
    this.focusable = id;
    if (focus) node.el.focus();
  }

  key(e) {
    const el = e.target.closest?.('[data-step]');
    if (!el) return;
    const id = el.dataset.step;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      this.choose(id);
      return;
    }
    const at = this.order.indexOf(id);
    let to = null;
    if (e.key === 'ArrowRight') to = this.order[at + 1];
    else if (e.key === 'ArrowLeft') to = this.order[at - 1];
    else if (e.key === 'Home') to = this.order[0];
    else if (e.key === 'End') to = this.order[this.order.length - 1];
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const l = this.layerOf.get(id);
      const layer = this.layers[l + (e.key === 'ArrowDown' ? 1 : -1)];
      if (layer) {
        const here = this.layers[l];
        const k = here.length > 1 ? here.indexOf(id) / (here.length - 1) : 0.5;
        to = layer[Math.round(k * (layer.length - 1))];
      }
    }
    if (to) {
      e.preventDefault();
      this.focus(to);
    }
  }
}
