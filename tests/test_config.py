import tomllib
from pathlib import Path

import pytest

from sentiment.config import apply, text_config, to_dict
from sentiment.errors import SentimentError
from sentiment.registry import get, names

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("model", ["textcnn", "birnn", "transformer"])
def test_config_files_hold_the_built_in_defaults(model):
    values = tomllib.loads((CONFIGS / f"{model}.toml").read_text())
    built_in = to_dict(text_config(model, None, {}))
    for key, value in values.items():
        assert built_in[key] == value, key


def test_reference_defaults():
    assert text_config("birnn", None, {}).lr == 0.01
    cnn = text_config("textcnn", None, {})
    assert (cnn.lr, cnn.batch_size, cnn.epochs, cnn.max_len, cnn.min_freq) == (0.001, 64, 5, 500, 5)
    assert {"textcnn", "birnn", "transformer", "linear"} <= set(names("text"))


def test_flags_override_file_overrides_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('model = "birnn"\nepochs = 3\nlr = 0.5\n')
    cfg = text_config(None, str(f), {"epochs": 7, "lr": None})
    assert (cfg.model, cfg.epochs, cfg.lr) == ("birnn", 7, 0.5)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("epochz = 3\n", "unknown setting 'epochz'"),
        ('epochs = "three"\n', "epochs must be int"),
        ("lr = true\n", "lr must be float"),
        ("epochs = 0\n", "epochs must be at least 1"),
        ('optimizer = "lion"\n', "optimizer must be one of"),
        ("epochs = [\n", "not valid TOML"),
    ],
)
def test_bad_config_files(tmp_path, content, pattern):
    f = tmp_path / "bad.toml"
    f.write_text(content)
    with pytest.raises(SentimentError, match=pattern) as e:
        text_config("textcnn", str(f), {})
    assert "bad.toml" in str(e.value)


def test_bad_flags_and_models(tmp_path):
    with pytest.raises(SentimentError, match="unknown model 'gpt'"):
        text_config("gpt", None, {})
    with pytest.raises(SentimentError, match="batch_size must be at least 1"):
        text_config("textcnn", None, {"batch_size": -2})
    with pytest.raises(SentimentError, match="no config file"):
        text_config("textcnn", str(tmp_path / "missing.toml"), {})
    assert apply(get("textcnn").settings(), {"lr": 1}, "x").lr == 1.0
