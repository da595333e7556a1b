"""The shipped YAML recipes and demo profiles, installed as the package ``tunegraph_configs``
(pyproject.toml) and read through :func:`finetune.config.shipped_config`."""
