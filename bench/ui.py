"""Time to first render of each web UI page with a large service (10,000 subjects, 100,000 faces,
10,000 identities of unknown faces with 50,000 sightings).

Starts the platform (temporary data dir, local Ray with 2 CPUs), fills one recognition service
straight through its gallery, and its sightings straight into their shards and records (random unit
embeddings, one real face crop as every thumbnail: the pipeline is not what is measured), creates the
owner, then drives Debian's chromium with Playwright: each page is opened ``--repeat`` times and
timed from navigation to the element that shows its data.
Prints a Markdown table (median and worst, ms) and writes bench/results/ui.json.

    python bench/ui.py                                   # the sizes above
    python bench/ui.py --subjects 200 --faces 2000 --identities 100 --sightings 500 --repeat 2   # a quick try
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import data_dir, free_port, print_table, save_results  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BATCH = 5000
OWNER = ("owner@bench.example", "bench-password")


def _crop(photo: Path) -> bytes:
    with Image.open(photo) as image:
        side = min(image.size)
        box = ((image.width - side) // 2, (image.height - side) // 2)
        buffer = io.BytesIO()
        image.crop((*box, box[0] + side, box[1] + side)).resize((112, 112)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _unit_batches(seed: int, total: int):
    """``(start, vectors)`` for ``total`` random unit embeddings, ``BATCH`` at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, total, BATCH):
        vectors = rng.standard_normal((min(BATCH, total - start), 128)).astype(np.float32)
        yield start, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def _fill(platform, service: dict, subjects: int, faces: int, crop: bytes) -> float:
    """``faces`` faces spread over ``subjects`` subjects, added in batches through the gallery."""
    from actors.index_shard import ShardGroup
    from gallery.service_gallery import Gallery
    from store.control import ControlPlane
    from store.faces import FaceRecord

    settings = platform.settings
    control = await ControlPlane.connect(settings.postgres_dsn)
    gallery = Gallery(control, ShardGroup.for_service(service["id"], service["shards"], settings,
                                                      replicas=service["shard_replicas"]), service["id"])
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    for start, vectors in _unit_batches(7, faces):
        await gallery.add_faces([FaceRecord(face_id=str(uuid.uuid4()), subject=f"person-{(start + i) % subjects:05d}",
                                            embedding=vector, model="sface@2021dec-int8bq", crop=crop, source=None,
                                            created_at=now) for i, vector in enumerate(vectors)])
    await control.close()
    return time.perf_counter() - started


async def _fill_sightings(platform, service: dict, identities: int, sightings: int, crop: bytes) -> float:
    """``sightings`` sightings of no subject spread over ``identities`` identities (ids 1..n), seen over
    the last 30 days: rows in the sighting shards, then their records, in batches."""
    from actors.index_shard import ShardGroup
    from store.control import ControlPlane
    from store.faces import FaceRecord
    from store.sightings import NewSighting, SightingStore

    settings = platform.settings
    control = await ControlPlane.connect(settings.postgres_dsn)
    store = SightingStore(control.pool)
    shards = ShardGroup.for_service(service["id"], service["shards"], settings, replicas=service["shard_replicas"],
                                    kind="sightings")
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    for start, vectors in _unit_batches(11, sightings):
        batch = [NewSighting(id=str(uuid.uuid4()), seen_at=now - timedelta(seconds=float(rng.uniform(0, 30 * 86400))),
                             source=f"cam-{(start + i) % 16}", box={"x_min": 10, "y_min": 10, "x_max": 110, "y_max": 110},
                             quality=float(rng.uniform(0.3, 1.0)), subject=None, identity=(start + i) % identities + 1,
                             embedding=vector) for i, vector in enumerate(vectors)]
        await shards.add([FaceRecord(face_id=s.id, subject=s.source, embedding=s.embedding, model="sface@2021dec-int8bq",
                                     crop=crop, source=s.source, created_at=s.seen_at) for s in batch])
        await store.add(service["id"], batch)
    await control.close()
    return time.perf_counter() - started


def _timed(page, action, ready: str) -> float:
    started = time.perf_counter()
    action()
    page.wait_for_selector(ready, state="visible")
    return (time.perf_counter() - started) * 1000


def _thumbs_loaded(section: str) -> str:
    return (f"() => {{ const s = [...document.querySelectorAll('#{section} .thumbs img')];"
            " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); }")


def _measure(page, url: str, app_id: int, service_id: int, probe: Path, last_subject: str,
             repeat: int) -> dict[str, list[float]]:
    def goto(hash_path: str):
        return lambda: page.goto(f"{url}/ui/#{hash_path}")

    def reload_first(hash_path: str):
        def action():
            page.goto("about:blank")
            page.goto(f"{url}/ui/#{hash_path}")
        return action

    def subject_faces() -> None:
        page.locator("#subject-list button").first.click()
        page.wait_for_function(_thumbs_loaded("faces"))

    def identities() -> None:
        reload_first(f"/services/{service_id}/identities")()
        page.wait_for_function(_thumbs_loaded("identities"))

    def identity_sightings() -> None:
        page.locator("#identities figure button", has_text="Sightings").first.click()
        page.wait_for_function(_thumbs_loaded("sightings"))

    def search() -> None:
        page.get_by_label("Find subjects").fill(last_subject)
        page.get_by_label("Find subjects").press("Enter")
        page.locator("#subject-list .name", has_text=last_subject).wait_for()

    def recognize() -> None:
        page.get_by_label("Image").set_input_files(probe)
        page.get_by_role("button", name="Recognize").click()
        page.locator("#picture svg rect.face").first.wait_for()

    pages = [
        ("applications", reload_first("/apps"), "main table"),
        ("application and services", reload_first(f"/apps/{app_id}"), "tr[data-service]"),
        ("collection: subjects", reload_first(f"/services/{service_id}/collection"), "#subject-list"),
        ("collection: a subject's thumbnails", subject_faces, "#faces .thumbs"),
        ("collection: search", search, "#subject-list"),
        ("test page", reload_first(f"/services/{service_id}/test"), "#recognize-form"),
        ("test page: recognize", recognize, "#picture svg"),
        ("unknown faces: identities with best shots", identities, "#identities figure"),
        ("unknown faces: an identity's sightings", identity_sightings, "#sightings figure"),
        ("statistics and index shards", reload_first(f"/services/{service_id}/stats"), "tr.shard"),
        ("users", reload_first("/users"), "main table"),
        ("video streams", reload_first("/video"), "#add-stream"),
        ("bulk jobs", reload_first("/jobs"), "#start-enroll"),
        ("server status", reload_first("/status"), "#readiness"),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in pages}
    for _ in range(repeat):
        for name, action, ready in pages:
            timings[name].append(_timed(page, action, ready))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--identities", type=int, default=10_000, help="identities of unknown faces")
    parser.add_argument("--sightings", type=int, default=50_000, help="their sightings")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="openings of each page")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import httpx
    from playwright.sync_api import sync_playwright

    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    photos = sorted((data_dir() / "lfw-dev").glob("*/*.jpg"))
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as folder:
        os.chmod(folder, 0o755)  # the embedded PostgreSQL runs as its own user
        data = Path(folder) / "data"
        data.mkdir()
        models = Path("data/models").resolve()
        if models.is_dir():
            (data / "models").symlink_to(models, target_is_directory=True)
        settings = Settings(data_dir=data, port=free_port(), admin_token="bench")
        platform = start_platform(settings, ray_init_options={"num_cpus": 2, "log_to_driver": False})
        try:
            admin = FaceClient(platform.url, admin_token="bench")
            application = admin.create_application("bench")
            service = admin.create_service(application["id"], "large", "recognition", shards=args.shards)
            fill_s = asyncio.run(_fill(platform, service, args.subjects, args.faces, _crop(photos[0])))
            fill_sightings_s = asyncio.run(_fill_sightings(platform, service, args.identities, args.sightings,
                                                           _crop(photos[2])))
            httpx.post(f"{platform.url}/api/v1/auth/setup", json={"admin_token": "bench", "email": OWNER[0],
                                                                  "password": OWNER[1]}).raise_for_status()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(120_000)
                page.goto(f"{platform.url}/ui/#/login")
                page.get_by_label("E-mail").fill(OWNER[0])
                page.get_by_label("Password").fill(OWNER[1])
                page.get_by_role("button", name="Log in").click()
                page.get_by_role("heading", name="Applications").wait_for()
                timings = _measure(page, platform.url, application["id"], service["id"], photos[1],
                                   f"person-{args.subjects - 1:05d}", args.repeat)
                browser.close()
        finally:
            platform.stop()

    print(f"\n{args.subjects} subjects, {args.faces} faces in {args.shards} shard(s) (filled in {fill_s:.0f} s), "
          f"{args.identities} identities of unknown faces with {args.sightings} sightings (filled in "
          f"{fill_sightings_s:.0f} s), {os.cpu_count()} cores, chromium headless, {args.repeat} openings per page\n")
    print_table(["page", "median ms", "worst ms"],
                [[name, statistics.median(ms), max(ms)] for name, ms in timings.items()])
    path = save_results("ui", {"subjects": args.subjects, "faces": args.faces, "identities": args.identities,
                               "sightings": args.sightings, "shards": args.shards, "repeat": args.repeat,
                               "fill_seconds": fill_s, "fill_sightings_seconds": fill_sightings_s,
                               "pages_ms": timings})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
