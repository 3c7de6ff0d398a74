// One card of the Processing list: its elements, and bringing them up to date with what
// the entry knows (see jobs.js). Every text is set as text, every URL checked by safeUrl.
import { h, setHidden, showText, termRows } from './dom.js';
import { safeUrl } from './format.js';
import { describeMetadata } from './images.js';
import { isTransientFailure, CANCELLABLE_STATES } from './wire.js';

/**
 * The elements of `entry`'s card. `actions` are what its buttons do, each called with
 * the entry: { cancel, retryUpload, retryJob, open(entry, button) }.
 */
export function buildCard(entry, actions) {
  const titleId = `card-${entry.uid}-title`;
  const title = h('h3', { className: 'card-title', id: titleId });
  const badge = h('span', { className: 'badge' });
  const thumb = h('div', { className: 'card-thumb' });
  const progress = h('progress', { className: 'bar', max: 100, value: 0, 'aria-labelledby': titleId });
  const detail = h('p', { className: 'card-detail' });
  const note = h('p', { className: 'card-note', hidden: true });
  const error = h('p', { className: 'card-error', hidden: true });
  const meta = h('dl', { className: 'meta', hidden: true });
  const previewLink = h('a', { className: 'link', target: '_blank', rel: 'noopener', text: 'Preview' });
  const originalLink = h('a', { className: 'link', target: '_blank', rel: 'noopener', text: 'Original' });
  const links = h('p', { className: 'card-links', hidden: true }, previewLink, originalLink);
  const cancelBtn = h('button', {
    type: 'button', className: 'btn btn-small', text: 'Cancel', hidden: true, 'data-testid': 'job-cancel',
    onclick: () => actions.cancel(entry),
  });
  const retryBtn = h('button', {
    type: 'button', className: 'btn btn-small btn-primary', text: 'Retry upload', hidden: true, 'data-testid': 'upload-retry',
    onclick: () => actions.retryUpload(entry),
  });
  const retryJobBtn = h('button', {
    type: 'button', className: 'btn btn-small btn-primary', text: 'Retry', hidden: true, 'data-testid': 'job-retry',
    onclick: () => actions.retryJob(entry),
  });
  const buttons = h('div', { className: 'card-actions' }, retryBtn, retryJobBtn, cancelBtn);
  const root = h('li', { className: 'card', dataset: { state: 'waiting' } },
    thumb,
    h('div', { className: 'card-body' },
      h('div', { className: 'card-head' }, title, badge),
      progress,
      detail,
      note,
      error,
      meta,
      links,
      buttons,
    ),
  );
  for (const btn of [cancelBtn, retryBtn, retryJobBtn]) btn.setAttribute('aria-describedby', titleId);
  return {
    root, title, badge, thumb, progress, detail, note, error, meta, links, previewLink, originalLink,
    buttons, cancelBtn, retryBtn, retryJobBtn, open: actions.open,
    shownThumb: undefined, shownMetaFor: undefined,
  };
}

/** Bring `el` (from buildCard) up to date: the card is called `name` and shows `view` (jobs.entryView). */
export function renderCard(entry, el, name, view) {
  const job = entry.job;
  if (el.title.textContent !== name) el.title.textContent = name;
  el.root.dataset.state = view.state;
  if (entry.jobId) el.root.dataset.jobId = entry.jobId;
  if (el.badge.textContent !== view.badge) el.badge.textContent = view.badge;
  if (el.progress.value !== view.percent) el.progress.value = view.percent;
  el.progress.setAttribute('aria-valuetext', `${view.percent}% — ${view.badge}`);
  showText(el.detail, view.detail);
  showText(el.note, view.note);
  showText(el.error, view.error);

  const completed = Boolean(job && job.state === 'completed');
  renderThumb(entry, el, name, completed);
  renderMeta(el, completed && entry.image ? entry.image : null);
  renderButtons(entry, el);
}

/** The thumbnail (only once the job has completed); it opens the image's detail view. */
function renderThumb(entry, el, name, completed) {
  const thumbUrl = completed && entry.image ? safeUrl(entry.image.thumbnail_url) : null;
  const label = `Details of ${name}`;
  if (thumbUrl !== el.shownThumb) {
    el.shownThumb = thumbUrl;
    if (thumbUrl) {
      const img = h('img', { src: thumbUrl, alt: '', width: 72, height: 72, decoding: 'async' });
      const open = h('button', {
        type: 'button', className: 'card-thumb-btn', 'aria-haspopup': 'dialog', 'data-testid': 'card-open',
        onclick: (e) => el.open(entry, e.currentTarget),
      }, img);
      open.setAttribute('aria-label', label);
      el.thumb.replaceChildren(open);
    } else {
      el.thumb.replaceChildren(h('span', { className: 'thumb-placeholder', 'aria-hidden': 'true' }));
    }
  }
  const openBtn = thumbUrl ? el.thumb.firstElementChild : null;
  if (openBtn && openBtn.getAttribute('aria-label') !== label) openBtn.setAttribute('aria-label', label);
}

/** Metadata and links of the finished image (`image`, or null for none yet). */
function renderMeta(el, image) {
  if (image === el.shownMetaFor) return;
  el.shownMetaFor = image;
  const rows = image ? describeMetadata(image) : [];
  el.meta.replaceChildren(...termRows(rows, 'meta-row'));
  setHidden(el.meta, rows.length === 0);
  const preview = image ? safeUrl(image.preview_url) : null;
  const original = image ? safeUrl(image.original_url) : null;
  if (preview) el.previewLink.href = preview; else el.previewLink.removeAttribute('href');
  if (original) el.originalLink.href = original; else el.originalLink.removeAttribute('href');
  setHidden(el.previewLink, !preview);
  setHidden(el.originalLink, !original);
  setHidden(el.links, !preview && !original);
}

function renderButtons(entry, el) {
  const job = entry.job;
  const up = entry.upload;
  const uploadActive = !job && up && (up.status === 'waiting' || up.status === 'uploading');
  const jobCancellable = job && CANCELLABLE_STATES.includes(job.state);
  setHidden(el.cancelBtn, !(uploadActive || jobCancellable));
  el.cancelBtn.disabled = Boolean(jobCancellable && entry.cancelling);
  const cancelText = jobCancellable && entry.cancelling ? 'Cancelling…' : 'Cancel';
  if (el.cancelBtn.textContent !== cancelText) el.cancelBtn.textContent = cancelText;
  setHidden(el.retryBtn, !(entry.file && !job && up && (up.status === 'error' || up.status === 'cancelled')));
  setHidden(el.retryJobBtn, !isTransientFailure(job));
  el.retryJobBtn.disabled = entry.retryingJob;
  const retryText = entry.retryingJob ? 'Retrying…' : 'Retry';
  if (el.retryJobBtn.textContent !== retryText) el.retryJobBtn.textContent = retryText;
  setHidden(el.buttons, el.cancelBtn.hidden && el.retryBtn.hidden && el.retryJobBtn.hidden);
}
