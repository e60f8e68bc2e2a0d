"""The reference pipeline: the textbook recipe for IMDb sentiment with GloVe, written plainly, as the
baseline that the speed benchmark compares the project against.

Recipe (Dive into Deep Learning, sentiment chapters): drop newlines, lower-case and split every review
on a single space; a vocabulary of the training tokens seen at least 5 times (`<unk>` = 0 and
`<pad>` = 1 first, then by descending count, ties alphabetical); every review cut or padded to 500
ids in one `TensorDataset`; `DataLoader(batch_size=64)`; a 2-layer bidirectional LSTM or a TextCNN on
GloVe 6B 50-d; Adam and mean cross-entropy in a plain loop; accuracy on the test split.

It keeps the reference's behaviour on purpose, because that is the baseline to beat: every batch is
500 steps long whatever its reviews' lengths, the BiRNN reads `outputs[-1]` (a padding position for
most reviews), and the TextCNN's max pooling runs over the pads too. Only reading the archive comes
from the project (`sentiment.text.imdb`); tokenizing, the vocabulary, batching, the models and the loop
are this file's own.

    python -m benchmarks.reference --model textcnn --epochs 1 --limit-train 2000 --limit-test 1000 [--data PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sentiment.text.imdb import read_imdb_splits
from sentiment.text.vectors import load_vectors
from sentiment.text.vocab import Vocab

NUM_STEPS = 500
BATCH_SIZE = 64
UNK, PAD = "<unk>", "<pad>"
UNK_ID, PAD_ID = 0, 1
LEARNING_RATES = {"birnn": 0.01, "textcnn": 0.001}
MODELS = tuple(LEARNING_RATES)


# ---- data ------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    return text.replace("\n", "").lower().split(" ")


def build_itos(token_lists: list[list[str]], min_freq: int = 5) -> list[str]:
    counter = collections.Counter()
    for tokens in token_lists:
        counter.update(tokens)
    kept = [(tok, n) for tok, n in counter.items() if n >= min_freq and tok not in (UNK, PAD)]
    kept.sort(key=lambda tok_n: (-tok_n[1], tok_n[0]))
    return [UNK, PAD] + [tok for tok, _ in kept]


def truncate_pad(ids: list[int], num_steps: int = NUM_STEPS, pad_id: int = PAD_ID) -> list[int]:
    if len(ids) > num_steps:
        return ids[:num_steps]
    return ids + [pad_id] * (num_steps - len(ids))


def to_dataset(token_lists: list[list[str]], labels: list[int], stoi: dict[str, int]) -> TensorDataset:
    features = torch.tensor([truncate_pad([stoi.get(tok, UNK_ID) for tok in tokens]) for tokens in token_lists])
    return TensorDataset(features, torch.tensor(labels))


@dataclass
class ReferenceData:
    itos: list[str]
    train: TensorDataset
    test: TensorDataset
    seconds: float  # reading, tokenizing, vocabulary and tensors

    @property
    def stoi(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.itos)}


def _subset(examples: list, limit: int | None, seed: int) -> list:
    if limit is None:
        return examples
    examples = list(examples)
    random.Random(seed).shuffle(examples)
    return examples[:limit]


def prepare(
    path: str | os.PathLike,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    min_freq: int = 5,
) -> ReferenceData:
    """Read the IMDb archive or folder and turn both splits into `[N, 500]` id tensors.

    `limit_train` / `limit_test` keep the first N reviews after a shuffle seeded by `seed` (not
    balanced), for small runs.
    """
    start = time.perf_counter()
    splits = read_imdb_splits(path)
    train = _subset(splits["train"], limit_train, seed)
    test = _subset(splits["test"], limit_test, seed)
    train_tokens = [tokenize(ex.text) for ex in train]
    test_tokens = [tokenize(ex.text) for ex in test]
    itos = build_itos(train_tokens, min_freq)
    stoi = {tok: i for i, tok in enumerate(itos)}
    train_set = to_dataset(train_tokens, [ex.label for ex in train], stoi)
    test_set = to_dataset(test_tokens, [ex.label for ex in test], stoi)
    return ReferenceData(itos, train_set, test_set, time.perf_counter() - start)


# ---- models ----------------------------------------------------------------------------------


class ReferenceBiRNN(nn.Module):
    def __init__(self, vocab_size: int, embed_size: int = 50, num_hiddens: int = 100, num_layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.encoder = nn.LSTM(embed_size, num_hiddens, num_layers=num_layers, bidirectional=True)
        # the first and the last time step, both directions each
        self.decoder = nn.Linear(4 * num_hiddens, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding(inputs.T)  # [steps, batch, embed]: the LSTM wants time first
        outputs, _ = self.encoder(embeddings)  # [steps, batch, 2 * hiddens]
        encoding = torch.cat((outputs[0], outputs[-1]), dim=1)
        return self.decoder(encoding)


class ReferenceTextCNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_size: int = 50,
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
        num_channels: tuple[int, ...] = (100, 100, 100),
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.constant_embedding = nn.Embedding(vocab_size, embed_size)  # frozen after GloVe is copied in
        self.convs = nn.ModuleList(
            nn.Conv1d(2 * embed_size, c, k) for c, k in zip(num_channels, kernel_sizes, strict=True)
        )
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)  # over every position, pads included
        self.dropout = nn.Dropout(0.5)
        self.decoder = nn.Linear(sum(num_channels), 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        embeddings = torch.cat((self.embedding(inputs), self.constant_embedding(inputs)), dim=2)
        embeddings = embeddings.permute(0, 2, 1)  # Conv1d wants [batch, channels, steps]
        encoding = torch.cat([self.pool(self.relu(conv(embeddings))).squeeze(-1) for conv in self.convs], dim=1)
        return self.decoder(self.dropout(encoding))


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Conv1d):
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, nn.LSTM):
        for name, param in module.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(param)


def build(model_name: str, data: ReferenceData, vectors) -> nn.Module:
    """The named model over `data`'s vocabulary, initialised as the reference does, GloVe copied in."""
    glove = vectors.embedding_for(Vocab(data.itos))  # Vocab only carries the itos built above
    if model_name == "birnn":
        model = ReferenceBiRNN(len(data.itos), embed_size=glove.shape[1])
        model.apply(init_weights)
        model.embedding.weight.data.copy_(glove)
        model.embedding.weight.requires_grad = False
    elif model_name == "textcnn":
        model = ReferenceTextCNN(len(data.itos), embed_size=glove.shape[1])
        model.apply(init_weights)
        model.embedding.weight.data.copy_(glove)
        model.constant_embedding.weight.data.copy_(glove)
        model.constant_embedding.weight.requires_grad = False
    else:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    return model


def make_optimizer(model_name: str, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=LEARNING_RATES[model_name])


# ---- training --------------------------------------------------------------------------------


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> dict:
    """One pass over `loader`: mean loss, accuracy, examples, seconds and examples per second."""
    device = _device(model)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss_sum, correct, examples = 0.0, 0, 0
    start = time.perf_counter()
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        logits = model(X)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        examples += len(y)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum / examples,
        "acc": correct / examples,
        "examples": examples,
        "seconds": seconds,
        "examples_per_s": examples / seconds,
    }


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Accuracy on `loader`."""
    device = _device(model)
    model.eval()
    correct, examples = 0, 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            correct += (model(X).argmax(dim=1) == y).sum().item()
            examples += len(y)
    return correct / examples


def run(
    model_name: str,
    path: str | os.PathLike,
    *,
    epochs: int = 5,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    min_freq: int = 5,
    device: str = "cpu",
) -> dict:
    """Prepare the data, build the model and train it for `epochs`, testing after each epoch."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    data = prepare(path, limit_train=limit_train, limit_test=limit_test, seed=seed, min_freq=min_freq)
    start = time.perf_counter()
    vectors = load_vectors("glove.6B.50d")
    model = build(model_name, data, vectors).to(device)
    build_seconds = time.perf_counter() - start
    optimizer = make_optimizer(model_name, model)
    train_loader = DataLoader(data.train, batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(data.test, batch_size=BATCH_SIZE)
    history = []
    for epoch in range(1, epochs + 1):
        metrics = train_epoch(model, train_loader, optimizer)
        start = time.perf_counter()
        metrics["test_acc"] = evaluate(model, test_loader)
        metrics["eval_seconds"] = time.perf_counter() - start
        history.append({"epoch": epoch, **metrics})
    return {
        "model": model_name,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_examples": len(data.train),
        "test_examples": len(data.test),
        "vocab_size": len(data.itos),
        "prepare_seconds": data.seconds,
        "build_seconds": build_seconds,
        "epochs": history,
        "test_acc": history[-1]["test_acc"] if history else evaluate(model, test_loader),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="textcnn")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"), help="IMDb archive or folder")
    args = ap.parse_args()
    if not args.data:
        ap.error("give --data PATH or set SENTIMENT_IMDB")
    result = run(
        args.model,
        args.data,
        epochs=args.epochs,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        seed=args.seed,
        device=args.device,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
