// Uploads of the web client: files picked, dropped anywhere on the page or pasted, sent
// a few at a time with XMLHttpRequest (for upload progress), each on its own card.
import { errorMessage, NETWORK_ERROR, parseJson } from './api.js';
import { newUpload } from './jobs.js';

const MAX_PARALLEL_UPLOADS = 3;

/** `app` holds ui, announce, session and jobs (the Processing list). */
export function createUploads(app) {
  const { ui } = app;
  const queue = [];
  let active = 0;

  function addFiles(fileList) {
    const files = [...fileList].filter((f) => f instanceof File);
    if (!files.length) return;
    const priority = ui.priority.value;
    const created = files.map((file) => {
      const entry = app.jobs.newEntry({ file, filename: file.name || 'pasted image' });
      entry.priority = priority;
      return entry;
    });
    app.jobs.joinDrop(created);
    // Prepend in reverse so the batch reads in selection order at the top.
    for (const entry of [...created].reverse()) {
      app.jobs.attachCard(entry);
      app.jobs.renderEntry(entry);
    }
    for (const entry of created) queue.push(entry);
    app.announce(files.length === 1 ? `Uploading ${created[0].filename}.` : `Uploading ${files.length} files.`);
    pump();
  }

  function retry(entry) {
    if (!entry.file || entry.job) return;
    entry.upload = newUpload(entry.file);
    entry.announcedState = null;
    app.jobs.renderEntry(entry);
    app.jobs.updateChrome();
    queue.push(entry);
    pump();
    entry.el.cancelBtn.focus();
  }

  /** Stop `entry`'s upload (waiting or under way); false when it has none. */
  function cancel(entry) {
    const up = entry.upload;
    if (!up) return false;
    if (up.status === 'waiting') {
      const i = queue.indexOf(entry);
      if (i >= 0) queue.splice(i, 1);
      up.status = 'cancelled';
    } else if (up.status === 'uploading' && up.xhr) {
      up.xhr.abort();
    }
    return true;
  }

  function pump() {
    while (active < MAX_PARALLEL_UPLOADS && queue.length) {
      const entry = queue.shift();
      active += 1;
      run(entry).finally(() => {
        active -= 1;
        pump();
      });
    }
  }

  function send(entry, bearer) {
    return new Promise((resolve, reject) => {
      const up = entry.upload;
      const form = new FormData();
      form.append('file', entry.file, entry.file.name || 'image');
      if (entry.priority && entry.priority !== 'normal') form.append('priority', entry.priority);
      const xhr = new XMLHttpRequest();
      up.xhr = xhr;
      xhr.open('POST', '/api/images');
      xhr.setRequestHeader('Authorization', `Bearer ${bearer}`);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) {
          // e.total includes multipart overhead; scale to the file size for display.
          up.loaded = Math.min(up.total, Math.round((e.loaded / e.total) * up.total));
        }
        app.jobs.renderEntry(entry);
      });
      xhr.addEventListener('load', () => resolve({ status: xhr.status, text: xhr.responseText }));
      xhr.addEventListener('error', () => reject(new Error(NETWORK_ERROR)));
      xhr.addEventListener('timeout', () => reject(new Error('The upload timed out.')));
      xhr.addEventListener('abort', () => {
        const err = new Error('Upload cancelled.');
        err.aborted = true;
        reject(err);
      });
      xhr.send(form);
    });
  }

  async function run(entry) {
    const up = entry.upload;
    if (!up || up.status !== 'waiting') return;
    up.status = 'uploading';
    up.loaded = 0;
    app.jobs.renderEntry(entry);
    try {
      let bearer = await app.session.getToken();
      let res = await send(entry, bearer);
      if (res.status === 401) {
        bearer = await app.session.renewSession(bearer);
        up.loaded = 0;
        res = await send(entry, bearer);
      }
      up.xhr = null;
      if (res.status !== 200 && res.status !== 201 && res.status !== 202) throw new Error(errorMessage(res.status, res.text));
      const body = parseJson(res.text);
      if (!body || !body.job || body.job.id == null) throw new Error('The server sent an unexpected response.');
      up.status = 'done';
      up.loaded = up.total;
      app.jobs.attachJobToUpload(entry, body.job, body.image, body.duplicate === true);
    } catch (err) {
      up.xhr = null;
      if (entry.job) return; // an event already moved this card on; keep that state
      if (err && err.aborted) {
        up.status = 'cancelled';
        entry.announcedState = 'cancelled';
        app.announce(`${entry.filename}: upload cancelled.`);
      } else {
        up.status = 'error';
        up.error = (err && err.message) || 'Upload failed.';
        app.jobs.announceEntry(entry);
      }
      app.jobs.renderEntry(entry);
      app.jobs.updateChrome();
    }
  }

  /** Picker, drag & drop (anywhere on the page), paste; a warning before leaving mid-upload. */
  function listen() {
    window.addEventListener('beforeunload', (e) => {
      if (active > 0 || queue.length > 0) {
        e.preventDefault();
        e.returnValue = '';
      }
    });
    ui.dropzone.addEventListener('click', () => ui.fileInput.click());
    ui.fileInput.addEventListener('change', () => {
      addFiles(ui.fileInput.files || []);
      ui.fileInput.value = '';
    });

    const hasFiles = (e) => Boolean(e.dataTransfer && [...e.dataTransfer.types].includes('Files'));
    let dragDepth = 0;
    const dragEnded = () => {
      document.body.classList.remove('dragging');
      ui.dropzone.classList.remove('over');
    };
    document.addEventListener('dragenter', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      dragDepth += 1;
      document.body.classList.add('dragging');
    });
    document.addEventListener('dragover', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
      ui.dropzone.classList.toggle('over', ui.dropzone.contains(e.target));
    });
    document.addEventListener('dragleave', (e) => {
      if (!hasFiles(e)) return;
      dragDepth = Math.max(0, dragDepth - 1);
      if (dragDepth === 0) dragEnded();
    });
    document.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      dragDepth = 0;
      dragEnded();
      addFiles(e.dataTransfer.files);
    });
    document.addEventListener('paste', (e) => {
      const files = e.clipboardData ? [...e.clipboardData.files].filter((f) => f.type.startsWith('image/')) : [];
      if (files.length) {
        e.preventDefault();
        addFiles(files);
      }
    });
  }

  return { retry, cancel, listen };
}
