# The first target a newcomer types bootstraps .venv in the checkout; later runs reuse it. `make help` lists targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
GOLDEN ?= ../shared/golden
CKPT_DIR ?= models
REF_DIR ?= ref_batches
# Sampling one exp: LAUNCH="mpiexec -n 8 .venv/bin/python" or ".venv/bin/python -m torch.distributed.run --nproc_per_node 8"
LAUNCH ?= $(PY)
ARGS ?=
# Reproduction targets (scripts/reproduce.py): each row's sampler runs on NGPU ranks started by LAUNCHER
# (local = one process); NUM_SAMPLES replaces the exps' counts; run directories go to OUT/TABLE/ROW; PLAN=1 prints
# the cost plan and stops; TABLE=smoke (any configs/tables name) runs that table instead, e.g. the CPU chain check.
NGPU ?= 1
LAUNCHER ?= $(if $(filter 1,$(NGPU)),local,mpiexec)
NUM_SAMPLES ?=
OUT ?= results/runs
PLAN ?=
REPRODUCE = $(if $(PLAN),$(PY) scripts/plan.py $(1) $(if $(NUM_SAMPLES),--num-samples $(NUM_SAMPLES)),\
	$(PY) scripts/reproduce.py $(1) --launcher $(LAUNCHER) --ngpu $(NGPU) --out-root $(OUT) \
	$(if $(NUM_SAMPLES),--num-samples $(NUM_SAMPLES)) $(ARGS))
DEMO_REF := data/demo/digits32_ref.npz
# The demo's sampler ranks: one single-threaded process each (faster on a CPU than one multi-threaded process)
DEMO_RANKS ?= 2

.PHONY: help install test lint golden demo demo-inverse reproduce-dps train-demo checkpoints refs sample reproduce-table1 \
	reproduce-sag ablation-scale ablation-perturbation ablation-layers ablation-sag-threshold ablation-sag-layer figures \
	bench bench-gpu clean-venv compare-guidance compare-guidance-demo demo-full demo-sweep

help:  ## this list
	@grep -E '^[a-z0-9%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[test,demo,eval]"
	$(PY) -m pip install --quiet --no-deps lpips==0.1.4  # for tests/test_lpips.py; LPIPS itself: the [lpips] extra
	touch $@

install: $(VENV)/.installed  ## create .venv with the CPU torch and this project (GPU machines: see README)

test: $(VENV)/.installed  ## ruff + the pytest suite (CPU)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed  ## ruff only
	$(PY) -m ruff check .

golden: $(VENV)/.installed  ## check every reference fixture against this implementation
	$(PY) -m golden $(GOLDEN)/*.pt $(GOLDEN)/dps/*.pt $(GOLDEN)/family/*.pt

checkpoints: $(VENV)/.installed  ## download every official checkpoint into CKPT_DIR (resumable, sha256-checked)
	$(PY) -m guided_diffusion.checkpoints download all --dir $(CKPT_DIR)

refs: $(VENV)/.installed  ## download ADM's reference batches into REF_DIR (several GB, resumable, sha256-checked)
	$(PY) -m evaluations.refs download all --dir $(REF_DIR)

train-demo: $(VENV)/.installed  ## retrain the committed demo models on the bundled digits (CPU, < 1 h each)
	$(PY) scripts/train.py --config-name demo32_cond
	$(PY) scripts/train.py --config-name demo32_uncond
	$(PY) scripts/train.py --config-name demo32_classifier
	$(PY) scripts/train.py --config-name demo32_features

sample: $(VENV)/.installed  ## make sample EXP=adm256_uncond_pag [LAUNCH="mpiexec -n 8 .venv/bin/python"] [ARGS=...]
	@test -n "$(EXP)" || { echo "usage: make sample EXP=NAME [LAUNCH='mpiexec -n 8 python'] [ARGS='key=value ...']"; exit 2; }
	$(LAUNCH) scripts/sample.py +exp=$(EXP) $(ARGS)

reproduce-table1: $(VENV)/.installed  ## PAG Table 1: sample, evaluate, results/table1.md [NGPU= LAUNCHER= NUM_SAMPLES= OUT= PLAN=1 TABLE=]
	$(call REPRODUCE,$(or $(TABLE),table1))

reproduce-sag: $(VENV)/.installed  ## the SAG paper's ADM/IDDPM rows -> results/sag.md (same variables)
	$(call REPRODUCE,sag)

ablation-scale: $(VENV)/.installed  ## PAG Fig. 12: guidance scale sweep -> results/ablation_pag_scale.{md,png}
	$(call REPRODUCE,ablation_pag_scale)

ablation-perturbation: $(VENV)/.installed  ## PAG Table 9: attention perturbations -> results/ablation_pag_perturbation.md
	$(call REPRODUCE,ablation_pag_perturbation)

ablation-layers: $(VENV)/.installed  ## PAG Table 10: 63 layer combinations -> results/ablation_pag_layers.{md,png}
	$(call REPRODUCE,ablation_pag_layers)

ablation-sag-threshold: $(VENV)/.installed  ## SAG supplement Table 3: masking threshold psi
	$(call REPRODUCE,ablation_sag_threshold)

ablation-sag-layer: $(VENV)/.installed  ## SAG supplement Table 4: the attention map's layer
	$(call REPRODUCE,ablation_sag_layer)

compare-guidance: $(VENV)/.installed  ## the guidance family on ADM-256 (DDIM-25 5K; TABLE=guidance_family_ddpm250 for 50K) [PLAN=1 ...]
	$(call REPRODUCE,$(or $(TABLE),guidance_family))

compare-guidance-demo: $(VENV)/.installed $(DEMO_REF)  ## the guidance family on the demo models, 512 samples per row -> results/demo/guidance_family
	$(PY) scripts/reproduce.py guidance_family_demo --out-root $(OUT) --ngpu $(DEMO_RANKS) $(ARGS)

demo-full: $(VENV)/.installed $(DEMO_REF)  ## every method on the demo models, 2,048 samples per row (~35 min CPU) -> results/demo/full
	$(PY) scripts/reproduce.py guidance_family_demo --num-samples 2048 --out-root $(OUT)/full --report results/demo/full \
		--ngpu $(DEMO_RANKS) $(ARGS)

demo-sweep: $(VENV)/.installed $(DEMO_REF)  ## PAG and SAG scale sweeps on the demo model with intervals -> results/demo/sweep_*_scale
	$(PY) scripts/reproduce.py ablation_demo_pag_scale --out-root $(OUT) --ngpu $(DEMO_RANKS) $(ARGS)
	$(PY) scripts/reproduce.py ablation_demo_sag_scale --out-root $(OUT) --ngpu $(DEMO_RANKS) $(ARGS)

$(DEMO_REF): | $(VENV)/.installed
	$(PY) -m training.data export $@

demo: $(VENV)/.installed $(DEMO_REF)  ## offline demo: bundled models, none/SAG/PAG/CG rows -> results/demo/ (~5 min CPU)
	$(PY) scripts/reproduce.py demo --out-root $(OUT) --ngpu $(DEMO_RANKS) $(ARGS)

reproduce-dps: $(VENV)/.installed  ## PAG Table 8: DPS, DPS + PAG on FFHQ -> results/dps.md [DATA_DIR= NGPU= LAUNCHER= NUM_SAMPLES= PLAN=1]
	$(PY) scripts/reproduce_dps.py --launcher $(LAUNCHER) --ngpu $(NGPU) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
		$(if $(NUM_SAMPLES),--num-samples $(NUM_SAMPLES)) $(if $(PLAN),--plan --report results/dps_plan.md) $(ARGS)

demo-inverse: $(VENV)/.installed  ## offline DPS vs DPS + PAG on the digits model (16 images, 25 steps) -> results/demo_inverse.{md,png}
	$(PY) scripts/demo_inverse.py $(ARGS)

FIGURES = $(PY) scripts/visualize.py
FIG_ARGS ?= --name demo

figures: $(VENV)/.installed  ## demo figures: grid, scale sweeps, PAG trajectory, attention, SAG mask -> results/figures/demo/
	$(FIGURES) grid --exp demo_uncond --exp demo_uncond_sag --exp demo_uncond_pag --exp demo_uncond_cg \
		--exp demo_uncond_pag_cg --exp demo_cond --samples 0-15 --stem grid_rows $(FIG_ARGS)
	$(FIGURES) scale-sweep +exp=demo_uncond_pag --scales 0,1,2,4,8 --samples 0-7 $(FIG_ARGS)
	$(FIGURES) scale-sweep +exp=demo_uncond_sag --scales 0,0.5,1,2 --samples 0-7 $(FIG_ARGS)
	$(FIGURES) trajectory +exp=demo_uncond_pag $(FIG_ARGS)
	$(FIGURES) attention +exp=demo_uncond_pag $(FIG_ARGS)
	$(FIGURES) sag-mask +exp=demo_uncond_sag $(FIG_ARGS)

bench: $(VENV)/.installed  ## CPU benchmarks, quick mode (ratios measured in one run; RESULT lines last)
	OMP_NUM_THREADS=1 $(PY) bench/flops.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_pag_step.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_attention.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_sampler_rss.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_dps_memory.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_precision_recall.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_features.py --quick
	OMP_NUM_THREADS=1 $(PY) bench/bench_bootstrap.py --quick
	$(PY) bench/bench_sampling.py --quick

bench-gpu: $(VENV)/.installed  ## GPU set (one GPU, < 8 min): unguided vs PAG batched/sequential, batch 1-64, fp32/fp16/bf16
	for p in fp32 fp16 bf16; do \
	  $(PY) bench/bench_pag_step.py --device cuda --precision $$p --image-size 256 --model-channels 256 \
	    --batches 1,4,16,64 --pairs 3 || exit 1; \
	  $(PY) bench/bench_pag_step.py --device cuda --precision $$p --image-size 256 --model-channels 256 \
	    --batches 1,16,64 --pairs 3 --unguided || exit 1; \
	done
	$(PY) bench/bench_sampling.py --device cuda --all-demos

clean-venv:  ## remove .venv
	rm -rf $(VENV)
