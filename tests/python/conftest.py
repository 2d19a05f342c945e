"""Shared helpers of the Python package's tests (run by CTest as `python_tests`, or by hand:
`PYTHONPATH=build/python /usr/bin/python3 -m pytest tests/python`)."""

import os
from pathlib import Path

import pytest
import torch

import bayesagg

ROOT = Path(__file__).resolve().parents[2]


def fixture_dir() -> Path:
    return Path(os.environ.get("BAYESAGG_FIXTURES")
                or os.environ.get("BAYESAGG_DEFAULT_FIXTURES")
                or ROOT / "tests" / "fixtures")


def fixture_files():
    return sorted(fixture_dir().glob("*.json"))


def cli_path() -> Path:
    """The `bayesagg` CLI next to the package's build tree (CTest sets BAYESAGG_CLI)."""
    if os.environ.get("BAYESAGG_CLI"):
        return Path(os.environ["BAYESAGG_CLI"])
    return Path(bayesagg.__file__).resolve().parents[2] / "bayesagg"


class TinyModel(torch.nn.Module):
    """A shared MLP trunk and one nn.Linear head per task group."""

    def __init__(self, groups, in_dim=5, dim=6, seed=0):
        super().__init__()
        gen = torch.manual_seed(seed)
        del gen
        self.trunk = torch.nn.Sequential(torch.nn.Linear(in_dim, 8), torch.nn.Tanh(),
                                         torch.nn.Linear(8, dim), torch.nn.ELU())
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, g.head_rows) for g in groups)

    def forward(self, x):
        h = self.trunk(x)
        return h, [head(h) for head in self.heads]


def make_batch(groups, batch=12, in_dim=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_dim, generator=g)
    labels = []
    for grp in groups:
        if grp.type == "regression":
            labels.append(torch.randn(batch, grp.outputs, generator=g))
        elif grp.type == "binary":
            labels.append(torch.randint(0, 2, (batch, grp.outputs), generator=g).float())
        else:
            labels.append(torch.randint(0, grp.outputs, (batch,), generator=g))
    return x, labels


@pytest.fixture
def mixed_groups():
    return bayesagg.parse_groups("regression:2,binary:3,multiclass:4")
