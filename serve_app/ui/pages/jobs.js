// Bulk enrollment jobs (owner and administrators): start one, follow its progress.
import { api } from '../api.js';
import { attempt, load, onLeave } from '../app.js';
import { field, formData, h, input, select, table } from '../dom.js';
import { recognitionServices } from './common.js';

const REFRESH_MS = 2000;

// A finished job's report: a download link (the session cookie goes along), its location as the title.
function reportCell(job) {
  if (!job.report_path) return '';
  if (job.status === 'pending' || job.status === 'running') return h('span', { class: 'muted', title: job.report_path }, 'when finished');
  return h('a', { href: `/api/v1/admin/jobs/${job.id}/report`, download: '', title: job.report_path, 'aria-label': `download the report of job ${job.id}` }, 'Download');
}

export async function render() {
  const services = await recognitionServices();
  const box = h('div', {});
  async function loadJobs() {
    const jobs = await load(() => api('/api/v1/admin/jobs?limit=50'));
    if (!jobs) return;
    box.replaceChildren(jobs.length ? table(['Job', 'Kind', 'Service', 'Input', 'Status', 'Progress', 'Counts', 'Report'], jobs.map((job) => h('tr', { 'data-job': job.id },
      h('td', {}, String(job.id)), h('td', {}, job.kind), h('td', {}, String(job.service_id)), h('td', {}, job.input),
      h('td', { class: job.status === 'failed' ? 'error' : '' }, job.error ? `${job.status}: ${job.error}` : job.status),
      h('td', {}, h('progress', { max: 1, value: job.progress ?? 0, 'aria-label': `progress of job ${job.id}` }),
        ` ${job.processed}${job.total ? ` / ${job.total}` : ''}${job.images_per_s ? `, ${job.images_per_s.toFixed(1)} images/s` : ''}`),
      h('td', {}, Object.entries(job.counts).map(([k, v]) => `${k}: ${v}`).join(', ')),
      h('td', {}, reportCell(job)))))
      : h('p', { class: 'muted' }, 'No job yet.'));
  }
  const timer = setInterval(loadJobs, REFRESH_MS);
  onLeave(() => clearInterval(timer));
  await loadJobs();
  return h('div', {}, h('h1', {}, 'Bulk jobs'), box,
    h('h2', {}, 'Enroll a folder'),
    h('p', { class: 'muted' }, 'A folder on the server (under FACES_FILE_ROOTS) with one sub-folder of images per person.'),
    h('form', {
      class: 'card', id: 'start-enroll',
      onsubmit: async (event) => {
        event.preventDefault();
        const body = formData(event.target);
        body.service_id = Number(body.service_id);
        if (await attempt(() => api('/api/v1/admin/jobs/enroll', { method: 'POST', body }), 'Job started.')) loadJobs();
      },
    }, field('Service', select('service_id', services.map((s) => [String(s.id), `${s.application} / ${s.name}`]))),
    field('Folder', input('path', { required: true })),
    field('Images with several faces', select('on_multiple', [['largest', 'enroll the largest'], ['reject', 'reject'], ['all', 'enroll all']], 'largest')),
    h('button', { type: 'submit' }, 'Start')));
}
