"""faiss, loaded with OpenMP threads that sleep while they wait for work.

faiss runs its builds and batch searches on OpenMP threads, and GNU OpenMP's default lets a thread
that waits for the next parallel region spin on its core for a while first. On a node whose cores
are shared (an index shard beside embedders and Ray's own processes, a 2-core machine) the spinning
threads take the cores the working ones need: building a 3,000-face index took 36-52 s on a busy
2-core machine, and 2-3 s with passive waiting; single searches were not slower (0.16-0.67 ms
before, 0.18 ms after). OpenMP reads the policy once, when faiss's runtime loads, so every module
imports faiss from here. An ``OMP_WAIT_POLICY`` already set in the environment is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402  (after the policy: OpenMP reads it when it loads)

__all__ = ["faiss"]
