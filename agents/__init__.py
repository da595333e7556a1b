"""LangGraph graphs, state, tools and prompts; the local chat-model adapter (issue 6)."""
