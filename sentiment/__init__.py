"""sentiment: fine-tune pretrained representations on small classification tasks."""

__version__ = "0.1.0"
