// What an Image (the wire shape of `GET /api/images/{id}`) shows people: its name, its
// metadata rows, its download names and its place in the gallery (pure: no DOM, no network).
import { formatBytes, formatDateTime } from './format.js';

/** The image's own file name, or `fallback` when it has none. */
export function imageName(image, fallback = 'Untitled image') {
  return image && typeof image.filename === 'string' && image.filename ? image.filename : fallback;
}

/** Camera make + model without repeating the make ("Canon Canon EOS R" -> "Canon EOS R"). */
export function formatCamera(make, model) {
  const mk = typeof make === 'string' ? make.trim() : '';
  const md = typeof model === 'string' ? model.trim() : '';
  if (mk && md) return md.toLowerCase().startsWith(mk.toLowerCase()) ? md : `${mk} ${md}`;
  return mk || md || null;
}

/** Rows [term, value] for the metadata definition list of an Image. Unknown values are left out. */
export function describeMetadata(image) {
  if (!image || typeof image !== 'object') return [];
  const meta = image.metadata && typeof image.metadata === 'object' ? image.metadata : {};
  const rows = [];
  const width = meta.width ?? image.width;
  const height = meta.height ?? image.height;
  if (Number.isFinite(Number(width)) && Number.isFinite(Number(height)) && width != null && height != null) {
    rows.push(['Dimensions', `${width} × ${height}`]);
  }
  const format = meta.format ?? image.format;
  if (format) rows.push(['Format', String(format)]);
  if (meta.mode) rows.push(['Mode', String(meta.mode)]);
  if (meta.frames != null) rows.push(['Frames', String(meta.frames)]);
  const camera = formatCamera(meta.camera_make, meta.camera_model);
  if (camera) rows.push(['Camera', camera]);
  const taken = formatDateTime(meta.taken_at);
  if (taken) rows.push(['Taken at', taken]);
  if (typeof meta.has_gps === 'boolean') rows.push(['GPS', meta.has_gps ? 'Yes' : 'No']);
  if (Number.isFinite(Number(image.size_bytes)) && image.size_bytes != null) {
    rows.push(['Size', formatBytes(image.size_bytes)]);
  }
  return rows;
}

/**
 * Every detail of an Image for the detail view, as [term, value] rows; a value the
 * image does not have reads "—" (so that the list always shows the same fields).
 */
export function describeImageDetails(image) {
  if (!image || typeof image !== 'object') return [];
  const meta = image.metadata && typeof image.metadata === 'object' ? image.metadata : {};
  const text = (v) => (v == null || v === '' ? '—' : String(v));
  const px = (v) => (Number.isFinite(Number(v)) && v != null && v !== '' ? `${v} px` : '—');
  const trimmed = (v) => (typeof v === 'string' ? v.trim() : v);
  const size = Number.isFinite(Number(image.size_bytes)) && image.size_bytes != null
    ? `${formatBytes(image.size_bytes)} (${Number(image.size_bytes).toLocaleString('en-US')} bytes)` : '—';
  return [
    ['Width', px(meta.width ?? image.width)],
    ['Height', px(meta.height ?? image.height)],
    ['Format', text(meta.format ?? image.format)],
    ['Mode', text(meta.mode)],
    ['Frames', text(meta.frames)],
    ['Camera make', text(trimmed(meta.camera_make))],
    ['Camera model', text(trimmed(meta.camera_model))],
    ['Taken at', text(formatDateTime(meta.taken_at))],
    ['GPS', typeof meta.has_gps === 'boolean' ? (meta.has_gps ? 'Yes' : 'No') : '—'],
    ['Size', size],
    ['Content type', text(image.content_type)],
    ['Created', text(formatDateTime(image.created_at))],
    ['Status', text(image.status)],
  ];
}

/** A file name for a download link: the original's own name, or "<stem>-preview.webp" for renditions. */
export function downloadName(filename, kind) {
  const name = typeof filename === 'string' && filename.trim() ? filename.trim() : 'image';
  if (kind === 'original') return name;
  const stem = name.replace(/\.[^./\\]{1,8}$/, '') || 'image';
  return `${stem}-${kind}.webp`;
}

/** Newest first, like `GET /api/images`: ids sort by creation time, so compare them (descending). */
export function compareNewestFirst(a, b) {
  const x = a && a.id != null ? String(a.id) : '';
  const y = b && b.id != null ? String(b.id) : '';
  if (x === y) return 0;
  return x < y ? 1 : -1;
}
