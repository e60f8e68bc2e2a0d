"""The speed benchmark's results file and README table: a run of one model replaces only its rows."""

import json

from benchmarks.speed import _merge, table


def _row(model, rate, train=25000):
    side = {"prepare_seconds_cold": 9.5, "train_examples_per_s": rate, "epoch_s": 25000 / rate}
    side |= {"peak_rss_mb": 900, "test_acc": 0.86}
    meta = {"cpu": "CPU X", "threads": 2, "device": "cpu", "date": "2026-11-23", "epochs": 5}
    return {
        "model": model,
        "reference": side,
        "ours": {**side, "prepare_seconds_cached": 0.05, "precision": "fp32", "train_examples_per_s": 3 * rate},
        "speedup": 3.0,
        "meta": {**meta, "train": train, "test": train},
    }


def test_a_run_of_one_model_keeps_the_other_models_rows(tmp_path):
    out = tmp_path / "speed.json"
    predict = {"run_model": "textcnn", "one_sentence_cold_s": 0.5, "file_reviews": 25000, "file_s": 10.0}
    out.write_text(json.dumps({"results": [_row("textcnn", 100), _row("birnn", 30)], "predict": predict}))
    results, kept_predict = _merge(out, [_row("birnn", 40, train=5000)], None)
    assert [(r["model"], r["reference"]["train_examples_per_s"]) for r in results] == [("textcnn", 100), ("birnn", 40)]
    assert kept_predict == predict
    text = table(results, {**predict, "file_reviews_per_s": 2500.0})
    assert "| textcnn | ours (fp32) | 300 |" in text
    assert "25,000 / 25,000, 5" in text and "5,000 / 5,000, 5" in text
    assert "2500 reviews/s" in text and "CPU X, 2 threads" in text


def test_no_earlier_results_file(tmp_path):
    results, predict = _merge(tmp_path / "missing.json", [_row("textcnn", 100)], None)
    assert [r["model"] for r in results] == ["textcnn"] and predict is None
