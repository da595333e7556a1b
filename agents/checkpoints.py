"""Graph checkpointers by location: a SQLite file (default) or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def checkpointer(location: str | Path) -> Any:
    """A checkpointer for ``location``: ``postgresql://...`` or a SQLite file path.

    Runs with ``config={"configurable": {"thread_id": ...}}`` then persist and resume by thread.
    """
    location = str(location).replace("postgresql+psycopg://", "postgresql://", 1)
    if location.startswith(("postgresql://", "postgres://")):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg import Connection
        except ModuleNotFoundError:
            raise ValueError(
                "PostgreSQL checkpoints need `pip install 'tunegraph[postgres]'`"
            ) from None
        connection = Connection.connect(location, autocommit=True, prepare_threshold=0)
        saver = PostgresSaver(connection)
        saver.setup()
        return saver
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    Path(location).parent.mkdir(parents=True, exist_ok=True)
    saver = SqliteSaver(sqlite3.connect(location, check_same_thread=False))
    saver.setup()
    return saver
