"""The files a bulk job leaves, deleted with its service or application (the erasure guarantee).

A job writes under its own folder, ``<jobs uri>/<job id>/`` (its report unless the admin named one),
or to the report location the admin named. That one is recorded canonical (:mod:`batch_jobs.locations`):
a local path, or an object-store URI without credentials or options, reached again with the
environment's credentials and endpoint; a report there that cannot be reached any more is logged and
left (its name is in the log), so that it never blocks the deletion of the service.
"""

from __future__ import annotations

import logging

from batch_jobs.locations import resolve
from faces_settings import Settings
from outbound import redact
from store.jobs import Job
from store.object_storage import delete_tree, join_uri

log = logging.getLogger(__name__)


def job_folder(settings: Settings, job_id: int) -> str:
    """Where job ``job_id`` writes the files it names itself."""
    return join_uri(settings.resolved().jobs_uri, str(int(job_id)))


def delete_job_files(settings: Settings, job: Job) -> None:
    """Delete the job's folder and the report the admin named for it (missing files are fine)."""
    folder = job_folder(settings, job.id)
    delete_tree(folder)
    if not job.report_path or job.report_path.startswith(folder.rstrip("/") + "/"):
        return
    try:
        location = resolve(job.report_path)
        location.filesystem.delete_file(location.path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # any filesystem's error: the report's store is gone or refuses
        log.warning("job %d: its report %s was not deleted: %s", job.id, redact(job.report_path), exc)
