// Darkroom web client: uploads images, shows live job progress over Socket.IO and a
// gallery of finished images. Build-free ES modules, no framework; startApp (run by
// web/app.js, the page's script) finds the page's elements, wires the parts together and
// starts them. Nothing is put on window.
//
// Security note: every piece of server- or user-provided text (filenames, error
// messages, metadata) is written with textContent / DOM properties, never as HTML.
// URLs are checked to be http(s) before use in src/href.
import { createDetail } from './detail.js';
import { byId, showText } from './dom.js';
import { createGallery } from './gallery.js';
import { createJobList } from './job-list.js';
import { connIndicator, MAX_RETRY_MS, startLive } from './live.js';
import { createSession } from './session.js';
import { createUploads } from './uploads.js';

const COUNTDOWN_REFRESH_MS = 15_000;

function findElements() {
  return {
    conn: byId('conn'),
    dropzone: byId('dropzone'),
    fileInput: byId('file-input'),
    priority: byId('priority'),
    jobs: byId('jobs'),
    jobsEmpty: byId('jobs-empty'),
    clearFinished: byId('clear-finished'),
    gallery: byId('gallery'),
    galleryStatus: byId('gallery-status'),
    galleryCount: byId('gallery-count'),
    galleryHeading: byId('gallery-heading'),
    galleryMore: byId('gallery-more'),
    galleryMoreError: byId('gallery-more-error'),
    total: byId('total'),
    totalText: byId('total-text'),
    totalPercent: byId('total-percent'),
    totalProgress: byId('total-progress'),
    live: byId('live'),
    detail: {
      dialog: byId('image-detail'),
      title: byId('detail-title'),
      close: byId('detail-close'),
      preview: byId('detail-preview'),
      noPreview: byId('detail-no-preview'),
      status: byId('detail-status'),
      meta: byId('detail-meta'),
      downloads: { original: byId('detail-dl-original'), preview: byId('detail-dl-preview'), thumbnail: byId('detail-dl-thumbnail') },
      deleteBtn: byId('detail-delete'),
      confirm: byId('detail-confirm'),
      confirmText: byId('detail-confirm-text'),
      confirmYes: byId('detail-confirm-yes'),
      confirmNo: byId('detail-confirm-no'),
      error: byId('detail-error'),
    },
  };
}

/** A single polite live region: the text is set anew so that a repeat is read again. */
function announcer(region) {
  let timer = 0;
  return (text) => {
    clearTimeout(timer);
    region.textContent = '';
    timer = setTimeout(() => { region.textContent = text; }, 50);
  };
}

/** Start the client on index.html. */
export function startApp() {
  const ui = findElements();
  const conn = connIndicator(ui.conn);
  // The parts reach each other through `app`, looked up when called.
  const app = {
    ui,
    announce: announcer(ui.live),
    /** image id -> Image (from the gallery list and finished jobs), used for names and the detail view. */
    images: new Map(),
    /** Images deleted in this page: their jobs' events and snapshots no longer make cards. */
    deletedImages: new Set(),
    live: null,
  };
  app.session = createSession({
    // A new session is a new (empty) user: reload the gallery once and reconnect the
    // socket so that it authenticates with the new token.
    onIdentityChanged() {
      app.detail.close();
      app.gallery.reset();
      app.gallery.load();
      if (app.live) app.live.reconnect(0, true);
    },
  });
  app.jobs = createJobList(app);
  app.uploads = createUploads(app);
  app.gallery = createGallery(app);
  app.detail = createDetail(app);

  ui.clearFinished.addEventListener('click', () => app.jobs.clearFinished());
  app.uploads.listen();
  app.gallery.listen();
  app.detail.listen();
  window.addEventListener('offline', () => conn.set('offline', 'Offline', 'Your device is offline.'));
  window.addEventListener('online', () => { if (app.live) app.live.resume(); });

  async function boot(delay = 2000) {
    try {
      await app.session.getToken();
    } catch (err) {
      conn.set('offline', 'Offline', err.message);
      showText(ui.galleryStatus, `Could not start a session: ${err.message} Retrying…`);
      setTimeout(() => boot(Math.min(delay * 2, MAX_RETRY_MS)), delay);
      return;
    }
    app.live = startLive({
      conn,
      session: app.session,
      onSnapshot: (payload) => app.jobs.onSnapshot(payload),
      onJobEvent: (name, payload) => app.jobs.onJobEvent(name, payload),
    });
    app.gallery.load();
  }

  // Delayed jobs show a countdown ("in 5 min"): refresh it now and then.
  setInterval(() => app.jobs.refreshCountdowns(), COUNTDOWN_REFRESH_MS);

  app.jobs.updateChrome();
  boot();
}
