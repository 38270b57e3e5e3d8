"""Worker for test_jobs_distributed: one rank of a gloo job that runs several trainings in turn.

Lives in its own module so ``torch.multiprocessing.spawn`` can import it in the children.
"""

from __future__ import annotations

import os
import shutil

from bmojo.jobs.train import TrainSettings, run_training


def run_rank(rank: int, world: int, ports: list[int], jobs: list[dict]) -> None:
    """``jobs``: dicts of TrainSettings fields, plus an optional ``_copy_out_to`` (rank 0 copies
    the run directory there after the job)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    for port, job in zip(ports, jobs):
        job = dict(job)
        copy_to = job.pop("_copy_out_to", None)
        os.environ["MASTER_PORT"] = str(port)  # a fresh port per process group
        run_training(TrainSettings(**job))
        if copy_to and rank == 0:
            shutil.copytree(job["out"], copy_to)
