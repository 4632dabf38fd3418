"""Rank, world size and local rank from the launcher's environment; no collective communication is used.

Launchers are recognised in this order (the first complete set of variables wins):
  torchrun / torch.distributed.run   RANK, WORLD_SIZE, LOCAL_RANK
  Open MPI (mpiexec / mpirun)        OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
  MPICH / Intel MPI (Hydra mpiexec)  PMI_RANK, PMI_SIZE, MPI_LOCALRANKID
  Slurm srun                         SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID
Slurm counts only inside an `srun` job step (SLURM_STEP_ID set): a plain `python` line in an sbatch script sees
SLURM_NTASKS of the whole allocation and would otherwise wait for ranks that never start.
Other MPI launchers (PMIx) leave only PMIX_RANK; then, and only then, mpi4py is imported to ask MPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .errors import SamplingError

_LAUNCHERS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    launcher: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None:
        if default is None:
            raise SamplingError(f"launcher variable {key} is missing")
        return default
    try:
        return int(value)
    except ValueError:
        raise SamplingError(f"launcher variable {key}={value!r} is not an integer") from None


def _checked(info: RankInfo) -> RankInfo:
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise SamplingError(
            f"{info.launcher} reports rank {info.rank} of world size {info.world_size} (local rank {info.local_rank}), "
            "which is inconsistent; check the launcher command"
        )
    return info


def _from_mpi4py() -> RankInfo:
    try:
        from mpi4py import MPI
    except ImportError:
        raise SamplingError(
            "launched by an MPI launcher that sets no known rank variable, and mpi4py is not installed; "
            "`pip install mpi4py` (or use torchrun)"
        ) from None
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    return RankInfo(comm.Get_rank(), comm.Get_size(), local.Get_rank(), "mpi4py")


def discover(env: Mapping[str, str] | None = None) -> RankInfo:
    """This process's place in the job; a single process (rank 0 of 1) when no launcher variables are set."""
    env = os.environ if env is None else env
    for name, rank_key, size_key, local_key in _LAUNCHERS:
        if rank_key in env and size_key in env:
            return _checked(RankInfo(_int(env, rank_key), _int(env, size_key), _int(env, local_key, 0), name))
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        return _checked(RankInfo(_int(env, "SLURM_PROCID"), _int(env, size_key), _int(env, "SLURM_LOCALID", 0),
                                 "slurm"))
    if "PMIX_RANK" in env:
        return _checked(_from_mpi4py())
    return RankInfo(0, 1, 0, "single")


DEVICES = ("auto", "cpu", "cuda")


def select_device(requested: str, local_rank: int) -> torch.device:
    """auto: the GPU of this local rank (modulo the visible GPUs) when CUDA is available, else the CPU."""
    if requested not in DEVICES:
        raise SamplingError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SamplingError("device=cuda was requested but no CUDA device is visible; use device=auto or device=cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
