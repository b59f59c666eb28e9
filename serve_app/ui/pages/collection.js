// A recognition service's collection: subjects (paged, with face counts), a subject's faces as
// thumbnails of the stored crops (paged), multi-file upload with progress and per-file errors,
// rename (merge into an existing name), delete.
import { api, imageUrl, query, upload } from '../api.js';
import { attempt, load, onLeave } from '../app.js';
import { button, field, h, input } from '../dom.js';
import { pager, serviceHeader } from './common.js';

const SUBJECTS_PER_PAGE = 50;
const FACES_PER_PAGE = 24;
const PARALLEL_UPLOADS = 2;

export async function render(serviceId) {
  const { header } = await serviceHeader(serviceId, 'Collection');
  const state = { page: 0, search: '', subject: null, facePage: 0 };
  const blobs = [];
  onLeave(() => blobs.splice(0).forEach((url) => URL.revokeObjectURL(url)));
  const subjectsBox = h('section', { class: 'subjects', 'aria-label': 'subjects' });
  const facesBox = h('section', { 'aria-label': 'faces', id: 'faces' });

  async function loadSubjects() {
    const data = await load(() => api(`/api/v1/recognition/subjects/page?${query({ page: state.page, size: SUBJECTS_PER_PAGE, search: state.search })}`, { service: serviceId }));
    if (!data) return;
    const search = h('form', {
      role: 'search',
      onsubmit: (event) => { event.preventDefault(); state.search = event.target.search.value; state.page = 0; loadSubjects(); },
    }, field('Find subjects', input('search', { type: 'search', value: state.search })), h('button', { type: 'submit' }, 'Find'));
    const items = data.subjects.map(({ subject, faces }) => h('li', {},
      h('button', {
        type: 'button', class: 'subject', 'aria-pressed': String(subject === state.subject),
        onclick: () => { state.subject = subject; state.facePage = 0; loadSubjects(); loadFaces(); },
      }, h('span', { class: 'name' }, subject), h('span', { class: 'muted count' }, `${faces} face${faces === 1 ? '' : 's'}`))));
    subjectsBox.replaceChildren(h('h2', {}, 'Subjects'), search,
      items.length ? h('ul', { id: 'subject-list' }, items) : h('p', { class: 'muted' }, 'No subject.'),
      pager('Subjects', state.page, SUBJECTS_PER_PAGE, data.total_elements, (p) => { state.page = p; loadSubjects(); }));
  }

  async function loadFaces() {
    const subject = state.subject;
    if (subject === null) {
      facesBox.replaceChildren(h('p', { class: 'muted' }, 'Choose a subject to see its faces.'));
      return;
    }
    const data = await load(() => api(`/api/v1/recognition/faces?${query({ subject, page: state.facePage, size: FACES_PER_PAGE })}`, { service: serviceId }));
    if (!data) return;
    const thumbs = data.faces.map((face) => {
      const img = h('img', { alt: `face of ${subject}`, width: 112, height: 112 });
      imageUrl(`/api/v1/recognition/faces/${encodeURIComponent(face.image_id)}/img`, serviceId)
        .then((url) => { blobs.push(url); img.src = url; })
        .catch((error) => { img.alt = `crop unavailable: ${error.message}`; });
      return h('figure', { 'data-face': face.image_id }, img,
        button('Delete', async () => {
          if (await attempt(() => api(`/api/v1/recognition/faces/${encodeURIComponent(face.image_id)}`, { method: 'DELETE', service: serviceId }), 'Face deleted.')) {
            loadFaces(); loadSubjects();
          }
        }, { class: 'danger', 'aria-label': `Delete face ${face.image_id}` }));
    });
    const rename = h('form', {
      id: 'rename-subject',
      onsubmit: async (event) => {
        event.preventDefault();
        const name = event.target.subject.value.trim();
        const done = await attempt(() => api(`/api/v1/recognition/subjects/${encodeURIComponent(subject)}`, { method: 'PUT', body: { subject: name }, service: serviceId }),
          `Renamed to "${name}" (merged if that name existed).`);
        if (done) { state.subject = name; loadSubjects(); loadFaces(); }
      },
    }, field('Rename or merge into', input('subject', { required: true, value: subject, maxlength: 255 })), h('button', { type: 'submit' }, 'Rename'),
    button('Delete subject', async () => {
      if (!confirm(`Delete subject "${subject}" and all its faces?`)) return;
      if (await attempt(() => api(`/api/v1/recognition/subjects/${encodeURIComponent(subject)}`, { method: 'DELETE', service: serviceId }), 'Subject deleted.')) {
        state.subject = null; loadSubjects(); loadFaces();
      }
    }, { class: 'danger' }));
    facesBox.replaceChildren(h('h2', { id: 'subject-title' }, subject), rename,
      data.faces.length ? h('div', { class: 'thumbs' }, thumbs) : h('p', { class: 'muted' }, 'No face.'),
      pager('Faces', state.facePage, FACES_PER_PAGE, data.total_elements, (p) => { state.facePage = p; loadFaces(); }));
  }

  const uploads = h('ul', { class: 'uploads', id: 'uploads', 'aria-live': 'polite' });
  const subjectInput = input('subject', { required: true, maxlength: 255 });
  const fileInput = input('files', { type: 'file', accept: 'image/*', multiple: true });

  async function enroll(files) {
    const subject = subjectInput.value.trim();
    if (!subject) { subjectInput.reportValidity(); return; }
    const queue = [...files];
    uploads.replaceChildren();
    const worker = async () => {
      while (queue.length) {
        const file = queue.shift();
        const bar = h('progress', { max: 1, value: 0, 'aria-label': `upload of ${file.name}` });
        const outcome = h('span', { class: 'muted' }, 'uploading');
        uploads.append(h('li', { 'data-file': file.name }, h('span', {}, file.name), bar, outcome));
        try {
          await upload(`/api/v1/recognition/faces?${query({ subject })}`, file, { service: serviceId, onProgress: (f) => { bar.value = f; } });
          bar.value = 1;
          outcome.className = 'ok';
          outcome.textContent = 'enrolled';
        } catch (error) {
          outcome.className = 'error';
          outcome.textContent = error.message;
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, worker));
    state.subject = subject;
    await Promise.all([loadSubjects(), loadFaces()]);
  }

  const drop = h('div', {
    class: 'dropzone',
    ondragover: (event) => { event.preventDefault(); drop.classList.add('over'); },
    ondragleave: () => drop.classList.remove('over'),
    ondrop: (event) => { event.preventDefault(); drop.classList.remove('over'); enroll(event.dataTransfer.files); },
  }, 'Drop images here, or choose them below.');
  const uploadForm = h('form', {
    id: 'upload-faces',
    onsubmit: (event) => { event.preventDefault(); if (fileInput.files.length) enroll(fileInput.files); else fileInput.reportValidity(); },
  }, field('Subject', subjectInput), field('Images', fileInput), h('button', { type: 'submit' }, 'Upload'));

  await Promise.all([loadSubjects(), loadFaces()]);
  return h('div', {}, header,
    h('section', { 'aria-label': 'add faces' }, h('h2', {}, 'Add faces'), drop, uploadForm, uploads),
    h('div', { class: 'split' }, subjectsBox, facesBox));
}
