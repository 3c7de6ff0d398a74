// "Your images": the person's ready images, newest first, a page at a time; finished
// uploads join in place as they complete.
import { h, setHidden, showText } from './dom.js';
import { safeUrl } from './format.js';
import { compareNewestFirst, imageName } from './images.js';
import { pageOf } from './wire.js';

export const GALLERY_PAGE_SIZE = 24;
/** Pages that add nothing to show (images still processing or failed) are skipped, this many at most. */
const PAGES_PER_LOAD = 5;

/** `app` holds ui, images (id -> Image), deletedImages, session and detail. */
export function createGallery(app) {
  const { ui } = app;
  const items = new Map(); // image id -> <li>
  let generation = 0;
  let loaded = false;
  let loading = false;
  let nextBefore = null; // cursor of the next page, null when there is none

  function buildItem(image, thumbUrl) {
    const name = imageName(image);
    const img = h('img', { src: thumbUrl, alt: '', width: 200, height: 200, loading: 'lazy', decoding: 'async' });
    const caption = h('span', { className: 'gallery-name', text: name });
    const open = h('button', {
      type: 'button', className: 'gallery-link', 'aria-haspopup': 'dialog',
      onclick: (e) => app.detail.open(String(image.id), e.currentTarget),
    }, img, caption);
    const dims = Number.isFinite(image.width) && Number.isFinite(image.height) ? `${image.width} × ${image.height}` : null;
    if (dims) caption.title = `${name} — ${dims}`;
    return h('li', {
      className: 'gallery-item', 'data-testid': 'gallery-item', dataset: { imageId: String(image.id) },
    }, open);
  }

  /** Put a gallery <li> at its newest-first place among those shown. */
  function place(li, image) {
    for (const other of ui.gallery.children) {
      if (compareNewestFirst(image, { id: other.dataset.imageId }) < 0) {
        ui.gallery.insertBefore(li, other);
        return;
      }
    }
    ui.gallery.append(li);
  }

  /**
   * Show a ready image in the gallery at its newest-first place (refreshing its
   * thumbnail if it is already there). An image older than every loaded one while
   * more pages exist is left for its page, so paging neither skips nor repeats it.
   */
  function upsert(image) {
    if (!image || typeof image !== 'object' || image.id == null) return;
    const id = String(image.id);
    if (app.deletedImages.has(id)) return;
    app.images.set(id, { ...(app.images.get(id) || {}), ...image });
    const thumbUrl = safeUrl(image.thumbnail_url);
    const existing = items.get(id);
    if (existing) {
      const img = existing.querySelector('img');
      if (thumbUrl && img && img.getAttribute('src') !== thumbUrl && image.status === 'ready') img.src = thumbUrl;
      return;
    }
    if (image.status !== 'ready' || !thumbUrl) return;
    const last = ui.gallery.lastElementChild;
    if (nextBefore != null && last && compareNewestFirst(image, { id: last.dataset.imageId }) > 0) return;
    const li = buildItem(image, thumbUrl);
    items.set(id, li);
    place(li, image);
    updateChrome();
  }

  /** Take an image out of the gallery; returns the element that should get focus next. */
  function remove(id) {
    const li = items.get(id);
    if (!li) return null;
    const neighbour = li.nextElementSibling || li.previousElementSibling;
    items.delete(id);
    li.remove();
    updateChrome();
    return neighbour ? neighbour.querySelector('button') : null;
  }

  function updateChrome() {
    const n = items.size;
    const more = nextBefore != null;
    ui.galleryCount.textContent = n ? `${n}${more ? '+' : ''} ${n === 1 && !more ? 'image' : 'images'}` : '';
    if (n > 0) setHidden(ui.galleryStatus, true);
    else if (loaded) showText(ui.galleryStatus, 'No images yet. Finished uploads appear here.');
    setHidden(ui.galleryMore, !loaded || !more);
    ui.galleryMore.disabled = loading;
    const label = loading ? 'Loading…' : 'Load more';
    if (ui.galleryMore.textContent !== label) ui.galleryMore.textContent = label;
  }

  function reset() {
    generation += 1;
    items.clear();
    ui.gallery.replaceChildren();
    loaded = false;
    loading = false;
    nextBefore = null;
    showText(ui.galleryMoreError, '');
    showText(ui.galleryStatus, 'Loading…');
    updateChrome();
  }

  /** Load the first page (or, with `more`, the next one). */
  async function load(more = false) {
    if (more && (loading || nextBefore == null)) return;
    const mine = ++generation;
    loading = true;
    showText(ui.galleryMoreError, '');
    updateChrome();
    let cursor = more ? nextBefore : null;
    try {
      for (let pages = 0; pages < PAGES_PER_LOAD; pages += 1) {
        const query = `limit=${GALLERY_PAGE_SIZE}${cursor != null ? `&before=${encodeURIComponent(cursor)}` : ''}`;
        const page = pageOf(await app.session.api(`/api/images?${query}`));
        if (mine !== generation) return;
        const shownBefore = items.size;
        nextBefore = null; // let every item of this page in, in order
        for (const image of page.items) upsert(image);
        cursor = page.nextBefore != null ? String(page.nextBefore) : null;
        nextBefore = cursor;
        if (items.size > shownBefore || cursor == null) break;
      }
      loaded = true;
    } catch (err) {
      if (mine !== generation) return;
      if (more) showText(ui.galleryMoreError, `Could not load more images: ${err.message}`);
      else if (items.size === 0) showText(ui.galleryStatus, `Could not load your images: ${err.message}`);
    } finally {
      if (mine === generation) {
        loading = false;
        updateChrome();
      }
    }
  }

  function listen() {
    ui.galleryMore.addEventListener('click', () => {
      const count = ui.gallery.children.length;
      load(true).then(() => {
        // Keep keyboard users in place: focus the first newly loaded image when the
        // button had focus (it may just have been hidden: no more pages).
        const first = ui.gallery.children[count];
        const focusWasHere = document.activeElement === ui.galleryMore || document.activeElement === document.body;
        if (first && focusWasHere) first.querySelector('button').focus();
      });
    });
  }

  return { upsert, remove, has: (id) => items.has(id), reset, load, listen };
}
