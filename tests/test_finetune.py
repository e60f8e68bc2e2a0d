import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sentiment.errors import SentimentError
from sentiment.finetune import (
    LoadReport,
    count_parameters,
    freeze,
    load_matching,
    param_groups,
    set_bn_eval,
    strip_prefix,
    trainable_parameters,
    unfreeze,
)

VOCAB, DIM, HIDDEN = 20, 8, 16


class Toy(nn.Module):
    """A text classifier in miniature: a trainable and a frozen embedding, a body, BatchNorm and a head."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.frozen_embedding = nn.Embedding(VOCAB, DIM).requires_grad_(False)
        self.body = nn.Linear(2 * DIM, HIDDEN)
        self.norm = nn.BatchNorm1d(HIDDEN)
        self.fc = nn.Linear(HIDDEN, classes)

    def forward(self, ids):
        x = torch.cat([self.embedding(ids).mean(1), self.frozen_embedding(ids).mean(1)], dim=1)
        return self.fc(torch.relu(self.norm(self.body(x))))


class TiedLM(nn.Module):
    """A language model whose decoder shares its weight with the embedding."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.body = nn.Linear(DIM, DIM)
        self.decoder = nn.Linear(DIM, VOCAB)
        self.decoder.weight = self.embedding.weight


def names_of(groups):
    return [group["names"] for group in groups]


def batch(n=6, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, length), generator=g), torch.randint(0, 2, (n,), generator=g)


def snapshot(model):
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


# --- param_groups ------------------------------------------------------------------------------------


def test_groups_by_name_lr_and_decay():
    groups = param_groups(Toy(), 1e-3, head="fc", weight_decay=0.01)
    assert names_of(groups) == [
        ["embedding.weight", "body.weight"],
        ["body.bias", "norm.weight", "norm.bias"],
        ["fc.weight"],
        ["fc.bias"],
    ]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2])
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.0]
    for group in groups:
        assert set(group) == {"params", "lr", "weight_decay", "names"}
        assert all(p.ndim <= 1 for p in group["params"]) == (group["weight_decay"] == 0.0)


def test_frozen_params_absent_and_every_trainable_param_once():
    model = Toy()
    groups = param_groups(model, 0.1, head=["fc", "norm"], weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in trainable_parameters(model)}
    assert id(model.frozen_embedding.weight) not in ids
    names = [n for g in groups for n in g["names"]]
    assert not any(n.startswith("frozen_embedding") for n in names)
    # group names line up with their tensors
    params = dict(model.named_parameters())
    assert all(params[n] is p for g in groups for n, p in zip(g["names"], g["params"], strict=True))


def test_no_decay_groups_hold_exactly_the_1d_params():
    model = Toy()
    groups = param_groups(model, 0.1, weight_decay=0.05)
    no_decay = [n for g in groups if g["weight_decay"] == 0 for n in g["names"]]
    one_d = [n for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    assert no_decay == one_d == ["body.bias", "norm.weight", "norm.bias", "fc.bias"]


def test_fewer_groups_when_not_needed():
    model = Toy()
    everything = [n for n, p in model.named_parameters() if p.requires_grad]
    for groups in (
        param_groups(model, 0.1, head="fc", head_lr_mult=1),
        param_groups(model, 0.1, head=None),
        param_groups(model, 0.1, head=None, weight_decay=0.1, no_decay_1d=False),
    ):
        assert len(groups) == 1 and groups[0]["names"] == everything and groups[0]["lr"] == 0.1
    # no weight decay at all: no decay split, only the head split
    groups = param_groups(model, 0.1, head="fc")
    assert names_of(groups) == [everything[:-2], ["fc.weight", "fc.bias"]]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0]


def test_head_by_nested_prefix_does_not_match_lookalike_names():
    model = nn.Sequential(nn.Linear(3, 3), nn.ModuleDict({"fc": nn.Linear(3, 3), "fc2": nn.Linear(3, 3)}))
    groups = param_groups(model, 1.0, head="1.fc")
    assert names_of(groups) == [
        ["0.weight", "0.bias", "1.fc2.weight", "1.fc2.bias"],
        ["1.fc.weight", "1.fc.bias"],
    ]


def test_bad_head_name_names_it_and_lists_children():
    with pytest.raises(SentimentError) as err:
        param_groups(Toy(), 0.1, head=("fc", "classifier"))
    message = str(err.value)
    assert "'classifier'" in message and "embedding, frozen_embedding, body, norm, fc" in message
    assert "\n" not in message
    with pytest.raises(SentimentError, match="frozen"):
        param_groups(Toy(), 0.1, head="frozen_embedding")


def test_nothing_trainable_and_bad_numbers_are_user_errors():
    with pytest.raises(SentimentError, match="nothing to train"):
        param_groups(freeze(Toy()), 0.1)
    with pytest.raises(SentimentError, match="weight_decay"):
        param_groups(Toy(), 0.1, weight_decay=-1)
    with pytest.raises(SentimentError, match="lr"):
        param_groups(Toy(), float("nan"))


def test_tied_weights_appear_once():
    model = TiedLM()
    groups = param_groups(model, 0.1, head="decoder", weight_decay=0.1)
    assert names_of(groups) == [["embedding.weight", "body.weight"], ["body.bias"], ["decoder.bias"]]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable_parameters(model)) == 4
    assert count_parameters(model) == (VOCAB * DIM + DIM * DIM + DIM + VOCAB,) * 2
    model.decoder.bias = None  # the head is now nothing but the shared weight, grouped with the embedding
    with pytest.raises(SentimentError, match="'decoder'.*shared with another module"):
        param_groups(model, 0.1, head="decoder")


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda groups: torch.optim.SGD(groups, lr=0.5, momentum=0.9),
        lambda groups: torch.optim.Adam(groups),
        lambda groups: torch.optim.AdamW(groups, lr=1.0),
    ],
)
def test_optimizers_accept_groups_and_step_only_trainable_params(make_optimizer):
    torch.manual_seed(0)
    model = Toy()
    model.body.requires_grad_(False)
    groups = param_groups(model, 0.05, head="fc", weight_decay=0.01)
    optimizer = make_optimizer(groups)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.05, 0.5, 0.5])
    assert [g["names"] for g in optimizer.param_groups] == names_of(groups)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids, labels = batch()
    nn.functional.cross_entropy(model(ids), labels).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "frozen_embedding.weight",
        "body.weight",
        "body.bias",
    }


# --- counting and freezing ---------------------------------------------------------------------------


def test_count_and_trainable_parameters():
    model = Toy(classes=3)
    total = 2 * VOCAB * DIM + (2 * DIM * HIDDEN + HIDDEN) + 2 * HIDDEN + (HIDDEN * 3 + 3)
    assert count_parameters(model) == (total - VOCAB * DIM, total)
    assert trainable_parameters(model) == [p for n, p in model.named_parameters() if n != "frozen_embedding.weight"]


def test_freeze_unfreeze_and_but():
    model = Toy()
    assert freeze(model) is model and trainable_parameters(model) == [] and count_parameters(model)[0] == 0
    assert unfreeze(model) is model
    assert all(p.requires_grad for p in model.parameters())  # including the embedding that started frozen

    freeze(model, but=("fc",))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    freeze(model, but="norm")  # `but` params become trainable; everything else, fc included, freezes
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["norm.weight", "norm.bias"]
    freeze(model, but=["fc.bias", "body"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "body.weight",
        "body.bias",
        "fc.bias",
    ]

    lookalike = nn.ModuleDict({"fc": nn.Linear(2, 2), "fc2": nn.Linear(2, 2)})
    freeze(lookalike, but="fc")
    assert [n for n, p in lookalike.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_freeze_but_unknown_name_is_a_user_error():
    model = Toy()
    with pytest.raises(SentimentError, match="'head'.*embedding, frozen_embedding, body, norm, fc"):
        freeze(model, but="head")
    assert model.embedding.weight.requires_grad  # nothing changed


def test_freeze_keeps_a_tied_tensor_trainable_if_any_of_its_names_is_kept():
    model = freeze(TiedLM(), but="decoder")
    assert model.embedding.weight.requires_grad and not model.body.weight.requires_grad


def test_frozen_batchnorm_updates_running_stats_unless_set_to_eval():
    model = freeze(Toy(), but="fc").train()
    ids, _ = batch()
    model(ids)
    assert not torch.equal(model.norm.running_mean, torch.zeros(HIDDEN))  # frozen, yet it moved

    model = set_bn_eval(freeze(Toy(), but="fc").train())
    assert model.training and not model.norm.training
    model(ids)
    assert torch.equal(model.norm.running_mean, torch.zeros(HIDDEN))

    model = set_bn_eval(Toy().train())  # a trainable BatchNorm stays in train mode
    assert model.norm.training


# --- load_matching -----------------------------------------------------------------------------------


def pretrained(classes=5, seed=1):
    torch.manual_seed(seed)
    model = Toy(classes)
    model.train()(batch(seed=seed)[0])  # real running statistics in the BatchNorm buffers
    return model.state_dict()


def test_partial_load_with_a_new_head():
    checkpoint = pretrained(classes=5)
    model = Toy(classes=2)
    before = snapshot(model)
    report = load_matching(model, checkpoint)

    assert report.mismatched == [("fc.weight", (2, HIDDEN), (5, HIDDEN)), ("fc.bias", (2,), (5,))]
    assert report.missing == [] and report.unexpected == [] and not report.ok
    assert report.loaded == [k for k in checkpoint if not k.startswith("fc.")]
    after = model.state_dict()
    for name in report.loaded:
        assert torch.equal(after[name], checkpoint[name]), name
    assert torch.equal(after["fc.weight"], before["fc.weight"]) and torch.equal(after["fc.bias"], before["fc.bias"])
    assert report.summary() == (
        f"loaded {len(report.loaded)} tensors; skipped: "
        f"shape mismatch fc.weight (2, {HIDDEN}) vs (5, {HIDDEN}), fc.bias (2,) vs (5,)"
    )


def test_missing_and_unexpected_keys_are_reported():
    checkpoint = dict(pretrained(classes=2))
    del checkpoint["norm.running_var"]
    checkpoint["extra.weight"] = torch.ones(3)
    checkpoint["epoch"] = 7  # non-tensor metadata the model has no slot for
    model = Toy(classes=2)
    before = snapshot(model)
    report = load_matching(model, checkpoint)
    assert report.missing == ["norm.running_var"] and report.unexpected == ["extra.weight", "epoch"]
    assert report.mismatched == [] and not report.ok
    assert torch.equal(model.norm.running_var, before["norm.running_var"])
    assert torch.equal(model.norm.running_mean, checkpoint["norm.running_mean"])
    assert report.summary() == (
        f"loaded {len(report.loaded)} tensors; skipped: missing norm.running_var; unexpected extra.weight, epoch"
    )


def test_exact_checkpoint_loads_everything():
    checkpoint = pretrained(classes=2)
    report = load_matching(Toy(classes=2), checkpoint)
    assert report.ok and report.loaded == list(checkpoint)
    assert report.summary() == f"loaded {len(checkpoint)} tensors; nothing skipped"
    assert LoadReport(loaded=["a"]).summary() == "loaded 1 tensor; nothing skipped"


def test_ddp_and_compile_prefixes_are_stripped():
    checkpoint = pretrained(classes=2)
    for prefix in ("module.", "module._orig_mod.", "_orig_mod."):
        model = Toy(classes=2)
        report = load_matching(model, {prefix + k: v for k, v in checkpoint.items()})
        assert report.ok, (prefix, report.summary())
        assert torch.equal(model.embedding.weight, checkpoint["embedding.weight"])


def test_strip_prefix():
    sd = {"module.a": 1, "module.b.c": 2, "other": 3}
    assert strip_prefix(sd, "module.") == {"a": 1, "b.c": 2, "other": 3}
    assert strip_prefix(sd, "nothing.") == sd
    with pytest.raises(SentimentError, match="collide"):
        strip_prefix({"module.a": 1, "a": 2}, "module.")


def test_keeps_the_model_dtype():
    checkpoint = pretrained(classes=2)
    model = Toy(classes=2).double()
    assert load_matching(model, checkpoint).ok
    assert model.body.weight.dtype == torch.float64
    assert torch.equal(model.body.weight, checkpoint["body.weight"].double())
    assert model.norm.num_batches_tracked.dtype == torch.long


def test_another_architecture_raises_one_line_and_loads_nothing():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 10))
    model = Toy()
    before = snapshot(model)
    with pytest.raises(SentimentError) as err:
        load_matching(model, cnn.state_dict())
    message = str(err.value)
    assert "\n" not in message
    assert "only 0 of 11 model tensors" in message and "11 missing" in message and "9 unexpected" in message
    assert "first: missing embedding.weight, missing frozen_embedding.weight, missing body.weight and" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    report = load_matching(model, cnn.state_dict(), min_match=0)
    assert report.loaded == [] and len(report.missing) == 11


def test_mostly_mismatched_shapes_raise_before_copying():
    model = Toy(classes=2)
    checkpoint = {
        k: torch.zeros(*v.shape, 2) if k.startswith(("embedding", "body", "fc")) else v
        for k, v in pretrained(classes=2).items()
    }
    before = snapshot(model)
    with pytest.raises(SentimentError, match=r"shape mismatch embedding.weight \(20, 8\) vs \(20, 8, 2\)"):
        load_matching(model, checkpoint, min_match=0.7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_strict_prefixes():
    checkpoint = pretrained(classes=5)
    report = load_matching(Toy(classes=2), checkpoint, strict_prefixes=("embedding", "body", "norm"))
    assert [m[0] for m in report.mismatched] == ["fc.weight", "fc.bias"]
    model = Toy(classes=2)
    before = snapshot(model)
    with pytest.raises(SentimentError, match=r"under fc: 2 tensor\(s\).*fc.weight"):
        load_matching(model, checkpoint, strict_prefixes="fc")
    assert torch.equal(model.embedding.weight, before["embedding.weight"])
    with pytest.raises(SentimentError, match="'layer4' matches no tensor"):
        load_matching(model, checkpoint, strict_prefixes="layer4")


def test_not_a_state_dict():
    with pytest.raises(SentimentError, match="state_dict"):
        load_matching(Toy(), [torch.zeros(1)])
    with pytest.raises(SentimentError, match="'body.weight' is a str"):
        load_matching(Toy(), {**pretrained(classes=2), "body.weight": "oops"})


# --- property ----------------------------------------------------------------------------------------

PARAM_NAMES = [n for n, _ in Toy().named_parameters(remove_duplicate=False)]


@settings(max_examples=60, deadline=None)
@given(
    mask=st.lists(st.booleans(), min_size=len(PARAM_NAMES), max_size=len(PARAM_NAMES)),
    head=st.sampled_from([None, "fc", "norm", ("body", "fc"), "embedding"]),
    head_lr_mult=st.sampled_from([1.0, 3.0, 10.0]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    no_decay_1d=st.booleans(),
)
def test_groups_partition_the_trainable_parameters(mask, head, head_lr_mult, weight_decay, no_decay_1d):
    model = Toy()
    params = dict(model.named_parameters())
    for name, trainable in zip(PARAM_NAMES, mask, strict=True):
        params[name].requires_grad_(trainable)
    trainable_names = [n for n, t in zip(PARAM_NAMES, mask, strict=True) if t]
    heads = () if head is None else (head,) if isinstance(head, str) else head
    in_head = {n for n in trainable_names if n.split(".")[0] in heads}

    kwargs = dict(head=head, head_lr_mult=head_lr_mult, weight_decay=weight_decay, no_decay_1d=no_decay_1d)
    head_unmatched = any(not any(n.split(".")[0] == h for n in trainable_names) for h in heads)
    if not trainable_names or head_unmatched:
        with pytest.raises(SentimentError):
            param_groups(model, 0.1, **kwargs)
        return

    groups = param_groups(model, 0.1, **kwargs)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(trainable_names)  # a partition: each trainable name exactly once
    assert sum(len(g["params"]) for g in groups) == len(trainable_names)
    assert all(g["params"] for g in groups)
    for group in groups:
        for name, p in zip(group["names"], group["params"], strict=True):
            assert params[name] is p and p.requires_grad
            split_head = head_lr_mult != 1 and name in in_head
            assert group["lr"] == pytest.approx(0.1 * head_lr_mult if split_head else 0.1)
            no_decay = no_decay_1d and p.ndim <= 1
            assert group["weight_decay"] == (0.0 if no_decay else weight_decay)
