"""What `sentiment data-stats` reports: split sizes, review lengths, vocabulary, vector coverage."""

from __future__ import annotations

from collections import Counter

import numpy as np

from sentiment.text.corpus import Corpus
from sentiment.text.tokenize import get_tokenizer
from sentiment.text.vectors import Vectors
from sentiment.text.vocab import Vocab


def data_stats(corpus: Corpus, *, tokenizer: str, min_freq: int, vectors: Vectors, max_len: int = 500) -> dict:
    tokenize = get_tokenizer(tokenizer)
    out: dict = {"source": corpus.source, "tokenizer": tokenizer, "min_freq": min_freq, "vectors": vectors.name}
    counter: Counter = Counter()
    lengths: dict[str, dict] = {}
    for split in ("train", "test"):
        examples = getattr(corpus, split)
        out[split] = corpus.counts(split)
        token_lists = [tokenize(ex.text) for ex in examples]
        if split == "train":  # the vocabulary only ever sees training data
            for tokens in token_lists:
                counter.update(tokens)
        n = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        p50, p90, p99 = (int(round(x)) for x in np.percentile(n, [50, 90, 99])) if len(n) else (0, 0, 0)
        lengths[split] = {
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "max": int(n.max()) if len(n) else 0,
            f"share_over_{max_len}": float((n > max_len).mean()) if len(n) else 0.0,
        }
    vocab = Vocab.build(counter, min_freq=min_freq)
    oov = vectors.missing(vocab)
    ordinary = len(vocab) - 2
    out.update(
        lengths=lengths,
        max_len=max_len,
        vocab_size=len(vocab),
        oov_words=len(oov),
        vocab_coverage=(ordinary - len(oov)) / ordinary if ordinary else 0.0,
        token_coverage=vectors.coverage(counter),
        train_tokens=sum(counter.values()),
    )
    return out


def format_stats(s: dict) -> str:
    lines = [f"data: {s['source']}   tokenizer: {s['tokenizer']}   vectors: {s['vectors']}"]
    for split in ("train", "test"):
        counts = ", ".join(f"{k} {v:,}" for k, v in s[split].items())
        ln = s["lengths"][split]
        over = ln[f"share_over_{s['max_len']}"]
        lines.append(
            f"{split:5s}  {sum(s[split].values()):>7,} reviews ({counts})   tokens p50 {ln['p50']}  "
            f"p90 {ln['p90']}  p99 {ln['p99']}   longer than {s['max_len']}: {over:.1%}"
        )
    lines.append(
        f"vocab  {s['vocab_size']:,} tokens (min_freq {s['min_freq']})   known to the vectors: "
        f"{s['vocab_coverage']:.1%} of the vocabulary ({s['oov_words']:,} missing), "
        f"{s['token_coverage']:.1%} of {s['train_tokens']:,} training tokens"
    )
    return "\n".join(lines)
