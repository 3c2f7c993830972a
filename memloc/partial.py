"""Running a model from the first computation an edit touches (prefix reuse).

Rewinding or retraining one layer group changes only that group's parameters and buffers. Every
activation computed before the group's first use is the same as in the unedited model, so
analyses that evaluate many edits of the same group compute that *prefix* once and then run only
the *suffix* of the forward pass, from the group on, once per edit.

The model's forward is traced with `torch.fx`, keeping each layer group's modules as single
calls. A node of the graph is *affected* by an edit of some module paths if it calls one of those
modules (or reads one of their parameters), or uses an affected node. The *frontier* is the set of
unaffected values that affected nodes (or the output) read: the input of the group, and skip
connections around it (a residual block's identity branch). `split` returns

- `prefix(x) -> frontier`: the unaffected part of the forward pass, and
- `suffix(*frontier) -> logits`: the affected part,

both sharing the model's modules and parameters, so an edit applied to the model (e.g. inside
`memloc.interventions.intervene`) is seen by the suffix. `suffix(*prefix(x))` runs exactly the
operations of `model(x)`; tests check the logits are bitwise equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from memloc.lazy import lazy
from models import in_group

torch = lazy("torch")
fx = lazy("torch.fx")
nn = lazy("torch.nn")


def trace(model: nn.Module) -> fx.Graph:
    """The forward pass of a zoo model as an fx graph whose layer-group modules are single calls."""
    leaves = {p for prefixes in model.layer_groups.values() for p in prefixes}

    class GroupTracer(fx.Tracer):  # defined here, not at import: subclassing fx.Tracer imports torch (memloc.lazy)
        """Traces into the model, but keeps the modules named by layer-group prefixes as one call each."""

        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in leaves or super().is_leaf_module(module, qualified_name)

    try:
        return GroupTracer().trace(model)
    except Exception as e:  # fx raises several types for data-dependent control flow
        raise TypeError(
            f"{type(model).__name__}'s forward cannot be traced by torch.fx ({e}); prefix reuse needs "
            "a forward without data-dependent Python control flow"
        ) from None


def _touches(target: str, paths: Iterable[str]) -> bool:
    """Whether module/attribute `target` is, lies inside, or contains one of `paths`."""
    paths = tuple(paths)
    return in_group(target, paths) or any(in_group(p, (target,)) for p in paths)


@dataclass
class Split:
    """The forward pass of a model cut in front of the first computation that reads `paths`."""

    paths: tuple[str, ...]
    prefix: fx.GraphModule  # x -> tuple of frontier values
    suffix: fx.GraphModule  # *frontier -> logits

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(*self.prefix(x))


def split(model: nn.Module, paths: Iterable[str], graph: fx.Graph | None = None) -> Split:
    """Cut `model`'s forward in front of everything that reads the modules/parameters `paths`.

    `paths` are module-name prefixes as in `model.layer_groups` (pass several groups' prefixes to
    edit several groups). `graph` is `trace(model)`, to trace once for many splits.
    """
    paths = tuple(paths)
    graph = trace(model) if graph is None else graph
    affected: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "output":
            continue
        reads_edited = node.op in ("call_module", "get_attr") and _touches(node.target, paths)
        if reads_edited or any(a in affected for a in node.all_input_nodes):
            affected.add(node)
    output = next(n for n in graph.nodes if n.op == "output")
    # Unaffected values the suffix reads; parameters (get_attr) are re-read by the suffix instead.
    frontier = [
        n for n in graph.nodes
        if n not in affected and n.op != "get_attr" and any(u in affected or u is output for u in n.users)
    ]

    pre = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node.op == "output":
            pre.output(tuple(env[n] for n in frontier))
        elif node not in affected:
            env[node] = pre.node_copy(node, env.__getitem__)
    prefix = fx.GraphModule(model, pre)
    prefix.graph.eliminate_dead_code()  # drop what only affected nodes needed
    prefix.recompile()

    post = fx.Graph()
    env = {n: post.placeholder(n.name) for n in frontier}
    for node in graph.nodes:
        if node.op == "output":
            post.output(fx.map_arg(node.args[0], env.__getitem__))
        elif node in affected or (node.op == "get_attr" and any(u in affected for u in node.users)):
            env[node] = post.node_copy(node, env.__getitem__)
    return Split(paths, prefix, fx.GraphModule(model, post))


def group_paths(model: nn.Module, groups: Iterable[str]) -> tuple[str, ...]:
    """The module-name prefixes of the given layer groups (ValueError naming the valid groups)."""
    out: list[str] = []
    for group in groups:
        if group not in model.layer_groups:
            raise ValueError(f"layer group {group!r} is not one of {', '.join(model.layer_groups)}")
        out += model.layer_groups[group]
    return tuple(out)


def frontier_bytes(values: tuple) -> int:
    """Memory held by the tensors of a frontier (non-tensor values, e.g. sizes, count 0)."""
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))
