"""Layer rewinding (PAPER.md section 2), precomputed as a grid and live for the explorer.

Take the final model, replace the state of one layer group by its value at an earlier checkpoint
(epoch 0 = initialization, 1, 2, 4, ...), and evaluate: clean training examples against their
labels, noisy training examples against their *noisy* labels (memorization: a group whose
rewinding leaves this at ~100% is redundant for memorization), noisy examples against their true
labels, and the test set. BatchNorm running statistics belong to the group's state and are
rewound with it unless `include_buffers=False` (as the authors did).

Speed: the data stay on the device and are evaluated in large batches. Rewinding group g leaves
every activation before g as in the final model, so for each group the activations at the cut
(`memloc.partial`) are computed once and only the rest of the network runs per rewind epoch.
Those cached activations are bounded by `cache_bytes`; larger data is processed in chunks.

- `RewindEvaluator(opened)`: holds the final model; `.evaluate([Rewind, ...])` for one live
  intervention (the cut activations of the last groups asked for are kept for the next call),
  `.grid(groups, epochs)` for the precomputed table.
- `evaluate_rewind(opened, rewinds)`: one call (intervene and evaluate the whole network), for
  notebooks and the explorer.
- `rewind_reference`: the naive reference (deep copy, load the group's tensors, evaluate) that
  tests and benchmarks compare against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from memloc.data import Labels
from memloc.evaluate import ACCURACIES, eval_rows, population_metrics, predict
from memloc.interventions import Rewind, group_state_names, intervene
from memloc.lazy import lazy
from memloc.partial import Split, frontier_bytes, group_paths, split, trace
from memloc.settings import MAX_MB, epoch_list, in_range, setting
from memloc.train import TrainSettings

pd = lazy("pandas")
torch = lazy("torch")
nn = lazy("torch.nn")

#: Columns of the `rewinding` table (the explorer reads exactly these).
COLUMNS = ["group", "group_index", "epoch", "include_buffers", *ACCURACIES]
#: Columns of the `rewinding_examples` table.
EXAMPLE_COLUMNS = ["group", "epoch", "example_id", "memorized"]
DEFAULT_CACHE_BYTES = 1 << 30  # 1 GiB of cached activations at the cut


@dataclass(frozen=True)
class RewindSettings:
    """The `rewind` section of a run."""

    epochs: tuple = setting((), "checkpoints each layer group is rewound to; empty = 0, 1, 2, 4, 6, ... and the last epoch")
    include_buffers: bool = setting(True, "rewind BatchNorm running statistics with the parameters (false: parameters only, as the authors did)")
    cache_mb: int = setting(1024, f"memory (MiB) for the activations in front of the rewound group, computed once per group; more data runs in chunks; in [0, {MAX_MB}]")

    def __post_init__(self):
        epoch_list(self.epochs, "epochs", "[0, 5, 10]")
        in_range("cache_mb", self.cache_mb, 0, MAX_MB, integer=True)

    def epochs_for(self, train: TrainSettings) -> list[int]:
        """The rewind epochs, sorted, each once (auto: 0, 1, 2, 4, 6, ... and the last, of the
        checkpoints `train.keep_epochs` keeps)."""
        if self.epochs:
            return sorted(set(self.epochs))
        kept = set(train.kept_epochs())
        return sorted(kept & {0, 1, *range(2, train.epochs, 2), train.epochs})


@dataclass(frozen=True)
class RewindResult:
    """Metrics and per-example predictions of the model with some groups rewound."""

    metrics: dict[str, float]  # {clean,noisy,noisy_true,test}_{acc,loss}, as memloc.evaluate
    train_pred: torch.Tensor  # (N,) int64, predicted class of each training example
    test_pred: torch.Tensor  # (M,) int64

    def memorized(self, labels: Labels) -> torch.Tensor:
        """(N,) bool: noisy examples still predicted with their noisy label."""
        return labels.is_noisy & (self.train_pred == labels.train_labels)


def _result(logits: torch.Tensor, n_train: int, labels: Labels, test_labels: torch.Tensor) -> RewindResult:
    train, test = logits[:n_train], logits[n_train:]  # (N, K), (M, K)
    return RewindResult(population_metrics(train, test, labels, test_labels), train.argmax(1), test.argmax(1))


class RewindEvaluator:
    """The final model of a run and what is needed to evaluate rewinds of it fast.

    The model is never left edited: every evaluation applies its rewinds inside
    `memloc.interventions.intervene`, which restores it bitwise.
    """

    def __init__(
        self,
        model: nn.Module,
        checkpoint: Callable[[int], dict[str, torch.Tensor]],
        train_x: torch.Tensor,
        labels: Labels,
        test_x: torch.Tensor,
        test_labels: torch.Tensor,
        batch_size: int = 0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.labels, self.test_labels = labels, test_labels
        self.n_train = len(train_x)
        # Batches exactly as `memloc.evaluate.predict` cuts them, so results match it bitwise.
        rows = eval_rows(batch_size, train_x.device)
        self.batches = [*train_x.split(rows), *test_x.split(rows)]
        self.cache_bytes = cache_bytes
        self._graph = trace(model)
        self._splits: dict[tuple[str, ...], Split] = {}
        self._cached: tuple[tuple[str, ...], list[tuple]] | None = None  # (paths, frontier per batch)

    @classmethod
    def of(cls, opened, batch_size: int | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> "RewindEvaluator":
        """The evaluator of an opened run (`memloc.runs.open_run`) at its last checkpoint."""
        data = opened.data
        return cls(
            opened.model(), opened.checkpoint, data.train_x, opened.labels, data.test_x, data.test_labels,
            batch_size or opened.config.train.eval_batch_size, cache_bytes,
        )

    def _split(self, groups: Iterable[str]) -> Split:
        paths = tuple(sorted(set(group_paths(self.model, groups))))
        if paths not in self._splits:
            self._splits[paths] = split(self.model, paths, self._graph)
        return self._splits[paths]

    def _frontiers(self, part: Split) -> Iterator[list[tuple]]:
        """The activations at the cut for all batches, in chunks of at most `cache_bytes`.

        When all of them fit, they are kept for the next evaluation of the same groups.
        """
        if self._cached is not None and self._cached[0] == part.paths:
            yield self._cached[1]
            return
        self._cached = None  # free the previous groups' activations first
        chunk, size, fits = [], 0, True
        for xb in self.batches:
            with torch.no_grad():  # not around the yield: grad mode is global state
                chunk.append(part.prefix(xb))
            size += frontier_bytes(chunk[-1])
            if size > self.cache_bytes:
                fits = False
                yield chunk
                chunk, size = [], 0
        if fits:
            self._cached = (part.paths, chunk)
        if chunk:
            yield chunk

    def _logits(self, groups: Iterable[str], cells: Sequence[Sequence[Rewind]]) -> list[torch.Tensor]:
        """Logits (N + M, K) of train then test examples, for each list of rewinds in `cells`."""
        part = self._split(groups)
        out: list[list[torch.Tensor]] = [[] for _ in cells]
        for chunk in self._frontiers(part):
            for logits, items in zip(out, cells):
                with intervene(self.model, items, self.checkpoint), torch.no_grad():
                    logits.extend(part.suffix(*values) for values in chunk)
        return [torch.cat(parts) for parts in out]

    def evaluate(self, rewinds: Sequence[Rewind]) -> RewindResult:
        """Metrics and predictions with all `rewinds` applied together (live: one intervention)."""
        rewinds = list(rewinds)
        if not rewinds or not all(isinstance(r, Rewind) for r in rewinds):
            raise ValueError(f"expected a non-empty list of Rewind values, got {rewinds!r}")
        (logits,) = self._logits([r.group for r in rewinds], [rewinds])
        return _result(logits, self.n_train, self.labels, self.test_labels)

    def grid(self, groups: Iterable[str], epochs: Iterable[int], include_buffers: bool = True) -> Iterator[tuple[Rewind, RewindResult]]:
        """Every group rewound alone to every epoch: (Rewind, result), group by group."""
        epochs = list(epochs)
        for group in groups:
            cells = [[Rewind(group, epoch, include_buffers)] for epoch in epochs]
            for (item,), logits in zip(cells, self._logits([group], cells)):
                yield item, _result(logits, self.n_train, self.labels, self.test_labels)


def evaluate_rewind(opened, rewinds: Sequence[Rewind], model: nn.Module | None = None) -> RewindResult:
    """The final model of an opened run with `rewinds` applied, on the full train and test sets.

    One call: the rewinds are applied inside `intervene` and the whole network is evaluated (no
    tracing, nothing cached). `model` is the run's final model if the caller keeps one (e.g. the
    explorer's cached model; it is bitwise restored afterwards), else it is built. To evaluate
    many rewinds keep a `RewindEvaluator.of(opened)`, which reuses the activations in front of
    the rewound groups.
    """
    rewinds = list(rewinds)
    if not rewinds or not all(isinstance(r, Rewind) for r in rewinds):
        raise ValueError(f"expected a non-empty list of Rewind values, got {rewinds!r}")
    model = opened.model() if model is None else model
    data, bs = opened.data, opened.config.train.eval_batch_size
    with intervene(model, rewinds, opened.checkpoint):
        logits = torch.cat([predict(model, data.train_x, bs), predict(model, data.test_x, bs)])  # (N + M, K)
    return _result(logits, data.num_train, opened.labels, data.test_labels)


def rewind_reference(
    model: nn.Module,
    checkpoint: Callable[[int], dict[str, torch.Tensor]],
    rewind: Rewind,
    train_x: torch.Tensor,
    labels: Labels,
    test_x: torch.Tensor,
    test_labels: torch.Tensor,
    batch_size: int = 0,
) -> RewindResult:
    """Naive reference, literally PAPER.md: copy the final model, load the group's tensors from
    the checkpoint, evaluate the whole network on the train and test sets."""
    edited = copy.deepcopy(model)
    state = checkpoint(rewind.epoch)
    names = group_state_names(edited, rewind.group, rewind.include_buffers)
    edited.load_state_dict({name: state[name] for name in names}, strict=False)
    logits = torch.cat([predict(edited, train_x, batch_size), predict(edited, test_x, batch_size)])
    return _result(logits, len(train_x), labels, test_labels)


def grid_tables(model: nn.Module, results: Iterable[tuple[Rewind, RewindResult]], labels: Labels, example_epoch: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `rewinding` table (one row per group and epoch) and `rewinding_examples` (per noisy
    example and group, at `example_epoch`: whether it stays memorized after the rewind)."""
    index = {group: i for i, group in enumerate(model.layer_groups)}
    rows, examples = [], []
    noisy_ids = labels.is_noisy.nonzero().squeeze(1)  # (n_noisy,)
    for item, result in results:
        rows.append({"group": item.group, "group_index": index[item.group], "epoch": item.epoch,
                     "include_buffers": item.include_buffers,
                     **{k: result.metrics[k] for k in ACCURACIES}})
        if item.epoch == example_epoch:
            memorized = result.memorized(labels)[noisy_ids]  # (n_noisy,)
            examples.append(pd.DataFrame({"group": item.group, "epoch": item.epoch,
                                          "example_id": noisy_ids.cpu().numpy(), "memorized": memorized.cpu().numpy()},
                                         columns=EXAMPLE_COLUMNS))
    return pd.DataFrame(rows, columns=COLUMNS), pd.concat(examples, ignore_index=True)
