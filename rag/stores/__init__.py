"""Vector stores behind one interface: LanceDB (embedded default) and Pinecone (scale-out)."""
