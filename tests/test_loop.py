"""The training loop honours the settings of its TrainingSetup."""

import torch
from torch import nn

from sentiment.loop import TrainingSetup, fit
from sentiment.runtime import Runtime


def _one_step(reduction: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    batches = [(torch.arange(8), (x,), y)]
    loop = TrainingSetup(
        train_batches=batches,
        test_batches=None,
        test_labels=None,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        runtime=Runtime(torch.device("cpu")),
        epochs=1,
        loss_reduction=reduction,
        progress=False,
    )
    fit(model, loop)
    return model.weight.detach() - before


def test_summed_loss_steps_batch_size_times_further_than_the_mean():
    mean, summed = _one_step("mean"), _one_step("sum")
    torch.testing.assert_close(summed, 8 * mean)


def _step_with_parts(model: nn.Module, micro_batch, reduction="mean", batch=10) -> dict:
    """The parameters after one step on one batch of `batch` examples, split into parts of `micro_batch`."""
    torch.manual_seed(1)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 3, (batch,))
    loop = TrainingSetup(
        train_batches=[(torch.arange(batch), (x,), y)],
        test_batches=None,
        test_labels=None,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        runtime=Runtime(torch.device("cpu")),
        epochs=1,
        loss_reduction=reduction,
        grad_clip=1.0,
        progress=False,
        micro_batch=micro_batch,
    )
    history = fit(model, loop)
    return {k: v.detach().clone() for k, v in model.state_dict().items()} | {"loss": history[0]["train_loss"]}


def _convnet(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(1, 4, 3),
        *([nn.BatchNorm2d(4)] if batchnorm else []),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(144, 3),
    ]
    return nn.Sequential(*layers)


def test_micro_batches_give_the_whole_batch_step_without_batchnorm():
    """Gradient accumulation: parts of 4, 4, ... (and uneven parts, and the summed loss) end in the
    weights one step on the whole batch gives, gradient clipping included."""
    for reduction in ("mean", "sum"):
        whole = _step_with_parts(_convnet(False), None, reduction)
        for micro in (1, 3, 4, 9):
            parts = _step_with_parts(_convnet(False), micro, reduction)
            assert whole.keys() == parts.keys()
            assert abs(parts.pop("loss") - whole["loss"]) < 1e-5
            for k in whole.keys() - {"loss"}:
                torch.testing.assert_close(parts[k], whole[k], rtol=1e-5, atol=1e-6, msg=f"{reduction} {micro} {k}")


def test_micro_batches_change_batchnorm_statistics_only_by_the_parts_they_see():
    """With BatchNorm the parts are normalised with their own statistics, so the step differs from
    the whole batch's: the test pins that this is the only difference (whole batch = one part)."""
    whole = _step_with_parts(_convnet(True), None)
    same = _step_with_parts(_convnet(True), 10)
    parts = _step_with_parts(_convnet(True), 5)
    assert all(torch.equal(whole[k], same[k]) for k in whole if k != "loss")
    assert not torch.allclose(whole["0.weight"], parts["0.weight"])
    assert parts["1.num_batches_tracked"].item() == 2  # one update of the running statistics per part


def test_split_batch_is_even_and_covers_the_batch():
    from sentiment.loop import split_batch

    assert split_batch(128, None) == [slice(0, 128)]
    assert split_batch(128, 200) == [slice(0, 128)]
    assert [s.stop - s.start for s in split_batch(130, 64)] == [44, 43, 43]
    assert [s.stop - s.start for s in split_batch(128, 13)] == [13] * 8 + [12] * 2
    for n, m in ((7, 1), (100, 33), (5, 5)):
        parts = split_batch(n, m)
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts[:-1], parts[1:], strict=True))
        assert max(s.stop - s.start for s in parts) <= m


def test_memory_probe_measures_activations_and_leaves_no_trace():
    """The probe's bytes per example grow with the activation size and do not count the weights; it
    leaves BatchNorm statistics, gradients and the random state as they were."""
    from sentiment.memory import plan_micro_batch, step_bytes_per_example

    runtime = Runtime(torch.device("cpu"))
    model = _convnet(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    small = step_bytes_per_example(model, lambda n: (torch.randn(n, 1, 8, 8),), runtime)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert small > 0

    def deep() -> nn.Module:
        torch.manual_seed(0)
        layers = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()]
        for _ in range(5):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 64, 3))

    def example(n):
        return (torch.randn(n, 1, 8, 8),)

    # Trained: what autograd keeps, each storage once and no weights: the input and six ReLU
    # outputs (8x8x8 each; the next layer saves the same tensor), fp32.
    assert step_bytes_per_example(deep(), example, runtime) == 4 * (64 + 6 * 512)
    # Frozen: autograd keeps nothing, and the forward still holds a few activations at once.
    frozen = deep().requires_grad_(False)
    assert step_bytes_per_example(frozen, example, runtime) == 3 * 4 * 512
    assert plan_micro_batch(128, per_example=2**20, budget=30 * 2**20) == 20
    assert plan_micro_batch(128, per_example=1.0, budget=2**30) == 128
    assert plan_micro_batch(128, per_example=2**30, budget=2**20) == 1


def test_adagrad_steps_on_sparse_gradients():
    from sentiment.loop import make_optimizer

    bag = torch.nn.EmbeddingBag(10, 4, mode="sum", sparse=True)
    before = bag.weight.detach().clone()
    optimizer = make_optimizer("adagrad", [{"params": list(bag.parameters())}], lr=0.1)
    bag(torch.tensor([[2, 3]])).sum().backward()
    assert bag.weight.grad.is_sparse
    optimizer.step()
    changed = (bag.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert changed == [2, 3]  # only the rows the batch read


def _setup(model: nn.Module, batches, **settings) -> TrainingSetup:
    """One epoch of SGD at lr 0.1 over `batches` on the CPU, without bars; `settings` change the rest."""
    return TrainingSetup(**{
        "train_batches": batches,
        "test_batches": None,
        "test_labels": None,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "runtime": Runtime(torch.device("cpu")),
        "epochs": 1,
        "progress": False,
        **settings,
    })  # fmt: skip


def _weighted_step(micro_batch, weights) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    loop = _setup(model, [(torch.arange(10), (x,), y)], micro_batch=micro_batch, class_weights=weights)
    fit(model, loop)
    return model.weight.detach().clone()


def test_class_weights_step_on_the_weighted_mean_whatever_the_parts():
    weights = torch.tensor([4.0, 0.5])
    whole = _weighted_step(None, weights)
    torch.testing.assert_close(_weighted_step(3, weights), whole)  # parts add up to the whole batch's mean
    assert not torch.allclose(whole, _weighted_step(None, None))
    # the weighted mean by hand: sum(w_i * loss_i) / sum(w_i)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    w = weights[y]
    loss = (nn.functional.cross_entropy(model(x), y, reduction="none") * w).sum() / w.sum()
    loss.backward()
    torch.testing.assert_close(whole, model.weight.detach() - 0.1 * model.weight.grad)


def test_early_stopping_keeps_the_record_and_stops_after_patience():
    from sentiment.loop import Selection

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    vx, vy = torch.randn(8, 3), torch.randint(0, 2, (8,))
    loop = _setup(
        model,
        [(torch.arange(16), (x,), y)],
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),  # nothing changes: no epoch beats the first
        epochs=10,
        val_batches=[(torch.arange(8), (vx,), vy)],
        val_labels=vy,
        patience=3,
    )
    history = fit(model, loop)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    assert all(m["best_epoch"] == 1 for m in history)
    assert loop.selection == Selection(best_epoch=1, best_score=loop.selection.best_score, since_best=3,
                                       stopped_early=True)  # fmt: skip


def test_thread_pool_is_resized_while_an_epoch_runs(monkeypatch):
    from sentiment import recipe
    from sentiment.runtime import ThreadPlan

    plans = iter([ThreadPlan(1, 2, 1, "cores")] + [ThreadPlan(2, 2, 0, "cores")] * 100)
    monkeypatch.setattr(recipe, "plan_threads", lambda: next(plans))
    said, sizes = [], []
    monkeypatch.setattr(torch, "set_num_threads", sizes.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: sizes[-1] if sizes else 1)
    watch = recipe.ThreadWatch(ThreadPlan(1, 2, 1, "cores"), said.append, every=0.0)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    batches = [(torch.arange(4), (torch.randn(4, 3),), torch.randint(0, 2, (4,))) for _ in range(3)]
    loop = _setup(model, batches, after_step=watch)
    fit(model, loop)
    # the first look finds the other training still there, the second finds it gone: within the epoch
    assert sizes == [2] and len(said) == 1 and "now 2" in said[0]
