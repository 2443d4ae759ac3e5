# antgo: `make demo` runs the full pipeline on the embedded demo data, `make test` runs the test suite.
# Both create .venv on first use (idempotent: reinstalls only when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in pyproject.toml. On a machine without CUDA, point TORCH_INDEX_URL at a CPU wheel index
# (e.g. the PyTorch CPU index); where a local CPU wheel is configured for pip, the default install finds it.
TORCH_INDEX_URL ?=
TORCH_VERSION := 2.13.0
MLFLOW_HOME := $(CURDIR)/mlruns
UI_PORT ?= 5000
PREFECT_PORT ?= 4200

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: venv demo test ui prefect-server serve bench clean shared-postgres shared-mlflow shared-prefect sweep-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
	$(PY) -m pip install --quiet -e ".[scale]"
	$(PY) -c "import cv2, torch, onnxruntime, prefect, mlflow; print('environment ready: torch', torch.__version__)"
	touch $(STAMP)

# TASK=seg (default) | det | kp | cls: the embedded demo of that task form (configs/demo/demo_$(TASK).py)
TASK ?= seg

demo: $(STAMP)
	$(PY) flows/train_flow.py configs/demo/demo_$(TASK).py

test: $(STAMP)
	$(PY) -m pytest -q

# A new store gets its tables under the project's lock first: a pipeline starting meanwhile must not migrate it too.
ui: $(STAMP)
	mkdir -p $(MLFLOW_HOME)/artifacts
	$(PY) -c "from antgo.tracking.store import open_client; open_client('sqlite:///$(MLFLOW_HOME)/mlflow.db')"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui \
	  --backend-store-uri sqlite:///$(MLFLOW_HOME)/mlflow.db \
	  --artifacts-destination $(MLFLOW_HOME)/artifacts \
	  --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Two terminals: `make prefect-server`, then `make serve`; then
# `prefect deployment run antgo/full-pipeline [--param config=...]` (see docs/deployment.md).
# PREFECT_SERVER_UI_API_URL: the UI's API address does not follow --port by itself (it stays at 4200).
prefect-server: $(STAMP)
	PREFECT_SERVER_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	  $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: $(STAMP)
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(PY) flows/train_flow.py --serve

# Shared servers on PostgreSQL with authentication (docs/scale-out.md). Secrets come from the environment:
# PGPASSWORD (if the database has one), MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY,
# PREFECT_SERVER_API_AUTH_STRING. One terminal each after `make shared-postgres`.
SHARED_DIR ?= $(CURDIR)/shared-servers
PG_PORT ?= 5432
PG_URL = postgresql+psycopg2://antgo@127.0.0.1:$(PG_PORT)
shared-postgres: $(STAMP)
	$(PY) deployments/shared_servers.py postgres --dir $(SHARED_DIR)/pg --port $(PG_PORT)
shared-mlflow: $(STAMP)
	$(PY) deployments/shared_servers.py mlflow --db $(PG_URL)/mlflow --auth-db $(PG_URL)/mlflow_auth \
	  --artifacts $(SHARED_DIR)/artifacts --state $(SHARED_DIR) --port $(UI_PORT)
shared-prefect: $(STAMP)
	$(PY) deployments/shared_servers.py prefect --db postgresql+asyncpg://antgo@127.0.0.1:$(PG_PORT)/prefect \
	  --port $(PREFECT_PORT)

# A 4-trial learning-rate grid on the demo config (2 epochs each, 2 trials at a time).
sweep-demo: $(STAMP)
	$(PY) flows/sweep_flow.py configs/demo/demo_seg.py --grid optimizer.lr=0.001,0.003,0.006,0.01 --max-epochs 2

bench: $(STAMP)
	$(PY) bench/trainer_overhead.py
	$(PY) bench/flow_overhead.py --max-epochs 1

clean:
	rm -rf work_dirs .pytest_cache
