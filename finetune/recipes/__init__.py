"""Training recipes: each is setup -> train -> save, configured by one dataclass."""
