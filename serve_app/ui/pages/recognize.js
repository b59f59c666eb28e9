// Try a recognition service: upload an image, see each face's box and landmarks drawn on it, and
// who it is (subject and similarity) or "unknown".
import { query, upload } from '../api.js';
import { attempt, onLeave } from '../app.js';
import { field, h, input, svg, table } from '../dom.js';
import { serviceHeader } from './common.js';

const nameOf = (face) => (face.unknown ? 'unknown' : face.subjects[0].subject);

function overlay(width, height, faces) {
  const layer = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${faces.length} faces found` });
  faces.forEach((face, index) => {
    const { x_min: x1, y_min: y1, x_max: x2, y_max: y2 } = face.box;
    layer.append(svg('rect', { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: face.unknown ? 'face unknown' : 'face', 'data-index': index }));
    for (const [x, y] of face.landmarks || []) layer.append(svg('circle', { cx: x, cy: y, r: Math.max(2, (x2 - x1) / 40), class: 'landmark' }));
    layer.append(svg('text', { x: x1, y: Math.max(14, y1 - 6), 'font-size': Math.max(14, height / 30) }, `${index + 1}: ${nameOf(face)}`));
  });
  return layer;
}

export async function render(serviceId) {
  const { header } = await serviceHeader(serviceId, 'Test recognition');
  const result = h('div', { id: 'result', 'aria-live': 'polite' });
  let shown = null;
  onLeave(() => shown && URL.revokeObjectURL(shown));
  const fileInput = input('file', { type: 'file', accept: 'image/*', required: true });
  const threshold = input('threshold', { type: 'number', min: 0, max: 1, step: 0.01, placeholder: 'service default' });

  async function recognize(event) {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    result.replaceChildren(h('p', { class: 'muted' }, 'Recognizing…'));
    const params = query({ face_plugins: 'landmarks', prediction_count: 1, threshold: threshold.value });
    const answer = await attempt(() => upload(`/api/v1/recognition/recognize?${params}`, file, { service: serviceId }));
    if (!answer) { result.replaceChildren(); return; }
    if (shown) URL.revokeObjectURL(shown);
    shown = URL.createObjectURL(file);
    const img = h('img', { src: shown, alt: `uploaded image ${file.name}` });
    const picture = h('div', { class: 'picture', id: 'picture' }, img);
    img.addEventListener('load', () => picture.append(overlay(img.naturalWidth, img.naturalHeight, answer.result)), { once: true });
    result.replaceChildren(picture, table(['Face', 'Subject', 'Similarity', 'Box'], answer.result.map((face, index) => h('tr', { class: 'face-row' },
      h('td', {}, String(index + 1)),
      h('td', { class: face.unknown ? 'error subject' : 'ok subject' }, nameOf(face)),
      h('td', { class: 'similarity' }, face.unknown ? '—' : face.subjects[0].similarity.toFixed(3)),
      h('td', {}, `${face.box.x_min}, ${face.box.y_min} – ${face.box.x_max}, ${face.box.y_max}`)))));
  }

  return h('div', {}, header,
    h('form', { class: 'card', id: 'recognize-form', onsubmit: recognize },
      field('Image', fileInput), field('Similarity threshold', threshold), h('button', { type: 'submit' }, 'Recognize')),
    result);
}
