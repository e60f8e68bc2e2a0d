"""The training loop honours the settings of its TrainingSetup."""

import torch
from torch import nn

from sentiment.runtime import Runtime
from sentiment.train import TrainingSetup, fit


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
