"""Ray nodes started with `ray start` on this machine, and killed like a lost machine.

Each node runs under its own `ray start --block` process, in its own session; killing a node sends
SIGKILL to that process and to every process under it or in its session (the raylet, its workers,
agents), found through /proc. Nothing else on the machine is touched (no `ray stop`: other clusters may
run here). On a loaded machine a worker's `ray start` gives up when its raylet takes over 30 s to
register (a constant of Ray's): :func:`start_worker` tries again. The nodes of a cluster share a temp
folder of their own (:func:`ray_temp_dir`), never the machine's /tmp/ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def ray_temp_dir():
    """``RAY_TMPDIR`` for the nodes of one cluster: a folder of Ray's own, removed afterwards.

    A head records its address in ``<temp dir>/ray/ray_current_cluster``, and Ray reads that file where
    no address is given: the Jobs API hands it to every job's driver as ``RAY_ADDRESS``. In the
    machine's shared /tmp/ray the file names whichever cluster started last (another test's, or one
    long gone), and a job submitted to this cluster joined that one, or waited for it until its time
    ran out. With a folder per cluster the file is the cluster's own, and the machine's is left alone.
    The path stays short: Ray's sockets live under it.
    """
    folder = tempfile.mkdtemp(prefix="rayn-", dir="/tmp")
    try:
        yield {"RAY_TMPDIR": folder}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _processes() -> dict[int, tuple[int, int]]:
    """(parent, session) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            found[int(entry)] = (int(fields[1]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def node_processes(pid: int) -> set[int]:
    """The processes under ``pid`` or in the session it leads."""
    processes = _processes()
    found = {other for other, (_, session) in processes.items() if session == pid}
    todo = [pid, *found]
    while todo:
        current = todo.pop()
        for other, (parent, _) in processes.items():
            if parent == current and other not in found:
                found.add(other)
                todo.append(other)
    return found - {pid}


class RayNode:
    """One node: `ray start --block` with ``num_cpus`` CPUs and its own resource label."""

    def __init__(self, label: str, env: dict[str, str], head_address: str | None = None, num_cpus: int = 1):
        self.label = label
        self.node_id: str | None = None  # once known (start_worker)
        self.dashboard_port = free_port() if head_address is None else None
        # No process the tests do not use: no log monitor (drivers do not print the workers' logs), no
        # autoscaler monitor. Each is a Python process polling all along, and on 2 busy cores every one
        # of them slows the GCS and raylets that must answer within Ray's bounds.
        args = [RAY, "start", "--block", f"--num-cpus={num_cpus}", f'--resources={{"{label}": 1}}', "--disable-usage-stats",
                "--include-log-monitor=false",
                f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"]
        if head_address is None:
            self.port = free_port()
            # The dashboard process hosts the Jobs API (`ray job submit`); nothing else of it is needed.
            args += ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}", "--no-monitor",
                     "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
            self.address = f"127.0.0.1:{self.port}"
        else:
            args += [f"--address={head_address}"]
            self.address = head_address
        self.log = open(os.environ.get("FACES_TEST_NODE_LOG", os.devnull), "a")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill(self) -> None:
        """SIGKILL to the node's processes, all at once, as when its machine is lost."""
        for pid in [*node_processes(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


def start_head(env: dict[str, str], num_cpus: int = 1, tries: int = 3, timeout_s: float = 120) -> RayNode:
    """A head node whose GCS takes connections (a driver may ray.init to it). A `ray start` that exits
    (a port taken meanwhile by another process of this machine: the ports are picked free, then bound
    by Ray) is tried again with other ports, instead of leaving the driver waiting for a GCS that never comes."""
    for _ in range(tries):
        node = RayNode("head", env, num_cpus=num_cpus)
        deadline = time.monotonic() + timeout_s
        while node.process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=1):
                    return node
            except OSError:
                time.sleep(0.2)
        node.kill()
    raise TimeoutError(f"the head node did not start in {tries} tries")


def start_worker(label: str, env: dict[str, str], head_address: str, tries: int = 3) -> RayNode:
    """A worker node that has joined the cluster (the caller is connected with ray.init), its
    ``node_id`` set.

    The node is told by its id, never by its label alone: a try that gave up (its `ray start` waited
    over 30 s) may still have registered its raylet, and the GCS counts that node alive, under the
    same label, until its health checks fail (tens of seconds), as it does a worker just killed by a
    test. Taken for the new worker, such a node let a test go on before the worker had joined.
    """
    import ray

    for _ in range(tries):
        known = {node["NodeID"] for node in ray.nodes()}  # alive or dead: none of them is this try's
        node = RayNode(label, env, head_address)
        deadline = time.monotonic() + 120
        while node.process.poll() is None and time.monotonic() < deadline:
            joined = [found["NodeID"] for found in ray.nodes() if found["Alive"] and found["Resources"].get(label)
                      and found["NodeID"] not in known]
            if joined:
                node.node_id = joined[0]
                return node
            time.sleep(0.5)
        node.kill()
    raise TimeoutError(f"worker {label} did not join in {tries} tries")


def head_node_id() -> str:
    """The id of the head node (the caller is connected with ray.init): the one node of its label,
    as a head that failed to start had a GCS of its own."""
    import ray

    return next(node["NodeID"] for node in ray.nodes() if node["Resources"].get("head"))


def wait_for_nodes(expected: dict[str, str], timeout_s: float = 240) -> dict[str, str]:
    """``expected`` (label: node id) once those nodes, and no others, are alive (the caller is connected
    with ray.init): nodes of failed starts and killed workers no longer counted alive by the GCS."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        if alive == set(expected.values()):
            return expected
        time.sleep(0.5)
    raise TimeoutError(f"the alive nodes are not {expected} after {timeout_s:.0f} s: {alive}")
