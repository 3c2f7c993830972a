"""A benchmark of localization methods with ground truth: which method finds the units that
hold one example's memorization? (Chang et al., NAACL 2024, "Do Localization Methods Actually
Localize Memorized Data in LLMs?", for vision models.)

Each *method* scores every unit (a conv channel or linear neuron of `model.unit_layers`, or a
channel of an example-tied dropout layer) for one target example t with the label it is
predicted with; higher = more responsible. Selection is per unit layer: the top k units of each
layer, as in Chang et al. (scores of different layers are not comparable).

- `greedy`: greedy flipping (PAPER.md section 4, `memloc.flipping` with the run's `flip`
  settings): the units in the order it zeroes them, then the rest by the first step's
  first-order score `sum w dJ/dw` (the same J: the target's loss against its reference batch's).
- `zero_out`: the rise of t's loss when that one unit alone is zeroed (all units of the model
  in one batched pass of masks).
- `activations`: |the unit's activation on t| (its mean over positions for a channel) times the
  L2 norm of its outgoing weights (the weights that read it in the next conv or linear layer
  the forward pass runs; 1 where that layer does not read this layer's units directly).
- `integrated_gradients` (Dai et al. 2022, "knowledge neurons"): the attribution of t's logit
  to each unit of a layer, integrated from a zero activation to the actual one in `ig_steps`
  steps. Scaling a layer's activations by a gate g in [0, 1] is that straight path, so Captum's
  `IntegratedGradients` attributes the logit to the gates (baseline 0, input 1): the integral is
  Captum's, not hand-written.
- `slimming`: a mask in [0, 1] on every unit (start 1, clipped after each step), only the mask
  trained with Adam on t's loss + `slimming_lambda` x mean(mask); score = the mask (ties, e.g.
  units clipped at 1, broken by the mask's mean over the steps).
- `hard_concrete` (Louizos et al. 2018): an L0 gate per unit, z = clip(sigmoid((log u -
  log(1-u) + log_alpha) / beta) x 1.2 - 0.1, 0, 1) with u uniform, trained with Adam on t's loss
  + `hard_concrete_lambda` x expected L0 (mean of sigmoid(log_alpha - beta log(0.1/1.1)));
  score = sigmoid(log_alpha).
- `unitmem` (Wang et al., NeurIPS 2024): label-free and forward only: mu_t, the unit's
  rectified activation (max(output, 0), averaged over positions) on t averaged over
  `unitmem_views` shifted views of t, against mu_o, its mean over `unitmem_others` other
  training examples: (mu_t - mu_o) / (mu_t + mu_o).
- `random`: uniform random scores (the control).

Chang et al. choose Slimming's and HardConcrete's learning rate and lambda on a grid per model;
memloc exposes both as settings (`localize.*`), with defaults chosen on the demo run.

*Ground truths* (`BENCHMARKS`), each with its own targets (seeded choice, `n_targets`):

1. `dropout`: example-tied dropout (PAPER.md section 5) placed each example's memorization in
   units known in advance. The methods see the dropout model as trained (its mode `train`:
   every input row, the target's and its reference batch's, through its own example's masks),
   with the channels of its dropout layers as the units. The units on for t are the
   generalization units and t's own memorization units; among those, each layer's top k_l
   (k_l = t's memorization units there) against t's memorization units. Targets: noisy
   examples the dropout model predicts with their noisy label. `truth_ok`: zeroing t's
   memorization units removes that prediction.
2. `injection` (Chang et al.'s INJ): on the plain final model, a correctly predicted clean
   example gets a wrong label (seeded), and only a random `inject_share` % of each unit layer's
   units (at least one; their incoming weights and bias) are fine-tuned with Adam on it until it
   is predicted with that label with probability `inject_confidence` (memorized as confidently
   as the noisy labels are); those units are the truth (k_l = their number in layer l). The
   model is restored afterwards. `truth_ok`: the injection succeeded within `inject_steps`.
3. `deletion` (Chang et al.'s DEL): on the plain final model, for memorized noisy targets, each
   method's top r % of every layer's units (at least one) are zeroed, for r in `rates`: does t
   lose its memorized label, and how much accuracy do the other memorized noisy examples, clean
   training examples and test examples (a seeded subset, `eval_train` / `eval_test`) lose?

recall@k = sum of hits / sum of k_l over the layers; `chance` is the expected recall of picking
each layer's k_l at random among its candidates n_l: sum k_l^2 / n_l / sum k_l (k / n when all
layers have the same share). `seconds`: the method's time for the target (a batched method's
time divided by its targets).

Tables: `localizers` (one row per method, benchmark, target, and per rate for `deletion`) and
`localizer_units` (the units each method picked: each layer's top k_l, or its top units at the
largest rate for `deletion`, with their rank in the layer, score and whether they are truth).
The naive reference of every method, literally as defined above, is
`memloc.localization_reference`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from memloc.evaluate import eval_rows
from memloc.flipping import (FlipSettings, flip_examples, forward_as_trained, masked_predictions, objective, reference_batch,
                             seeded_generator, target_inputs)
from memloc.interventions import UnitIndex, frozen, unit_axis, unit_masks
from memloc.lazy import lazy, no_grad
from memloc.settings import MAX_COUNT, MAX_SEED, check, in_range, setting

pd = lazy("pandas")
torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")
etd = lazy("models.example_tied_dropout")

METHODS = ("greedy", "zero_out", "activations", "integrated_gradients", "slimming", "hard_concrete", "unitmem", "random")
#: The methods' names for an audience (the explorer's Localizers and One example pages).
METHOD_NAMES = {"greedy": "Greedy flipping", "zero_out": "Zero-out", "activations": "Activations × outgoing weights",
                "integrated_gradients": "Integrated gradients (Captum)", "slimming": "Slimming",
                "hard_concrete": "HardConcrete", "unitmem": "UnitMem", "random": "Random (control)"}
BENCHMARKS = ("dropout", "injection", "deletion")

# Streams of the seeded generators (`memloc.flipping.seeded_generator`), one per kind of draw.
_INJECT_UNITS, _INJECT_LABEL, _VIEWS, _OTHERS, _GATES, _RANDOM, _EVAL = 11, 12, 13, 14, 15, 16, 17
# HardConcrete's stretch interval (gamma, zeta) (Louizos et al. 2018).
_GAMMA, _ZETA = -0.1, 1.1

#: Columns of the `localizers` table.
COLUMNS = ["method", "benchmark", "example_id", "k", "rate", "recall_at_k", "chance", "truth_ok", "lost_memorization",
           "memorized_acc_change", "clean_acc_change", "test_acc_change", "seconds"]
#: Columns of the `localizer_units` table.
UNIT_COLUMNS = ["method", "benchmark", "example_id", "unit", "layer", "rank", "score", "truth"]


@dataclass(frozen=True)
class LocalizeSettings:
    """The `localize` section of a run: the methods, the ground truths and their sizes."""

    methods: tuple = setting(METHODS, f"localization methods to compare, a subset of {', '.join(METHODS)}")
    benchmarks: tuple = setting(BENCHMARKS, f"ground truths, a subset of {', '.join(BENCHMARKS)} (dropout needs stage dropout)")
    n_targets: int = setting(50, f"targets per benchmark (seeded choice); -1 = all; in [-1, {MAX_COUNT}]")
    rates: tuple = setting((0.5, 1.0, 2.0, 5.0), "deletion: percent of each unit layer's units zeroed (at least one), each in (0, 100]")
    inject_share: float = setting(1.0, "injection: percent of each unit layer's units fine-tuned (at least one), in (0, 100]")
    inject_lr: float = setting(0.01, "injection: Adam learning rate, in (0, 10]")
    inject_steps: int = setting(200, "injection: most Adam steps until the target takes its new label, in [1, 100000]")
    inject_confidence: float = setting(0.9, "injection: fine-tune until the new label has this probability (memorized, as the noisy labels are), in (0, 1)")
    ig_steps: int = setting(20, "integrated gradients: steps of the integral (Captum's n_steps), in [1, 1000]")
    slimming_lr: float = setting(0.05, "slimming: Adam learning rate of the masks, in (0, 10]")
    slimming_lambda: float = setting(1.0, "slimming: weight of mean(mask) in the loss, in [0, 1000]")
    slimming_steps: int = setting(100, "slimming: Adam steps, in [1, 100000]")
    hard_concrete_lr: float = setting(0.05, "hard_concrete: Adam learning rate of log_alpha, in (0, 10]")
    hard_concrete_lambda: float = setting(1.0, "hard_concrete: weight of the expected L0 share in the loss, in [0, 1000]")
    hard_concrete_steps: int = setting(100, "hard_concrete: Adam steps, in [1, 100000]")
    hard_concrete_beta: float = setting(2 / 3, "hard_concrete: temperature beta, in (0, 10]")
    unitmem_views: int = setting(8, "unitmem: shifted views of the target averaged, in [1, 1000]")
    unitmem_others: int = setting(256, f"unitmem: other training examples averaged (seeded), in [1, {MAX_COUNT}]")
    eval_train: int = setting(300, f"deletion: clean training examples of the collateral subset (seeded, besides every memorized noisy one); 0 = all; in [0, {MAX_COUNT}]")
    eval_test: int = setting(300, f"deletion: test examples of the collateral subset (seeded); 0 = all; in [0, {MAX_COUNT}]")
    chunk_rows: int = setting(0, f"most forward rows per pass; 0 = auto (as train.eval_batch_size); in [0, {MAX_COUNT}]")
    seed: int = setting(0, f"seed of targets, injections, views, gates and random scores, in [0, {MAX_SEED}]")
    save_every: int = setting(25, f"targets between saved progress (resume point), in [1, {MAX_COUNT}]")

    def __post_init__(self):
        for key, values, allowed in (("methods", self.methods, METHODS), ("benchmarks", self.benchmarks, BENCHMARKS)):
            bad = [v for v in values if v not in allowed]
            check(values and not bad and len(set(values)) == len(values), key,
                  f"a non-empty list without repeats from {', '.join(allowed)}", list(values))
        in_range("n_targets", self.n_targets, -1, MAX_COUNT, integer=True)
        check(len(self.rates) > 0, "rates", "a non-empty list of percents in (0, 100]", list(self.rates))
        for rate in self.rates:
            in_range("rates", rate, 0, 100, open_lo=True)
        in_range("inject_share", self.inject_share, 0, 100, open_lo=True)
        in_range("inject_confidence", self.inject_confidence, 0, 1, open_lo=True, open_hi=True)
        for key in ("inject_lr", "slimming_lr", "hard_concrete_lr", "hard_concrete_beta"):
            in_range(key, getattr(self, key), 0, 10, open_lo=True)
        for key in ("slimming_lambda", "hard_concrete_lambda"):
            in_range(key, getattr(self, key), 0, 1000)
        for key in ("inject_steps", "slimming_steps", "hard_concrete_steps"):
            in_range(key, getattr(self, key), 1, 100_000, integer=True)
        in_range("ig_steps", self.ig_steps, 1, 1000, integer=True)
        in_range("unitmem_views", self.unitmem_views, 1, 1000, integer=True)
        in_range("unitmem_others", self.unitmem_others, 1, MAX_COUNT, integer=True)
        in_range("eval_train", self.eval_train, 0, MAX_COUNT, integer=True)
        in_range("eval_test", self.eval_test, 0, MAX_COUNT, integer=True)
        in_range("chunk_rows", self.chunk_rows, 0, MAX_COUNT, integer=True)
        in_range("seed", self.seed, 0, MAX_SEED, integer=True)
        in_range("save_every", self.save_every, 1, MAX_COUNT, integer=True)


# ---------------------------------------------------------------------- what a method sees
@dataclass
class Subject:
    """What the methods localize in, for T targets: a model and its unit layers, each target's
    label, and the training set (reference batches of greedy, the other examples of UnitMem).

    A model with example-tied dropout is seen as trained (`memloc.flipping.forward_as_trained`):
    every input row through its own example's masks, the target's views through the target's.
    """

    model: nn.Module
    layers: tuple[str, ...] | None  # the unit layers (None: `model.unit_layers`)
    example_ids: torch.Tensor  # (T,) training example ids of the targets
    labels: torch.Tensor  # (T,) the label each target is predicted with (training or injected label)
    train_x: torch.Tensor  # (N, C, H, W)
    train_labels: torch.Tensor  # (N,) training labels, an injected label in place

    @property
    def index(self) -> UnitIndex:
        return UnitIndex(self.model, self.layers)

    def masks(self, masks: torch.Tensor | None = None):
        """`unit_masks` on the subject's unit layers (a `with` scope)."""
        return unit_masks(self.model, masks, self.layers)

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor) -> torch.Tensor:
        """Logits of rows x (N, C, H, W) that are images of the examples `example_ids` (N,)."""
        return forward_as_trained(self.model, x, example_ids.to(x.device))

    @property
    def x(self) -> torch.Tensor:
        """The targets' images (T, C, H, W)."""
        return self.train_x[self.example_ids.to(self.train_x.device)]

    def rows(self, k: int, n: int) -> torch.Tensor:
        """Target k's id, n times (its image's rows)."""
        return self.example_ids[k : k + 1].expand(n)


def _layer_means(subject: Subject, index: UnitIndex, x: torch.Tensor, example_ids: torch.Tensor,
                 rectify: bool = False) -> torch.Tensor:
    """Each unit's activation on each input row (rows, U): its output (`rectify`: max(output,
    0)), averaged over positions (the spatial map of a channel, the tokens of a ViT neuron).
    Runs under the caller's grad mode."""
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    for pos, module in enumerate(index.modules):
        def keep(module, inputs, output, pos=pos):
            axis = unit_axis(module) % output.dim()
            dims = [d for d in range(1, output.dim()) if d != axis]
            output = output.clamp_min(0) if rectify else output
            outputs[pos] = output.mean(dims) if dims else output
        handles.append(module.register_forward_hook(keep))
    try:
        subject.forward(x, example_ids)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat([outputs[pos] for pos in range(len(index.modules))], 1)


def outgoing_norms(subject: Subject, index: UnitIndex) -> torch.Tensor:
    """(U,) the L2 norm of each unit's outgoing weights: the slice of the next conv or linear
    layer the forward pass runs after the unit's layer that reads it (input channel c of a conv;
    the columns of a linear layer that reads c, also after flattening a channel map). 1 where
    that layer does not read the unit layer's units directly (e.g. a residual sum between)."""
    order: list[nn.Module] = []
    modules = {id(m) for m in index.modules}
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in subject.model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) or id(m) in modules]
    try:
        with torch.no_grad():
            subject.forward(subject.x[:1], subject.rows(0, 1))
    finally:
        for handle in handles:
            handle.remove()
    norms = []
    for module, size in zip(index.modules, index.sizes):
        at = next(i for i, m in enumerate(order) if m is module)
        reader = next((m for m in order[at + 1:] if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        weight = None if reader is None else reader.weight.detach()
        if isinstance(reader, nn.Conv2d) and reader.groups == 1 and reader.in_channels == size:
            norms.append(weight.transpose(0, 1).flatten(1).norm(dim=1))
        elif isinstance(reader, nn.Linear) and reader.in_features % size == 0:
            norms.append(weight.view(weight.shape[0], size, -1).transpose(0, 1).flatten(1).norm(dim=1))
        else:
            norms.append(torch.ones(size, device=subject.train_x.device))
    return torch.cat(norms)


def _rows_per_pass(subject: Subject, settings: LocalizeSettings) -> int:
    return eval_rows(settings.chunk_rows, subject.train_x.device)


# ---------------------------------------------------------------------- the methods
def _greedy(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    scores = _first_order(subject, flip)  # (T, U)
    results = flip_examples(subject.model, subject.train_x, subject.train_labels, subject.example_ids.tolist(), flip,
                            layers=subject.layers)
    for k, result in enumerate(results):  # the zeroed units first, in their order
        top = float(scores[k].max()) + 1.0
        for j, unit in enumerate(result.units):
            scores[k, unit] = top + len(result.units) - j
    return scores


def _first_order(subject: Subject, flip: FlipSettings) -> torch.Tensor:
    """Greedy flipping's first-step scores dJ/dm (T, U), all units on (`memloc.flipping`)."""
    n_train = len(subject.train_x)
    batch_size = min(flip.batch_size, n_train)
    index = subject.index
    out = []
    with frozen(subject.model), subject.masks() as hooks:
        for e in subject.example_ids.tolist():
            batch = reference_batch(e, n_train, batch_size, flip.seed)
            inputs = target_inputs(subject.train_x, batch, e, flip)  # (|B| * draws, C, H, W)
            labels = subject.train_labels[batch.to(subject.train_labels.device)]
            masks = subject.train_x.new_ones(1, index.total).requires_grad_(True)
            hooks.set(masks)
            logits = subject.forward(inputs, batch.repeat_interleave(flip.draws)).view(1, batch_size, flip.draws, -1).mean(2)
            objective(logits, labels[None]).sum().backward()
            out.append(masks.grad[0])
    return torch.stack(out)


@no_grad
def _zero_out(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    rows = _rows_per_pass(subject, settings)
    index = subject.index
    x_all = subject.x
    masks = torch.cat([1 - torch.eye(index.total, device=x_all.device), x_all.new_ones(1, index.total)])  # (U + 1, U): last = none zeroed
    out = []
    with frozen(subject.model), subject.masks() as hooks:
        for k in range(len(subject.example_ids)):
            x, y = x_all[k : k + 1], subject.labels[k : k + 1]
            losses = []
            for part in masks.split(rows):
                hooks.set(part)
                logits = subject.forward(x.expand(len(part), *x.shape[1:]), subject.rows(k, len(part)))
                losses.append(F.cross_entropy(logits, y.expand(len(part)), reduction="none"))
            loss = torch.cat(losses)
            out.append(loss[:-1] - loss[-1])
    return torch.stack(out)


@no_grad
def _activations(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    index = subject.index
    with frozen(subject.model):
        acts = _layer_means(subject, index, subject.x, subject.example_ids).abs()  # (T, U)
        return acts * outgoing_norms(subject, index)[None]


def _integrated_gradients(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    index = subject.index
    out = []
    with frozen(subject.model), subject.masks() as hooks:
        for k in range(len(subject.example_ids)):
            x, y = subject.x[k : k + 1], int(subject.labels[k])
            scores = x.new_zeros(index.total)
            for offset, size in zip(index.offsets, index.sizes):
                def logits(gates: torch.Tensor, offset=offset, size=size, k=k, x=x) -> torch.Tensor:
                    ones = gates.new_ones(len(gates), index.total)
                    hooks.set(torch.cat([ones[:, :offset], gates, ones[:, offset + size:]], 1))
                    return subject.forward(x.expand(len(gates), *x.shape[1:]), subject.rows(k, len(gates)))

                attribution = IntegratedGradients(logits).attribute(
                    x.new_ones(1, size), baselines=x.new_zeros(1, size), target=y, n_steps=settings.ig_steps)
                scores[offset : offset + size] = attribution[0].detach()
            out.append(scores)
    return torch.stack(out)


def _loss_of_masks(subject: Subject, hooks, masks: torch.Tensor) -> torch.Tensor:
    """Sum over targets of each target's loss under its own mask row (T blocks of one row)."""
    hooks.set(masks)
    return F.cross_entropy(subject.forward(subject.x, subject.example_ids), subject.labels, reduction="sum")


def _slimming(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    index = subject.index
    masks = subject.train_x.new_ones(len(subject.example_ids), index.total).requires_grad_(True)
    optimizer = torch.optim.Adam([masks], lr=settings.slimming_lr)
    trail = torch.zeros_like(masks)
    with frozen(subject.model), subject.masks() as hooks:
        for _ in range(settings.slimming_steps):
            loss = _loss_of_masks(subject, hooks, masks) + settings.slimming_lambda * masks.mean(1).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                masks.clamp_(0.0, 1.0)
                trail += masks
    return masks.detach() + 1e-6 * trail / settings.slimming_steps  # ties broken by the mean over the steps


def _hard_concrete(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    index = subject.index
    t, beta = len(subject.example_ids), settings.hard_concrete_beta
    log_alpha = subject.train_x.new_full((t, index.total), 3.0).requires_grad_(True)  # gates open at first
    optimizer = torch.optim.Adam([log_alpha], lr=settings.hard_concrete_lr)
    generators = [seeded_generator(settings.seed, int(e), _GATES) for e in subject.example_ids.tolist()]
    with frozen(subject.model), subject.masks() as hooks:
        for _ in range(settings.hard_concrete_steps):
            u = torch.stack([torch.rand(index.total, generator=g) for g in generators]).to(log_alpha)
            u = u.clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (1 - u).log() + log_alpha) / beta)
            gates = (s * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)
            l0 = torch.sigmoid(log_alpha - beta * np.log(-_GAMMA / _ZETA)).mean(1).sum()
            loss = _loss_of_masks(subject, hooks, gates) + settings.hard_concrete_lambda * l0
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return torch.sigmoid(log_alpha.detach())


def shifted_views(x: torch.Tensor, views: int, generator: torch.Generator) -> torch.Tensor:
    """`views` copies of one image (1, C, H, W): the image itself, then copies shifted by up to
    max(1, H // 14) pixels in each direction (edges repeated), (views, C, H, W)."""
    shift = max(1, x.shape[-1] // 14)
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (views, 2), generator=generator).tolist()
    offsets[0] = [shift, shift]
    h, w = x.shape[-2:]
    return torch.cat([padded[..., i : i + h, j : j + w] for i, j in offsets])


def others_sample(n_train: int, size: int, seed: int) -> torch.Tensor:
    """UnitMem's other training examples: a seeded sample of `size` ids (all if fewer)."""
    return torch.randperm(n_train, generator=seeded_generator(seed, 0, _OTHERS))[:size].sort().values


@no_grad
def _unitmem(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    index, rows = subject.index, _rows_per_pass(subject, settings)
    others = others_sample(len(subject.train_x), settings.unitmem_others, settings.seed).to(subject.train_x.device)
    out = []
    with frozen(subject.model):
        acts = torch.cat([_layer_means(subject, index, subject.train_x[ids], ids, rectify=True) for ids in others.split(rows)])  # (M, U)
        for k, e in enumerate(subject.example_ids.tolist()):
            views = shifted_views(subject.x[k : k + 1], settings.unitmem_views, seeded_generator(settings.seed, e, _VIEWS))
            mu_t = _layer_means(subject, index, views, subject.rows(k, len(views)), rectify=True).mean(0)
            mu_o = acts[others != e].mean(0)  # the target is not one of the others
            out.append(_unitmem_score(mu_t, mu_o))
    return torch.stack(out)


def _unitmem_score(mu_t: torch.Tensor, mu_o: torch.Tensor) -> torch.Tensor:
    """UnitMem of each unit for one target from its mean activations (U,) on the target and on the others."""
    return (mu_t - mu_o) / (mu_t + mu_o).clamp_min(1e-12)


def _random(subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    total = subject.index.total
    return torch.stack([torch.rand(total, generator=seeded_generator(settings.seed, int(e), _RANDOM))
                        for e in subject.example_ids.tolist()]).to(subject.train_x.device)


#: Method name -> its scores (T, U) for a subject's targets.
SCORERS: dict[str, Callable[[Subject, LocalizeSettings, FlipSettings], torch.Tensor]] = {
    "greedy": _greedy, "zero_out": _zero_out, "activations": _activations, "integrated_gradients": _integrated_gradients,
    "slimming": _slimming, "hard_concrete": _hard_concrete, "unitmem": _unitmem, "random": _random,
}


def score(method: str, subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> torch.Tensor:
    """The scores (T, U) of `method` for every unit of `subject` (`subject.index`
    order) and target; higher = more responsible for the target's label."""
    return SCORERS[method](subject, settings, flip).detach().float()


# ---------------------------------------------------------------------- selection and recall
def top_per_layer(scores: torch.Tensor, index: UnitIndex, counts: Sequence[int], allowed: torch.Tensor | None = None) -> list[int]:
    """Global ids of each layer's `counts[l]` highest-scoring units among the `allowed` ones
    (U,) bool, layer by layer, each layer's best first (ties: the lowest index)."""
    picked: list[int] = []
    for offset, size, count in zip(index.offsets, index.sizes, counts):
        s = scores[offset : offset + size].double()
        if allowed is not None:
            s = s.masked_fill(~allowed[offset : offset + size], float("-inf"))
        order = torch.sort(s, descending=True, stable=True).indices[:count]
        picked += [offset + int(i) for i in order]
    return picked


def recall_and_chance(picked: Sequence[int], truth: torch.Tensor, candidates: torch.Tensor, index: UnitIndex) -> tuple[float, float]:
    """recall@k of the picked units against the truth (U,) bool, and the chance level of a
    per-layer random pick among the `candidates` (U,) bool: sum k_l^2 / n_l / sum k_l."""
    k = [int(truth[o : o + s].sum()) for o, s in zip(index.offsets, index.sizes)]
    n = [int(candidates[o : o + s].sum()) for o, s in zip(index.offsets, index.sizes)]
    if sum(k) == 0:  # nothing to find (a target without memorization units)
        return float("nan"), float("nan")
    hits = int(truth[list(picked)].sum()) if picked else 0
    chance = sum(kl * kl / nl for kl, nl in zip(k, n) if nl) / sum(k)
    return hits / sum(k), chance


def rate_counts(index: UnitIndex, rate: float) -> list[int]:
    """Units zeroed per layer at `rate` percent: round(rate% of the layer), at least one."""
    return [max(1, round(size * rate / 100)) for size in index.sizes]


def _unit_rows(method: str, benchmark: str, example_id: int, picked: list[int], scores: torch.Tensor, index: UnitIndex,
               truth: torch.Tensor | None) -> list[dict]:
    rows, rank = [], {}
    for g in picked:
        pos, _ = index.locate(g)
        layer = index.layers[pos]
        rank[layer] = rank.get(layer, -1) + 1
        rows.append({"method": method, "benchmark": benchmark, "example_id": example_id,
                     "unit": f"{layer}[{g - index.offsets[pos]}]", "layer": layer, "rank": rank[layer],
                     "score": float(scores[g]), "truth": None if truth is None else bool(truth[g])})
    return rows


def _timed_scores(method: str, subject: Subject, settings: LocalizeSettings, flip: FlipSettings) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    scores = score(method, subject, settings, flip)
    return scores, (time.perf_counter() - start) / len(subject.example_ids)


def _recall_rows(benchmark: str, subject: Subject, truth: torch.Tensor, candidates: torch.Tensor, ok: list[bool],
                 settings: LocalizeSettings, flip: FlipSettings) -> tuple[list[dict], list[dict]]:
    """Rows of a recall benchmark for the subject's targets: truth and candidates (T, U) bool."""
    index = subject.index
    rows, unit_rows = [], []
    for method in settings.methods:
        scores, seconds = _timed_scores(method, subject, settings, flip)
        for k, e in enumerate(subject.example_ids.tolist()):
            counts = [int(truth[k, o : o + s].sum()) for o, s in zip(index.offsets, index.sizes)]
            picked = top_per_layer(scores[k], index, counts, candidates[k])
            recall, chance = recall_and_chance(picked, truth[k], candidates[k], index)
            rows.append({"method": method, "benchmark": benchmark, "example_id": e, "k": sum(counts), "rate": np.nan,
                         "recall_at_k": recall, "chance": chance, "truth_ok": ok[k], "seconds": seconds})
            unit_rows += _unit_rows(method, benchmark, e, picked, scores[k], index, truth[k])
    return rows, unit_rows


@no_grad
def _predictions_under(subject: Subject, masks: torch.Tensor, repeats: int = 1) -> torch.Tensor:
    """Prediction (E,) of the targets' images, repeated `repeats` times (E = repeats x T rows),
    each under its own mask row (E, U)."""
    x, ids = subject.x.repeat(repeats, *([1] * (subject.x.dim() - 1))), subject.example_ids.repeat(repeats)
    with frozen(subject.model), subject.masks(masks):
        return subject.forward(x, ids).argmax(1)


# ---------------------------------------------------------------------- the ground truths
def dropout_benchmark(model: nn.Module, train_x: torch.Tensor, train_labels: torch.Tensor, targets: Sequence[int],
                      settings: LocalizeSettings, flip: FlipSettings) -> tuple[list[dict], list[dict]]:
    """Ground truth 1 for `targets`, memorized noisy examples of the dropout `model`."""
    ids = torch.tensor(list(targets), dtype=torch.long, device=train_x.device)
    subject = Subject(model, etd.dropout_units(model), ids, train_labels[ids], train_x, train_labels)
    layers = list(subject.index.modules)
    keep = torch.cat([layer.keep(ids) for layer in layers], 1)  # (T, U): the units on for each target
    generalization = torch.cat([torch.arange(layer.channels, device=ids.device) < layer.n_gen for layer in layers])  # (U,)
    truth = keep & ~generalization  # each target's own memorization units
    ok = (_predictions_under(subject, (~truth).to(train_x.dtype)) != subject.labels).tolist()
    return _recall_rows("dropout", subject, truth, keep, ok, settings, flip)


def injection_units(index: UnitIndex, share: float, example_id: int, seed: int) -> list[int]:
    """The units injected for one target: a seeded `share` % of each unit layer (at least one)."""
    g = seeded_generator(seed, example_id, _INJECT_UNITS)
    units = []
    for offset, size, count in zip(index.offsets, index.sizes, rate_counts(index, share)):
        units += sorted(offset + int(i) for i in torch.randperm(size, generator=g)[:count])
    return units


def injected_label(label: int, num_classes: int, example_id: int, seed: int) -> int:
    """A wrong label for a target, uniform over the other classes (seeded)."""
    g = seeded_generator(seed, example_id, _INJECT_LABEL)
    return (label + 1 + int(torch.randint(0, num_classes - 1, (1,), generator=g))) % num_classes


def inject(model: nn.Module, x: torch.Tensor, label: int, units: Sequence[int], settings: LocalizeSettings) -> bool:
    """Fine-tune only the incoming weights and bias of `units` with Adam on one image (1, C, H, W)
    until `model` predicts `label` with probability `inject_confidence`, at most `inject_steps`
    steps; True if it does. Edits `model` in place: call it inside `frozen(model)`, which
    restores it (and keeps everything else fixed)."""
    index = UnitIndex(model)
    params, row_masks = [], []
    for pos, module in enumerate(index.modules):
        rows = [g - index.offsets[pos] for g in units if index.locate(g)[0] == pos]
        if not rows:
            continue
        for p in (module.weight, module.bias):
            if p is None:
                continue
            mask = torch.zeros(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype, device=p.device)
            mask[rows] = 1.0
            p.requires_grad_(True)
            params.append(p)
            row_masks.append(mask)
    optimizer = torch.optim.Adam(params, lr=settings.inject_lr)
    target = torch.tensor([label], device=x.device)
    def injected(logits: torch.Tensor) -> bool:
        return int(logits.argmax(1)) == label and float(logits.detach().softmax(1)[0, label]) >= settings.inject_confidence

    for _ in range(settings.inject_steps):
        logits = model(x)
        if injected(logits):
            return True
        optimizer.zero_grad()
        F.cross_entropy(logits, target).backward()
        for p, mask in zip(params, row_masks):
            p.grad.mul_(mask)
        optimizer.step()
    with torch.no_grad():
        return injected(model(x))


def injection_benchmark(model: nn.Module, train_x: torch.Tensor, train_labels: torch.Tensor, targets: Sequence[int],
                        num_classes: int, settings: LocalizeSettings, flip: FlipSettings) -> tuple[list[dict], list[dict]]:
    """Ground truth 2 for `targets`, clean examples the plain `model` predicts correctly: each
    injected on its own (the model restored after each)."""
    index = UnitIndex(model)
    rows, unit_rows = [], []
    for e in targets:
        label = injected_label(int(train_labels[e]), num_classes, e, settings.seed)
        units = injection_units(index, settings.inject_share, e, settings.seed)
        labels = train_labels.clone()
        labels[e] = label
        with frozen(model):
            ok = inject(model, train_x[e : e + 1], label, units, settings)
            ids = torch.tensor([e], device=train_x.device)
            subject = Subject(model, None, ids, labels[ids], train_x, labels)
            truth = index.masks([units], train_x)[0] == 0  # (U,)
            everything = torch.ones_like(truth)
            r, u = _recall_rows("injection", subject, truth[None], everything[None], [ok], settings, flip)
        if not ok:  # the injection did not take: no truth to recover
            for row in r:
                row["recall_at_k"] = row["chance"] = np.nan
            u = []
        rows += r
        unit_rows += u
    return rows, unit_rows


def deletion_benchmark(model: nn.Module, train_x: torch.Tensor, train_labels: torch.Tensor, is_noisy: torch.Tensor,
                       memorized: torch.Tensor, test_x: torch.Tensor, test_labels: torch.Tensor, targets: Sequence[int],
                       settings: LocalizeSettings, flip: FlipSettings) -> tuple[list[dict], list[dict]]:
    """Ground truth 3 for `targets`, memorized noisy examples of the plain `model`; `memorized`
    (N,) bool marks every memorized noisy training example."""
    ids = torch.tensor(list(targets), dtype=torch.long, device=train_x.device)
    subject = Subject(model, None, ids, train_labels[ids], train_x, train_labels)
    index = subject.index
    evals = _collateral_set(train_x, train_labels, is_noisy, memorized, test_x, test_labels, settings)
    before = {name: (masked_predictions(model, index.masks([()], train_x), x, settings.chunk_rows)[0] == y)
              for name, (x, y, _) in evals.items()}
    rows, unit_rows = [], []
    for method in settings.methods:
        scores, seconds = _timed_scores(method, subject, settings, flip)
        picks = {rate: [top_per_layer(scores[k], index, rate_counts(index, rate)) for k in range(len(ids))]
                 for rate in settings.rates}
        sets = [picks[rate][k] for rate in settings.rates for k in range(len(ids))]  # rate-major
        masks = index.masks(sets, train_x)  # (R * T, U)
        lost = _predictions_under(subject, masks, len(settings.rates)) != subject.labels.repeat(len(settings.rates))
        after = {name: masked_predictions(model, masks, x, settings.chunk_rows) == y for name, (x, y, _) in evals.items()}
        for r, rate in enumerate(settings.rates):
            for k, e in enumerate(ids.tolist()):
                change = {}
                for name, (_, _, eval_ids) in evals.items():
                    others = eval_ids != e  # the target itself is not collateral
                    a, b = after[name][r * len(ids) + k][others], before[name][others]
                    change[name] = float(a.double().mean() - b.double().mean()) if len(a) else np.nan
                rows.append({"method": method, "benchmark": "deletion", "example_id": e, "k": len(picks[rate][k]), "rate": rate,
                             "lost_memorization": bool(lost[r * len(ids) + k]), "memorized_acc_change": change["memorized"],
                             "clean_acc_change": change["clean"], "test_acc_change": change["test"], "seconds": seconds})
        largest = max(settings.rates)
        for k, e in enumerate(ids.tolist()):
            unit_rows += _unit_rows(method, "deletion", e, picks[largest][k], scores[k], index, None)
    return rows, unit_rows


def _collateral_set(train_x, train_labels, is_noisy, memorized, test_x, test_labels, settings: LocalizeSettings) -> dict:
    """The deletion benchmark's collateral populations: name -> (images, labels, ids); every
    memorized noisy example, a seeded subset of clean training and of test examples."""
    g = seeded_generator(settings.seed, 0, _EVAL)

    def pick(ids: torch.Tensor, size: int) -> torch.Tensor:
        return ids if size == 0 or size >= len(ids) else ids[torch.randperm(len(ids), generator=g)[:size]].sort().values

    noisy = is_noisy.cpu()
    mem = torch.nonzero(memorized.cpu()).flatten()
    clean = pick(torch.nonzero(~noisy).flatten(), settings.eval_train)
    test = pick(torch.arange(len(test_x)), settings.eval_test)
    device = train_x.device
    return {
        "memorized": (train_x[mem.to(device)], train_labels[mem.to(device)], mem.to(device)),
        "clean": (train_x[clean.to(device)], train_labels[clean.to(device)], clean.to(device)),
        "test": (test_x[test.to(device)], test_labels[test.to(device)], torch.full((len(test),), -1, device=device)),
    }


def table(rows: list[dict]) -> pd.DataFrame:
    """`localizers` rows as a table with fixed column types (also without rows)."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("method", "benchmark"):
        frame[column] = frame[column].astype("str")
    frame["example_id"] = frame["example_id"].astype(np.int64)
    frame["k"] = frame["k"].astype(np.int64)
    for column in ("truth_ok", "lost_memorization"):
        frame[column] = frame[column].astype("boolean")
    for column in ("rate", "recall_at_k", "chance", "memorized_acc_change", "clean_acc_change", "test_acc_change", "seconds"):
        frame[column] = frame[column].astype(np.float64)
    return frame


def unit_table(rows: list[dict]) -> pd.DataFrame:
    """`localizer_units` rows as a table with fixed column types (also without rows)."""
    frame = pd.DataFrame(rows, columns=UNIT_COLUMNS)
    for column in ("method", "benchmark", "unit", "layer"):
        frame[column] = frame[column].astype("str")
    frame["example_id"] = frame["example_id"].astype(np.int64)
    frame["rank"] = frame["rank"].astype(np.int64)
    frame["score"] = frame["score"].astype(np.float64)
    frame["truth"] = frame["truth"].astype("boolean")
    return frame


def summary(localizers: pd.DataFrame) -> dict[str, float | str | None]:
    """Key numbers: per recall benchmark the best method by mean recall@k, its recall and the
    chance level; for deletion the best method's share of targets that lose memorization at
    the smallest rate."""
    out: dict[str, float | str | None] = {}
    for benchmark in ("dropout", "injection"):
        rows = localizers[(localizers["benchmark"] == benchmark) & localizers["recall_at_k"].notna()]
        if len(rows):
            means = rows.groupby("method")["recall_at_k"].mean()
            out[f"{benchmark}_best"] = str(means.idxmax())
            out[f"{benchmark}_best_recall"] = round(float(means.max()), 4)
            out[f"{benchmark}_chance"] = round(float(rows["chance"].mean()), 4)
    rows = localizers[localizers["benchmark"] == "deletion"]
    if len(rows):
        first = rows[rows["rate"] == rows["rate"].min()]
        lost = first.groupby("method")["lost_memorization"].mean()
        out["deletion_best"] = str(lost.idxmax())
        out["deletion_best_lost"] = round(float(lost.max()), 4)
    return out
