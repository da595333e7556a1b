"""Where a chat model's tokens come from: in-process transformers weights, or an
OpenAI-compatible server (vLLM, llama.cpp server, Ollama)."""
