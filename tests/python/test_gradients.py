"""Gradients land on the user's nn.Module parameters: LS equals a pure-PyTorch autograd reference,
BayesAgg-MTL gives the heads the gradient of the sum of losses and the trunk the aggregated
dL/dh, and every method of make_method leaves finite gradients."""

import copy

import pytest
import torch
import torch.nn.functional as F

import bayesagg
from conftest import TinyModel, make_batch


def reference_losses(groups, outputs, labels):
    """The per-task losses in plain PyTorch (docs: regression (o - y)^2 per output, BCE with
    logits per binary task, cross-entropy per multiclass group; batch means)."""
    parts = []
    for g, o, y in zip(groups, outputs, labels):
        if g.type == "regression":
            parts.append(((o - y) ** 2).mean(dim=0))
        elif g.type == "binary":
            parts.append(F.binary_cross_entropy_with_logits(o, y, reduction="none").mean(dim=0))
        else:
            parts.append(F.cross_entropy(o, y).reshape(1))
    return torch.cat(parts)


def test_task_losses_equal_pytorch(mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    _, outputs = model(x)
    got = bayesagg.task_losses(mixed_groups, outputs, labels)
    want = reference_losses(mixed_groups, outputs, labels)
    assert got.shape == (sum(g.num_tasks for g in mixed_groups),)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert got.requires_grad


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_ls_gradients_equal_autograd(mixed_groups):
    model = TinyModel(mixed_groups)
    ref = copy.deepcopy(model)
    x, labels = make_batch(mixed_groups)

    h, outputs = model(x)
    m = bayesagg.method("ls", mixed_groups, dim=6)
    m.backward(losses=bayesagg.task_losses(mixed_groups, outputs, labels), representation=h,
               heads=model.heads, labels=labels, shared_parameters=model.trunk.parameters())

    _, ref_outputs = ref(x)
    reference_losses(mixed_groups, ref_outputs, labels).sum().backward()
    got, want = grads(model), grads(ref)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bayesagg_heads_get_the_sum_and_the_trunk_gets_dl_dh(mixed_groups):
    model = TinyModel(mixed_groups)
    ref = copy.deepcopy(model)
    x, labels = make_batch(mixed_groups)
    agg = bayesagg.BayesAgg(mixed_groups, dim=6, seed=1)
    # One epoch of data for the full-data posteriors.
    with torch.no_grad():
        agg.observe(model.trunk(x), labels)
    agg.end_epoch()

    h, outputs = model(x)
    dl_dh = agg.backward(bayesagg.task_losses(mixed_groups, outputs, labels), model.heads, h,
                         labels)
    assert dl_dh.shape == h.shape and not dl_dh.requires_grad

    h_ref, ref_outputs = ref(x)
    losses = reference_losses(mixed_groups, ref_outputs, labels)
    head_params = [p for head in ref.heads for p in head.parameters()]
    want_heads = torch.autograd.grad(losses.sum(), head_params, retain_graph=True)
    want_trunk = torch.autograd.grad(h_ref, list(ref.trunk.parameters()), grad_outputs=dl_dh)
    got_heads = [p.grad for head in model.heads for p in head.parameters()]
    for g, w in zip(got_heads, want_heads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    for g, w in zip([p.grad for p in model.trunk.parameters()], want_trunk):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    s = agg.stats
    assert s["steps"] == 1 and s["full_posteriors"] == 1 and s["dL_dh_norm"] > 0


@pytest.mark.filterwarnings("ignore:BayesAgg. no features were collected")
@pytest.mark.parametrize("name", bayesagg.method_names())
def test_every_method_leaves_finite_gradients(name, mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    m = bayesagg.method(name, mixed_groups, dim=6, seed=0, ls_epochs=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(2):
        for step in range(2):
            opt.zero_grad()
            h, outputs = model(x)
            losses = bayesagg.task_losses(mixed_groups, outputs, labels)
            m.backward(losses=losses, representation=h, heads=model.heads, labels=labels,
                       shared_parameters=model.trunk.parameters())
            for pname, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
            opt.step()
            if "losses_after_step" in m.needs:
                with torch.no_grad():
                    _, outputs = model(x)
                    m.after_step(bayesagg.task_losses(mixed_groups, outputs, labels))
        m.end_epoch()
    assert m.epoch == 2 and m.step == 0


def test_missing_arguments_are_named(mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    h, outputs = model(x)
    losses = bayesagg.task_losses(mixed_groups, outputs, labels)
    with pytest.raises(ValueError, match="shared_parameters"):
        bayesagg.method("mgda", mixed_groups, 6).backward(losses, heads=model.heads)
    with pytest.raises(ValueError, match="labels"):
        bayesagg.method("bayesagg", mixed_groups, 6).backward(losses, representation=h,
                                                              heads=model.heads)
    with pytest.raises(ValueError, match="shared_parameters must not contain"):
        bayesagg.method("mgda", mixed_groups, 6).backward(
            losses, heads=model.heads, shared_parameters=model.parameters())
