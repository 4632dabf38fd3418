# The first target a newcomer types bootstraps .venv in the checkout; later runs reuse it. `make help` lists targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
GOLDEN ?= ../shared/golden
CKPT_DIR ?= models
REF_DIR ?= ref_batches
# Sampling: LAUNCH="mpiexec -n 8 .venv/bin/python" or LAUNCH=".venv/bin/python -m torch.distributed.run --nproc_per_node 8"
LAUNCH ?= $(PY)
ARGS ?=
TABLE1 := adm256_uncond_baseline adm256_uncond_sag08 adm256_uncond_pag adm256_cond_baseline adm256_cond_sag02 \
	adm256_cond_pag
SAG_ROWS := adm256_uncond_sag05 lsun_cat_baseline lsun_cat_sag lsun_horse_baseline lsun_horse_sag \
	adm128_cond_baseline adm128_cond_cg adm128_cond_sag adm128_cond_sag_cg iddpm64_uncond_baseline iddpm64_uncond_sag

.PHONY: help test lint golden demo train-demo checkpoints refs sample sample-table1 sample-sag clean-venv

help:  ## this list
	@grep -E '^[a-z0-9%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[test,demo,eval]"
	touch $@

test: $(VENV)/.installed  ## ruff + the pytest suite (CPU)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed  ## ruff only
	$(PY) -m ruff check .

golden: $(VENV)/.installed  ## check every reference fixture against this implementation
	$(PY) -m guided_diffusion.golden $(GOLDEN)/*.pt

checkpoints: $(VENV)/.installed  ## download every official checkpoint into CKPT_DIR (resumable, sha256-checked)
	$(PY) -m guided_diffusion.checkpoints download all --dir $(CKPT_DIR)

refs: $(VENV)/.installed  ## download ADM's reference batches into REF_DIR (several GB, resumable, sha256-checked)
	$(PY) -m evaluations.refs download all --dir $(REF_DIR)

train-demo: $(VENV)/.installed  ## train the demo models on the bundled digits (CPU, about an hour each)
	$(PY) scripts/train.py --config-name demo32_cond
	$(PY) scripts/train.py --config-name demo32_uncond
	$(PY) scripts/train.py --config-name demo32_classifier

sample: $(VENV)/.installed  ## make sample EXP=adm256_uncond_pag [LAUNCH="mpiexec -n 8 .venv/bin/python"] [ARGS=...]
	@test -n "$(EXP)" || { echo "usage: make sample EXP=NAME [LAUNCH='mpiexec -n 8 python'] [ARGS='key=value ...']"; exit 2; }
	$(LAUNCH) scripts/sample.py +exp=$(EXP) $(ARGS)

sample-table1: $(VENV)/.installed  ## sample every row of PAG Table 1
	set -e; for exp in $(TABLE1); do $(LAUNCH) scripts/sample.py +exp=$$exp $(ARGS); done

sample-sag: $(VENV)/.installed  ## sample the SAG paper's rows
	set -e; for exp in $(SAG_ROWS); do $(LAUNCH) scripts/sample.py +exp=$$exp $(ARGS); done

# Not .PHONY: make skips pattern rules for phony targets. `python -m sampling.sweeps --list` names the sweeps.
ablation-%: $(VENV)/.installed  ## ablation-pag_scale|pag_perturbation|pag_layers|sag_threshold|sag_layer|sag_baseline
	$(LAUNCH) scripts/sample.py -m $(shell $(PY) -m sampling.sweeps $*) $(ARGS)

demo: $(VENV)/.installed  ## the offline demo (not built yet)
	@echo "make demo: the offline demo (bundled small models, baseline/SAG/PAG, metrics, grids) is not built yet;"
	@echo "see issue 'Offline demo'. Until then: 'make golden', or '$(PY) scripts/sample.py +exp=smoke'."
	@exit 2

clean-venv:  ## remove .venv
	rm -rf $(VENV)
