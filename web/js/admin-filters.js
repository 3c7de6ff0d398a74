// A search form of the dashboard (jobs, dead letters): its fields are the filters of a
// list request (admin-model.js names them). The filters applied are kept in the page's
// URL (history.replaceState) and read from it when the page opens, so a copied link
// opens the same search.
import { say, setText } from './dom.js';
import { filterNamed, filtersFromQuery, isoToLocalInput, localInputToIso, queryWithFilters } from './admin-model.js';

// Typing waits this long after the last key before the list is searched again.
const TYPING_DELAY_MS = 400;

/**
 * `fields`: filter name -> its input or select; `more`: the <details> with the less used
 * fields (it opens by itself when one of them is set); `clear`: the Clear button;
 * `error`: where the server's message about a refused filter goes; `prefix`: the
 * filters' names in the URL after it (`dlq.`).
 */
export function createFilterForm({ form, fields, more = null, clear, error, prefix = '' }) {
  const keys = Object.keys(fields);
  const summary = more ? more.querySelector('summary') : null;
  const summaryText = summary ? summary.textContent : '';
  let timer = 0;

  const isTime = (el) => el.type === 'datetime-local';

  /** The filters in the form now. */
  function read() {
    return Object.fromEntries(keys.map((key) => {
      const el = fields[key];
      if (!isTime(el)) return [key, el.value.trim()];
      // A half-typed time has no value; sent as it is, the server refuses it (never dropped).
      return [key, el.validity && el.validity.badInput ? 'incomplete' : localInputToIso(el.value)];
    }));
  }

  /** "More filters (2)" while two of its fields are set; it opens for one that is. */
  function syncMore() {
    if (!more) return;
    const set = keys.filter((key) => more.contains(fields[key]) && fields[key].value.trim() !== '').length;
    if (set && !more.open) more.open = true;
    setText(summary, set ? `${summaryText} (${set})` : summaryText);
  }

  function fill(filters) {
    for (const key of keys) {
      const el = fields[key];
      const value = filters[key] || '';
      el.value = isTime(el) ? isoToLocalInput(value) : value;
    }
    syncMore();
  }

  function showError(message) {
    say(error, message, message ? 'error' : 'info');
    const named = message ? filterNamed(message, keys) : null;
    for (const key of keys) {
      const el = fields[key];
      if (key === named) {
        el.setAttribute('aria-invalid', 'true');
        el.setAttribute('aria-describedby', error.id);
        if (more && more.contains(el)) more.open = true;
      } else if (el.hasAttribute('aria-invalid')) {
        el.removeAttribute('aria-invalid');
        el.removeAttribute('aria-describedby');
      }
    }
  }

  /** Take the form's filters for a search: into the URL, any old error gone. */
  function apply() {
    clearTimeout(timer);
    const filters = read();
    const query = queryWithFilters(location.search, filters, keys, prefix);
    if (query !== location.search) history.replaceState(history.state, '', `${location.pathname}${query}${location.hash}`);
    showError('');
    syncMore();
    return filters;
  }

  /** Call `edited()` when the person changed a filter: at once for a choice, Enter or Clear; after a pause in typing. */
  function listen(edited) {
    const now = () => { clearTimeout(timer); edited(); };
    fill(filtersFromQuery(location.search, keys, prefix));
    for (const el of Object.values(fields)) {
      if (el.tagName === 'SELECT' || isTime(el)) {
        el.addEventListener('change', now);
      } else {
        el.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(edited, TYPING_DELAY_MS); });
      }
      el.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); now(); } });
    }
    form.addEventListener('submit', (e) => { e.preventDefault(); now(); });
    clear.addEventListener('click', () => {
      for (const el of Object.values(fields)) el.value = '';
      syncMore();
      now();
    });
  }

  return { read, apply, showError, listen };
}
