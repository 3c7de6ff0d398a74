// The image detail view of the web client (a modal <dialog>): preview, every detail,
// downloads, and deleting the image after a question.
import { setHidden, showText, termRows } from './dom.js';
import { safeUrl } from './format.js';
import { describeImageDetails, downloadName, imageName } from './images.js';

/** `app` holds ui (ui.detail: the dialog's elements), announce, images, session, gallery and jobs. */
export function createDetail(app) {
  const d = app.ui.detail;
  const shown = { imageId: null, image: null, opener: null, generation: 0, deleting: false };

  function setDownload(link, url, name) {
    const safe = safeUrl(url);
    if (safe) {
      link.href = safe;
      link.setAttribute('download', name);
    } else {
      link.removeAttribute('href');
    }
    setHidden(link.parentElement, !safe);
  }

  function render(image) {
    const name = imageName(image);
    showText(d.title, name);
    const preview = safeUrl(image.preview_url);
    if (preview) {
      if (d.preview.getAttribute('src') !== preview) d.preview.src = preview;
      d.preview.alt = `Preview of ${name}`;
      if (Number.isFinite(image.width) && Number.isFinite(image.height)) {
        d.preview.width = image.width;
        d.preview.height = image.height;
      }
    } else {
      d.preview.removeAttribute('src');
    }
    setHidden(d.preview, !preview);
    showText(d.noPreview, preview ? '' : (image.status === 'failed' ? 'No preview: processing failed.' : 'No preview yet.'));
    d.meta.replaceChildren(...termRows(describeImageDetails(image), 'detail-row'));
    setDownload(d.downloads.original, image.original_url, downloadName(image.filename, 'original'));
    setDownload(d.downloads.preview, image.preview_url, downloadName(image.filename, 'preview'));
    setDownload(d.downloads.thumbnail, image.thumbnail_url, downloadName(image.filename, 'thumbnail'));
    showText(d.confirmText, `Delete “${name}”? The image and its files are removed for good.`);
  }

  function showConfirm(show) {
    setHidden(d.confirm, !show);
    setHidden(d.deleteBtn.parentElement, show);
    if (show) d.confirmNo.focus();
  }

  /** Open the detail view of an image; `opener` gets focus back when it closes. */
  async function open(imageId, opener) {
    if (imageId == null) return;
    const generation = ++shown.generation;
    shown.imageId = String(imageId);
    shown.opener = opener || document.activeElement;
    shown.deleting = false;
    const known = app.images.get(shown.imageId) || { id: shown.imageId };
    shown.image = known;
    render(known);
    showConfirm(false);
    d.deleteBtn.disabled = false;
    d.confirmYes.disabled = false;
    d.confirmYes.textContent = 'Delete for good';
    showText(d.error, '');
    showText(d.status, 'Loading the latest details…');
    if (!d.dialog.open) d.dialog.showModal();
    d.close.focus();
    try {
      const fresh = await app.session.api(`/api/images/${encodeURIComponent(shown.imageId)}`);
      if (generation !== shown.generation || !d.dialog.open) return;
      if (fresh && typeof fresh === 'object' && fresh.id != null) {
        shown.image = fresh;
        app.images.set(shown.imageId, fresh);
        render(fresh);
        app.gallery.upsert(fresh);
      }
      showText(d.status, '');
    } catch (err) {
      if (generation !== shown.generation || !d.dialog.open) return;
      showText(d.status, '');
      if (err.status === 404) {
        showText(d.error, 'This image no longer exists.');
        d.deleteBtn.disabled = true;
        app.jobs.forgetImage(shown.imageId);
      } else {
        showText(d.error, `Could not load the latest details: ${err.message}`);
      }
    }
  }

  function close() {
    if (d.dialog.open) d.dialog.close();
  }

  async function deleteImage() {
    const id = shown.imageId;
    if (id == null || shown.deleting) return;
    const name = imageName(shown.image, 'the image');
    shown.deleting = true;
    d.confirmYes.disabled = true;
    d.confirmNo.disabled = true;
    d.confirmYes.textContent = 'Deleting…';
    showText(d.error, '');
    try {
      await app.session.api(`/api/images/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (err) {
      if (err.status !== 404) { // 404: it is already gone, which is what we wanted
        shown.deleting = false;
        d.confirmYes.disabled = false;
        d.confirmNo.disabled = false;
        d.confirmYes.textContent = 'Delete for good';
        showText(d.error, `Could not delete: ${err.message}`);
        d.confirmYes.focus();
        return;
      }
    }
    const next = app.gallery.has(id) ? app.gallery.remove(id) : null;
    app.jobs.forgetImage(id);
    if (shown.opener && !shown.opener.isConnected) shown.opener = next;
    d.confirmNo.disabled = false;
    close();
    app.announce(`Deleted ${name}.`);
  }

  function listen() {
    d.close.addEventListener('click', close);
    d.deleteBtn.addEventListener('click', () => showConfirm(true));
    d.confirmNo.addEventListener('click', () => {
      showConfirm(false);
      d.deleteBtn.focus();
    });
    d.confirmYes.addEventListener('click', deleteImage);
    d.dialog.addEventListener('cancel', (e) => {
      // Escape first backs out of the delete question, then closes.
      if (!d.confirm.hidden && !shown.deleting) {
        e.preventDefault();
        showConfirm(false);
        d.deleteBtn.focus();
      } else if (shown.deleting) {
        e.preventDefault();
      }
    });
    d.dialog.addEventListener('click', (e) => {
      // A click on the backdrop (outside the dialog's box) closes it.
      if (e.target !== d.dialog || shown.deleting) return;
      const r = d.dialog.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) close();
    });
    d.dialog.addEventListener('close', () => {
      shown.generation += 1;
      showConfirm(false);
      const back = shown.opener && shown.opener.isConnected ? shown.opener : app.ui.galleryHeading;
      shown.opener = null;
      shown.imageId = null;
      shown.image = null;
      d.preview.removeAttribute('src');
      if (back && typeof back.focus === 'function') back.focus();
    });
  }

  return { open, close, listen };
}
