// web/js/images.js: what an Image shows people.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  compareNewestFirst, describeImageDetails, describeMetadata, downloadName, formatCamera, imageName,
} from '../../../web/js/images.js';

test('imageName: the file name, else the fallback', () => {
  assert.equal(imageName({ filename: 'cat.jpg' }), 'cat.jpg');
  assert.equal(imageName({ filename: '' }), 'Untitled image');
  assert.equal(imageName(null, 'the image'), 'the image');
  assert.equal(imageName({ filename: 42 }, null), null);
});

test('formatCamera does not repeat the make', () => {
  assert.equal(formatCamera('Canon', 'Canon EOS R'), 'Canon EOS R');
  assert.equal(formatCamera('NIKON ', 'Z 6'), 'NIKON Z 6');
  assert.equal(formatCamera('', ' X100V '), 'X100V');
  assert.equal(formatCamera(null, undefined), null);
});

test('describeMetadata lists what is known, in order', () => {
  const rows = describeMetadata({
    size_bytes: 2048,
    metadata: { width: 1600, height: 1200, format: 'JPEG', mode: 'RGB', camera_make: 'Canon', camera_model: 'Canon EOS R', has_gps: false },
  });
  assert.deepEqual(rows, [
    ['Dimensions', '1600 × 1200'], ['Format', 'JPEG'], ['Mode', 'RGB'], ['Camera', 'Canon EOS R'],
    ['GPS', 'No'], ['Size', '2 KB'],
  ]);
  assert.deepEqual(describeMetadata({ width: 10, height: 20 }), [['Dimensions', '10 × 20']]);
  assert.deepEqual(describeMetadata(null), []);
});

test('describeImageDetails always shows the same fields, a dash for what is unknown', () => {
  const rows = describeImageDetails({ size_bytes: 1536, content_type: 'image/png', status: 'ready', metadata: { width: 3, camera_make: ' Fuji ' } });
  const byTerm = Object.fromEntries(rows);
  assert.deepEqual(rows.map(([term]) => term), ['Width', 'Height', 'Format', 'Mode', 'Frames', 'Camera make',
    'Camera model', 'Taken at', 'GPS', 'Size', 'Content type', 'Created', 'Status']);
  assert.equal(byTerm.Width, '3 px');
  assert.equal(byTerm.Height, '—');
  assert.equal(byTerm['Camera make'], 'Fuji');
  assert.equal(byTerm.Size, '1.5 KB (1,536 bytes)');
  assert.equal(byTerm['Content type'], 'image/png');
  assert.equal(byTerm.Status, 'ready');
  assert.deepEqual(describeImageDetails(undefined), []);
});

test('downloadName: the original\'s own name, renditions as <stem>-<kind>.webp', () => {
  assert.equal(downloadName('holiday.JPG', 'original'), 'holiday.JPG');
  assert.equal(downloadName('holiday.JPG', 'preview'), 'holiday-preview.webp');
  assert.equal(downloadName('archive.tar.gz', 'thumbnail'), 'archive.tar-thumbnail.webp');
  assert.equal(downloadName('  ', 'original'), 'image');
  assert.equal(downloadName(null, 'preview'), 'image-preview.webp');
  assert.equal(downloadName('.jpg', 'preview'), 'image-preview.webp');
});

test('compareNewestFirst sorts ids descending', () => {
  const ids = ['01A', '01C', '01B'].map((id) => ({ id }));
  assert.deepEqual(ids.sort(compareNewestFirst).map((i) => i.id), ['01C', '01B', '01A']);
  assert.equal(compareNewestFirst({ id: 'x' }, { id: 'x' }), 0);
  assert.equal(compareNewestFirst(null, { id: 'a' }), 1);
});
