"""Tiny random encoders in the Hugging Face folder layout, made in the tests: one per architecture."""

from __future__ import annotations

from pathlib import Path

import torch

from cli_helpers import WORDS

FILLER = ["the", "a", "film", "it", "was", "and", "this", "of", ",", "!", "."]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ARCHITECTURES = ("bert", "distilbert", "roberta", "electra", "deberta-v2")


def vocabulary() -> dict[str, int]:
    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))
    return {w: i for i, w in enumerate([*SPECIALS, *words])}


def tiny_encoder(folder: Path, architecture: str = "bert", *, seed: int = 0, vocab_size: int | None = None) -> Path:
    """A 2-layer, 32-wide random encoder of `architecture` with a WordPiece tokenizer over the words
    of `cli_helpers.three_class_csv`."""
    import transformers as tf

    tf.utils.logging.disable_progress_bar()  # saving draws one on stderr, which the CLI tests read
    vocab = vocabulary()
    size = dict(vocab_size=vocab_size or len(vocab), max_position_embeddings=64, pad_token_id=0)
    if architecture == "distilbert":
        config = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **size)
    else:
        layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, **size)
        config = {
            "bert": tf.BertConfig,
            "roberta": tf.RobertaConfig,
            "electra": lambda **kw: tf.ElectraConfig(embedding_size=32, **kw),
            "deberta-v2": tf.DebertaV2Config,
        }[architecture](**layers)
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tf.AutoModel.from_config(config).save_pretrained(folder)
    tf.BertTokenizerFast(vocab=vocab).save_pretrained(folder)
    return folder
