"""SFT datasets, LoRA/QLoRA recipes, evaluation and the offline model store."""
