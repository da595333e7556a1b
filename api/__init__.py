"""Flask API, HTTP client and the `tunegraph` CLI: the composition root that reads settings."""
