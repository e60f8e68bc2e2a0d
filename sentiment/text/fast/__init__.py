"""Faster ways to compute what `text/models.py` computes, and `choose`, the one function that
picks among them. Each form gives the plain model's predictions (tests/test_fast_paths.py holds
them to it) and keeps its parameter names, so weights move freely between forms.

| form             | used for                              | what it does                                     |
|------------------|---------------------------------------|--------------------------------------------------|
| `numpy`          | predicting a few texts on the CPU     | the forward pass in numpy: no 2 s torch import   |
| `bert`           | a few texts, BERT transformer runs    | BERT's forward in torch: no `transformers` import|
| `lookup`         | TextCNN predicting many texts         | convolutions as look-ups of per-word products    |
| `textcnn-cpu`    | TextCNN training and testing on CPU   | a backward that reads only each winning window   |
| `textcnn-cuda`   | TextCNN on CUDA                       | cuDNN's backward; both: one bf16 cast, in-place  |
|                  |                                       | inference                                        |
| `birnn-cpu`      | BiRNN on CPU                          | each direction as its own unpacked LSTM          |
| `birnn-cuda`     | BiRNN on CUDA                         | the plain model: cuDNN over packed sequences     |

This module imports no torch: `sentiment predict` chooses the numpy form before torch could load.
"""

from __future__ import annotations

NUMPY_MAX_TEXTS = 16  # up to this many texts, numpy answers before torch would have been imported
LOOKUP_MIN_TEXTS = 256  # the look-up tables take a moment to build: worth it from this many texts on


def choose(model: str, device: str, *, texts: int | None = None, numpy: bool = True) -> str:
    """The form to run text model `model` in on `device` ("cpu" or "cuda"): for training and
    testing when `texts` is None, else for predicting that many texts (`numpy=False` once torch
    is loaded anyway). Families without faster forms here get "plain"."""
    if model not in ("textcnn", "birnn"):  # no faster form of another family here
        return "plain"
    if texts is not None and numpy and device == "cpu" and texts <= NUMPY_MAX_TEXTS:
        return "numpy"
    if texts is not None and model == "textcnn" and texts >= LOOKUP_MIN_TEXTS:
        return "lookup"
    on = "cuda" if device.startswith("cuda") else "cpu"
    return f"{model}-{on}"


def open_classifier(run, device: str = "cpu", *, texts: int):
    """The trained text `run` (a `runs.Run`) as the classifier that answers `texts` texts fastest on
    `device`: the numpy forward, or the run's torch classifier."""
    meta = run.read_meta("text")
    model = meta["config"].get("model")
    if model == "transformer" and device == "cpu" and texts <= NUMPY_MAX_TEXTS:
        from sentiment.text.fast.bert import open_quick_bert

        clf = open_quick_bert(run, meta)
        if clf is not None:
            return clf
    if choose(model, device, texts=texts) == "numpy":
        from sentiment.text.fast.numpy_forward import open_numpy_classifier

        clf = open_numpy_classifier(run)
        if clf is not None:
            return clf
    from sentiment.tasks import open_classifier

    return open_classifier(run, device, kind="text")


def model_class(model: str, device: str):
    """The `nn.Module` class to train and test `model` with on `device`."""
    form = choose(model, device)
    if form.startswith("textcnn"):
        from sentiment.text.fast.textcnn import TextCNNFast, TextCNNFastOnCPU

        return TextCNNFastOnCPU if form == "textcnn-cpu" else TextCNNFast
    if form == "birnn-cpu":
        from sentiment.text.fast.birnn import BiRNNPerDirection

        return BiRNNPerDirection
    from sentiment.text.models import MODELS

    return MODELS[model]


def for_many_texts(model, texts: int, precision: str = "fp32"):
    """The trained `model` in the form that predicts `texts` texts fastest (eval mode, no gradients)."""
    model.eval()
    device = next(model.parameters()).device.type
    name = "textcnn" if hasattr(model, "convs") else "birnn"
    if choose(name, device, texts=texts, numpy=False) == "lookup":
        import torch

        from sentiment.text.fast.textcnn import TextCNNLookup

        return TextCNNLookup(model, torch.bfloat16 if precision == "bf16" else torch.float32)
    return model
