"""Run the CLI in-process and capture what a user would see."""

from __future__ import annotations

import json
import random

import pytest

from sentiment.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


WORDS = {
    "good": ["great", "wonderful", "excellent", "superb", "brilliant", "loved"],
    "bad": ["awful", "terrible", "horrible", "worst", "boring", "hated"],
    "meh": ["table", "chair", "window", "river", "paper", "street"],
}


def three_class_csv(path, n: int = 240, seed: int = 0):
    """A labeled CSV whose classes are told apart by their words (quoted text with commas inside)."""
    rng = random.Random(seed)
    filler = ["the", "a", "film", "it", "was", "and", "this", "of"]
    rows = ["text,label"]
    for i in range(n):
        label = list(WORDS)[i % 3]
        words = [rng.choice(WORDS[label]) for _ in range(3)] + [rng.choice(filler) for _ in range(5)]
        rng.shuffle(words)
        rows.append(f'"{" ".join(words[:4])}, {" ".join(words[4:])}",{label}')
    path.write_text("\n".join(rows) + "\n")
    return path


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.split("\n") if line.strip()]  # not splitlines(): U+0085 is text


def logged(folder, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of a TensorBoard scalar in `folder`, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []
