"""One module per graph; each ends with ``graph = build()`` (no checkpointer) and offers
``build(checkpointer)`` for runs that persist by thread id."""
