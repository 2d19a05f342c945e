"""state_dict round trips: a restored BayesAgg (and Method) continues identically."""

import copy
import io

import torch

import bayesagg
from conftest import TinyModel, make_batch


def run_steps(model, opt, agg, batches, groups, epochs):
    out = []
    for _ in range(epochs):
        for x, labels in batches:
            opt.zero_grad()
            h, outputs = model(x)
            out.append(agg.backward(bayesagg.task_losses(groups, outputs, labels), model.heads,
                                    h, labels))
            opt.step()
        agg.end_epoch()
    return out


def test_bayesagg_state_dict_continues_identically(mixed_groups):
    batches = [make_batch(mixed_groups, seed=s) for s in range(3)]
    model = TinyModel(mixed_groups)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    agg = bayesagg.BayesAgg(mixed_groups, dim=6, seed=4, multiclass_moments="mc", mc_samples=64,
                            binary_moments="mc")
    agg.reserve(36)
    for x, l in batches:
        agg.observe(model.trunk(x).detach(), l)
    agg.end_epoch()
    run_steps(model, opt, agg, batches, mixed_groups, 1)
    # Mid-epoch snapshot: after one step of the second epoch.
    x, labels = batches[0]
    opt.zero_grad()
    h, outputs = model(x)
    agg.backward(bayesagg.task_losses(mixed_groups, outputs, labels), model.heads, h, labels)
    opt.step()

    buf = io.BytesIO()
    torch.save({"agg": agg.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()},
               buf)
    model2 = copy.deepcopy(model)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    buf.seek(0)
    saved = torch.load(buf)
    agg2 = bayesagg.BayesAgg(mixed_groups, dim=6, seed=99, multiclass_moments="mc",
                             mc_samples=64, binary_moments="mc")
    agg2.load_state_dict(saved["agg"])
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    counters = ("steps", "full_posteriors", "jitter_events", "max_jitter")
    assert [agg2.stats[k] for k in counters] == [agg.stats[k] for k in counters]

    a = run_steps(model, opt, agg, batches[1:], mixed_groups, 1) + \
        run_steps(model, opt, agg, batches, mixed_groups, 1)
    b = run_steps(model2, opt2, agg2, batches[1:], mixed_groups, 1) + \
        run_steps(model2, opt2, agg2, batches, mixed_groups, 1)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert agg.stats == agg2.stats


def test_method_state_dict_keeps_counters(mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    m = bayesagg.method("famo", mixed_groups, 6, seed=1)
    for _ in range(2):
        h, outputs = model(x)
        losses = bayesagg.task_losses(mixed_groups, outputs, labels)
        m.backward(losses, representation=h, heads=model.heads, labels=labels)
        m.after_step(losses.detach() * 0.9)
    m.end_epoch()
    h, outputs = model(x)
    losses = bayesagg.task_losses(mixed_groups, outputs, labels)
    m.backward(losses, representation=h, heads=model.heads, labels=labels)
    m.after_step(losses.detach() * 0.9)
    state = m.state_dict()
    m2 = bayesagg.method("famo", mixed_groups, 6, seed=1)
    m2.load_state_dict(state)
    assert (m2.epoch, m2.step) == (1, 1)
    model.zero_grad()
    h, outputs = model(x)
    m.backward(bayesagg.task_losses(mixed_groups, outputs, labels), representation=h)
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h, outputs = model(x)
    m2.backward(bayesagg.task_losses(mixed_groups, outputs, labels), representation=h)
    g2 = [p.grad.clone() for p in model.parameters()]
    for u, v in zip(g1, g2):
        assert torch.equal(u, v)
