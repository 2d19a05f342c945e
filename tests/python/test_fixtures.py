"""Every public fixture through bayesagg.aggregate: equal to the `bayesagg aggregate` command's
answer, and within the C++ tests' tolerances of the reference's (tests/bayes/fixture_test.cpp)."""

import json
import subprocess

import pytest
import torch

import bayesagg
from conftest import cli_path, fixture_files

FILES = fixture_files()


def rel_err(a, b):
    a = torch.tensor(a, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)
    return ((a - b).norm() / b.norm()).item()


def load(path):
    with open(path) as f:
        return json.load(f)


def test_public_fixtures_are_present():
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_equals_the_cli(path, tmp_path):
    cli = cli_path()
    if not cli.exists():
        pytest.skip(f"no CLI at {cli}")
    out = tmp_path / "out.json"
    args = ["--mc-samples", "4000", "--moments", "mc", "--multiclass-moments", "rb",
            "--rb-samples", "64", "--seed", "3", "--threads", "1"]
    subprocess.run([str(cli), "aggregate", "--problem", str(path), "--out", str(out)] + args,
                   check=True, capture_output=True)
    want = load(out)
    got = bayesagg.aggregate(load(path), mc_samples=4000, moments="mc", multiclass_moments="rb",
                             rb_samples=64, seed=3)
    # Same library, same seed: the same numbers (JSON round trip included).
    assert got == want


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_within_the_reference_tolerances(path):
    fixture = load(path)
    types = [g["type"] for g in fixture["groups"]]
    expected = fixture["expected"]
    if all(t == "regression" for t in types):
        got = bayesagg.aggregate(fixture)
        tol = {"regression": 1e-10}
    elif all(t == "binary_tasks" for t in types):
        # Exact binary moments: within 5 x the fixture's own sampling error.
        got = bayesagg.aggregate(path, moments="exact")
        tol = {"binary_tasks": None}
    else:
        # Multiclass: Rao-Blackwellised, 2^15 samples: 5 x mc_rel_std + 2e-3.
        got = bayesagg.aggregate(fixture, multiclass_moments="rb", rb_samples=1 << 15, seed=2)
        tol = {"regression": 1e-10, "multiclass": None}
    for g, (t, eg) in enumerate(zip(types, expected["groups"])):
        og = got["groups"][g]
        for key in ("grad_mean", "grad_var"):
            bound = tol[t] if tol[t] is not None else (
                5 * eg["mc_rel_std"][key] + (2e-3 if t == "multiclass" else 0.0))
            assert rel_err(og[key], eg[key]) <= bound, (path.name, g, key)
        for key in ("posterior_mean", "posterior_cov_diag", "full_data_posterior_mean"):
            assert rel_err(og[key], eg[key]) <= 1e-9, (path.name, g, key)
    if all(t == "regression" for t in types):
        assert rel_err(got["dL_dh"], expected["dL_dh"]) <= 1e-10


def test_a_path_and_tensors_are_accepted():
    path = next(p for p in FILES if p.stem == "reg_o1")
    fixture = load(path)
    as_tensors = dict(fixture, features=torch.tensor(fixture["features"], dtype=torch.float64))
    assert bayesagg.aggregate(str(path)) == bayesagg.aggregate(as_tensors)
