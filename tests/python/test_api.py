"""Arguments, errors and warnings: ValueError naming the argument, TypeError for unknown
keywords, RuntimeError with the library's message, TORCH_WARN as Python warnings; and the
trainer through bayesagg.train equal to the `bayesagg train` command."""

import json
import subprocess
import warnings

import pytest
import torch

import bayesagg
from conftest import TinyModel, cli_path, make_batch


def test_groups():
    groups = bayesagg.parse_groups("regression:1,binary:20,multiclass:5")
    assert [g.type for g in groups] == ["regression", "binary", "multiclass"]
    assert [g.num_tasks for g in groups] == [1, 20, 1]
    assert [g.head_rows for g in groups] == [1, 20, 5]
    assert str(groups[2]) == "multiclass:5"
    assert groups[0] == bayesagg.TaskGroup("regression", 1)
    assert repr(groups[1]) == "TaskGroup('binary', 20)"
    with pytest.raises(ValueError, match="groups.*unknown task group type 'foo'"):
        bayesagg.parse_groups("foo:3")
    with pytest.raises(ValueError, match="outputs"):
        bayesagg.TaskGroup("multiclass", 1)


@pytest.mark.parametrize("kwargs, name", [
    ({"gamma_reg": -1.0}, "gamma_reg"),
    ({"gamma_cls": "abc"}, "gamma_cls"),
    ({"s_cls": -0.5}, "s_cls"),
    ({"mc_samples": 1}, "mc_samples"),
    ({"multiclass_moments": "exact"}, "multiclass_moments"),
    ({"binary_moments": "rb"}, "binary_moments"),
    ({"rb_samples": 15}, "rb_samples"),
    ({"quadrature_points": 1000}, "quadrature_points"),
    ({"seed": -1}, "seed"),
    ({"chunk_rows": 0}, "chunk_rows"),
])
def test_bad_bayesagg_options_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"invalid {name}="):
        bayesagg.BayesAgg("regression:1,multiclass:3", 4, **kwargs)


def test_options_reach_the_library():
    agg = bayesagg.BayesAgg("multiclass:3", 4, gamma=0.5, gamma_cls=0.25, s_reg=0.7,
                            rb_samples=32, multiclass_moments="mc", seed=5, antithetic=False)
    text = repr(agg)
    for part in ("gamma_reg=0.5", "gamma_cls=0.25", "s_reg=0.7", "rb_samples=32",
                 "multiclass_moments=mc", "seed=5", "antithetic=0"):
        assert part in text, text


def test_unknown_keywords_are_type_errors():
    with pytest.raises(TypeError, match="unexpected keyword argument 'gama'"):
        bayesagg.BayesAgg("regression:1", 4, gama=1.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        bayesagg.BayesAgg("regression:1", 4, lr=1.0)      # a trainer setting, not BayesAgg's
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        bayesagg.method("ls", "regression:1", 4, epochs=3)
    with pytest.raises(TypeError, match="gamma_reg must be"):
        bayesagg.BayesAgg("regression:1", 4, gamma_reg=[1.0])


def test_method_arguments():
    assert "bayesagg" in bayesagg.method_names() and "nashmtl" in bayesagg.method_names()
    with pytest.raises(ValueError, match="name: unknown method 'nope'"):
        bayesagg.method("nope", "regression:1", 4)
    with pytest.raises(ValueError, match="invalid cagrad_c=-1"):
        bayesagg.method("cagrad", "regression:1,regression:1", 4, cagrad_c=-1)
    with pytest.raises(ValueError, match="invalid nashmtl_update_every=0"):
        bayesagg.method("nashmtl", "regression:2", 4, nashmtl_update_every=0)
    m = bayesagg.method("bayesagg", "multiclass:3", 4, gamma=0.1, ls_epochs=2)
    assert m.name == "bayesagg" and "features_and_labels" in m.needs


def test_aggregate_arguments():
    with pytest.raises(ValueError, match="moments must be mc, exact"):
        bayesagg.aggregate({"name": "x"}, moments="bad")
    with pytest.raises(ValueError, match="mc_samples"):
        bayesagg.aggregate({"name": "x"}, mc_samples=1)
    with pytest.raises(ValueError, match="problem: "):
        bayesagg.aggregate({"name": "x"})


def test_backward_errors(mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    agg = bayesagg.BayesAgg(mixed_groups, 6)
    h, outputs = model(x)
    losses = bayesagg.task_losses(mixed_groups, outputs, labels)
    with pytest.raises(ValueError, match="heads: expected 3"):
        agg.backward(losses, model.heads[:2], h, labels)
    with pytest.raises(ValueError, match="labels: expected 3"):
        agg.backward(losses, model.heads, h, labels[:1])
    with pytest.raises(TypeError, match=r"heads\[0\]"):
        agg.backward(losses, ["a", "b", "c"], h, labels)
    heads = list(model.heads[:2]) + [torch.nn.Linear(6, 5)]
    # The library's own message, as a RuntimeError.
    with pytest.raises(RuntimeError, match=r"head of group 2 \(multiclass:4\) must be \[4, 6\]"):
        agg.backward(losses, heads, h, labels)


def test_library_warnings_are_python_warnings(mixed_groups):
    model = TinyModel(mixed_groups)
    x, labels = make_batch(mixed_groups)
    agg = bayesagg.BayesAgg(mixed_groups, 6)
    h, outputs = model(x)
    with pytest.warns(UserWarning, match="no features were collected in a previous epoch"):
        agg.backward(bayesagg.task_losses(mixed_groups, outputs, labels), model.heads, h, labels)
    # A warning filter that turns it into an error raises it.
    agg2 = bayesagg.BayesAgg(mixed_groups, 6)
    h, outputs = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="no features were collected"):
            agg2.backward(bayesagg.task_losses(mixed_groups, outputs, labels), model.heads, h,
                          labels)


def test_train_bad_arguments():
    with pytest.raises(ValueError, match="invalid epochs=0"):
        bayesagg.train(epochs=0)
    with pytest.raises(ValueError, match="benchmark: unknown benchmark 'nope'"):
        bayesagg.train(benchmark="nope")
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        bayesagg.train(epoch=1)


def test_train_equals_the_cli(tmp_path):
    cli = cli_path()
    if not cli.exists():
        pytest.skip(f"no CLI at {cli}")
    common = dict(benchmark="synthetic-regression", method="bayesagg", epochs=2,
                  train_subset=512, batch_size=128, seed=3, threads=1, progress="none",
                  prefetch=0)
    summary = bayesagg.train(out=str(tmp_path / "py"), **common)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
    subprocess.run([str(cli), "train", "--out", str(tmp_path / "cli")] + args, check=True,
                   capture_output=True)
    with open(tmp_path / "cli" / "summary.json") as f:
        want = json.load(f)
    assert summary["epochs_completed"] == 2
    assert summary["test"] == want["test"] and summary["val"] == want["val"]
    assert summary["best_epoch"] == want["best_epoch"]
