"""The CUDA paths, on a real NVIDIA GPU: every registered family trains a few steps on CUDA and answers
as the same weights do on the CPU; the CUDA forms of TextCNN and BiRNN (cuDNN over packed sequences)
give the plain CPU model's logits and gradients; a run trained on CUDA predicts where no GPU is
visible; two processes train one run (NCCL on two GPUs, gloo on the CPU otherwise); `serve --device
cuda` answers. The whole module skips where torch sees no GPU: nothing here forces a CUDA code path
on the CPU.

bf16 autocast (what `--precision auto` picks on CUDA) rounds to about 3 significant digits, so
answers on CUDA are compared with the CPU's as logits within 5% of their range (the tolerance
tests/test_fast_paths.py holds the CPU's bf16 to), and classes where the best two are not close.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_families import _photos

import sentiment
from cli_helpers import jsonl, three_class_csv
from sentiment import registry

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda sees none)")

FAMILIES = registry.families()
TEXTS = ["superb wonderful great, it was a film", "awful terrible worst", "the table by the river", "great"]
MANY = 300  # past TextCNN's LOOKUP_MIN_TEXTS: the form for many texts


def _data(family: registry.Family, root: Path) -> Path:
    return three_class_csv(root / "three.csv", n=120) if family.kind == "text" else _photos(root / "photos")


def _inputs(family: registry.Family, data: Path, n: int) -> list[str]:
    """`n` texts, or up to `n` of the test photos in `data` (images have no form for many)."""
    if family.kind == "text":
        rng = random.Random(n)
        return TEXTS + [" ".join(rng.sample(TEXTS, 2)) for _ in range(n - len(TEXTS))]
    return sorted(str(p) for p in (data / "test").rglob("*.png"))[:n]


def _train_on_cuda(root: Path, settings: dict) -> Path:
    settings = {"out": str(root / "runs"), "device": "cuda", "precision": "auto", **settings}
    with pytest.MonkeyPatch.context() as mp:  # the prepared-data cache in the test's folder, not data/
        mp.setenv("SENTIMENT_DATA_DIR", str(root / "data"))
        return sentiment.train(echo=None, **settings)


@pytest.fixture(scope="module", params=[f.name for f in FAMILIES])
def trained(request, tmp_path_factory):
    """(family, its data, a run folder trained on CUDA with the family's tiny settings)."""
    family = registry.get(request.param)
    root = tmp_path_factory.mktemp(f"cuda-{family.name}")
    data = _data(family, root)
    settings = {"model": family.name, "data": str(data), **family.task.tiny_settings(root)}
    return family, data, _train_on_cuda(root, settings)


def assert_same_within_bf16(got, want) -> None:
    """Probabilities whose logits (log-probabilities less each row's mean) agree within 5% of their
    largest size, plus 0.01; and the same class wherever the best two logits are clearly apart."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    lg, lw = np.log(np.clip(got, 1e-12, 1)), np.log(np.clip(want, 1e-12, 1))
    lg, lw = lg - lg.mean(1, keepdims=True), lw - lw.mean(1, keepdims=True)
    scale = np.abs(lw).max()
    assert np.abs(lg - lw).max() <= 0.05 * scale + 0.01, (np.abs(lg - lw).max(), scale)
    top2 = np.sort(lw, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1 * scale + 0.02
    assert np.array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


# -- every family: trained on CUDA ----------------------------------------------------------------


def test_a_run_trained_on_cuda_computed_there_in_bf16(trained):
    family, _, run = trained
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] >= 1 and 0 <= summary["test_acc"] <= 1
    if family.task.solver:  # fitted by its own solver on the CPU, whatever the device
        return
    config = json.loads((run / "config.json").read_text())
    assert config["device"].startswith("cuda") and summary["device"].startswith("cuda")
    assert config["precision"] == summary["precision"] == "bf16"  # --precision auto on CUDA


@pytest.mark.parametrize("n", [len(TEXTS), MANY], ids=["few", "many"])
def test_cuda_answers_as_the_cpu_does_with_the_same_weights(trained, n):
    """The run loaded on CUDA against the same run loaded on the CPU, each in the form it picks for
    `n` inputs (TextCNN: the look-up form for many)."""
    family, data, run = trained
    inputs = _inputs(family, data, n)
    on_cuda = sentiment.load(run, device="cuda", texts=n)
    on_cpu = sentiment.load(run, device="cpu", texts=n)
    if not family.task.solver:
        assert on_cuda.precision == "bf16"
    assert_same_within_bf16(on_cuda.probabilities(inputs), on_cpu.probabilities(inputs))


def test_a_cuda_run_predicts_where_no_gpu_is_visible(trained, tmp_path):
    """`sentiment predict` in a process that sees no GPU (CUDA_VISIBLE_DEVICES empty): a few inputs
    on the command line (the quick forms) and, for text, a file of many (the torch forms). It gives
    what the same form gives on the CPU in this process, and the classes CUDA gives."""
    family, data, run = trained
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    seen = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert seen.stdout.strip() == "False", seen.stdout + seen.stderr
    few = _inputs(family, data, len(TEXTS))
    calls = [(few, few)]
    if family.kind == "text":
        many = _inputs(family, data, MANY)
        (tmp_path / "many.txt").write_text("\n".join(many))
        calls.append((many, ["--file", str(tmp_path / "many.txt")]))
    command = "predict" if family.kind == "text" else "image-predict"
    for inputs, args in calls:
        proc = subprocess.run(
            [sys.executable, "-m", "sentiment", command, *args, "--run", str(run), "--json"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        cpu = sentiment.load(run, device="cpu", texts=len(inputs))
        got = np.array([[r["scores"][c] for c in cpu.classes] for r in jsonl(proc.stdout)])
        if cpu.precision == "fp32":
            np.testing.assert_allclose(got, np.asarray(cpu.probabilities(inputs)), atol=1e-5, rtol=0)
        else:  # bf16 on a CPU with native bfloat16: rounding may differ with the thread count
            assert_same_within_bf16(got, cpu.probabilities(inputs))
        assert_same_within_bf16(got, sentiment.load(run, device="cuda", texts=len(inputs)).probabilities(inputs))


def test_a_text_run_serves_on_cuda_what_it_predicts_there(trained):
    family, data, run = trained
    if family.kind != "text":
        pytest.skip("sentiment serve answers text runs")
    from sentiment.runs import Run
    from sentiment.serve import ServedModel

    served = ServedModel(Run.open(run), device="cuda")
    want = sentiment.load(run, device="cuda", texts=MANY)
    inputs = _inputs(family, data, 40)
    got = np.array([[a["scores"][c] for c in want.classes] for a in served.predict(inputs)])
    assert_same_within_bf16(got, want.probabilities(inputs))
    if not family.task.solver:
        assert served.health()["precision"] == "bf16"


# -- the transformer family over every architecture the suite makes --------------------------------


@pytest.mark.parametrize("architecture", ["bert", "distilbert", "roberta", "electra", "deberta-v2"])
def test_each_encoder_architecture_fine_tunes_on_cuda(architecture, tmp_path):
    """A few steps of each architecture's random 2-layer encoder (tests/encoders.py) on CUDA under
    bf16 autocast and PyTorch's fused attention; the CPU answers as CUDA does with its weights."""
    from encoders import tiny_encoder

    family = registry.get("transformer")
    data = _data(family, tmp_path)
    settings = {
        "model": family.name,
        "data": str(data),
        "encoder": str(tiny_encoder(tmp_path / architecture, architecture)),
    }
    run = _train_on_cuda(tmp_path, settings | {"epochs": 1, "max_len": 32, "lr": 1e-3, "batch_size": 8})
    assert json.loads((run / "summary.json").read_text())["precision"] == "bf16"
    inputs = _inputs(family, data, 40)
    on_cuda = sentiment.load(run, device="cuda", texts=40).probabilities(inputs)
    assert_same_within_bf16(on_cuda, sentiment.load(run, device="cpu", texts=40).probabilities(inputs))


# -- the CUDA forms of TextCNN and BiRNN against the plain model on the CPU -------------------------

VOCAB = 300


def _reviews(n: int = 40, seed: int = 0) -> list[list[int]]:
    """Fixed ids of mixed lengths (1 to 120), some shorter than TextCNN's widest kernel."""
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 3, 4, 5, *rng.integers(6, 120, n - 5).tolist()]
    return [rng.integers(2, VOCAB, k).tolist() for k in lengths]


def _padded(reviews: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    from sentiment.text.batching import pad_or_truncate
    from sentiment.text.vocab import PAD_ID

    lengths = torch.tensor([len(r) for r in reviews])
    return torch.tensor([pad_or_truncate(r, int(lengths.max()), PAD_ID) for r in reviews]), lengths


def _network(name: str) -> torch.nn.Module:
    """A fresh network of form `name` (seeded: every form starts from the same weights)."""
    from sentiment.families import birnn, textcnn
    from sentiment.text.vocab import PAD_ID

    torch.manual_seed(0)
    if name.startswith("BiRNN"):
        return getattr(birnn, name)(VOCAB, 16, num_classes=3)
    model = getattr(textcnn, name)(VOCAB, 16, num_classes=3)
    with torch.no_grad():
        model.embedding.weight[PAD_ID].zero_()
        model.constant_embedding.weight[PAD_ID].zero_()
    return model


# (the form CUDA trains and tests with, the CPU's, whether the CUDA form is the look-up wrapper)
FORMS = [
    ("BiRNN", "BiRNNPerDirection", False),
    ("TextCNNFast", "TextCNNFastOnCPU", False),
    ("TextCNNFast", "TextCNN", True),
]


def _bucketed(model, reviews, device: str, precision: str) -> torch.Tensor:
    """Logits through the loop's path: length-bucketed batches (pinned on CUDA), moved to `device`."""
    from sentiment.loop import predict_logits
    from sentiment.runtime import Runtime
    from sentiment.text.batching import Encoded, TextBatches

    lengths = np.array([len(r) for r in reviews], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)
    enc = Encoded(ids=np.concatenate(reviews).astype(np.int32), offsets=offsets, lengths=lengths)
    runtime = Runtime(torch.device(device), precision)
    batches = TextBatches(enc, None, 16, shuffle=False, pin_memory=runtime.pin_memory)
    return predict_logits(model, batches, runtime, size=len(reviews), progress=False)


@pytest.fixture
def fp32_cudnn():
    """cuDNN in fp32 (it may use TF32 for convolutions and LSTMs by default), so CUDA and the CPU
    compute the same arithmetic to float rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("cuda_form, cpu_form, lookup", FORMS, ids=["birnn-packed", "textcnn", "textcnn-lookup"])
def test_cuda_forms_give_the_cpu_forms_logits(cuda_form, cpu_form, lookup, fp32_cudnn):
    from sentiment.families.textcnn import TextCNNLookup

    reviews = _reviews()
    cpu = _network(cpu_form).eval()
    cuda = _network(cuda_form).cuda().eval()
    if lookup:
        cuda = TextCNNLookup(cuda)
    want = _bucketed(cpu, reviews, "cpu", "fp32")
    torch.testing.assert_close(_bucketed(cuda, reviews, "cuda", "fp32"), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cuda_form, cpu_form, lookup", FORMS, ids=["birnn-packed", "textcnn", "textcnn-lookup"])
def test_cuda_forms_in_bf16_give_the_cpu_forms_classes(cuda_form, cpu_form, lookup):
    from sentiment.families.textcnn import TextCNNLookup

    reviews = _reviews(60)
    cpu = _network(cpu_form).eval()
    cuda = _network(cuda_form).cuda().eval()
    with torch.no_grad():  # logits of a trained model's size, not a fresh one's
        cpu.decoder.weight.mul_(30)
        cuda.decoder.weight.mul_(30)
    if lookup:
        cuda = TextCNNLookup(cuda, torch.bfloat16)
    want = _bucketed(cpu, reviews, "cpu", "fp32")
    got = _bucketed(cuda, reviews, "cuda", "bf16")
    scale = want.abs().max()
    assert (got - want).abs().max() < 0.05 * scale
    top2 = want.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.1 * scale
    assert clear.sum() > 30
    assert torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])


@pytest.mark.parametrize("cuda_form, cpu_form", [f[:2] for f in FORMS[:2]], ids=["birnn-packed", "textcnn"])
def test_cuda_training_forms_give_the_cpu_forms_gradients(cuda_form, cpu_form, fp32_cudnn):
    """A training step's parameter gradients: cuDNN's packed LSTM against the per-direction LSTMs on
    the CPU, cuDNN's convolution backward against the CPU's argmax-only one. Dropout off (eval for
    TextCNN; BiRNN has none, and its cuDNN backward needs training mode)."""
    cpu, cuda = _network(cpu_form), _network(cuda_form).cuda()
    for model in (cpu, cuda):
        model.train(cuda_form.startswith("BiRNN"))
    ids, lengths = _padded(_reviews(24, seed=3))
    weights = torch.randn(len(lengths), 3, generator=torch.Generator().manual_seed(1))
    (cpu(ids, lengths) * weights).sum().backward()
    (cuda(ids.cuda(), lengths.cuda()) * weights.cuda()).sum().backward()
    compared = 0
    for (name, a), b in zip(cpu.named_parameters(), cuda.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad.cpu(), a.grad, atol=1e-4, rtol=1e-3, msg=name)
            compared += 1
    assert compared >= 4


# -- several processes ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["textcnn", "transformer"])
def test_two_processes_train_one_run(model, tmp_path):
    """`--nproc 2`: NCCL, one GPU each, where there are two GPUs; on one GPU, gloo on the CPU (two
    processes cannot share one GPU over NCCL). Both processes end with the same weights."""
    from encoders import tiny_encoder

    device = "cuda" if torch.cuda.device_count() >= 2 else "cpu"
    csv = three_class_csv(tmp_path / "three.csv", n=240 if model == "textcnn" else 96)
    args = ["train", "--model", model, "--data", str(csv), "--epochs", "2", "--device", device, "--quiet"]
    args += ["--out", str(tmp_path / "ddp"), "--seed", "2", "--batch-size", "8", "--nproc", "2"]
    if model == "textcnn":
        args += ["--min-freq", "1"]
    else:
        args += ["--encoder", str(tiny_encoder(tmp_path / "encoder")), "--max-len", "32", "--micro-batch", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SENTIMENT_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "ddp" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert config["processes"] == 2 and config["device"].startswith(device)
    assert proc.stdout.count("done: test accuracy") == 1


# -- serve --device cuda, as a user starts it -------------------------------------------------------


@pytest.fixture(scope="module")
def textcnn_on_cuda(tmp_path_factory):
    family, root = registry.get("textcnn"), tmp_path_factory.mktemp("serve-cuda")
    settings = {"model": family.name, "data": str(_data(family, root)), **family.task.tiny_settings(root)}
    return _train_on_cuda(root, settings | {"epochs": 2})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_serve_on_cuda_answers_over_http(textcnn_on_cuda):
    port = _free_port()
    cmd = [sys.executable, "-m", "sentiment", "serve", "--run", str(textcnn_on_cuda), "--port", str(port)]
    server = subprocess.Popen([*cmd, "--device", "cuda"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if _request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"the server did not start: {server.stdout.read()}")
            time.sleep(0.2)
        status, health = _request(port, "GET", "/health")
        assert health["precision"] == "bf16" and health["model"] == "textcnn"
        texts = _inputs(registry.get("textcnn"), Path(), 40)
        status, body = _request(port, "POST", "/predict", {"texts": texts})
        assert status == 200, body
        want = sentiment.load(textcnn_on_cuda, device="cuda", texts=MANY)
        got = np.array([[p["scores"][c] for c in want.classes] for p in body["predictions"]])
        assert_same_within_bf16(got, want.probabilities(texts))
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    assert "(textcnn, cuda;" in out, out
