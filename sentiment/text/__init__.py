"""The text pipeline: archive -> examples -> tokens -> ids -> batches -> models."""
