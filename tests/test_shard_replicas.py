"""Read replicas of an index shard: the primary's changes applied in its order (no Ray), and a
replicated shard group on the session's Ray cluster that keeps answering searches while its primary
is SIGKILLed, with writes back once the primary is."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest

from faceindex.config import SearchConfig
from faceindex.layout import ServiceLayout
from faceindex.replica import ORDER_WAIT_S
from faceindex.shard import IndexShard
from store.faces import FaceTable
from test_index_shard import DIM, records, unit


@pytest.fixture
def uri(tmp_path) -> str:
    return str(tmp_path / "faces")


def test_a_replica_applies_the_primarys_changes_in_the_primarys_order(uri):
    primary = IndexShard(uri, "t", DIM)
    replica = IndexShard(uri, "t", DIM, replica=True)
    vectors = unit(np.random.default_rng(1), 3)
    changes = [primary.write("add", records(["a", "b"], ["ann", "bob"], vectors[:2])),
               primary.write("rename_subject", "bob", "robert"),
               primary.write("delete_ids", ["a"]),
               primary.write("add", records(["c"], ["cy"], vectors[2:]))]
    assert [result for result, _, _ in changes] == [2, 1, [("a", "ann")], 2]
    versions = FaceTable.open(uri, "t", DIM).version
    late = changes[2]  # the delete reaches the replica first: it waits for the add and the rename
    waiting = threading.Thread(target=replica.follow, args=("delete_ids", (["a"],), *late[1:]))
    waiting.start()
    time.sleep(0.3)
    assert replica.count() == 0, "nothing applied before the first change"
    for (method, args), (_, before, after) in zip([("add", (records(["a", "b"], ["ann", "bob"], vectors[:2]),)),
                                                    ("rename_subject", ("bob", "robert"))], changes[:2]):
        replica.follow(method, args, before, after)
    waiting.join(timeout=ORDER_WAIT_S)
    replica.follow("add", (records(["c"], ["cy"], vectors[2:]),), *changes[3][1:])
    replica.follow("delete_ids", (["a"],), *late[1:])  # delivered twice: already held, skipped
    assert replica.subjects() == primary.subjects() == {"robert": 1, "cy": 1}
    assert replica.search_subjects(vectors, 2) == primary.search_subjects(vectors, 2)
    assert replica.get_face("c").subject == "cy"  # read from the table the primary committed
    assert FaceTable.open(uri, "t", DIM).version == versions, "the replica wrote nothing"


def test_a_replica_that_misses_a_change_loads_the_table_again(uri):
    primary = IndexShard(uri, "t", DIM)
    replica = IndexShard(uri, "t", DIM, replica=True)
    vectors = unit(np.random.default_rng(2), 2)
    primary.write("add", records(["a"], ["ann"], vectors[:1]))  # lost: never delivered
    _, before, after = primary.write("add", records(["b"], ["bob"], vectors[1:]))
    started = time.monotonic()
    replica.follow("add", (records(["b"], ["bob"], vectors[1:]),), before, after)
    assert ORDER_WAIT_S <= time.monotonic() - started < ORDER_WAIT_S + 10
    assert replica.subjects() == {"ann": 1, "bob": 1}


def test_the_layout_names_replicas_and_finds_those_beyond_a_count():
    layout = ServiceLayout(3, 2)
    assert layout.actor_name(1) == "index-shard-s3-n2-p1" and layout.actor_name(1, 2) == "index-shard-s3-n2-p1-r2"
    names = [layout.actor_name(0), layout.actor_name(1, 1), layout.actor_name(0, 2), "index-shard-s33-n2-p0-r2",
             ServiceLayout(3, 4).actor_name(0, 3)]
    assert layout.extra_replicas(names, 2) == [layout.actor_name(0, 2)]
    assert layout.extra_replicas(names, 1) == [layout.actor_name(1, 1), layout.actor_name(0, 2)]


def test_only_writes_go_through_write_and_follow(uri):
    shard = IndexShard(uri, "t", DIM)
    with pytest.raises(ValueError, match="not a write"):
        shard.write("drop")
    with pytest.raises(ValueError, match="not a write"):
        shard.follow("replace_from", ("x",), 0, 1)


def test_reads_take_turns_and_pass_over_a_failed_member():
    from actors.shard_reads import SUSPECT_S, MemberReads

    reads = MemberReads(["primary", "replica 1", "replica 2"])
    assert [reads._order()[0] for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    reads._suspect_until[1] = time.monotonic() + SUSPECT_S
    assert [reads._order() for _ in range(3)] == [[0, 2, 1], [2, 0, 1], [2, 0, 1]]  # the failed one last


def actor_pid(handle) -> int:
    import ray

    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def test_searches_go_on_while_the_primary_is_killed_and_writes_resume_when_it_is_back(server, tmp_path):
    import ray

    from actors.index_shard import NAMESPACE, ShardGroup

    group = ShardGroup(999_101, 1, str(tmp_path / "faces"), DIM, SearchConfig(mode="exact"), call_timeout_s=60,
                       replicas=2)
    primary, replica = group.members[0]
    vectors = unit(np.random.default_rng(3), 400)
    ids = [f"f{i}" for i in range(400)]
    asyncio.run(group.add(records(ids, [f"s{i}" for i in range(400)], vectors)))
    assert ray.get([primary.count.remote(), replica.count.remote()]) == [400, 400]

    async def search_while(stop: threading.Event) -> tuple[int, int, list]:
        done, wrong, failed = 0, 0, []
        while not stop.is_set():
            picks = np.random.default_rng(done).integers(0, 400, 4)
            try:
                found = await group.search_subjects(vectors[picks], 1)
            except Exception as error:  # noqa: BLE001 - every failure is what the test counts
                failed.append(repr(error))
                continue
            wrong += sum(hits[0][2] != ids[pick] for hits, pick in zip(found, picks))
            done += 1
        return done, wrong, failed

    stop = threading.Event()
    pid = actor_pid(primary)
    timer = threading.Timer(2.0, os.kill, (pid, signal.SIGKILL))
    timer.start()
    threading.Timer(10.0, stop.set).start()
    done, wrong, failed = asyncio.run(search_while(stop))
    timer.join()
    assert failed == [] and wrong == 0 and done > 20, (done, wrong, failed[:3])

    deadline = time.monotonic() + 90
    while True:  # the primary restarts (Ray) and takes writes again, which reach the replica too
        try:
            asyncio.run(group.add(records(["after"], ["later"], unit(np.random.default_rng(4), 1))))
            break
        except Exception:  # noqa: BLE001 - retried until the deadline
            assert time.monotonic() < deadline, "writes did not resume"
            time.sleep(1)
    assert actor_pid(primary) != pid
    assert ray.get([primary.count.remote(), replica.count.remote()]) == [401, 401]

    # With fewer replicas configured the extra one stops: it would no longer get the writes.
    ShardGroup(999_101, 1, str(tmp_path / "faces"), DIM, SearchConfig(mode="exact"), replicas=1)
    deadline = time.monotonic() + 30
    while True:
        try:
            ray.get_actor(group.layout.actor_name(0, 1), namespace=NAMESPACE)
        except ValueError:
            break
        assert time.monotonic() < deadline, "the extra replica still runs"
        time.sleep(0.5)
    asyncio.run(group.drop())


def _member_counts(service_id: int, replicas: int) -> list[int]:
    import ray

    from actors.index_shard import NAMESPACE

    layout = ServiceLayout(service_id, 1)
    return ray.get([ray.get_actor(layout.actor_name(0, member), namespace=NAMESPACE).count.remote()
                    for member in range(replicas)], timeout=60)


def _replica_stops(service_id: int, member: int) -> None:
    import ray

    from actors.index_shard import NAMESPACE

    deadline = time.monotonic() + 30
    while True:
        try:
            ray.get_actor(ServiceLayout(service_id, 1).actor_name(0, member), namespace=NAMESPACE)
        except ValueError:
            return
        assert time.monotonic() < deadline, f"replica {member} of service {service_id} still runs"
        time.sleep(0.5)


def test_a_services_replicas_are_set_through_the_admin_api(server, admin, lfw_image):
    from serve_app.client import FaceApiError, FaceClient

    application = admin.create_application("replicated")
    plain = admin.create_service(application["id"], "plain", "recognition", shards=1)
    assert plain["shard_replicas"] is None  # the platform's default (FACES_SHARD_REPLICAS = 1 here)
    assert server.settings.shard_replicas == 1
    replicated = admin.create_service(application["id"], "replicated", "recognition", shards=1, shard_replicas=2)
    assert replicated["shard_replicas"] == 2
    assert _member_counts(replicated["id"], 2) == [0, 0], "its replica started with the service"
    _replica_stops(plain["id"], 1)  # none for the service on the default

    with FaceClient(server.url, api_key=replicated["api_key"]) as client:
        client.add_face(lfw_image, subject="abel")
        assert _member_counts(replicated["id"], 2) == [1, 1], "an acknowledged face is on both members"
        for wrong in (0, 17, "two"):
            with pytest.raises(FaceApiError) as refused:
                admin.update_service(replicated["id"], shard_replicas=wrong)
            assert refused.value.status in (400, 422) and "shard_replicas" in refused.value.message

        assert admin.update_service(replicated["id"], shard_replicas=1)["shard_replicas"] == 1
        _replica_stops(replicated["id"], 1)  # it would no longer get the writes
        client.add_face(lfw_image, subject="abel")
        assert client.recognize(lfw_image)["result"][0]["subjects"][0]["subject"] == "abel"

    assert admin.update_service(plain["id"], shard_replicas=3)["shard_replicas"] == 3
    assert _member_counts(plain["id"], 3) == [0, 0, 0], "the new replicas start with the change"
    assert admin.update_service(plain["id"], shard_replicas=None)["shard_replicas"] is None
    _replica_stops(plain["id"], 2)
    _replica_stops(plain["id"], 1)
    listed = {service["name"]: service["shard_replicas"] for service in admin.list_services(application["id"])}
    assert listed == {"plain": None, "replicated": 1}
    admin.delete_application(application["id"])
