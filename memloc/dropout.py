"""Example-tied dropout: memorization put into units chosen in advance (PAPER.md section 5).

A second model of the run's architecture is trained on the same data, noisy labels, batch
order and schedule as the run's plain model, with an `ExampleTiedDropout` layer after each
chosen block (`models.example_tied_dropout`): a few *generalization* units are always on, and
each training example also uses its own fixed random subset of the *memorization* units. The
paper's finding is that the noisy labels end up stored in the memorization units: evaluated in
*drop* mode (memorization units off) the model no longer predicts the noisy labels, while clean
training and test accuracy stay.

A run's two models are its *variants*: `plain` (stage `train`, no dropout) and `dropout`
(stage `dropout`, trained by the same resumable loop, `precompute/train.py`, with its own
checkpoints). This module holds the `dropout` settings and evaluates the dropout variant in its
three *modes* (`models.example_tied_dropout.MODES`), next to the plain variant:

- `train`: each training example through its own mask, i.e. the model as trained;
- `test`: memorization units scaled by `p_mem`;
- `drop`: memorization units zeroed, generalization units scaled by `(p_gen + p_mem) / p_gen`.

Table `dropout` has one row per mode and one for the plain variant (`mode` = `plain`);
`dropout_examples` one per training example and row of `dropout`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memloc.data import Dataset, Labels
from memloc.evaluate import ACCURACIES, eval_rows, population_metrics
from memloc.interventions import eval_mode
from memloc.lazy import lazy, no_grad
from memloc.settings import MAX_EPOCHS, in_range, setting
from memloc.train import TrainSettings
from models.base import DropoutOptions

pd = lazy("pandas")
torch = lazy("torch")
nn = lazy("torch.nn")
etd = lazy("models.example_tied_dropout")  # its layers are nn.Modules: torch

#: Columns of the `dropout` table.
COLUMNS = ["mode", *ACCURACIES]
#: Columns of the `dropout_examples` table.
EXAMPLE_COLUMNS = ["example_id", "mode", "prediction", "correct"]


@dataclasses.dataclass(frozen=True)
class DropoutSettings(DropoutOptions):
    """The `dropout` section of a run: the dropout variant's example-tied dropout (the options
    the model zoo takes, declared there) and how long it trains."""

    epochs: int = setting(0, f"training epochs of the dropout model; 0 = train.epochs (the same schedule); in [0, {MAX_EPOCHS}]")

    def __post_init__(self):
        super().__post_init__()
        in_range("epochs", self.epochs, 0, MAX_EPOCHS, integer=True)

    def train_settings(self, train: TrainSettings) -> TrainSettings:
        """The plain variant's training settings, with `epochs` if set."""
        return dataclasses.replace(train, epochs=self.epochs or train.epochs)


@no_grad
def predict_mode(model: nn.Module, x: torch.Tensor, mode: str | None, batch_size: int = 0,
                 example_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (N, K) in eval mode; `mode` is the dropout mode (None: a model without dropout).
    Mode `train` needs the `example_ids` (N,) of the rows of `x`, whose masks it applies."""
    if mode == "train" and example_ids is None:
        raise ValueError("mode 'train' applies each example's own mask: pass example_ids")
    batch_size = eval_rows(batch_size, x.device)
    with eval_mode(model):
        if mode is None:
            return torch.cat([model(xb) for xb in x.split(batch_size)])
        ids = example_ids.split(batch_size) if mode == "train" else [None] * len(x.split(batch_size))
        with etd.dropout_mode(model, mode):
            return torch.cat([model(xb, example_ids=ib) for xb, ib in zip(x.split(batch_size), ids)])


@dataclasses.dataclass
class DropoutResult:
    """Tables `dropout` (one row per mode) and `dropout_examples` (one row per example and mode)."""

    modes: pd.DataFrame
    examples: pd.DataFrame = dataclasses.field(repr=False)


def evaluate_modes(dropout_model: nn.Module, plain_model: nn.Module, data: Dataset, labels: Labels,
                   batch_size: int = 0) -> DropoutResult:
    """Accuracy per population (`memloc.evaluate`) and each training example's prediction, for
    the dropout variant in modes train, test and drop and for the plain variant (`plain`)."""
    train_ids = torch.arange(data.num_train, device=data.train_x.device)  # (N,)
    rows, examples = [], []
    for mode in (*etd.MODES, "plain"):
        model, dropout = (plain_model, None) if mode == "plain" else (dropout_model, mode)
        train_logits = predict_mode(model, data.train_x, dropout, batch_size, train_ids)  # (N, K)
        # Test examples own no masks, so mode train has no test accuracy (NaN).
        test_logits = None if mode == "train" else predict_mode(model, data.test_x, dropout, batch_size)
        metrics = population_metrics(train_logits, train_logits[:0] if test_logits is None else test_logits,
                                     labels, data.test_labels[:0] if test_logits is None else data.test_labels)
        rows.append({"mode": mode, **{key: metrics[key] for key in ACCURACIES}})
        prediction = train_logits.argmax(1)  # (N,)
        examples.append(pd.DataFrame({
            "example_id": np.arange(data.num_train, dtype=np.int64),
            "mode": mode,
            "prediction": prediction.cpu().numpy().astype(np.int64),
            "correct": (prediction == labels.train_labels).cpu().numpy(),
        }))
    return DropoutResult(pd.DataFrame(rows), pd.concat(examples, ignore_index=True))
