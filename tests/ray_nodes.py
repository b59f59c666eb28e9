"""Ray nodes started with `ray start` on this machine, and killed like a lost machine.

Each node runs under its own `ray start --block` process, in its own session; killing a node sends
SIGKILL to that process and to every process under it or in its session (the raylet, its workers,
agents), found through /proc. Nothing else on the machine is touched (no `ray stop`: other clusters may
run here). On a loaded machine a worker's `ray start` gives up when its raylet takes over 30 s to
register (a constant of Ray's): :func:`start_worker` tries again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")
# `ray start` records the cluster's address here, and a plain `ray.init()` on this machine then joins
# that cluster: a head started here puts back what the file held before (another cluster's address).
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")


def _read_address_file() -> str | None:
    try:
        return ADDRESS_FILE.read_text()
    except OSError:
        return None


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
        self.dashboard_port = free_port() if head_address is None else None
        args = [RAY, "start", "--block", f"--num-cpus={num_cpus}", f'--resources={{"{label}": 1}}', "--disable-usage-stats",
                f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"]
        self._previous_address = _read_address_file() if head_address is None else None
        if head_address is None:
            self.port = free_port()
            # The dashboard process hosts the Jobs API (`ray job submit`); nothing else of it is needed.
            args += ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                     "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
            self.address = f"127.0.0.1:{self.port}"
        else:
            args += [f"--address={head_address}"]
            self.address = head_address
        self.log = open(os.environ.get("FACES_TEST_NODE_LOG", os.devnull), "a")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def restore_address_file(self) -> None:
        """Put back the address file's earlier contents if this head's address replaced them."""
        if self.dashboard_port is None or not (_read_address_file() or "").endswith(f":{self.port}"):
            return
        if self._previous_address is None:
            ADDRESS_FILE.unlink(missing_ok=True)
        else:
            ADDRESS_FILE.write_text(self._previous_address)

    def kill(self) -> None:
        """SIGKILL to the node's processes, all at once, as when its machine is lost."""
        for pid in [*node_processes(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        self.restore_address_file()


def start_worker(label: str, env: dict[str, str], head_address: str, tries: int = 3) -> RayNode:
    """A worker node that has joined the cluster (the caller is connected with ray.init)."""
    for _ in range(tries):
        node = RayNode(label, env, head_address)
        deadline = time.monotonic() + 120
        while node.process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_nodes([label], timeout_s=2)
                return node
            except TimeoutError:
                pass
        node.kill()
    raise TimeoutError(f"worker {label} did not join in {tries} tries")


def wait_for_nodes(labels: list[str], timeout_s: float = 240) -> dict[str, str]:
    """Node ids by label once every labelled node is alive (the caller is connected with ray.init)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {label: node["NodeID"] for node in ray.nodes() if node["Alive"]
                 for label in labels if node["Resources"].get(label)}
        if len(alive) == len(labels):
            return alive
        time.sleep(0.5)
    raise TimeoutError(f"nodes {labels} did not all join within {timeout_s:.0f} s")
