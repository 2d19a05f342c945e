"""One training step driven from Python (the CLI's model and data, bayesagg.method, torch.optim.Adam,
the trainer's head clipping) equals the C++ trainer's step bit for bit: same initial weights, same
batch, same method state (issue 11)."""

import pytest
import torch

import bayesagg
from bayesagg import _C


def grad_norm(params):
    """As the trainer: the norm of the per-parameter norms, in float64."""
    norms = [p.grad.norm().double() for p in params if p.grad is not None]
    return torch.stack(norms).norm()


def clip_grads(params, total_norm, max_norm):
    coef = (max_norm / (total_norm + 1e-6)).clamp_max(1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.dtype))


@pytest.mark.filterwarnings("ignore:BayesAgg. no features were collected")
@pytest.mark.parametrize("method", ["bayesagg", "ls", "nashmtl"])
def test_one_step_equals_the_trainer(method, tmp_path):
    seed, n, benchmark = 5, 64, "synthetic-regression"
    common = dict(benchmark=benchmark, method=method, epochs=1, train_subset=n, batch_size=n,
                  seed=seed, threads=1, progress="none", prefetch=0, ls_epochs=0)
    summary = bayesagg.train(out=str(tmp_path / "run"), **common)
    assert summary["epochs_completed"] == 1

    # The same step from Python.
    inputs, labels, groups, input_shape = _C._embedded_train_split(benchmark, 0, n)
    model = _C._Model(input_shape, groups, "auto", 64, _C.derive_seed(seed, 1))
    trunk, heads = model.trunk_parameters(), model.head_parameters()
    opt = torch.optim.Adam([{"params": trunk}, {"params": heads}], lr=1e-3)
    m = bayesagg.method(method, groups, 64, seed=seed, ls_epochs=0)
    m.reserve(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_C.derive_seed(seed, 2)))
    x, y = inputs.index_select(0, order), [l.index_select(0, order) for l in labels]
    opt.zero_grad()
    h = model.representation(x)
    losses = bayesagg.task_losses(groups, model.head_outputs(h), y)
    m.backward(losses, representation=h, heads=model.heads(), labels=y,
               shared_parameters=trunk)
    clip_grads(heads, torch.stack([grad_norm(heads[2 * g:2 * g + 2])
                                   for g in range(len(groups))]).norm(), 10.0)
    opt.step()

    trained = _C._Model(input_shape, groups, "auto", 64, 0)
    trained.load(str(tmp_path / "run" / "best_model.pt"))
    ours = trunk + heads
    theirs = trained.trunk_parameters() + trained.head_parameters()
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a.detach(), b.detach()), (method, i, (a - b).abs().max().item())
