"""Neuron-level localization by greedy flipping (PAPER.md section 4), batched over targets.

For one training example `t` with training label `y_t` (noisy or clean) and a reference batch
`B` of training examples that contains it, the objective is

    J = (1/|B|) * sum over i in B, i != t of CE_i  -  CE_t

(raise the target's loss, keep the rest of the batch's loss low). Every *unit* (a conv layer's
output channel, a linear layer's output neuron; `model.unit_layers`, the final classifier
excluded) gets the score `sum over its weights and bias of w * dJ/dw`, the first-order estimate
of how much J drops when the unit is zeroed. The highest-scoring unit is zeroed, and this
repeats until the model no longer predicts `y_t` for `t`, or until `cap` units are zeroed (then
the example counts as not flipped).

This module is the fast path. It uses the identity from PAPER.md: with a multiplicative mask
`m` on each unit's output, `dJ/dm` at the current masks equals the weight score of every unit
still on (the unit's output is `w . x + b`, so `dJ/dm = sum dJ/do * o = sum w dJ/dw + b dJ/db`),
and zeroing a unit's weights and bias is the same as a mask of 0 on its output. So:

- scores come from one backward pass to the masks; no weight gradient is ever formed;
- many targets run at once, each with its own row of a mask tensor `(T, U)` and its own
  reference batch: the inputs of T targets are stacked to `(T * |B|, ...)` and the batched
  mask hook (`memloc.interventions.unit_masks`) multiplies each target's rows by that
  target's mask row; one backward gives all `T` rows of
  `dJ/dm` (target `k`'s J depends only on mask row `k`);
- the work is cut into chunks of whole targets of at most `chunk_rows` rows, so memory stays
  bounded whatever T is;
- a target leaves the active set as soon as it flips or hits the cap, and the next queued
  target takes its place, so every step works only on unfinished targets.

The naive reference, PAPER.md literally (a copy of the model, weight gradients, weights zeroed),
is `memloc.flipping_reference`; both choose the same units.

Conventions shared with the reference (so both pick the same units):
- Units have one global order: the layers in `model.unit_layers` order, each layer's units by
  index. Ties in the score go to the lowest global index (`torch.argmax` returns the first).
- A unit already zeroed is never chosen again (its weight score is exactly 0).
- The model is evaluated as trained, in eval mode: BatchNorm uses its running statistics for J
  and for the flip test, so examples do not interact through batch statistics.
- Reference batch: fresh per target, `batch_size` examples drawn without replacement from the
  whole training set by a generator seeded with (seed, example id), the target first; all
  examples are labelled with their *training* labels.
- Robust flipping (`robust`): the logits of every input are averaged over `noise_draws` copies with Gaussian
  noise of L2 norm `noise_rel` times the input's, both for J and for the flip test; the noise is
  drawn once per target (seeded with (seed, example id)) and kept for all its steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from memloc.evaluate import eval_rows
from memloc.interventions import UnitIndex, UnitMasks, frozen, parse_unit, unit_masks
from memloc.lazy import lazy, no_grad
from memloc.settings import MAX_COUNT, MAX_SEED, check, in_range, setting

pd = lazy("pandas")
torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")
etd = lazy("models.example_tied_dropout")

# Streams of the seeded generators, so no two kinds of draw share random numbers.
_BATCH_STREAM, _NOISE_STREAM, _RANDOM_UNITS_STREAM, _EVAL_STREAM, _TARGETS_STREAM = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class FlipSettings:
    """The `flip` section of a run: which examples to flip, and what flipping one depends on."""

    n_noisy: int = setting(100, f"memorized noisy examples to flip (seeded choice); -1 = all, 0 = none; in [-1, {MAX_COUNT}]")
    n_clean: int = setting(100, f"correctly predicted clean examples to flip (seeded choice); -1 = all, 0 = none; in [-1, {MAX_COUNT}]")
    example_ids: tuple = setting((), "flip exactly these training example ids (0 .. training examples - 1) instead of n_noisy / n_clean")
    batch_size: int = setting(512, f"reference batch size |B| of the objective J, target included (paper: 512), in [2, {MAX_COUNT}]")
    cap: int = setting(200, f"most units zeroed per example; not flipped by then = recorded as not flipped; in [1, {MAX_COUNT}]")
    robust: bool = setting(False, "robust flipping: average logits over noisy input copies for J and the flip test")
    noise_draws: int = setting(5, "noisy copies per input in robust flipping, in [1, 1000]")
    noise_rel: float = setting(0.01, "L2 norm of robust flipping's noise relative to the input's, in [0, 10]")
    eval_train: int = setting(2000, f"training examples of the collateral-accuracy subset (seeded); 0 = all; in [0, {MAX_COUNT}]")
    eval_test: int = setting(2000, f"test examples of the collateral-accuracy subset (seeded); 0 = all; in [0, {MAX_COUNT}]")
    seed: int = setting(0, f"seed of target choice, reference batches, noise, evaluation subset, random controls, in [0, {MAX_SEED}]")
    targets_per_step: int = setting(32, "targets flipped at once, each with its own unit masks (more fills a GPU), in [1, 10000]")
    chunk_rows: int = setting(0, f"most forward rows (targets x batch items) per pass, bounds memory; 0 = auto (256 on a CPU, "
                              f"4096 on a GPU, as train.eval_batch_size); in [0, {MAX_COUNT}]")
    save_every: int = setting(200, f"targets between saved progress of the flip stage (resume point), in [1, {MAX_COUNT}]")

    def __post_init__(self):
        in_range("n_noisy", self.n_noisy, -1, MAX_COUNT, integer=True)
        in_range("n_clean", self.n_clean, -1, MAX_COUNT, integer=True)
        ok = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.example_ids)
        check(ok, "example_ids", "a list of training example ids (integers >= 0)", list(self.example_ids))
        in_range("batch_size", self.batch_size, 2, MAX_COUNT, integer=True)  # the target and at least one other
        in_range("cap", self.cap, 1, MAX_COUNT, integer=True)
        in_range("noise_draws", self.noise_draws, 1, 1000, integer=True)
        in_range("noise_rel", self.noise_rel, 0, 10)
        in_range("eval_train", self.eval_train, 0, MAX_COUNT, integer=True)
        in_range("eval_test", self.eval_test, 0, MAX_COUNT, integer=True)
        in_range("seed", self.seed, 0, MAX_SEED, integer=True)
        in_range("targets_per_step", self.targets_per_step, 1, 10_000, integer=True)
        in_range("chunk_rows", self.chunk_rows, 0, MAX_COUNT, integer=True)
        in_range("save_every", self.save_every, 1, MAX_COUNT, integer=True)

    def check_example_ids(self, n_train: int) -> None:
        """Check that `example_ids` are ids of the run's `n_train` training examples (which only
        the loaded data knows: the runner checks this before it writes anything)."""
        bad = [i for i in self.example_ids if i >= n_train]
        check(not bad, "flip.example_ids", f"ids of training examples (0..{n_train - 1})", bad[0] if bad else None)

    @property
    def draws(self) -> int:
        """Forward copies per input: `noise_draws` in robust flipping, else 1."""
        return self.noise_draws if self.robust else 1


@dataclass(frozen=True)
class FlipResult:
    """The outcome of greedy flipping for one example."""

    example_id: int
    units: tuple[int, ...]  # global unit indices (`UnitIndex`), in the order they were zeroed
    flipped: bool  # the prediction left the training label within the cap
    new_prediction: int  # the prediction after the last zeroed unit


def seeded_generator(seed: int, example_id: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, example, purpose), independent of every other."""
    state = np.random.SeedSequence([seed, example_id, stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def reference_batch(example_id: int, n_train: int, batch_size: int, seed: int) -> torch.Tensor:
    """Example ids (|B|,) of the target's reference batch: the target first, then
    `batch_size - 1` other training examples drawn without replacement (all if fewer)."""
    g = seeded_generator(seed, example_id, _BATCH_STREAM)
    others = torch.randperm(n_train - 1, generator=g)[: batch_size - 1]  # ids with the target left out
    others = others + (others >= example_id).long()  # shift to skip the target's own id
    return torch.cat([torch.tensor([example_id]), others])


def target_inputs(train_x: torch.Tensor, batch: torch.Tensor, example_id: int, settings: FlipSettings) -> torch.Tensor:
    """The forward inputs of one target's reference batch, (|B| * draws, C, H, W), item-major:
    the plain images, or in robust flipping `draws` noisy copies of each image."""
    x = train_x[batch.to(train_x.device)]  # (|B|, C, H, W)
    if not settings.robust:
        return x
    g = seeded_generator(settings.seed, example_id, _NOISE_STREAM)
    noise = torch.randn((len(x), settings.noise_draws, *x.shape[1:]), generator=g, dtype=x.dtype).to(x.device)
    # Scale each draw to L2 norm noise_rel * ||x_i||.
    x_norm = x.flatten(1).norm(dim=1).view(-1, 1, *([1] * (x.dim() - 1)))  # (|B|, 1, 1, 1, 1)
    n_norm = noise.flatten(2).norm(dim=2).view(*noise.shape[:2], *([1] * (x.dim() - 1)))  # (|B|, D, 1, 1, 1)
    noisy = x.unsqueeze(1) + noise * (settings.noise_rel * x_norm / n_norm)  # (|B|, D, C, H, W)
    return noisy.flatten(0, 1)


def objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """J per target from logits (T, |B|, K) and training labels (T, |B|), target at position 0."""
    t, b, k = logits.shape
    ce = F.cross_entropy(logits.reshape(t * b, k), labels.reshape(t * b), reduction="none").view(t, b)
    return ce[:, 1:].sum(1) / b - ce[:, 0]  # (T,)


def _chunks(n_targets: int, rows_per_target: int, chunk_rows: int) -> Iterator[slice]:
    """Slices of whole targets with at most `chunk_rows` rows each (at least one target)."""
    per = max(1, chunk_rows // rows_per_target)
    for start in range(0, n_targets, per):
        yield slice(start, min(start + per, n_targets))


def forward_as_trained(model: nn.Module, x: torch.Tensor, example_ids: torch.Tensor | None) -> torch.Tensor:
    """Logits of `model` on rows x whose training example ids are `example_ids` (same length):
    a model with example-tied dropout runs each row through its own example's masks (its mode
    `train`, the model as trained: PAPER.md section 5); any other model ignores the ids."""
    if not getattr(model, "takes_example_ids", False):
        return model(x)
    with etd.dropout_mode(model, "train"):
        return model(x, example_ids=example_ids)


@no_grad
def _predict_targets(
    model: nn.Module, hooks: UnitMasks, masks: torch.Tensor, inputs: torch.Tensor, draws: int, chunk_rows: int,
    row_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flip test, batched: the prediction (T,) for each target's own image (the first `draws`
    rows of its inputs (T, rows, C, H, W), logits averaged over them) under its mask row (T, U).
    Needs `hooks` (`unit_masks`) on `model`, frozen in eval mode. `row_ids` (T, rows): the
    example id of every input row, for a model with example-tied dropout."""
    preds = []
    for part in _chunks(len(masks), draws, chunk_rows):
        hooks.set(masks[part])
        ids = None if row_ids is None else row_ids[part, :draws].flatten()
        logits = forward_as_trained(model, inputs[part, :draws].flatten(0, 1), ids)  # (t * draws, K)
        preds.append(logits.view(-1, draws, logits.shape[-1]).mean(1).argmax(-1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=inputs.device)


def flip_examples(
    model: nn.Module,
    train_x: torch.Tensor,
    train_labels: torch.Tensor,
    example_ids: Sequence[int],
    settings: FlipSettings = FlipSettings(),
    on_result: Callable[[FlipResult], None] | None = None,
    layers: Sequence[str] | None = None,
) -> list[FlipResult]:
    """Greedy flipping of every example in `example_ids` (fast path), results in that order.

    `train_labels` are the training labels (noisy where the label was flipped). At most
    `settings.targets_per_step` targets are active at once, each with its own mask row and reference
    batch; a finished target is replaced by the next one. Each step (1) predicts every active
    target under its own masks, finishing those no longer predicted with their label or at the
    cap, then (2) computes `dJ/dm` for the rest in chunks of at most `chunk_rows` forward rows and
    zeroes each target's highest-scoring unit that is still on. The model is used in eval mode
    `frozen` (eval mode, no weight gradients) and is restored afterwards.
    `on_result` is called as each target finishes (e.g. to advance a progress bar). `layers`:
    the unit layers (`UnitIndex`; default `model.unit_layers`). A model with example-tied
    dropout is flipped as trained: every input row through its own example's masks
    (`forward_as_trained`), e.g. with its dropout layers as `layers`
    (`memloc.localization`).

    An example the model does not predict with its training label to begin with finishes at
    once, with no units and `flipped` true (the stage only picks examples predicted with their
    label, but a list of ids may hold such ones).
    """
    index = UnitIndex(model, layers)
    draws, n_train = settings.draws, len(train_x)
    targets_per_step, chunk_rows = settings.targets_per_step, eval_rows(settings.chunk_rows, train_x.device)
    batch = min(settings.batch_size, n_train)
    rows = batch * draws  # forward rows per target
    cap = min(settings.cap, index.total)
    queue = deque(int(e) for e in example_ids)
    # The active targets, as parallel lists and stacked tensors (rebuilt only when the set changes).
    ids: list[int] = []
    units: list[list[int]] = []
    inputs = train_x.new_empty(0, rows, *train_x.shape[1:])  # (T, |B| * draws, C, H, W)
    labels = train_labels.new_empty(0, batch)  # (T, |B|) training labels of each reference batch
    masks = train_x.new_ones(0, index.total)  # (T, U)
    row_ids = torch.zeros(0, rows, dtype=torch.long, device=train_x.device)  # (T, |B| * draws) example id of each input row
    results: dict[int, FlipResult] = {}
    with frozen(model), unit_masks(model, layers=layers) as hooks:
        while queue or ids:
            new = [queue.popleft() for _ in range(min(len(queue), targets_per_step - len(ids)))]
            if new:
                batches = [reference_batch(e, n_train, batch, settings.seed) for e in new]
                inputs = torch.cat([inputs, torch.stack([target_inputs(train_x, b, e, settings) for b, e in zip(batches, new)])])
                labels = torch.cat([labels, torch.stack([train_labels[b.to(train_labels.device)] for b in batches])])
                masks = torch.cat([masks, masks.new_ones(len(new), index.total)])  # every unit on at first
                row_ids = torch.cat([row_ids, torch.stack([b.repeat_interleave(draws) for b in batches]).to(row_ids.device)])
                ids += new
                units += [[] for _ in new]

            # (1) The flip test: each target's own input (its first `draws` rows) under its masks.
            preds = _predict_targets(model, hooks, masks, inputs, draws, chunk_rows, row_ids).tolist()
            done = [p != int(train_labels[e]) or len(u) >= cap for p, e, u in zip(preds, ids, units)]
            if any(done):
                for p, e, u, d in zip(preds, ids, units, done):
                    if d:
                        results[e] = FlipResult(e, tuple(u), p != int(train_labels[e]), p)
                        if on_result is not None:
                            on_result(results[e])
                keep = [k for k, d in enumerate(done) if not d]
                ids, units = [ids[k] for k in keep], [units[k] for k in keep]
                keep = torch.tensor(keep, dtype=torch.long, device=masks.device)
                inputs, labels, masks, row_ids = inputs[keep], labels[keep], masks[keep], row_ids[keep]
                continue  # refill the active set, then test again

            # (2) Scores dJ/dm of every active target, chunk by chunk (J is a sum over targets'
            # own rows, so one backward per chunk fills those targets' rows of the gradient).
            leaf = masks.detach().requires_grad_(True)  # (T, U)
            for part in _chunks(len(ids), rows, chunk_rows):
                hooks.set(leaf[part])
                logits = forward_as_trained(model, inputs[part].flatten(0, 1), row_ids[part].flatten())  # (t * |B| * draws, K)
                logits = logits.view(-1, batch, draws, logits.shape[-1])  # (t, |B|, draws, K)
                logits = logits.mean(2) if draws > 1 else logits.squeeze(2)  # (t, |B|, K)
                objective(logits, labels[part]).sum().backward()
            scores = leaf.grad.masked_fill(masks == 0, float("-inf"))  # zeroed units are never chosen again
            best = scores.argmax(1)  # (T,); the first maximum, i.e. the lowest global index on ties
            masks[torch.arange(len(ids), device=masks.device), best] = 0.0
            for u, g in zip(units, best.tolist()):
                u.append(g)
    return [results[int(e)] for e in example_ids]


@no_grad
def masked_predictions(model: nn.Module, masks: torch.Tensor, x: torch.Tensor, chunk_rows: int = 0) -> torch.Tensor:
    """Predictions (E, N) of the model under each of E unit masks (E, U) on the same inputs
    x (N, C, H, W), in eval mode.

    Batched over masks: a chunk stacks the inputs once per mask of a group of masks, with at most
    `chunk_rows` rows (0: `memloc.evaluate.eval_rows`'s choice for the device; the inputs are
    split too when one mask's rows exceed it).
    """
    chunk_rows = eval_rows(chunk_rows, x.device)
    n = len(x)
    items = max(1, min(n, chunk_rows))  # inputs per block
    out = torch.empty(len(masks), n, dtype=torch.long, device=x.device)
    with frozen(model), unit_masks(model) as hooks:
        for i0 in range(0, n, items):
            block = x[i0 : i0 + items]  # (b, C, H, W)
            b = len(block)
            for part in _chunks(len(masks), b, chunk_rows):
                t = part.stop - part.start
                hooks.set(masks[part])
                stacked = block.unsqueeze(0).expand(t, *block.shape).reshape(t * b, *block.shape[1:])  # (t * b, C, H, W)
                out[part, i0 : i0 + b] = model(stacked).argmax(-1).view(t, b)
    return out


def random_units(index: UnitIndex, units: Sequence[int], example_id: int, seed: int) -> tuple[int, ...]:
    """The random control of a flip set: as many units per layer as `units` has there, drawn
    uniformly without replacement within each layer (seeded with (seed, example id))."""
    g = seeded_generator(seed, example_id, _RANDOM_UNITS_STREAM)
    counts = np.bincount([index.locate(u)[0] for u in units], minlength=len(index.layers))
    drawn: list[int] = []
    for pos, count in enumerate(counts):
        if count:
            picks = torch.randperm(index.sizes[pos], generator=g)[:count]
            drawn += sorted(index.offsets[pos] + int(i) for i in picks)
    return tuple(drawn)


@dataclass(frozen=True)
class EvalSet:
    """The fixed evaluation subset of collateral accuracy (on the device of the data)."""

    train_x: torch.Tensor  # (n, C, H, W)
    train_labels: torch.Tensor  # (n,) training labels
    train_noisy: torch.Tensor  # (n,) bool
    test_x: torch.Tensor  # (m, C, H, W)
    test_labels: torch.Tensor  # (m,)


def eval_set(
    train_x: torch.Tensor, train_labels: torch.Tensor, is_noisy: torch.Tensor, test_x: torch.Tensor, test_labels: torch.Tensor,
    train_size: int, test_size: int, seed: int,
) -> EvalSet:
    """A seeded uniform subset of `train_size` training and `test_size` test examples (0 = all)."""
    g = seeded_generator(seed, 0, _EVAL_STREAM)

    def pick(n: int, size: int) -> torch.Tensor:
        if size == 0 or size >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=g)[:size].sort().values

    tr = pick(len(train_x), train_size).to(train_x.device)
    te = pick(len(test_x), test_size).to(test_x.device)
    return EvalSet(train_x[tr], train_labels[tr], is_noisy[tr], test_x[te], test_labels[te])


def collateral(model: nn.Module, masks: torch.Tensor, evals: EvalSet, chunk_rows: int = 0) -> dict[str, np.ndarray]:
    """Accuracy after each of E edits (masks (E, U)): clean training examples (their labels),
    noisy training examples (their noisy labels, i.e. memorization) and test examples."""
    train = masked_predictions(model, masks, evals.train_x, chunk_rows=chunk_rows) == evals.train_labels  # (E, n)
    test = masked_predictions(model, masks, evals.test_x, chunk_rows=chunk_rows) == evals.test_labels  # (E, m)

    def mean(correct: torch.Tensor) -> np.ndarray:
        if correct.shape[1] == 0:
            return np.full(correct.shape[0], np.nan)
        return correct.double().mean(1).cpu().numpy()

    return {
        "acc_clean_after": mean(train[:, ~evals.train_noisy]),
        "acc_noisy_after": mean(train[:, evals.train_noisy]),
        "acc_test_after": mean(test),
    }


def select_targets(
    predictions: torch.Tensor, train_labels: torch.Tensor, is_noisy: torch.Tensor, n_noisy: int, n_clean: int, seed: int
) -> list[int]:
    """Seeded choice of targets: `n_noisy` memorized noisy examples (predicted with their noisy
    label) and `n_clean` clean examples predicted correctly (-1 = all of them; fewer if fewer
    exist), noisy first, each kind in increasing id order."""
    g = seeded_generator(seed, 0, _TARGETS_STREAM)
    fits = (predictions == train_labels).cpu()
    noisy = is_noisy.cpu()
    chosen: list[int] = []
    for kind_mask, n in ((noisy & fits, n_noisy), (~noisy & fits, n_clean)):
        ids = torch.nonzero(kind_mask).flatten()
        if 0 <= n < len(ids):
            ids = ids[torch.randperm(len(ids), generator=g)[:n]].sort().values
        chosen += ids.tolist()
    return chosen


#: Columns of the `flipping` table (one row per target), see `flip_table`.
COLUMNS = [
    "example_id", "kind", "n_units", "flipped", "units", "new_prediction", "acc_clean_before", "acc_noisy_before",
    "acc_test_before", "acc_clean_after", "acc_noisy_after", "acc_test_after", "random_flipped", "random_new_prediction",
    "random_acc_clean_after", "random_acc_noisy_after", "random_acc_test_after",
]
#: Columns of the `flip_units` table (one row per unit of some flip set), see `unit_table`.
UNIT_COLUMNS = ["unit", "layer", "layer_index", "n_examples", "n_noisy", "n_clean"]


def flip_table(
    model: nn.Module,
    results: Sequence[FlipResult],
    train_x: torch.Tensor,
    train_labels: torch.Tensor,
    is_noisy: torch.Tensor,
    evals: EvalSet,
    settings: FlipSettings,
) -> pd.DataFrame:
    """The `flipping` rows of `results`: the flip set and its collateral accuracy, and for each
    flipped example the random control (same number of units per layer, seeded): whether it
    flips the example and its collateral accuracy. Collateral is evaluated batched over examples.

    Columns: example_id, kind ("noisy"/"clean"), n_units, flipped, units (`layer[index]` in the
    order zeroed), new_prediction, acc_clean_before, acc_noisy_before, acc_test_before (the
    unedited model, the same in every row) and acc_clean_after, acc_noisy_after, acc_test_after
    (on `evals`: clean examples against their labels, noisy ones against their noisy labels, test
    examples), so the edit's cost is before - after;
    then random_flipped, random_new_prediction and random_acc_* for the random control (missing
    where the example did not flip).
    """
    index = UnitIndex(model)
    flipped = [r for r in results if r.flipped]
    controls = [random_units(index, r.units, r.example_id, settings.seed) for r in flipped]
    masks = index.masks([r.units for r in results] + controls + [()], train_x)  # (E + F + 1, U): the last unedited
    acc = collateral(model, masks, evals, settings.chunk_rows)
    control_preds: list[int] = []
    if flipped:  # does the random control flip the example? (its own image, as in the flip test)
        inputs = torch.stack([target_inputs(train_x, torch.tensor([r.example_id]), r.example_id, settings) for r in flipped])
        with frozen(model), unit_masks(model) as hooks:
            control_preds = _predict_targets(model, hooks, masks[len(results):-1], inputs, settings.draws,
                                             eval_rows(settings.chunk_rows, train_x.device)).tolist()
    e = len(results)
    table = pd.DataFrame({
        # Explicit dtypes, so that a table without rows has the same column types.
        "example_id": np.array([r.example_id for r in results], dtype=np.int64),
        "kind": pd.array(["noisy" if bool(is_noisy[r.example_id]) else "clean" for r in results], dtype="str"),
        "n_units": np.array([len(r.units) for r in results], dtype=np.int64),
        "flipped": np.array([r.flipped for r in results], dtype=bool),
        "units": pd.Series([index.names(r.units) for r in results], dtype=object),
        "new_prediction": np.array([r.new_prediction for r in results], dtype=np.int64),
        **{key.replace("_after", "_before"): np.full(e, values[-1]) for key, values in acc.items()},
        **{key: values[:e] for key, values in acc.items()},
    })
    row = {r.example_id: i for i, r in enumerate(flipped)}
    pos = [row.get(r.example_id) for r in results]
    labels = [int(train_labels[r.example_id]) for r in results]
    table["random_flipped"] = pd.array([None if p is None else control_preds[p] != y for p, y in zip(pos, labels)], dtype="boolean")
    table["random_new_prediction"] = pd.array([None if p is None else control_preds[p] for p in pos], dtype="Int64")
    for key, values in acc.items():
        table[f"random_{key}"] = np.array([np.nan if p is None else values[e + p] for p in pos], dtype=np.float64)
    return table


def unit_table(flipping: pd.DataFrame, model: nn.Module) -> pd.DataFrame:
    """`flip_units`: every unit in some flipped example's flip set, with how many flip sets
    (noisy / clean) contain it; `layer_index` is the layer's position in `model.unit_layers`.
    Rows in the global unit order."""
    index = UnitIndex(model)
    position = {layer: i for i, layer in enumerate(index.layers)}
    rows: dict[tuple[int, int], dict] = {}
    flipped = flipping[flipping["flipped"]]
    for kind, units in zip(flipped["kind"], flipped["units"]):
        for unit in units:
            layer, i = parse_unit(unit)
            row = rows.setdefault((position[layer], i), {
                "unit": unit, "layer": layer, "layer_index": position[layer], "n_examples": 0, "n_noisy": 0, "n_clean": 0,
            })
            row["n_examples"] += 1
            row[f"n_{kind}"] += 1
    return pd.DataFrame([rows[k] for k in sorted(rows)], columns=UNIT_COLUMNS)


def summary(flipping: pd.DataFrame) -> dict[str, float | None]:
    """Key numbers of a `flipping` table, per kind: how many examples, the share flipped within
    the cap, mean and median units over the flipped ones, and the share the random control flips
    (None where there is nothing to average)."""
    out: dict[str, float | None] = {}
    for kind in ("noisy", "clean"):
        rows = flipping[flipping["kind"] == kind]
        flipped = rows[rows["flipped"]]
        out[f"{kind}_examples"] = int(len(rows))
        out[f"{kind}_flipped_share"] = round(float(rows["flipped"].mean()), 4) if len(rows) else None
        out[f"{kind}_units_mean"] = round(float(flipped["n_units"].mean()), 2) if len(flipped) else None
        out[f"{kind}_units_median"] = float(flipped["n_units"].median()) if len(flipped) else None
        out[f"{kind}_random_flipped_share"] = (
            round(float(flipped["random_flipped"].astype(float).mean()), 4) if len(flipped) else None
        )
    return out
