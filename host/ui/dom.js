// Building the page without innerHTML: every text a server sends is set as
// text, never parsed as markup.

const SVG = 'http://www.w3.org/2000/svg';

/** An element: h('a', {href: '#/runs', class: 'x'}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

/** An SVG element, attributes set with setAttribute (the policy forbids style attributes). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replaces everything inside `el`. */
export function replace(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** A timestamp as local date and time, or a dash. */
export function time(text) {
  if (!text) return '–';
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return text;
  return d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
}

/** A time element with the exact timestamp in its datetime attribute. */
export function timeEl(text) {
  return text ? h('time', { datetime: text, title: text }, time(text)) : '–';
}

/** Milliseconds as "850 ms", "12.3 s" or "4 min 2 s". */
export function duration(ms) {
  if (ms === undefined || ms === null) return '–';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Bytes as "12.3 KiB". */
export function bytes(n) {
  if (typeof n !== 'number') return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A status badge: its colour comes from the class, its meaning from the text. */
export function badge(status) {
  return h('span', { class: `badge s-${status}` }, status);
}

/** How much of a JSON document is shown before "Show more". */
export const JSON_SHOWN = 64 * 1024;

/**
 * A value as indented JSON in a collapsible block, the first JSON_SHOWN
 * characters shown and the rest a button press away.
 */
export function jsonBlock(summary, value, { open = false } = {}) {
  const text = value === undefined ? 'absent' : JSON.stringify(value, null, 2);
  const pre = h('pre', { class: 'json', tabindex: '0' });
  const details = h('details', { class: 'json-block', open }, h('summary', {}, summary), pre);
  let shown = 0;
  const more = h('button', { type: 'button', class: 'more' });
  const showMore = () => {
    const next = Math.min(text.length, shown + JSON_SHOWN);
    pre.append(text.slice(shown, next));
    shown = next;
    if (shown >= text.length) {
      more.remove();
    } else {
      more.textContent = `Show more (${bytes(text.length - shown)} left)`;
    }
  };
  more.addEventListener('click', showMore);
  details.append(more);
  showMore();
  return details;
}

/** A definition list from [term, value] pairs; pairs whose value is undefined are left out. */
export function facts(pairs) {
  const dl = h('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h('dt', {}, term), h('dd', {}, value ?? '–'));
  }
  return dl;
}

/** A short message in the page's live region. */
export function toast(message) {
  const el = document.getElementById('toast');
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.textContent = ''; }, 5000);
}

/** An error box for a failed request. */
export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, String(err?.message ?? err));
}
