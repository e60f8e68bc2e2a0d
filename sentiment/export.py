"""A trained text run's network as ONNX, run by onnxruntime: `sentiment export RUN --format onnx`
writes it, `predict`/`evaluate`/`serve --backend onnx|onnx-int8` run it.

The exported graph takes what every text family's network takes, `ids [batch, length]` (int64,
padded with the run's pad id) and `lengths [batch]` (int64), and gives `logits` and
`probabilities [batch, classes]`; batch and length are free. Tokenization stays outside it, as the
run folder defines it (vocab.json and the tokenizer, or the encoder's tokenizer files): `onnx.json`
says which files, the pad id and the least length the graph reads (TextCNN's widest kernel; pad
shorter batches up to it). `--quantize int8` adds onnxruntime's dynamic int8 quantization of it.

Every export is checked before it is kept: the graph's probabilities against the torch model's in
fp32, on batches of other shapes than the one it was traced with.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from pathlib import Path

from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_path, atomic_write_json
from sentiment.runs import Run

FOLDER = "export"  # inside the run folder, where --backend finds the exports
FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
META = "onnx.json"
BACKENDS = ("torch", "onnx", "onnx-int8")
TOLERANCE = 1e-3  # the largest difference from the torch model's probabilities an fp32 export may show
OPSET = 17
CHUNK_TOKENS = (
    8192  # ids per onnxruntime call: bounds its memory (a transformer's attention grows with batch x length^2)
)


def _onnx_modules():
    try:
        import onnx  # noqa: F401 - the exporter writes through it
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # errors only: its graph-rewriting notices are not the user's
    except ImportError:
        raise SentimentError(
            "ONNX export and --backend onnx need onnx and onnxruntime: pip install -e '.[export]'"
        ) from None
    return onnxruntime


def exportable(clf, run: Run) -> None:
    """Raise, naming what can be exported, unless `clf` is a text run with a network."""
    from sentiment.text.classify import EncodedTextClassifier

    if not isinstance(clf, EncodedTextClassifier):
        family = _family(run)
        raise SentimentError(
            f"{run.path} is a {family} run, which has no network to export to ONNX; the text families "
            "with one (textcnn, birnn, fasttext, transformer) export to onnx, transformer runs also to hf"
        )
    if getattr(clf, "rating", None) is not None:
        raise SentimentError(
            f"{run.path} is a rating run (--target rating); export and the onnx backends take classifiers only"
        )
    if getattr(clf, "multi_label", None) is not None:
        raise SentimentError(
            f"{run.path} is a multi-label run (--multi-label); export and the onnx backends take one-label "
            "classifiers only"
        )


def _family(run: Run) -> str:
    from sentiment.registry import family_of_run

    meta = run.read_json("config.json")
    return family_of_run(meta, meta.get("kind", "text"))


def min_length(clf) -> int:
    """The least length the exported graph reads: TextCNN's widest kernel, fastText's longest n-gram
    (their torch forms pad or skip a shorter batch in Python, which a graph cannot), 1 for the
    others. Padding a batch up to it changes no answer: those networks mask what lies past a length."""
    model = clf.model
    return max(max(getattr(model, "kernel_sizes", (1,))), getattr(model, "ngrams", 1))


def length_multiple(clf) -> int:
    """What the exported graph's length must be a multiple of: a transformer that reads reviews in
    windows reshapes its ids into whole windows (its torch form pads in Python, which a traced
    graph cannot); 1 for the others. The padding changes no answer (masked like any other)."""
    return getattr(clf.model, "window", 0) or 1


def _graph(model):
    import torch

    class Graph(torch.nn.Module):
        """The network, with probabilities beside the logits."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, ids, lengths):
            logits = self.net(ids, lengths)
            return logits, logits.softmax(dim=1)

    return Graph(model).eval()


def _samples(clf, lengths: list[int], seed: int = 0):
    """Batches of random ids of the given lengths, rounded up to `length_multiple` (every review of
    its own length, one of each batch full): inputs the export is traced and checked with."""
    import torch

    rows = len(clf.vocab) if hasattr(clf, "vocab") else len(clf.tokenizer)
    g = torch.Generator().manual_seed(seed)
    multiple = length_multiple(clf)
    batches = []
    for steps in lengths:
        steps = -(-steps // multiple) * multiple
        n = 3
        ids = torch.randint(0, rows, (n, steps), generator=g)
        lens = torch.randint(1, steps + 1, (n,), generator=g)
        lens[0] = steps
        ids[torch.arange(steps)[None, :] >= lens[:, None]] = clf.pad
        batches.append((ids, lens))
    return batches


def _check(clf, model, path: Path, least: int, tolerance: float | None) -> float:
    """The largest difference between the exported graph's and the torch model's probabilities."""
    import numpy as np
    import torch

    ort = _onnx_modules()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for ids, lens in _samples(clf, [least, least + 6, 3 * least + 29], seed=1):
        with torch.no_grad():
            want = model(ids, lens).softmax(dim=1).numpy()
        got = session.run(["probabilities"], {"ids": ids.numpy(), "lengths": lens.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    if tolerance is not None and worst > tolerance:
        raise SentimentError(
            f"the ONNX export of {clf.run.path} differs from the torch model by {worst:.2g} (more than "
            f"{tolerance:g}); it was not kept"
        )
    return worst


def onnx(run_path, *, quantize: str | None = None, out=None, force: bool = False, echo=print) -> list[Path]:
    """Export `run_path`'s network to ONNX (and int8 with `quantize="int8"`) into `out`, by default
    the run folder's `export/`; returns the files written."""
    import torch

    _onnx_modules()
    from sentiment import registry

    run = Run.open(run_path)
    clf = registry.open_classifier(run, "cpu", kind="text", hint="; export writes text runs")
    exportable(clf, run)
    target = Path(out) if out is not None else run.file(FOLDER)
    names = [FILES["onnx"], META] + ([FILES["onnx-int8"]] if quantize else [])
    if out is not None and target.exists() and not force:
        raise SentimentError(f"{target} exists; give --force to replace it, or another --out")
    if out is None and not force and any((target / n).exists() for n in names):
        raise SentimentError(f"{run.path} already has an ONNX export in {target}; give --force to replace it")
    model = clf.model.float().cpu().eval()
    least = min_length(clf)
    graph = _graph(model)
    ((ids, lens),) = _samples(clf, [max(least, 16)])
    started = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    fp32 = target / FILES["onnx"]
    failures = []
    for exporter in EXPORTERS:  # the first whose graph holds to the torch model is kept
        try:
            with atomic_path(fp32) as tmp:
                with _eager_attention(model):
                    _write(graph, (ids, lens), tmp, exporter)
                diff = _check(clf, model, tmp, least, TOLERANCE)
            break
        except Exception as e:  # noqa: BLE001 - an exporter that cannot trace this network: try the next
            failures.append(f"{exporter}: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}")
    else:
        raise SentimentError(f"{run.path} could not be exported to ONNX ({'; '.join(failures)})")
    fused, diff = _fuse(clf, model, fp32, least) or (None, diff)
    echo(
        f"wrote {fp32} ({fp32.stat().st_size / 1e6:.1f} MB, {exporter} exporter"
        + (", onnxruntime's fused attention" if fused else "")
        + f"): probabilities within {diff:.1e} of the torch model (fp32)"
    )
    written = [fp32]
    record = {
        "format": "onnx",
        "opset": OPSET,
        "inputs": {"ids": "int64 [batch, length], padded with pad_id", "lengths": "int64 [batch]"},
        "outputs": {"logits": "float32 [batch, classes]", "probabilities": "float32 [batch, classes]"},
        "classes": clf.classes,
        "pad_id": int(clf.pad),
        "min_length": least,
        "length_multiple": length_multiple(clf),
        "family": _family(run),
        "tokenization": _tokenization(run),
        "max_abs_diff": {"onnx": diff},
        "exporter": exporter,
        "fused": fused,
        "torch": torch.__version__,
        "onnxruntime": _onnx_modules().__version__,
        "seconds": None,
    }
    words = _words(clf)
    if words:  # the few-shot transformer's word model reads the texts, outside the graph
        record["words"] = words
        echo(
            f"note: this run adds a word model's logits to the graph's ({', '.join(words['files'])}: TF-IDF "
            "and a logistic regression); --backend onnx adds them, and so must a program outside the toolkit"
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = target / FILES["onnx-int8"]
        with atomic_path(int8) as tmp, _quiet_root_logger():
            # the fused kernels are onnxruntime's own operators, whose outputs shape inference cannot type
            float_default = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options=float_default)  # fmt: skip
            record["max_abs_diff"]["onnx-int8"] = _check(clf, model, tmp, least, None)
        echo(
            f"wrote {int8} ({int8.stat().st_size / 1e6:.1f} MB): dynamic int8, probabilities within "
            f"{record['max_abs_diff']['onnx-int8']:.1e} of the torch model"
        )
        written.append(int8)
    record["seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:  # shipped elsewhere: with what tokenizing needs
        for name in record["tokenization"] + (words["files"] if words else []):
            source = run.file(name)
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target / name)
        shutil.copy2(run.file("config.json"), target / "config.json")
    atomic_write_json(target / META, record)
    return [*written, target / META]


def _words(clf) -> dict | None:
    """What onnx.json says of a run's word model (`linear.WordModel`), None without one."""
    if getattr(clf, "words", None) is None:
        return None
    from sentiment.families.linear import WORDS_FILES

    return {
        "files": list(WORDS_FILES),
        "logits": "added to the graph's: TF-IDF of the text (words.json: vocabulary, 1- to ngrams-grams of "
        "scikit-learn's default token pattern, lowercased, sublinear tf, idf from words.safetensors, each row "
        "L2-normalized) @ weight.T + bias",
    }


EXPORTERS = ("torchscript", "dynamo")  # TorchScript keeps the BiRNN's lengths free; dynamo traces fastText's bags


def _write(graph, inputs: tuple, path: Path, exporter: str) -> None:
    import torch

    names = {"input_names": ["ids", "lengths"], "output_names": ["logits", "probabilities"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' notices; the check that follows is what counts
        if exporter == "torchscript":
            axes = {"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, "logits": {0: "batch"},
                    "probabilities": {0: "batch"}}  # fmt: skip
            torch.onnx.export(graph, inputs, str(path), dynamo=False, opset_version=OPSET, dynamic_axes=axes, **names)
        else:
            batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
            shapes = {"ids": {0: batch, 1: length}, "lengths": {0: batch}}
            program = torch.onnx.export(graph, inputs, dynamo=True, dynamic_shapes=shapes, verbose=False, **names)
            program.save(str(path))


def _encoder_config(model):
    """The Hugging Face config of a transformer run's encoder; None for the other families."""
    return getattr(getattr(model, "encoder", None), "config", None)


@contextlib.contextmanager
def _eager_attention(model):
    """A transformer's encoder written out with its plain attention (matrix products and a softmax)
    rather than PyTorch's fused kernel: the form onnxruntime's optimizer recognises and fuses, and
    quantizes faster. The answers are the same; the encoder's setting is restored after."""
    config = _encoder_config(model)
    before = getattr(config, "_attn_implementation", None)
    if config is None or before in (None, "eager"):
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


def _fuse(clf, model, path: Path, least: int) -> tuple[dict, float] | None:
    """Rewrite a transformer's exported graph at `path` with onnxruntime's fused kernels (attention,
    layer normalization with its residual, GELU), if its optimizer finds the attention and the fused
    graph answers as the torch model does; returns what was fused and the fused graph's largest
    difference from the torch model, None where `path` is left as it was."""
    config = _encoder_config(model)
    if config is None or not hasattr(config, "num_attention_heads"):
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with _quiet_root_logger(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)  # fmt: skip
            counts = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
            if not counts.get("Attention"):
                return None
            with atomic_path(path) as tmp:
                fused.save_model_to_file(str(tmp))
                diff = _check(clf, model, tmp, least, TOLERANCE)
    except Exception:  # noqa: BLE001 - a graph the optimizer cannot rewrite, or one that answers otherwise: kept as exported
        return None
    return counts, diff


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs advice through the root logger; the export says what matters."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _tokenization(run: Run) -> list[str]:
    """The run folder's files that turn a text into ids."""
    meta = run.read_json("config.json")
    if run.file("vocab.json").is_file():
        return ["vocab.json"]
    return [meta.get("encoder_folder", "encoder")]


def onnx_model(run: Run, backend: str, threads: int | None = None):
    """The exported graph of `run` as a torch module (ids, lengths -> logits) that onnxruntime runs."""
    import numpy as np
    import torch

    ort = _onnx_modules()
    path = run.file(FOLDER) / FILES[backend]
    if not path.is_file():
        flag = " --quantize int8" if backend == "onnx-int8" else ""
        raise SentimentError(
            f"{run.path} has no {FOLDER}/{path.name}; make it with: sentiment export {run.path} --format onnx{flag}"
        )
    meta = json.loads((run.file(FOLDER) / META).read_text())
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    least, pad = int(meta["min_length"]), int(meta["pad_id"])
    multiple = int(meta.get("length_multiple", 1))

    class OnnxNetwork(torch.nn.Module):
        """onnxruntime behind the torch module interface the classifiers batch through."""

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            ids, lengths = ids.numpy(), lengths.numpy()
            steps = -(-max(ids.shape[1], least) // multiple) * multiple
            if ids.shape[1] < steps:
                ids = np.pad(ids, ((0, 0), (0, steps - ids.shape[1])), constant_values=pad)
            rows = max(1, CHUNK_TOKENS // ids.shape[1])  # onnxruntime keeps every activation of a batch
            parts = [
                session.run(["logits"], {"ids": ids[at : at + rows], "lengths": lengths[at : at + rows]})[0]
                for at in range(0, len(ids), rows)
            ]
            return torch.from_numpy(np.concatenate(parts))

    return OnnxNetwork()


def with_backend(clf, backend: str):
    """`clf` (a text run's torch classifier) answering through `backend`: torch as it is, or its
    ONNX export run by onnxruntime (the family's own tokenization and batches)."""
    if backend == "torch":
        return clf
    exportable(clf, clf.run)
    from sentiment.runtime import Runtime

    clf.model = onnx_model(clf.run, backend)
    clf.model_for = lambda texts: clf.model
    clf.runtime = Runtime.resolve("cpu", "fp32")
    clf.backend = backend
    return clf


# -- Hugging Face ---------------------------------------------------------------------------------

HF_FOLDER = "hf"  # inside export/


def _check_hf(clf, model, xlm) -> float:
    """The largest difference between the two models' probabilities, one unpadded text at a time
    (as `pipeline` runs them), on random ids of several lengths."""
    import torch

    worst = 0.0
    for ids, lens in _samples(clf, [4, 19, 61], seed=2):
        for row, n in zip(ids, lens.tolist(), strict=True):
            one = row[None, :n]
            with torch.no_grad():
                want = model(one, torch.tensor([n])).softmax(dim=1)
                got = xlm(input_ids=one, attention_mask=torch.ones_like(one)).logits.softmax(dim=1)
            worst = max(worst, float((want - got).abs().max()))
    return worst


CHECK_TEXTS = (
    "a wonderful film, I loved it",
    "dull, boring and far too long",
    "the plot was thin but the acting superb",
)


def _check_folder(clf, model, folder: Path) -> float:
    """The folder as `transformers` loads it (its tokenizer and model) against the run, on a few texts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # loading is a moment; the export says what it wrote
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    worst = 0.0
    for text in CHECK_TEXTS:
        enc = clf.encode([text])
        ids = torch.as_tensor(enc.ids[: enc.lengths[0]])[None, :]
        with torch.no_grad():
            want = model(ids, torch.tensor([ids.shape[1]])).softmax(dim=1)
            got = loaded(**tokenizer(text, return_tensors="pt", truncation=True)).logits.softmax(dim=1)
        worst = max(worst, float((want - got).abs().max()))
    return worst


def hf(run_path, *, out=None, force: bool = False, echo=print) -> list[Path]:
    """Write a transformer run as a Hugging Face model folder (config with the labels, weights,
    tokenizer, a model card) that `transformers.pipeline("text-classification", model=FOLDER)`
    loads; into `out`, by default the run folder's `export/hf`. Returns the folder's files."""
    from sentiment import registry

    run = Run.open(run_path)
    meta = run.read_json("config.json")
    clf = registry.open_classifier(run, "cpu", kind="text", hint="; export writes text runs")
    if not hasattr(clf, "huggingface"):
        raise SentimentError(
            f"{run.path} is a {_family(run)} run; --format hf writes transformer runs (the others export to onnx)"
        )
    target = Path(out) if out is not None else run.file(FOLDER) / HF_FOLDER
    if target.exists() and not force:
        raise SentimentError(
            f"{target} exists; give --force to replace it" + ("" if out is None else ", or another --out")
        )
    model, xlm = clf.huggingface()
    diff = _check_hf(clf, model, xlm)
    if diff > TOLERANCE:
        raise SentimentError(f"the Hugging Face form of {run.path} differs from the run by {diff:.2g}; it was not kept")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    xlm.save_pretrained(str(target), safe_serialization=True)
    tokenizer = clf.tokenizer
    tokenizer.model_max_length = int(meta["config"]["max_len"])
    tokenizer.save_pretrained(str(target))
    settings = json.loads((target / "tokenizer_config.json").read_text())
    settings["model_input_names"] = ["input_ids", "attention_mask"]  # no token types: XLM would read them as words
    atomic_write_json(target / "tokenizer_config.json", settings)
    (target / "README.md").write_text(_model_card(run, meta, diff), encoding="utf-8")
    loaded = _check_folder(clf, model, target)
    if loaded > TOLERANCE:
        shutil.rmtree(target)
        raise SentimentError(f"{target} as transformers loads it differs from the run by {loaded:.2g}; it was not kept")
    diff = max(diff, loaded)
    echo(f"wrote {target}: a Hugging Face text classifier, probabilities within {diff:.1e} of the run's (fp32)")
    return sorted(p for p in target.iterdir())


def _model_card(run: Run, meta: dict, diff: float) -> str:
    summary = run.read_json("summary.json") if run.file("summary.json").is_file() else {}
    cfg = meta["config"]
    classes = ", ".join(meta["classes"])
    epochs, kept = summary.get("epochs", "?"), summary.get("best_epoch", summary.get("epochs", "?"))
    recipe = f"{cfg.get('recipe', 'standard')} ({epochs} epoch{'' if epochs == 1 else 's'}, lr {cfg.get('lr')}, "
    recipe += f"batch {cfg.get('batch_size')})"
    temperature = summary.get("temperature")
    calibrated = f"temperature {temperature:.3f}" if isinstance(temperature, float) else "not calibrated"
    cut, head = cfg.get("max_len"), cfg.get("head_tokens")
    counts = (summary.get("train_examples", "?"), summary.get("val_examples", 0), summary.get("test_examples", "?"))

    def figure(key: str) -> str:
        value = summary.get(key)
        return f"{value:.4f}" if isinstance(value, int | float) else "not recorded"

    return f"""---
library_name: transformers
pipeline_tag: text-classification
---

# {run.path.name}

A text classifier ({classes}) fine-tuned by `sentiment` from the encoder `{cfg.get("encoder")}`.

## Use

```python
from transformers import pipeline

classify = pipeline("text-classification", model="PATH/TO/THIS/FOLDER", top_k=None, truncation=True)
classify("this movie is so great")
```

## Training

- Data: {meta.get("data_source") or cfg.get("data") or "IMDb"}; {counts[0]} training examples,
  {counts[1]} for validation, {counts[2]} for test.
- Recipe: {recipe}, {cfg.get("pooling")} pooling, reviews cut to {cut} tokens (the first {head} and the last).
- Kept: epoch {kept}; probabilities calibrated on validation ({calibrated}).

## Measured

Test accuracy {figure("test_acc")}, macro-F1 {figure("test_f1")}, ECE {figure("test_ece")} on the run's test split
(scored once, on these weights).

## How this folder is made

The encoder is BERT; it is stored as `XLMForSequenceClassification`, whose encoder computes the same
function once BERT's token-type embedding is folded into the position embeddings, and whose
sequence summary is the run's pooling and linear head. So it loads with plain `from_pretrained`, no
custom code. Checked when written: probabilities within {diff:.1e} of the run's, one text at a time.

## Limits

- One text at a time (the pipeline's default) matches the run. With mean pooling, a padded batch
  does not: XLM's summary averages over the padding too.
- A review longer than {cut} tokens: `sentiment` keeps its first {head} and last tokens, the
  tokenizer here (`truncation=True`) its first {cut}; the answers differ.
- Trained on {classes} for the data above; other domains and languages are untested.
"""
