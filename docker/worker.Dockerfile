# A GPU worker: CUDA 13.0 runtime + the CUDA build of torch. Build from the repo root:
#   docker build -f docker/worker.Dockerfile -t gendef-worker .
# Needs an NVIDIA driver that supports CUDA 13.0 (>= 580) and the NVIDIA Container Toolkit on the host.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
RUN useradd --create-home --uid 10001 gendef

# PyPI's torch 2.13.0 wheel for Linux x86_64 is the CUDA 13.0 build (it pulls the CUDA 13.0 libraries as wheels).
RUN pip install torch==2.13.0

WORKDIR /app
COPY docker/worker-requirements.txt ./
RUN pip install -r worker-requirements.txt

COPY pyproject.toml README.md ./
COPY model ./model
COPY core ./core
COPY worker ./worker
# Editable: the code and the shipped checkpoint stay at /app (GENDEF_MODELS_DIR=/app/model/weights when nothing is mounted).
RUN pip install --no-deps -e .

USER gendef
# The model loads in the pool process before the first job: give it time before health counts.
HEALTHCHECK --interval=30s --timeout=30s --start-period=120s --retries=3 \
    CMD celery -A worker.celery_app inspect ping --destination "celery@$HOSTNAME" --timeout 10 || exit 1
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
