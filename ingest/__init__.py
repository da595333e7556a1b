"""Parse sources into typed records, and generate the deterministic synthetic demo corpus."""
