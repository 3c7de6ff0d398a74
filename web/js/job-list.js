// The Processing list of the web client: one card per upload or job, kept current by
// upload answers, live events and snapshots (which news a card takes: jobs.js), and the
// total bar of the current drop.
import { setHidden, showText } from './dom.js';
import {
  accepts, announcement, createEntry, dropLabel, entryImageId, entryName, entryView, isDelayed,
  isFinishedCard, mergeJob, summarizeDrop,
} from './jobs.js';
import { buildCard, renderCard } from './job-cards.js';
import {
  CANCELLABLE_STATES, isTerminal, isTransientFailure, jobFromEvent, nextSeq, shouldReplace, snapshotJobs,
} from './wire.js';

const FILENAME_LOOKUP_DELAY_MS = 1500;

/**
 * `app` holds what the list works with: ui, announce, images (id -> Image),
 * deletedImages, session, gallery, detail and uploads.
 */
export function createJobList(app) {
  const { ui } = app;
  /** job id -> entry. Upload entries join this map once their job id is known. */
  const entries = new Map();
  /** Job ids whose card now follows a newer job (a retry): their late events are ignored. */
  const supersededJobs = new Set();
  /** The files of the current drop, for the total bar: { entries: [entry…] } or null. */
  let currentDrop = null;
  let cardCounter = 0;
  let snapshotsSeen = 0;

  const cardActions = {
    cancel: (entry) => cancelEntry(entry),
    retryUpload: (entry) => app.uploads.retry(entry),
    retryJob: (entry) => retryJob(entry),
    open: (entry, button) => app.detail.open(entryImageId(entry), button),
  };

  function newEntry(init = {}) {
    cardCounter += 1;
    const entry = createEntry(cardCounter, init);
    entry.el = buildCard(entry, cardActions);
    return entry;
  }

  const nameOf = (entry) => entryName(entry, app.images);

  function renderEntry(entry) {
    if (entry.detached) return;
    renderCard(entry, entry.el, nameOf(entry), entryView(entry));
    if (entry.drop && entry.drop === currentDrop) renderTotal();
  }

  function announceEntry(entry) {
    const view = entryView(entry);
    if (entry.announcedState === view.state) return;
    entry.announcedState = view.state;
    const message = announcement(view, nameOf(entry));
    if (message) app.announce(message);
  }

  function updateChrome() {
    setHidden(ui.jobsEmpty, ui.jobs.children.length > 0);
    const finished = [...ui.jobs.children].filter((card) => isFinishedCard(card.dataset.state)).length;
    setHidden(ui.clearFinished, finished === 0);
  }

  function attachCard(entry) {
    ui.jobs.prepend(entry.el.root);
    updateChrome();
  }

  /** Merge a job into its entry (creating a card if this is the first we hear of it). */
  function ingestJob(job, seq, mode) {
    if (!job || typeof job !== 'object' || job.id == null) return;
    const id = String(job.id);
    if (supersededJobs.has(id)) return;
    if (job.image_id != null && app.deletedImages.has(String(job.image_id))) return;
    let entry = entries.get(id);
    if (entry) {
      if (!accepts(entry, job, seq, mode)) return;
    } else {
      // A reprocess of an image whose card has finished takes over that card.
      const previous = job.type === 'image.reprocess' ? finishedEntryForImage(job.image_id) : null;
      if (previous) {
        rebindEntry(previous, job, seq, mode !== 'snapshot');
        return;
      }
      entry = newEntry();
      entry.jobId = id;
      entries.set(id, entry);
      attachCard(entry);
      scheduleFilenameLookup(entry);
    }
    mergeJob(entry, job, seq);
    afterJobChange(entry, mode !== 'snapshot');
  }

  /** The newest card about `imageId` whose job has ended (so a new job may take it over), or null. */
  function finishedEntryForImage(imageId) {
    if (imageId == null) return null;
    let found = null;
    for (const entry of entries.values()) {
      if (entry.detached || !entry.job || !isTerminal(entry.job.state)) continue;
      if (entryImageId(entry) === String(imageId) && (!found || entry.uid > found.uid)) found = entry;
    }
    return found;
  }

  /**
   * Let `entry`'s card follow a new job (a retry of its failed one). Events of the
   * old job are ignored from now on; a card an early event of the new job created is merged in.
   */
  function rebindEntry(entry, job, seq, shouldAnnounce) {
    const newId = String(job.id);
    const oldId = entry.jobId;
    let current = { ...job };
    let lastSeq = nextSeq(null, seq ?? job.seq);
    const early = entries.get(newId);
    if (early && early !== entry) {
      if (!shouldReplace(early.lastSeq, job)) {
        current = early.job;
        lastSeq = early.lastSeq;
      }
      detachEntry(early);
    }
    if (oldId && oldId !== newId) {
      supersededJobs.add(oldId);
      entries.delete(oldId);
    }
    entry.jobId = newId;
    entries.set(newId, entry);
    entry.job = current;
    entry.lastSeq = lastSeq;
    entry.duplicate = false;
    entry.actionError = null;
    entry.retryingJob = false;
    entry.cancelling = false;
    afterJobChange(entry, shouldAnnounce);
  }

  /** Run a transiently failed job again (same id, fresh attempts); its events drive this card. */
  async function retryJob(entry) {
    const job = entry.job;
    if (!isTransientFailure(job) || entry.retryingJob) return;
    entry.retryingJob = true;
    entry.actionError = null;
    renderEntry(entry);
    try {
      const res = await app.session.api(`/api/jobs/${encodeURIComponent(job.id)}/retry`, { method: 'POST' });
      if (!res || !res.job || res.job.id == null) throw new Error('The server sent an unexpected response.');
      if (entry.detached) return;
      entry.retryingJob = false;
      ingestJob(res.job, res.job.seq, 'event');
      app.announce(`${nameOf(entry)}: retrying.`);
    } catch (err) {
      entry.retryingJob = false;
      entry.actionError = `Could not retry: ${(err && err.message) || 'unknown error'}`;
      renderEntry(entry);
      app.announce(`${nameOf(entry)}: ${entry.actionError}`);
    }
  }

  async function cancelEntry(entry) {
    const job = entry.job;
    if (!job) {
      if (app.uploads.cancel(entry)) {
        renderEntry(entry);
        updateChrome();
      }
      return;
    }
    if (!CANCELLABLE_STATES.includes(job.state) || entry.cancelling) return;
    entry.cancelling = true;
    entry.actionError = null;
    renderEntry(entry);
    try {
      await app.session.api(`/api/jobs/${encodeURIComponent(entry.jobId)}/cancel`, { method: 'POST' });
      // The final state arrives as a job:cancelled event.
    } catch (err) {
      entry.cancelling = false;
      entry.actionError = `Could not cancel: ${err.message}`;
      renderEntry(entry);
    }
  }

  /** Take a card off the page for good (another card took over its job, or its image is gone). */
  function detachEntry(entry) {
    entry.detached = true;
    entry.el.root.remove();
    if (entry.drop) {
      entry.drop.entries = entry.drop.entries.filter((e) => e !== entry);
      entry.drop = null;
      renderTotal();
    }
  }

  /** An image is gone (deleted here): drop its gallery item, its cards and its place in the drop. */
  function forgetImage(imageId) {
    const id = String(imageId);
    app.deletedImages.add(id);
    app.images.delete(id);
    app.gallery.remove(id);
    let removed = false;
    for (const [jobId, entry] of [...entries]) {
      if (entryImageId(entry) !== id) continue;
      entries.delete(jobId);
      supersededJobs.add(jobId);
      detachEntry(entry);
      removed = true;
    }
    if (removed) updateChrome();
  }

  function afterJobChange(entry, shouldAnnounce) {
    const job = entry.job;
    if (job.state === 'completed' && job.result && job.result.image && typeof job.result.image === 'object') {
      entry.image = { ...(entry.image || {}), ...job.result.image };
      app.gallery.upsert(entry.image);
    }
    if (!CANCELLABLE_STATES.includes(job.state)) entry.cancelling = false;
    if (entry.dismissed) {
      entry.dismissed = false;
      attachCard(entry);
    }
    renderEntry(entry);
    if (shouldAnnounce) announceEntry(entry);
    else entry.announcedState = entryView(entry).state;
    updateChrome();
  }

  /** The upload response arrived: bind the upload card to its job id (adopting any card an event created first). */
  function attachJobToUpload(entry, job, image, duplicate) {
    const id = String(job.id);
    supersededJobs.delete(id);
    if (image && image.id != null) app.deletedImages.delete(String(image.id));
    entry.duplicate = Boolean(duplicate);
    if (image && typeof image === 'object') {
      entry.image = { ...(entry.image || {}), ...image };
      if (image.id != null) app.images.set(String(image.id), entry.image);
      if (!entry.filename && image.filename) entry.filename = image.filename;
    }
    const existing = entries.get(id);
    if (existing && existing !== entry) {
      // A live event (or a previous upload of the same bytes) got here first.
      entry.job = existing.job;
      entry.lastSeq = existing.lastSeq;
      if (!entry.image && existing.image) entry.image = existing.image;
      detachEntry(existing);
    }
    entry.jobId = id;
    entries.set(id, entry);
    if (shouldReplace(entry.lastSeq, job)) mergeJob(entry, job, job.seq);
    if (entry.image && entry.image.status === 'ready') app.gallery.upsert(entry.image);
    afterJobChange(entry, true);
  }

  /** A card created from an event has no filename yet; ask once if no upload response supplied it. */
  function scheduleFilenameLookup(entry) {
    setTimeout(() => {
      const job = entry.job;
      if (entry.detached || entry.filename || !job || job.image_id == null) return;
      if (nameOf(entry) !== 'Untitled image') return;
      app.session.api(`/api/images/${encodeURIComponent(job.image_id)}`)
        .then((img) => {
          if (img && typeof img === 'object' && !entry.detached) {
            if (img.id != null) app.images.set(String(img.id), img);
            if (!entry.image) entry.image = img;
            if (typeof img.filename === 'string' && img.filename) entry.filename = img.filename;
            renderEntry(entry);
          }
        })
        .catch(() => { /* the card keeps its placeholder name */ });
    }, FILENAME_LOOKUP_DELAY_MS);
  }

  function clearFinished() {
    for (const card of [...ui.jobs.children]) {
      if (isFinishedCard(card.dataset.state)) card.remove();
    }
    for (const entry of entries.values()) {
      if (entry.job && isTerminal(entry.job.state)) entry.dismissed = true;
    }
    if (currentDrop && summarizeDrop(dropFiles(currentDrop)).finished) {
      currentDrop = null;
      renderTotal();
    }
    updateChrome();
    ui.dropzone.focus();
  }

  // ----- total progress of the current drop (every file added since the last drop finished) -----

  function dropFiles(drop) {
    return drop.entries.map((entry) => ({ upload: entry.upload, job: entry.job }));
  }

  /** Files added while a drop is still going join it; otherwise they start a new one. */
  function joinDrop(created) {
    if (!currentDrop || summarizeDrop(dropFiles(currentDrop)).finished) currentDrop = { entries: [] };
    for (const entry of created) {
      entry.drop = currentDrop;
      currentDrop.entries.push(entry);
    }
    renderTotal();
  }

  function renderTotal() {
    const summary = currentDrop ? summarizeDrop(dropFiles(currentDrop)) : null;
    if (!summary || summary.total === 0) {
      setHidden(ui.total, true);
      return;
    }
    const label = dropLabel(summary);
    if (ui.totalProgress.value !== summary.percent) ui.totalProgress.value = summary.percent;
    ui.totalProgress.setAttribute('aria-valuetext', `${summary.percent}% — ${label}`);
    showText(ui.totalText, label);
    showText(ui.totalPercent, `${summary.percent}%`);
    ui.total.dataset.state = summary.finished ? (summary.completed === summary.total ? 'completed' : 'finished') : 'active';
    setHidden(ui.total, false);
  }

  // ----- live news -----

  function onSnapshot(payload) {
    // Oldest first so that new cards (which are prepended) end up newest on top.
    const jobs = snapshotJobs(payload);
    for (const job of jobs) ingestJob(job, job.seq, 'snapshot');
    // A card still unfinished that the snapshot left out ended while we were away for
    // longer than the snapshot's window: ask for its true state once (no polling).
    const inSnapshot = new Set(jobs.map((j) => String(j.id)));
    for (const [jobId, entry] of entries) {
      if (entry.detached || !entry.job || inSnapshot.has(jobId)) continue;
      if (isTerminal(entry.job.state)) continue;
      app.session.api(`/api/jobs/${encodeURIComponent(jobId)}`)
        .then((job) => { if (job && job.id != null) ingestJob(job, job.seq, 'snapshot'); })
        .catch(() => {});
    }
    if (snapshotsSeen++ > 0) app.gallery.load(); // a reconnect: images may have changed meanwhile
  }

  function onJobEvent(name, payload) {
    const known = payload && payload.job ? entries.get(String(payload.job.id)) : null;
    const decoded = jobFromEvent(name, payload, known && known.job);
    if (decoded) ingestJob(decoded.job, decoded.seq, 'event');
  }

  /** Delayed jobs show a countdown ("in 5 min"): render those again. */
  function refreshCountdowns(now = Date.now()) {
    for (const entry of entries.values()) {
      if (!entry.detached && entry.job && isDelayed(entry.job, now - 20_000)) renderEntry(entry);
    }
  }

  return {
    newEntry, attachCard, renderEntry, announceEntry, updateChrome, joinDrop, attachJobToUpload,
    forgetImage, clearFinished, onSnapshot, onJobEvent, refreshCountdowns,
  };
}
