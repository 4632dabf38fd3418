"""Sample a paper table row:  python scripts/sample.py +exp=NAME [key=value ...]

Works unchanged under `mpiexec -n N`, `torchrun --nproc_per_node N` and Slurm `srun` (rank from the environment,
no collectives): every rank writes shards, rank 0 merges them into <out_dir>/samples_{N}x{H}x{W}x3.npz. Rerunning
the same command resumes. Hydra multirun (-m) runs sweeps, one run directory per job. See sampling/runner.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from guided_diffusion.checkpoints import CheckpointError  # noqa: E402
from sampling.config import check_overrides, experiments  # noqa: E402
from sampling.dist import discover  # noqa: E402
from sampling.errors import ConfigError, SamplingError, report  # noqa: E402
from sampling.runner import run  # noqa: E402

_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion", "-sc")


@hydra.main(config_path="../configs", config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    conf = OmegaConf.to_container(cfg, resolve=True)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        conf["out_dir"] = hydra_cfg.runtime.output_dir
    rank = None
    try:
        rank = discover()
        path = run(conf, rank)
    except (SamplingError, CheckpointError) as err:
        sys.exit(report(err, "error" if rank is None else f"error (rank {rank.rank})"))
    if path is not None:
        print(path)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(re.match(r"^\+?exp=", arg) for arg in args) and not any(arg in _INFO_FLAGS for arg in args):
        print(f"error: choose an experiment with +exp=NAME; available: {', '.join(experiments())}", file=sys.stderr)
        sys.exit(2)
    try:
        check_overrides([arg for arg in args if not arg.startswith("-")])
        if {"-m", "--multirun"} & set(args) and any(re.match(r"^out_dir=['\"]?[A-Za-z][\w+.-]+://", arg)
                                                    for arg in args):
            raise ConfigError("Hydra multirun (-m) makes one local directory per job, so it cannot sweep in an object "
                              "store; run one command per sweep point with its own out_dir=s3://..., or use "
                              "scripts/reproduce.py --out-root s3://... for a table's sweep")
    except ConfigError as err:
        sys.exit(report(err))
    main()
