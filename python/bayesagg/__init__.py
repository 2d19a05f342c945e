"""bayesagg: multi-task gradient aggregation for PyTorch, backed by the bayesagg C++ library.

BayesAgg-MTL (Achituve et al., ICML 2024) and 18 baselines for your own training loop; the
computation runs in the library (LibTorch, the same ``libtorch*.so`` that Debian's
``python3-torch`` loads) with the GIL released, and the gradients land on your ``nn.Module``'s
parameters::

    import torch, bayesagg

    groups = bayesagg.parse_groups("multiclass:10,multiclass:10")
    agg = bayesagg.BayesAgg(groups, dim=64)
    for epoch in range(epochs):
        for x, labels in loader:                      # labels: one tensor per group
            opt.zero_grad()
            h = trunk(x)                              # [B, 64], attached to the trunk's graph
            losses = bayesagg.task_losses(groups, [head(h) for head in heads], labels)
            agg.backward(losses, heads, h, labels)    # .grad on the heads and the trunk
            opt.step()
        agg.end_epoch()

Any other method by name, with one call shape (in the spirit of TorchJD's ``mtl_backward``)::

    m = bayesagg.method("nashmtl", groups, dim=64)
    m.backward(losses=losses, representation=h, heads=heads, labels=labels,
               shared_parameters=trunk.parameters())

Keyword options are named as the ``bayesagg train`` command-line options with underscores
(``--gamma-reg`` is ``gamma_reg``); a bad value raises ``ValueError`` naming the argument, a
library failure ``RuntimeError`` with the library's message, and the library's warnings arrive
as Python warnings.
"""

from __future__ import annotations

import json as _json
import os as _os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch  # first: loads the libtorch that bayesagg._C links against

from . import _C
from ._C import TaskGroup, method_names, retain_freed_memory

__all__ = [
    "TaskGroup",
    "parse_groups",
    "task_losses",
    "BayesAgg",
    "Method",
    "method",
    "method_names",
    "aggregate",
    "train",
    "settings",
    "retain_freed_memory",
]

__version__ = "0.1.0"

Groups = Union[str, Sequence[TaskGroup]]
HeadLike = Union[torch.nn.Linear, Tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------- helpers


def parse_groups(spec: str) -> List[TaskGroup]:
    """Parses a comma-separated list of task groups, e.g. ``"regression:1,multiclass:5"``.

    Group types: ``regression`` (o outputs), ``binary`` (o binary tasks; also ``binary_tasks``)
    and ``multiclass`` (one task with K classes). Raises ``ValueError`` for a malformed list.
    """
    if not isinstance(spec, str):
        raise TypeError(f"parse_groups(): spec must be a str, got {type(spec).__name__}")
    return _C.parse_groups(spec)


def _groups(groups: Groups, what: str) -> List[TaskGroup]:
    if isinstance(groups, str):
        return parse_groups(groups)
    try:
        out = list(groups)
    except TypeError:
        raise TypeError(f"{what}: groups must be a str such as 'regression:1,multiclass:5' or a "
                        f"sequence of TaskGroup, got {type(groups).__name__}") from None
    for i, g in enumerate(out):
        if not isinstance(g, TaskGroup):
            raise TypeError(f"{what}: groups[{i}] must be a TaskGroup, got {type(g).__name__}")
    if not out:
        raise ValueError(f"{what}: groups: no task groups")
    return out


def _text(name: str, value: Any, what: str) -> str:
    """A keyword argument's value as the registry's text (``apply_setting``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _text(name, value.item(), what)
    raise TypeError(f"{what}: {name} must be a bool, int, float or str, got {type(value).__name__}")


def _settings(options: Mapping[str, Any], what: str) -> List[Tuple[str, str]]:
    return [(k, _text(k, v, what)) for k, v in options.items() if v is not None]


def _head_pair(head: HeadLike, i: int, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(head, torch.nn.Linear):
        if head.bias is None:
            raise ValueError(f"{what}: heads[{i}] has no bias (the heads must be "
                             "nn.Linear(dim, rows) with bias=True)")
        return head.weight, head.bias
    if isinstance(head, (tuple, list)) and len(head) == 2 and all(
            isinstance(t, torch.Tensor) for t in head):
        return head[0], head[1]
    raise TypeError(f"{what}: heads[{i}] must be an nn.Linear or a (weight, bias) pair of tensors, "
                    f"got {type(head).__name__}")


def _heads(heads: Optional[Sequence[HeadLike]], groups: List[TaskGroup], what: str):
    if heads is None:
        return []
    if isinstance(heads, torch.nn.Module) and not isinstance(heads, torch.nn.ModuleList):
        heads = [heads]
    heads = list(heads)
    if len(heads) != len(groups):
        raise ValueError(f"{what}: heads: expected {len(groups)} (one per task group), got "
                         f"{len(heads)}")
    return [_head_pair(h, i, what) for i, h in enumerate(heads)]


def _losses(losses: Union[torch.Tensor, Sequence[torch.Tensor]], what: str) -> torch.Tensor:
    if isinstance(losses, torch.Tensor):
        if losses.dim() != 1:
            raise ValueError(f"{what}: losses must be a 1-D tensor of per-task losses [T], got "
                             f"shape {list(losses.shape)}")
        return losses
    try:
        parts = [l.reshape(-1) for l in losses]
    except (TypeError, AttributeError):
        raise TypeError(f"{what}: losses must be a tensor [T] or a sequence of tensors, got "
                        f"{type(losses).__name__}") from None
    if not parts:
        raise ValueError(f"{what}: losses: no losses")
    return torch.cat(parts)


def _labels(labels: Optional[Sequence[torch.Tensor]], groups: List[TaskGroup], what: str):
    if labels is None:
        return []
    if isinstance(labels, torch.Tensor):
        labels = [labels]
    labels = list(labels)
    if len(labels) != len(groups):
        raise ValueError(f"{what}: labels: expected {len(groups)} tensors (one per task group), "
                         f"got {len(labels)}")
    for i, l in enumerate(labels):
        if not isinstance(l, torch.Tensor):
            raise TypeError(f"{what}: labels[{i}] must be a tensor, got {type(l).__name__}")
    return labels


def _options_doc(scope: str) -> str:
    known = dict((k, h) for k, _, h in _C.settings())
    extra = {
        "seed": ("seed of the Monte-Carlo generator (default: 0)" if scope == "bayesagg" else
                 "seed of the method's random streams, derived as `bayesagg train --seed` "
                 "derives them (default: 0)"),
        "antithetic": "antithetic pairs in the rb estimator (default: True)",
        "mc_chunk": "samples per Monte-Carlo chunk, 0 = automatic (default: 0)",
        "chunk_rows": "rows per chunk of the full-data statistics (default: 4096)",
    }
    lines = []
    for k in _C.accepted_keywords(scope):
        text = extra[k] if scope != "train" and k in extra else known.get(k, "")
        lines.append(f"            {k}: {text}")
    return "\n".join(lines)


def settings() -> List[Tuple[str, str, str]]:
    """Every training setting as ``(keyword, value placeholder, help)``, in the order they apply.

    These are ``bayesagg train``'s options with underscores; ``train`` takes all of them,
    ``method`` the ones that configure methods and ``BayesAgg`` the BayesAgg-MTL ones.
    """
    return list(_C.settings())


def task_losses(groups: Groups, outputs: Sequence[torch.Tensor],
                labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """The per-task batch-mean losses ``[T]`` of the heads' outputs, as the trainer computes them.

    Regression: ``(output - y)^2`` per output (no 1/2); binary: BCE with logits per task;
    multiclass: cross-entropy (one task). ``outputs[g]`` is group g's head output ``[B, rows]``,
    ``labels[g]`` its labels (regression/binary ``[B, o]`` float, multiclass ``[B]`` int64).
    Differentiable.
    """
    gs = _groups(groups, "task_losses()")
    outputs = list(outputs)
    labels = _labels(labels, gs, "task_losses()")
    if len(outputs) != len(gs):
        raise ValueError(f"task_losses(): outputs: expected {len(gs)} (one per task group), got "
                         f"{len(outputs)}")
    return torch.cat([_C.task_losses(g, o, l) for g, o, l in zip(gs, outputs, labels)])


# ---------------------------------------------------------------------------- BayesAgg


class BayesAgg:
    """BayesAgg-MTL: Bayesian uncertainty for gradient aggregation (Achituve et al., ICML 2024).

    A Gaussian posterior over each task group's linear head turns every task's gradient with
    respect to the shared representation ``h`` into a distribution; the tasks are combined per
    example and per dimension by their precision. The heads get the ordinary gradient of the sum
    of the losses; the trunk gets the aggregated ``dL/dh``.

    The full-data posteriors of an epoch are built, at its first step, from the (detached)
    features and labels of the previous epoch's batches: call ``end_epoch()`` after every epoch.
    Before the first ``end_epoch()`` there is no data yet and the prior alone is used.

    Args:
        groups: the task groups (``"regression:1,multiclass:5"`` or a list of ``TaskGroup``);
            head g must be ``nn.Linear(dim, groups[g].head_rows)``.
        dim: width of the shared representation ``h``.
        **options: keyword options named as ``bayesagg train``'s. Defaults: the ``bayesagg``
            preset, this project's variant (``posterior="head"``, ``noise="balanced"``,
            ``weighting="task"``, ``scale="sum"``; docs/bayesagg.md); the authors' method is
            ``posterior="newton", noise="fixed", weighting="precision", scale="average"``.

{options}

    Raises:
        ValueError: a bad option value (the message names the argument).
        TypeError: an unknown option.
    """

    def __init__(self, groups: Groups, dim: int, **options: Any) -> None:
        self._groups = _groups(groups, "BayesAgg()")
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"BayesAgg(): dim must be an int, got {type(dim).__name__}")
        self._options = dict(options)
        self._impl = _C._BayesAgg(self._groups, dim, _settings(options, "BayesAgg()"))

    # -------------------------------------------------------------- properties
    @property
    def groups(self) -> List[TaskGroup]:
        """The task groups."""
        return list(self._impl.groups)

    @property
    def dim(self) -> int:
        """Width of the shared representation."""
        return self._impl.dim

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters and diagnostics: ``steps``, ``full_posteriors``, ``jitter_events``,
        ``max_jitter``, per group ``full_data_shift``, ``head_norm``, ``batch_shift``, and the last
        step's ``dL_dh_norm`` and ``ls_cosine`` (cosine between dL/dh and the LS gradient)."""
        return self._impl.stats

    def __repr__(self) -> str:
        groups = ",".join(str(g) for g in self._impl.groups)
        return f"bayesagg.BayesAgg('{groups}', dim={self.dim}, " + \
            self._impl.options_repr()[len("BayesAgg("):]

    # -------------------------------------------------------------- training
    def reserve(self, n: int) -> None:
        """Preallocates the epoch's feature storage for ``n`` training examples (optional)."""
        self._impl.reserve(int(n))

    def backward(self, losses: Union[torch.Tensor, Sequence[torch.Tensor]],
                 heads: Sequence[HeadLike], representation: torch.Tensor,
                 labels: Sequence[torch.Tensor]) -> torch.Tensor:
        """One training step's backward pass.

        Leaves the gradient of ``sum(losses)`` on the heads' parameters and backpropagates the
        aggregated ``dL/dh`` through ``representation`` into the trunk (``.grad`` accumulates, as
        ``Tensor.backward`` does). Builds the full-data posteriors first if this is the epoch's
        first step, and records the batch for the next epoch's.

        Args:
            losses: per-task batch-mean losses ``[T]`` (tasks of all groups in group order),
                attached to the graph; e.g. ``bayesagg.task_losses(groups, outputs, labels)``.
            heads: one ``nn.Linear(dim, rows)`` (or ``(weight, bias)``) per group, the heads
                that produced the losses from ``representation``.
            representation: the shared representation ``h`` ``[B, dim]``, attached to the trunk.
            labels: one tensor per group (regression/binary ``[B, o]`` float, multiclass ``[B]``
                int64).

        Returns:
            ``dL/dh`` ``[B, dim]`` (detached, in ``representation``'s dtype).
        """
        what = "BayesAgg.backward()"
        if not isinstance(representation, torch.Tensor):
            raise TypeError(f"{what}: representation must be a tensor, got "
                            f"{type(representation).__name__}")
        return self._impl.backward(_losses(losses, what), _heads(heads, self._groups, what),
                                   representation, _labels(labels, self._groups, what))

    def observe(self, features: torch.Tensor, labels: Sequence[torch.Tensor]) -> None:
        """Records a batch's (detached) features and labels for the next epoch's posteriors
        without a backward pass (e.g. during your own linear-scalarisation warm-up epochs)."""
        self._impl.observe(features.detach(), _labels(labels, self._groups, "BayesAgg.observe()"))

    def end_epoch(self) -> None:
        """Ends the epoch: what was observed becomes the data of the next full-data posteriors."""
        self._impl.end_epoch()

    def full_data_posterior_means(self) -> List[torch.Tensor]:
        """The current epoch's full-data posterior means, one per group (empty before its first
        step)."""
        return self._impl.full_data_posterior_means()

    # -------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        """Everything kept between steps (both epochs' features and labels, the full-data
        posteriors, the generator, the counters) as ``{"groups", "dim", "archive": bytes}``;
        ``torch.save`` can store it. A restored object continues identically."""
        return {
            "groups": ",".join(str(g) for g in self._impl.groups),
            "dim": self.dim,
            "archive": self._impl.save(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores what ``state_dict`` returned (for the same groups and dim)."""
        what = "BayesAgg.load_state_dict()"
        _check_state(state_dict, self._impl.groups, self.dim, what)
        self._impl.load(bytes(state_dict["archive"]))


def _check_state(state_dict: Mapping[str, Any], groups, dim: int, what: str) -> None:
    if not isinstance(state_dict, Mapping) or "archive" not in state_dict:
        raise ValueError(f"{what}: state_dict must be a dict returned by state_dict()")
    mine = ",".join(str(g) for g in groups)
    if state_dict.get("groups") != mine or state_dict.get("dim") != dim:
        raise ValueError(f"{what}: state_dict is for groups '{state_dict.get('groups')}' and dim "
                         f"{state_dict.get('dim')}, this object has '{mine}' and dim {dim}")


# ---------------------------------------------------------------------------- methods


class Method:
    """A multi-task method of the library (``ls``, ``bayesagg`` or a baseline), built by
    ``bayesagg.method(name, groups, dim, **options)``.

    Per step call ``backward(losses=..., representation=..., heads=..., labels=...,
    shared_parameters=...)``; it leaves ``.grad`` (accumulating) on the heads and the trunk. Call
    ``end_epoch()`` after every epoch; methods that need the losses after the optimiser's step
    (``"losses_after_step" in needs``, e.g. FAMO) also need ``after_step(losses)``.
    """

    def __init__(self, name: str, groups: Groups, dim: int, **options: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"method(): name must be a str, got {type(name).__name__}")
        self._groups = _groups(groups, "method()")
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"method(): dim must be an int, got {type(dim).__name__}")
        self._dim = dim
        self._impl = _C._Method(name, self._groups, dim, _settings(options, "method()"))

    @property
    def name(self) -> str:
        """The method's registry name."""
        return self._impl.name

    @property
    def needs(self) -> frozenset:
        """What ``backward`` needs: ``losses``, ``shared_grads`` (shared_parameters and heads),
        ``representation_grads`` (representation and heads), ``features_and_labels``
        (representation, heads and labels), ``losses_after_step`` (``after_step``)."""
        return frozenset(self._impl.needs)

    @property
    def epoch(self) -> int:
        """0-based epoch (advanced by ``end_epoch``)."""
        return self._impl.epoch

    @property
    def step(self) -> int:
        """0-based step within the epoch."""
        return self._impl.step

    @property
    def diagnostics(self) -> Dict[str, float]:
        """Numbers describing the last step (e.g. ``dL_dh_norm``)."""
        return dict(self._impl.diagnostics())

    def __repr__(self) -> str:
        return f"bayesagg.Method({self._impl.describe()})"

    def reserve(self, n: int) -> None:
        """Number of training examples per epoch (lets methods preallocate)."""
        self._impl.reserve(int(n))

    def backward(self, losses: Union[torch.Tensor, Sequence[torch.Tensor]], *,
                 representation: Optional[torch.Tensor] = None,
                 heads: Optional[Sequence[HeadLike]] = None,
                 labels: Optional[Sequence[torch.Tensor]] = None,
                 shared_parameters: Optional[Iterable[torch.Tensor]] = None) -> None:
        """Leaves the method's gradients in ``.grad`` of the heads and the shared parameters.

        Args:
            losses: per-task batch-mean losses ``[T]`` attached to the graph.
            representation: the shared representation ``h`` ``[B, dim]`` attached to the trunk.
            heads: the heads (one ``nn.Linear`` or ``(weight, bias)`` per group).
            labels: one tensor per group.
            shared_parameters: the trunk's parameters (not the heads').

        What is required depends on the method (``needs``); a missing argument raises
        ``ValueError``.
        """
        what = f"{self.name}.backward()"
        needs = self.needs
        required = []
        if needs & {"shared_grads", "representation_grads", "features_and_labels"}:
            required.append(("heads", heads))
        if "shared_grads" in needs:
            required.append(("shared_parameters", shared_parameters))
        if needs & {"representation_grads", "features_and_labels"}:
            required.append(("representation", representation))
        if "features_and_labels" in needs:
            required.append(("labels", labels))
        for arg, value in required:
            if value is None:
                raise ValueError(f"{what}: {arg} is required by method '{self.name}'")
        head_pairs = _heads(heads, self._groups, what)
        shared: List[torch.Tensor] = []
        if shared_parameters is not None:
            if isinstance(shared_parameters, torch.Tensor):
                shared_parameters = [shared_parameters]
            shared = [p for p in shared_parameters if p.requires_grad]
            head_ids = {id(t) for pair in head_pairs for t in pair}
            if any(id(p) in head_ids for p in shared):
                raise ValueError(f"{what}: shared_parameters must not contain the heads' "
                                 "parameters (pass the trunk's)")
        self._impl.backward(_losses(losses, what), representation, head_pairs,
                            _labels(labels, self._groups, what), shared)

    def after_step(self, losses: torch.Tensor) -> None:
        """The per-task losses ``[T]`` of the last step's batch after the optimiser's step
        (detached); needed by methods with ``"losses_after_step" in needs``."""
        self._impl.after_step(losses.detach())

    def end_epoch(self) -> None:
        """Ends the epoch (BayesAgg-MTL: the next full-data posteriors use this epoch's data)."""
        self._impl.end_epoch()

    def state_dict(self) -> Dict[str, Any]:
        """The method's state between steps and its epoch/step counters, as
        ``{"name", "groups", "dim", "archive": bytes}``."""
        return {
            "name": self.name,
            "groups": ",".join(str(g) for g in self._groups),
            "dim": self._dim,
            "archive": self._impl.save(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores what ``state_dict`` returned (same method, groups and dim)."""
        what = f"{self.name}.load_state_dict()"
        if isinstance(state_dict, Mapping) and state_dict.get("name") != self.name:
            raise ValueError(f"{what}: state_dict is for method '{state_dict.get('name')}'")
        _check_state(state_dict, self._groups, self._dim, what)
        self._impl.load(bytes(state_dict["archive"]))


def method(name: str, groups: Groups, dim: int, **options: Any) -> Method:
    """Builds a multi-task method by name (see ``method_names()``).

    Args:
        name: ``ls``, ``bayesagg``, or a baseline (``nashmtl``, ``pcgrad``, ``famo``, ...).
        groups: the task groups (``"regression:1,multiclass:5"`` or a list of ``TaskGroup``).
        dim: width of the shared representation.
        **options: the method options of ``bayesagg train`` with underscores (unused ones are
            ignored by the method), e.g. ``ls_epochs=1`` (BayesAgg-MTL's warm-up epochs),
            ``cagrad_c=0.4``, ``nashmtl_update_every=1``; ``seed`` derives the method's random
            streams exactly as ``bayesagg train --seed`` does. Accepted:

{options}
    """
    return Method(name, groups, dim, **options)


# ---------------------------------------------------------------------------- aggregate, train


def aggregate(problem: Union[Mapping[str, Any], str, _os.PathLike], *,
              mc_samples: Optional[int] = None, moments: str = "mc",
              multiclass_moments: str = "mc", rb_samples: Optional[int] = None,
              seed: int = 0) -> Dict[str, Any]:
    """Solves one aggregation problem in the fixture format, as ``bayesagg aggregate`` does.

    Args:
        problem: the problem as a dict (the fixtures' schema, tests/fixtures/README.md;
            ``expected`` is ignored), or the path of a problem JSON file.
        mc_samples: Monte-Carlo samples (default: the problem's ``hyper.num_mc_samples``).
        moments: binary-task moments, ``"mc"`` (the reference's sampling) or ``"exact"``.
        multiclass_moments: ``"mc"`` or ``"rb"`` (Rao-Blackwellised).
        rb_samples: logit samples of the rb estimator (default: the library's).
        seed: seed of the Monte-Carlo generator.

    Returns:
        The ``expected`` block as the command writes it: ``{"groups": [{"grad_mean",
        "grad_var", "posterior_mean", "posterior_cov_diag", "full_data_posterior_mean"}, ...],
        "dL_dh": ...}`` (nested lists of floats).
    """
    if isinstance(problem, (str, _os.PathLike)):
        with open(problem, encoding="utf-8") as f:
            text = f.read()
    elif isinstance(problem, Mapping):
        text = _json.dumps({k: v for k, v in problem.items() if k != "expected"},
                           default=_jsonable)
    else:
        raise TypeError(f"aggregate(): problem must be a dict or a path, got "
                        f"{type(problem).__name__}")
    for name, value in (("mc_samples", mc_samples), ("rb_samples", rb_samples)):
        if value is not None and (not isinstance(value, int) or value < 2):
            raise ValueError(f"aggregate(): {name} must be an int >= 2 (or None), got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"aggregate(): seed must be a non-negative int, got {seed!r}")
    out = _C.aggregate(text, mc_samples or 0, moments, multiclass_moments, rb_samples or 0, seed)
    return _json.loads(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"aggregate(): {type(value).__name__} is not JSON serialisable")


def train(*, verbose: bool = False, **options: Any) -> Dict[str, Any]:
    """Trains a run with the library's trainer, as ``bayesagg train`` does, and returns its
    summary (``summary.json`` as a dict: ``test``, ``val`` metrics of the best epoch, ``delta_m``,
    ``epochs_completed``, ``epoch_train_seconds``, ...). The run folder (``out``, default
    ``runs/<benchmark>-<method>-seed<S>``) gets the usual records.

    Args:
        verbose: print the trainer's log (epoch summaries and the final table) to stdout.
        **options: every ``bayesagg train`` option with underscores, e.g.
            ``train(benchmark="multi-fashion", method="ls", epochs=1, train_subset=2000,
            progress="none", out="runs/x")``. Accepted:

{options}
    """
    settings = _settings(options, "train()")
    return _json.loads(_C.train(settings, bool(verbose)))


# Generated option lists (so that options added to the library's registry are documented).
BayesAgg.__doc__ = BayesAgg.__doc__.replace("{options}", _options_doc("bayesagg"))
method.__doc__ = method.__doc__.replace("{options}", _options_doc("method"))
train.__doc__ = train.__doc__.replace("{options}", _options_doc("train"))
