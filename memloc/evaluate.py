"""Evaluation of a model on the four populations the paper tracks.

- *clean*: clean training examples against their (true) labels;
- *noisy*: noisy training examples against their noisy training labels, the memorization
  accuracy (a noisy example predicted with its noisy label is *memorized*);
- *noisy_true*: noisy training examples against their true labels;
- *test*: the test set.

These four names prefix every accuracy and loss column of memloc's tables (`clean_acc`,
`noisy_acc`, `noisy_true_acc`, `test_acc`, ...); `POPULATIONS` gives each its label for pages
and figures. Everything stays on the model's device; batches are slices of device tensors.
"""

from __future__ import annotations

from memloc.data import Labels
from memloc.interventions import eval_mode
from memloc.lazy import lazy, no_grad

torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")

#: The four populations, in the order tables and pages show them, with their labels.
POPULATIONS = {
    "clean": "clean",
    "noisy": "memorized (noisy label)",
    "noisy_true": "noisy vs true label",
    "test": "test",
}


def accuracy_column(population: str) -> str:
    """The table column of a population's accuracy, e.g. `noisy_acc`."""
    return f"{population}_acc"


#: `clean_acc`, `noisy_acc`, `noisy_true_acc`, `test_acc`: the accuracy columns of the tables.
ACCURACIES = tuple(accuracy_column(p) for p in POPULATIONS)


#: Rows per evaluation pass when `train.eval_batch_size` is 0 (auto), by device type. On a CPU
#: a ResNet's activations for a few hundred rows stay in cache: ResNet-9 at 1/4 width evaluates
#: 28x28 images about 3x faster in batches of 256 than of 4096 (BENCHMARKS.md, "Every stage of
#: fashion-mnist"); a GPU is kept busy by large batches.
AUTO_EVAL_ROWS = {"cpu": 256, "cuda": 4096}


def eval_rows(batch_size: int, device: torch.device | str) -> int:
    """The batch size of evaluation passes on `device`: `batch_size`, or for 0 (auto) the
    device type's `AUTO_EVAL_ROWS` (4096 for any other type)."""
    return batch_size or AUTO_EVAL_ROWS.get(torch.device(device).type, 4096)


@no_grad
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 0) -> torch.Tensor:
    """Logits (N, K) in eval mode, computed in batches of `batch_size` (0: `eval_rows`'s
    choice for the device of `x`); the model is restored afterwards."""
    rows = eval_rows(batch_size, x.device)
    with eval_mode(model):
        return torch.cat([model(xb) for xb in x.split(rows)])


def population_metrics(
    train_logits: torch.Tensor, test_logits: torch.Tensor, labels: Labels, test_labels: torch.Tensor
) -> dict[str, float]:
    """Accuracy and mean cross-entropy per population, from precomputed logits:
    `{clean,noisy,noisy_true,test}_{acc,loss}`, NaN for a population without examples."""
    noisy = labels.is_noisy
    parts = {
        "clean": (train_logits[~noisy], labels.true_labels[~noisy]),
        "noisy": (train_logits[noisy], labels.train_labels[noisy]),
        "noisy_true": (train_logits[noisy], labels.true_labels[noisy]),
        "test": (test_logits, test_labels),
    }
    out: dict[str, float] = {}
    for name, (logits, y) in parts.items():
        if len(y) == 0:
            out[f"{name}_acc"] = float("nan")
            out[f"{name}_loss"] = float("nan")
            continue
        out[f"{name}_acc"] = (logits.argmax(1) == y).float().mean().item()
        out[f"{name}_loss"] = F.cross_entropy(logits, y).item()
    return out


def evaluate(
    model: nn.Module, train_x: torch.Tensor, labels: Labels, test_x: torch.Tensor, test_labels: torch.Tensor,
    batch_size: int = 0,
) -> dict[str, float]:
    """Accuracy and loss of `model` on the four populations (eval mode)."""
    return population_metrics(predict(model, train_x, batch_size), predict(model, test_x, batch_size), labels, test_labels)
