// Building and updating elements, shared by the web client and the admin dashboard.
// Text from the server or the person is only ever set as text, never parsed as HTML.
import { shortId } from './format.js';

/** Create an element; strings in children become text nodes (never HTML). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'className') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (!key.includes('-') && key in el) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) el.append(child);
  }
  return el;
}

export const byId = (id) => document.getElementById(id);

/** Hide or show `el`, touching the DOM only for a change. */
export function setHidden(el, hidden) {
  if (el.hidden !== hidden) el.hidden = hidden;
}

/** Set `el`'s text (nothing for null), touching the DOM only for a change. */
export function setText(el, text) {
  const value = text == null ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** Set `el`'s text and hide it while there is none. */
export function showText(el, text) {
  setText(el, text);
  setHidden(el, el.textContent === '');
}

/** A status line: text (empty hides it via CSS) and a kind (info | ok | error). */
export function say(el, text, kind = 'info') {
  setText(el, text);
  el.dataset.kind = kind;
}

/** Run `fn` with `btn` disabled and showing `label`; refocus it afterwards if it had focus. */
export async function busy(btn, label, fn) {
  const hadFocus = document.activeElement === btn;
  const old = btn.textContent;
  btn.disabled = true;
  btn.textContent = label;
  try {
    return await fn();
  } finally {
    btn.disabled = false;
    if (btn.textContent === label) btn.textContent = old;
    if (hadFocus && btn.isConnected && (!document.activeElement || document.activeElement === document.body)) btn.focus();
  }
}

/**
 * A job id as lists show it: its random end (shortId) in monospace; the whole id is its
 * title (on hover) and what a screen reader reads.
 */
export function idTag(id, className = 'mono') {
  const full = id == null ? '' : String(id);
  return h('span', { className, title: full, dataset: { id: full } },
    h('span', { 'aria-hidden': 'true', text: shortId(full) }),
    h('span', { className: 'visually-hidden', text: full }));
}

/** [term, value] rows as the <div><dt><dd></div> children of a <dl>. */
export function termRows(rows, className) {
  return rows.map(([term, value]) => h('div', { className }, h('dt', { text: term }), h('dd', { text: value })));
}
