"""One module per model family; each registers itself with `sentiment.registry` when imported."""
