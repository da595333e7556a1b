"""Alembic migrations of the claims table (applied by :class:`rag.claims_db.ClaimsDatabase`)."""
