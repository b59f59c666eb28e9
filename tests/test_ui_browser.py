"""The web UI in a real browser (Playwright driving Debian's chromium) against the running platform.

The tests run in order on one page, as a new operator would: create the owner on the first start,
an application and a service, enroll by upload, recognize on the test page, rename a subject, see a
hostile subject name as text, promote an identity of unknown faces to a subject, merge two identities
and split one, see a user without rights refused, watch a live video event, log out.
A screenshot of every page is written to the folder printed at the start (under pytest's tmp dir).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ui_helpers import OWNER_EMAIL, OWNER_PASSWORD
from video_samples import PERSON_A, photos, write_abc_video

CHROMIUM = "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>"
WAIT_MS = 30_000
PERSON = "Abel_Pacheco"
STRANGER = "John_Elway"
REGULAR = "Ari_Fleischer"  # seen three times, unknown: an identity of unknown faces
STRANGERS = ("Vladimir_Putin", "Venus_Williams")  # seen twice each, unknown: two identities, merged and split
# Where an SVG shape is on the screen, in CSS pixels, without its stroke.
ON_SCREEN = """el => { const b = el.getBBox(), m = el.getScreenCTM();
                      return {x: m.a * b.x + m.e, y: m.d * b.y + m.f, width: m.a * b.width, height: m.d * b.height}; }"""


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.dialogs = []

        def on_dialog(dialog):
            page.dialogs.append(dialog.message)
            dialog.accept(page.prompt_answer if dialog.type == "prompt" else None)

        page.prompt_answer = None
        page.on("dialog", on_dialog)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


# Form controls without a label, and buttons without a name, on the page shown.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map(e => e.outerHTML)"""


def shot(page, shots: Path, name: str) -> None:
    """A screenshot of the page, after checking that every control on it is labelled."""
    assert page.evaluate(UNLABELLED) == [], name
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def go(page, server, hash_path: str) -> None:
    """Open a page afresh (a link to the page already shown would change nothing)."""
    target = f"{server.url}/ui/#{hash_path}"
    if page.url == target:
        page.reload()
    else:
        page.goto(target)


def test_first_start_asks_for_the_owner_and_logs_them_in(page, server, shots):
    assert httpx.get(f"{server.url}/api/v1/auth/setup").json() == {"needs_owner": True}
    page.goto(f"{server.url}/ui")
    page.get_by_role("heading", name="Create the owner").wait_for()
    shot(page, shots, "01-first-start")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_label("E-mail").fill(OWNER_EMAIL)
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Create owner").click()
    page.locator("#flash").filter(has_text="wrong admin token").wait_for()
    page.get_by_label("Admin token").fill(server.admin_token)
    page.get_by_role("button", name="Create owner").click()
    page.get_by_role("heading", name="Applications").wait_for()
    assert page.locator("#whoami").inner_text() == f"{OWNER_EMAIL} (owner)"
    cookie = next(c for c in page.context.cookies() if c["name"] == "faces_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert httpx.get(f"{server.url}/api/v1/auth/setup").json() == {"needs_owner": False}


def test_create_application_and_service_with_the_keyboard(page, server, shots, state):
    go(page, server, "/apps")
    name = page.get_by_label("New application name")
    name.fill("front desk")
    name.press("Enter")  # the keyboard submits the form
    page.get_by_role("heading", name="Application: front desk").wait_for()
    state["app_id"] = int(re.search(r"#/apps/(\d+)", page.url).group(1))
    page.get_by_label("New service name").fill("staff")
    page.get_by_label("Type").select_option("recognition")
    page.get_by_role("button", name="Create service").click()
    key = page.locator("#api-key").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", key)
    assert page.locator("tr[data-service='staff']").count() == 1
    shot(page, shots, "02-application")
    answer = httpx.get(f"{server.url}/api/v1/recognition/faces", headers={"x-api-key": key})
    assert answer.status_code == 200 and answer.json()["total_elements"] == 0
    state["api_key"] = key
    state["service_id"] = httpx.get(f"{server.url}/api/v1/admin/applications/{state['app_id']}/services",
                                    headers={"x-admin-token": server.admin_token}).json()[0]["id"]


def test_enroll_by_upload_shows_progress_per_file_errors_and_thumbnails(page, server, shots, state, data_dir,
                                                                         tmp_path):
    blank = tmp_path / "no-face.png"
    Image.new("RGB", (200, 200), (90, 140, 200)).save(blank)
    faces = photos(data_dir, PERSON)[:2]
    go(page, server, f"/services/{state['service_id']}/collection")
    page.get_by_label("Subject", exact=True).fill("abel")
    page.get_by_label("Images").set_input_files([*faces, blank])
    page.get_by_role("button", name="Upload").click()
    for face in faces:
        page.locator(f"li[data-file='{face.name}'] .ok").filter(has_text="enrolled").wait_for()
    error = page.locator("li[data-file='no-face.png'] .error")
    error.wait_for()
    assert "face" in error.inner_text().lower()
    assert page.locator("li[data-file] progress").count() == 3
    page.locator("#subject-list button", has_text="abel").filter(has_text="2 faces").wait_for()
    thumbs = page.locator("#faces .thumbs img")
    page.wait_for_function("() => [...document.querySelectorAll('#faces .thumbs img')]"
                           ".filter(i => i.complete && i.naturalWidth > 0).length === 2")
    assert thumbs.count() == 2
    shot(page, shots, "03-collection")


def test_recognize_draws_each_box_where_the_face_is(page, server, shots, state, data_dir, pipeline):
    probe = photos(data_dir, PERSON)[2]
    go(page, server, f"/services/{state['service_id']}/test")
    page.get_by_label("Image").set_input_files(probe)
    page.get_by_role("button", name="Recognize").click()
    page.locator("#picture svg rect.face").first.wait_for()
    assert page.locator(".face-row .subject").first.inner_text() == "abel"
    assert float(page.locator(".face-row .similarity").first.inner_text()) >= 0.95
    expected = pipeline.detect([probe.read_bytes()])[0]
    rects = page.locator("#picture svg rect.face")
    assert rects.count() == len(expected)
    image_box = page.locator("#picture img").bounding_box()
    with Image.open(probe) as original:
        scale = image_box["width"] / original.width
    drawn = [rects.nth(i).evaluate(ON_SCREEN) for i in range(rects.count())]
    for face in expected:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        on_screen = (image_box["x"] + x1 * scale, image_box["y"] + y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale)
        assert any(all(abs(a - b) <= 2 for a, b in zip(on_screen, (d["x"], d["y"], d["width"], d["height"])))
                   for d in drawn), (on_screen, drawn)
    assert page.locator("#picture svg circle.landmark").count() == 5 * len(expected)
    shot(page, shots, "04-test-known")
    page.get_by_label("Image").set_input_files(photos(data_dir, STRANGER)[0])
    page.get_by_role("button", name="Recognize").click()
    page.locator(".face-row .subject", has_text="unknown").wait_for()
    page.locator("#picture svg rect.unknown").wait_for()
    shot(page, shots, "05-test-unknown")


def test_rename_a_subject(page, server, shots, state):
    go(page, server, f"/services/{state['service_id']}/collection")
    page.locator("#subject-list button", has_text="abel").click()
    rename = page.get_by_label("Rename or merge into")
    rename.fill("Abel Pacheco")
    rename.press("Enter")
    page.locator("#subject-list button", has_text="Abel Pacheco").filter(has_text="2 faces").wait_for()
    faces = httpx.get(f"{server.url}/api/v1/recognition/faces", headers={"x-api-key": state["api_key"]}).json()
    assert {f["subject"] for f in faces["faces"]} == {"Abel Pacheco"}
    shot(page, shots, "06-renamed")


def test_a_hostile_subject_name_is_shown_as_text(page, server, shots, state, data_dir):
    answer = httpx.post(f"{server.url}/api/v1/recognition/faces", params={"subject": XSS_NAME},
                        headers={"x-api-key": state["api_key"]},
                        files={"file": photos(data_dir, "Aicha_El_Ouafi")[0].read_bytes()}, timeout=60)
    assert answer.status_code == 200, answer.text
    go(page, server, f"/services/{state['service_id']}/collection")
    subject = page.locator("#subject-list .name", has_text=XSS_NAME)
    subject.wait_for()
    assert subject.inner_text() == XSS_NAME
    subject.click()
    page.locator("#subject-title", has_text=XSS_NAME).wait_for()
    page.wait_for_function("() => document.querySelectorAll('#faces .thumbs img').length === 1")
    assert page.locator("img[src='x']").count() == 0
    assert not page.dialogs, page.dialogs
    shot(page, shots, "07-hostile-name")


def remember(server, state, photo: Path, source: str) -> dict:
    """The sighting of the one face of ``photo``, recognized with ``remember_unknowns``."""
    answer = httpx.post(f"{server.url}/api/v1/recognition/recognize", params={"remember_unknowns": "true",
                        "limit": 1, "source": source}, headers={"x-api-key": state["api_key"]},
                        files={"file": photo.read_bytes()}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"][0]["sighting"]


def shown_sightings(page) -> set[str]:
    """The ids of the sightings shown, once all their crops are loaded."""
    page.wait_for_function("() => [...document.querySelectorAll('#sightings .thumbs img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    figures = page.locator("#sightings figure[data-sighting]")
    return {figures.nth(i).get_attribute("data-sighting") for i in range(figures.count())}


def sightings_of(server, state, identity: int) -> set[str]:
    answer = httpx.get(f"{server.url}/api/v1/recognition/identities/{identity}/sightings",
                       headers={"x-api-key": state["api_key"]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {s["id"] for s in answer.json()}


def test_unknown_faces_are_listed_with_their_sightings_and_promoted_to_a_subject(page, server, shots, state,
                                                                               data_dir):
    remembered = [remember(server, state, photo, "front-door") for photo in photos(data_dir, REGULAR)[:3]]
    identity = remembered[0]["identity"]
    assert [s["identity"] for s in remembered] == [identity] * 3
    go(page, server, f"/apps/{state['app_id']}")
    page.locator("tr[data-service='staff']").get_by_role("link", name="Unknown faces").click()
    card = page.locator(f"#identities figure[data-identity='{identity}']")
    card.filter(has_text="3 sightings").wait_for()
    page.wait_for_function(f"() => {{ const i = document.querySelector(\"figure[data-identity='{identity}'] img\");"
                           " return i && i.complete && i.naturalWidth > 0; }")
    page.get_by_role("button", name=f"Sightings of identity {identity}").click()
    page.locator("#identity-title", has_text=f"Identity #{identity}: 3 sightings").wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('#sightings .thumbs img')]"
                           ".filter(i => i.complete && i.naturalWidth > 0).length === 3")
    assert {page.locator("#sightings figure[data-sighting]").nth(i).get_attribute("data-sighting")
            for i in range(3)} == {s["id"] for s in remembered}
    assert "front-door" in page.locator("#sightings").inner_text()
    shot(page, shots, "07b-identities")
    promote = page.get_by_label("Promote to subject")
    promote.fill("Ari Fleischer")
    promote.press("Enter")
    card.wait_for(state="detached")
    faces = httpx.get(f"{server.url}/api/v1/recognition/faces", params={"subject": "Ari Fleischer"},
                      headers={"x-api-key": state["api_key"]}).json()
    assert faces["total_elements"] == 3


def test_two_identities_merged_on_the_page_then_split_again(page, server, shots, state, data_dir):
    first, second = ([remember(server, state, photo, source) for photo in photos(data_dir, name)[:2]]
                     for name, source in zip(STRANGERS, ("side-door", XSS_NAME)))
    keep, gone = first[0]["identity"], second[0]["identity"]
    assert [s["identity"] for s in first + second] == [keep, keep, gone, gone] and keep != gone
    go(page, server, f"/services/{state['service_id']}/identities")
    page.get_by_role("button", name=f"Sightings of identity {keep}").click()
    title = page.locator("#identity-title")
    title.filter(has_text=f"Identity #{keep}: 2 sightings").wait_for()
    # the other identity picked from the list, the merge confirmed
    page.get_by_role("button", name=f"Merge identity {gone} into identity {keep}").click()
    title.filter(has_text=f"Identity #{keep}: 4 sightings").wait_for()
    assert page.dialogs[-1].startswith(f"Merge identity #{gone} into #{keep}?"), page.dialogs
    page.locator(f"#identities figure[data-identity='{keep}']").filter(has_text="4 sightings").wait_for()
    page.locator(f"#identities figure[data-identity='{gone}']").wait_for(state="detached")
    assert shown_sightings(page) == {s["id"] for s in first + second} == sightings_of(server, state, keep)
    assert httpx.get(f"{server.url}/api/v1/recognition/identities/{gone}",
                     headers={"x-api-key": state["api_key"]}, timeout=30).status_code == 404
    # a source that looks like markup is shown as text
    assert XSS_NAME in page.locator("#sightings").inner_text() and page.locator("img[src='x']").count() == 0
    # merged with itself (typed by id): the API's refusal, readable, and nothing changed
    other = page.get_by_label("Identity to merge into this one (id)")
    other.fill(str(keep))
    other.press("Enter")
    page.locator("#flash").filter(has_text="an identity cannot be merged with itself").wait_for()
    assert len(sightings_of(server, state, keep)) == 4
    # the second person's sightings chosen with the keyboard, split off into a new identity
    for sighting in second:
        page.get_by_label(f"Choose sighting {sighting['id']}").press("Space")
    shot(page, shots, "07c-identities-merged")
    page.get_by_role("button", name="Split off 2 sightings").click()
    made = page.locator("#flash").filter(has_text="now make the new identity #")
    made.wait_for()
    new = int(re.search(r"new identity #(\d+)", made.inner_text()).group(1))
    assert new not in (keep, gone)
    title.filter(has_text=f"Identity #{new}: 2 sightings").wait_for()
    assert shown_sightings(page) == {s["id"] for s in second} == sightings_of(server, state, new)
    page.locator(f"#identities figure[data-identity='{keep}']").filter(has_text="2 sightings").wait_for()
    page.locator(f"#identities figure[data-identity='{new}']").filter(has_text="2 sightings").wait_for()
    assert sightings_of(server, state, keep) == {s["id"] for s in first}


def test_a_user_without_rights_is_refused(page, server, shots, state):
    go(page, server, "/users")
    page.get_by_label("E-mail", exact=True).fill("viewer@example.org")
    page.get_by_label("Password", exact=True).fill("viewer-password-1")
    page.get_by_label("Global role", exact=True).select_option("user")
    page.get_by_role("button", name="Add user").click()
    page.locator("tr[data-user='viewer@example.org']").wait_for()
    shot(page, shots, "08-users")
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Log in").wait_for()
    page.get_by_label("E-mail").fill("viewer@example.org")
    page.get_by_label("Password").fill("viewer-password-1")
    page.get_by_label("Password").press("Enter")
    page.get_by_role("heading", name="Applications").wait_for()
    assert page.get_by_text("No application yet.").is_visible()  # the owner's application is not listed
    assert page.get_by_role("link", name="Users").count() == 0
    go(page, server, f"/apps/{state['app_id']}")
    page.get_by_role("heading", name="This page cannot be shown").wait_for()
    assert f"application {state['app_id']} not found" in page.locator("main").inner_text()
    go(page, server, f"/services/{state['service_id']}/collection")
    page.get_by_role("heading", name="This page cannot be shown").wait_for()
    go(page, server, "/users")
    page.get_by_text("only the owner and administrators may do this").wait_for()
    shot(page, shots, "09-refused")


def test_logout_ends_the_session(page, server):
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Log in").wait_for()
    assert not [c for c in page.context.cookies() if c["name"] == "faces_session"]
    go(page, server, "/apps")
    page.get_by_role("heading", name="Log in").wait_for()


def test_pages_of_an_administrator(page, server, shots, state):
    page.get_by_label("E-mail").fill(OWNER_EMAIL)
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Applications").wait_for()
    go(page, server, f"/services/{state['service_id']}/stats")
    page.locator("tr.shard").first.wait_for()
    page.locator("svg.chart rect.requests").first.wait_for()
    shot(page, shots, "10-statistics")
    go(page, server, "/status")
    page.locator("#readiness", has_text="Ready").wait_for()
    assert "Embedder" in page.locator("main").inner_text()
    shot(page, shots, "11-status")
    go(page, server, "/jobs")
    page.get_by_role("heading", name="Bulk jobs").wait_for()
    page.get_by_label("Folder").fill("/etc")  # outside the file roots: the API's refusal, readable
    page.get_by_role("button", name="Start").click()
    page.locator("#flash").filter(has_text="outside the file roots").wait_for()
    shot(page, shots, "12-jobs")


def test_a_live_video_event_appears_and_the_stream_stops(page, server, shots, state, data_dir, tmp_path):
    httpx.post(f"{server.url}/api/v1/recognition/faces", params={"subject": PERSON_A},
               headers={"x-api-key": state["api_key"]}, files={"file": photos(data_dir, PERSON_A)[0].read_bytes()},
               timeout=60).raise_for_status()
    clip = write_abc_video(tmp_path / "abc.mp4", data_dir)
    go(page, server, "/video")
    page.locator("#live-state", has_text="live").wait_for()
    page.get_by_label("Name").fill("ui front door")
    page.get_by_label("Source (file path, rtsp://, http(s)://)").fill(str(clip))
    page.get_by_label("Watchlist").select_option(str(state["service_id"]))
    page.get_by_label("Detections per second").fill("0")
    page.get_by_role("button", name="Add stream").click()
    row = page.locator("tr[data-stream]:has(td:text-is('ui front door'))")
    row.wait_for()
    ours = f"#live-events li[data-stream='{row.get_attribute('data-stream')}']"  # a new stream: its events came live
    page.locator(f"{ours} .subject", has_text=PERSON_A).first.wait_for(timeout=60_000)
    page.wait_for_function(f"() => [...document.querySelectorAll(\"{ours} img\")]"
                           ".some(i => i.complete && i.naturalWidth > 0)")
    shot(page, shots, "13-video")
    page.get_by_role("button", name="Stop stream ui front door").click()
    row.locator("td.state-stopped").wait_for(timeout=60_000)
    page.get_by_role("button", name="Start stream ui front door").wait_for()
    # its settings edited in the form (the API's PATCH), the row showing the new name
    stream_id = row.get_attribute("data-stream")
    page.get_by_role("button", name="Edit stream ui front door").click()
    form = page.locator("#edit-stream")
    form.get_by_label("Name").fill("ui back door")
    form.get_by_label("Detections per second").fill("2")
    form.get_by_role("button", name="Save stream").click()
    page.locator("tr[data-stream]:has(td:text-is('ui back door'))").wait_for()
    edited = httpx.get(f"{server.url}/api/v1/video/streams/{stream_id}",
                       headers={"x-admin-token": server.admin_token}, timeout=30).json()
    assert (edited["name"], edited["max_fps"], edited["source_url"]) == ("ui back door", 2.0, str(clip))


def test_every_png_written(shots):
    names = sorted(p.name for p in shots.glob("*.png"))
    assert len(names) == 15, names
    for name in names:
        with Image.open(shots / name) as image:
            assert image.width >= 1280 and image.height >= 600
