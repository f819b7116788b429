# The API: FastAPI + uvicorn on a slim Python, no torch (service/ never imports it). Build from the repo root:
#   docker build -f docker/api.Dockerfile -t gendef-api .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 gendef
WORKDIR /app

# The API's dependencies, listed explicitly (the package's own list includes torch for the workers).
COPY docker/api-requirements.txt ./
RUN pip install -r api-requirements.txt

COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
RUN pip install --no-deps . && rm -rf build

USER gendef
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "service.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
