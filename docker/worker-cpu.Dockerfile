# A CPU-only worker (the CPU build of torch): for edit jobs (warp + encode, no generator), or for all jobs
# where no GPU is at hand. Build from the repo root:
#   docker build -f docker/worker-cpu.Dockerfile -t gendef-worker-cpu .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 gendef

# From the PyTorch CPU index: PyPI's Linux wheel would bring gigabytes of CUDA libraries this image never uses.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

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
HEALTHCHECK --interval=30s --timeout=30s --start-period=60s --retries=3 \
    CMD celery -A worker.celery_app inspect ping --destination "celery@$HOSTNAME" --timeout 10 || exit 1
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
