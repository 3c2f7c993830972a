"""The paper's claims as a scorecard: one row per claim, its number on a run (or over a sweep's
seeds) and a verdict by a rule that the row states.

A claim (`CLAIMS`) is a sentence of PAPER.md, the paper's number where it gives one (CIFAR-10,
ResNet-9), the stages it needs, the explorer page that shows it, and a rule. `measure(tables,
...)` turns one run's tables into the numbers the rules read (`memloc.summary.numbers_from` and a
few more); `judge(claim, numbers)` applies one rule. Every rule is a list of conditions on those
numbers and the verdict follows from how many hold:

- **holds**: every condition holds;
- **partly**: some hold, not all;
- **does not hold**: none holds;
- **not measured**: the run lacks a stage (or a column) the rule reads.

Over several runs that differ only in their seed (`scorecard(numbers_per_seed)`), each run gets its
own verdict; the claim holds if it holds on every seed, does not hold if its verdict is *does not
hold* on every seed, and otherwise holds partly ("holds on 3 of 5 seeds"); its number is the mean, standard deviation and n
over the seeds. The thresholds are the module's constants, so a reader can see (and change) what
"few", "little" and "most" mean here.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

import models
from memloc.data import INPUT_SHAPES
from memloc.grid import point_name, seed_axes
from memloc.overrides import command_for, from_dict
from memloc.store import Run, RunError, Sweep
from memloc.summary import numbers_from, run_tables

VERDICTS = ("holds", "partly", "does not hold", "not measured")

MEMORIZED = 0.95  # "~100% of noisy labels fitted": at least this share
TEST_KEPT = 0.05  # "test accuracy stays up": final within this of the best epoch's
COMPARABLE = 0.5  # "same order": the noisy gradient norm at least this fraction of the clean one
LONG_PART = 0.25  # "a long part of training": at least this share of the epochs
KEEPS = 0.5  # a group is redundant when editing it keeps at least this share of the memorization
FEW_UNITS = 10  # "few units": a median flip set of at most this many
LITTLE = 0.05  # "costs little accuracy": a mean drop of at most this (absolute)
RANDOM_FLIPS = 0.1  # "beats random": as many random units flip at most this share
OUTSIDE_LAST = 0.25  # "several layers": at least this share of flip units outside the last unit layer
DROP_LEFT = 0.1  # "removes memorization": at most this much left in drop mode
CLEAN_KEPT = 0.05  # "clean accuracy stays": drop mode within this of test mode


# ---------------------------------------------------------------------- the numbers of one run
def measure(tables: Mapping[str, pd.DataFrame], peak_epoch: float, unit_layers: Sequence[str]) -> dict[str, float]:
    """The numbers the claims read, from one run's tables (by name): the key numbers of
    `memloc.summary.numbers_from` and

    - `test_acc_best`: the best test accuracy of any epoch (table `training`);
    - `comparable.<group>`: the share of epochs in which the group's noisy gradient norm is at
      least `COMPARABLE` x its clean one; `cosine.<group>`: its clean/noisy cosine averaged over
      the epochs (table `gradients`);
    - `comparable_min`, `cosine_mean`: the smallest of those shares, the mean of those cosines;
    - `redundant_share`: the share of groups that keep at least `KEEPS` of the final memorization
      when rewound to epoch 0 (tables `training` and `rewinding`);
    - `noisy_units_median_all`, `clean_units_median_all`: median flip-set size over all targets of
      the kind, an example not flipped within the cap counting the cap (a lower bound);
      `noisy_edit_clean_drop`, `noisy_edit_test_drop`: mean accuracy lost on clean training and
      test examples by zeroing a noisy example's flip set (before - after, flipped ones only);
      `noisy_outside_last`: the share of those flip sets' units outside the last of `unit_layers`
      (table `flipping`);
    - `deepest_critical`: where the deepest critical group lies, as (its position) / (groups),
      NaN if none is critical;
    - `dropout_memorized`, `dropout_clean_acc`: the dropout model's memorization in train mode
      (each example with its own mask, as trained) and its clean accuracy in test mode;
      `plain_gap`, `drop_gap`: the generalization gap (clean training minus test accuracy) of the
      plain model and of the dropout model in drop mode (table `dropout`).
    """
    out = numbers_from(tables, peak_epoch)
    if "training" in tables:
        train = tables["training"]
        out["test_acc_best"] = float(train.loc[train["epoch"] > 0, "test_acc"].max())
    if "gradients" in tables and (tables["gradients"]["noisy_norm"] > 0).any():  # a run without noisy examples has none
        grads = tables["gradients"].sort_values(["group_index", "epoch"])
        for group, rows in grads.groupby("group", sort=False):
            out[f"comparable.{group}"] = float((rows["noisy_norm"] >= COMPARABLE * rows["clean_norm"]).mean())
            out[f"cosine.{group}"] = float(rows["cosine"].mean())
        out["comparable_min"] = min(groups_of(out, "comparable").values())
        out["cosine_mean"] = float(np.mean(list(groups_of(out, "cosine").values())))
    rewound = groups_of(out, "rewound")
    if rewound and "memorized" in out:
        critical = critical_groups(out)
        out["redundant_share"] = 1 - len(critical) / len(rewound)
        out["deepest_critical"] = (list(rewound).index(critical[-1]) + 1) / len(rewound) if critical else math.nan
    if "flipping" in tables:
        flips = tables["flipping"]
        for kind in ("noisy", "clean"):
            rows = flips[flips["kind"] == kind]
            if len(rows):
                out[f"{kind}_units_median_all"] = float(rows["n_units"].median())
        noisy = flips[(flips["kind"] == "noisy") & flips["flipped"]]
        if len(noisy):
            units = [u for units in noisy["units"] for u in units]
            last = f"{unit_layers[-1]}["
            out["noisy_outside_last"] = float(np.mean([not u.startswith(last) for u in units]))
        if len(noisy) and "acc_test_before" in noisy:  # flipping tables written before the scorecard lack them
            out["noisy_edit_clean_drop"] = float((noisy["acc_clean_before"] - noisy["acc_clean_after"]).mean())
            out["noisy_edit_test_drop"] = float((noisy["acc_test_before"] - noisy["acc_test_after"]).mean())
    if "dropout" in tables:
        modes = tables["dropout"].set_index("mode")
        out["dropout_memorized"] = float(modes.loc["train", "noisy_acc"])
        out["dropout_clean_acc"] = float(modes.loc["test", "clean_acc"])
        out["plain_gap"] = float(modes.loc["plain", "clean_acc"] - modes.loc["plain", "test_acc"])
        out["drop_gap"] = float(modes.loc["drop", "clean_acc"] - modes.loc["drop", "test_acc"])
    return out


def groups_of(numbers: Mapping[str, float], kind: str) -> dict[str, float]:
    """`{group: value}` of the numbers `kind.<group>` (rewound, retrained, comparable, cosine), in order."""
    return {k.split(".", 1)[1]: v for k, v in numbers.items() if k.startswith(f"{kind}.")}


def critical_groups(numbers: Mapping[str, float]) -> list[str]:
    """The groups that, rewound to epoch 0, keep less than `KEEPS` of the final memorization
    (the others are redundant), in order; none where the run has no memorization to lose."""
    if not _have(numbers, "memorized"):
        return []
    return [g for g, v in groups_of(numbers, "rewound").items() if v < KEEPS * numbers["memorized"]]


# ---------------------------------------------------------------------- claims and their rules
#: A rule's conditions on one run's numbers: (what it says, whether it holds), or None where a
#: number it reads is missing (the claim is then not measured).
Conditions = Callable[[Mapping[str, float]], list[tuple[str, bool]] | None]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the claim, one sentence
    paper: str  # the paper's number (CIFAR-10 ResNet-9) where it gives one
    rule: str  # the rule, as the row prints it
    number: str  # the key of `measure` shown as the claim's number
    reads: str  # what that number is, in a few words
    unit: str  # how the number reads: "%", "points" (of accuracy lost), "units" or "" (a plain number)
    stages: tuple[str, ...]  # the stages that make its tables
    page: str  # the explorer page that shows it (its url_path)
    conditions: Conditions


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _have(numbers: Mapping[str, float], *keys: str) -> bool:
    return all(k in numbers and math.isfinite(numbers[k]) for k in keys)


def _memorized(n):
    if not _have(n, "memorized", "test_acc", "test_acc_best"):
        return None
    return [(f"memorized {_pct(n['memorized'])} >= {_pct(MEMORIZED)}", n["memorized"] >= MEMORIZED),
            (f"final test accuracy {_pct(n['test_acc'])} within {TEST_KEPT * 100:.0f} points of its best epoch's "
             f"{_pct(n['test_acc_best'])}", n["test_acc"] >= n["test_acc_best"] - TEST_KEPT)]


def _comparable(n):
    shares = groups_of(n, "comparable")
    if not shares:
        return None
    long = [g for g, s in shares.items() if s >= LONG_PART]
    return [(f"in every group ({len(long)} of {len(shares)} do)", len(long) == len(shares)),
            (f"in some group ({', '.join(long) or 'none'})", bool(long))]


def _cosine(n):
    cosines = groups_of(n, "cosine")
    if not cosines:
        return None
    negative = [g for g, c in cosines.items() if c < 0]
    return [(f"negative on average in every group ({len(negative)} of {len(cosines)} are)", len(negative) == len(cosines)),
            (f"negative on average in some group ({', '.join(negative) or 'none'})", bool(negative))]


def _redundant(n):
    rewound, retrained = groups_of(n, "rewound"), groups_of(n, "retrained")
    if not rewound or not retrained or not _have(n, "memorized"):
        return None
    keep = KEEPS * n["memorized"]
    r1 = [g for g, v in rewound.items() if v >= keep]
    r2 = [g for g, v in retrained.items() if v >= keep]
    return [(f"rewinding: {len(r1)} of {len(rewound)} groups redundant ({', '.join(r1) or 'none'})", len(r1) > len(rewound) / 2),
            (f"retraining: {len(r2)} of {len(retrained)} redundant ({', '.join(r2) or 'none'})", len(r2) > len(retrained) / 2)]


def _not_last(n):
    rewound = groups_of(n, "rewound")
    if not rewound or not _have(n, "memorized"):
        return None
    groups = list(rewound)
    critical = critical_groups(n)
    return [(f"some group is critical ({', '.join(critical) or 'none'})", bool(critical)),
            (f"the last group ({groups[-1]}) is not", bool(critical) and groups[-1] not in critical)]


def _few_units(n):
    if not _have(n, "noisy_units_median_all", "clean_units_median_all"):
        return None
    a, b = n["noisy_units_median_all"], n["clean_units_median_all"]
    return [(f"median {a:g} units <= {FEW_UNITS}", a <= FEW_UNITS),
            (f"fewer than clean examples' {b:g} (an unflipped one counts the cap)", a < b)]


def _cheap_edit(n):
    if not _have(n, "noisy_edit_clean_drop", "noisy_edit_test_drop", "noisy_random_flipped_share"):
        return None
    return [(f"clean training accuracy {-n['noisy_edit_clean_drop'] * 100:+.1f} points and test "
             f"{-n['noisy_edit_test_drop'] * 100:+.1f}, a loss of at most {LITTLE * 100:.0f} points each", max(n["noisy_edit_clean_drop"], n["noisy_edit_test_drop"]) <= LITTLE),
            (f"as many random units flip {_pct(n['noisy_random_flipped_share'])} of them, at most {_pct(RANDOM_FLIPS)}",
             n["noisy_random_flipped_share"] <= RANDOM_FLIPS)]


def _spread(n):
    if not _have(n, "noisy_outside_last"):
        return None
    share = n["noisy_outside_last"]
    return [(f"{_pct(share)} of the units outside the last unit layer, at least {_pct(OUTSIDE_LAST)}", share >= OUTSIDE_LAST),
            ("some outside it", share > 0)]


def _dropout(n):
    if not _have(n, "drop_memorized", "drop_clean_acc", "dropout_memorized", "dropout_clean_acc", "plain_gap", "drop_gap"):
        return None
    return [(f"memorized {_pct(n['dropout_memorized'])} as trained -> {_pct(n['drop_memorized'])} in drop mode, "
             f"at most {_pct(DROP_LEFT)}", n["drop_memorized"] <= DROP_LEFT),
            (f"clean accuracy {_pct(n['dropout_clean_acc'])} in test mode -> {_pct(n['drop_clean_acc'])}, "
             f"within {CLEAN_KEPT * 100:.0f} points", n["drop_clean_acc"] >= n["dropout_clean_acc"] - CLEAN_KEPT),
            (f"generalization gap {n['plain_gap']:.1%} (plain model) -> {n['drop_gap']:.1%}, smaller",
             n["drop_gap"] < n["plain_gap"])]


CLAIMS: tuple[Claim, ...] = (
    Claim("memorized", "The model fits (nearly) all noisy labels while its test accuracy stays up.", "~100% fitted",
          f"memorization >= {MEMORIZED:.0%}; final test accuracy within {TEST_KEPT * 100:.0f} points of the best epoch's",
          "memorized", "of the noisy labels fitted", "%", ("train",), "overview", _memorized),
    Claim("gradient_norm", "The noisy 10% carry a gradient norm of the same order as the clean 90% for a long part "
          "of training, in all layer groups.", "",
          f"in every group, the noisy norm >= {COMPARABLE:g} x the clean norm in >= {LONG_PART:.0%} of the epochs",
          "comparable_min", "of the epochs, in the group with fewest", "%", ("train",), "gradients", _comparable),
    Claim("cosine", "Clean and noisy gradients point in opposing directions (negative cosine).", "",
          "the clean/noisy cosine, averaged over the epochs, is negative in every group",
          "cosine_mean", "mean cosine over groups and epochs", "", ("train",), "gradients", _cosine),
    Claim("redundant", "Most layer groups are redundant for memorization: rewinding one to epoch 0, or retraining "
          "it on clean examples, leaves the memorization in place.", "",
          f"more than half the groups keep >= {KEEPS:.0%} of the memorization, when rewound and when retrained",
          "redundant_share", "of the groups redundant when rewound", "%", ("rewind", "retrain"), "rewinding", _redundant),
    Claim("not_last", "The groups whose rewinding destroys memorization are not the last ones.", "",
          f"some group is critical (rewound to epoch 0 it keeps < {KEEPS:.0%} of the memorization), "
          "and the last group is not", "deepest_critical", "depth of the deepest critical group", "%", ("rewind",), "rewinding", _not_last),
    Claim("few_units", "Memorized examples flip after a few units, fewer than clean examples need.", "about 5 units",
          f"median units to flip a noisy example <= {FEW_UNITS}, and below the clean examples' median",
          "noisy_units_median_all", "to flip a memorized example (median)", "units", ("flip",), "neurons", _few_units),
    Claim("cheap_edit", "Zeroing a memorized example's units costs little accuracy on other examples, and as many "
          "random units do not flip it.", "",
          f"mean drop of clean training and test accuracy <= {LITTLE * 100:.0f} points; random units flip <= {RANDOM_FLIPS:.0%}",
          "noisy_edit_test_drop", "of test accuracy per edit (mean)", "points", ("flip",), "neurons", _cheap_edit),
    Claim("spread", "The units that hold a memorized example lie in several layers, not only the last.", "",
          f">= {OUTSIDE_LAST:.0%} of the noisy examples' flip units lie outside the last unit layer",
          "noisy_outside_last", "of the flip units outside the last unit layer", "%", ("flip",), "neurons", _spread),
    Claim("dropout", "Example-tied dropout's drop mode removes memorization while clean accuracy stays and the "
          "generalization gap shrinks.", "100% -> 3% memorized",
          f"drop mode: memorized <= {DROP_LEFT:.0%}; clean accuracy within {CLEAN_KEPT * 100:.0f} points of test mode; "
          "a smaller clean-train minus test gap than the plain model's",
          "drop_memorized", "memorized in drop mode", "%", ("dropout",), "dropout", _dropout),
)


def judge(claim: Claim, numbers: Mapping[str, float]) -> tuple[str, float, str]:
    """One run: (verdict, the claim's number or NaN, what each condition found)."""
    conditions = claim.conditions(numbers)
    if conditions is None:
        return "not measured", math.nan, ""
    held = sum(ok for _, ok in conditions)
    verdict = "holds" if held == len(conditions) else "partly" if held else "does not hold"
    detail = "; ".join(f"{text} {'yes' if ok else 'no'}" for text, ok in conditions)
    return verdict, float(numbers.get(claim.number, math.nan)), detail


def measure_run(run: Run) -> dict[str, float]:
    """`measure` on a run's own tables (its config gives the learning-rate peak and the model's unit layers)."""
    cfg = from_dict(run.manifest()["config"])
    # The unit layers depend on the architecture and the input only, not on the number of classes.
    model = models.build(cfg.model.name, INPUT_SHAPES[cfg.data.name], 10, **cfg.model_options("plain"))
    return measure(run_tables(run), cfg.train.peak_epoch, model.unit_layers)


#: Columns of a scorecard table.
COLUMNS = ["claim", "text", "paper", "verdict", "mean", "std", "n", "unit", "reads", "holds_on", "detail", "rule", "stages",
           "page"]


def scorecard(runs: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """The scorecard of one run (`[numbers]`) or of runs that differ only in their seed: one row
    per claim, its verdict (see the module docstring), the number's mean, std (ddof 1) and n over
    the runs that measure it, `holds_on` ("3 of 5"), and the first run's `detail`."""
    rows = []
    for claim in CLAIMS:
        judged = [judge(claim, numbers) for numbers in runs]
        measured = [j for j in judged if j[0] != "not measured"]
        verdicts = {v for v, _, _ in measured}
        verdict = ("not measured" if not measured else "holds" if verdicts == {"holds"}
                   else "does not hold" if verdicts == {"does not hold"} else "partly")
        values = np.array([x for _, x, _ in measured if math.isfinite(x)])
        rows.append({
            "claim": claim.key, "text": claim.text, "paper": claim.paper, "verdict": verdict,
            "mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": len(values), "unit": claim.unit,
            "reads": claim.reads,
            "holds_on": f"{sum(v == 'holds' for v, _, _ in measured)} of {len(measured)}" if measured else "",
            "detail": measured[0][2] if measured else "", "rule": claim.rule, "stages": list(claim.stages),
            "page": claim.page,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def format_number(row: Mapping, with_n: bool = True) -> str:
    """A row's number as it reads: `97%`, `97% ± 1.2% (n=5)`, `4.0 units`, `1.3 points lost`, `-0.31`, or "—"."""
    mean, std, unit = row["mean"], row["std"], row["unit"]
    if not math.isfinite(mean):
        return "—"

    def one(x: float, spread: bool = False) -> str:
        if unit == "%":
            return f"{x:.{1 if spread else 0}%}"
        return f"{x * 100:.1f}" if unit == "points" else f"{x:.{1 if unit == 'units' else 2}f}"

    text = one(mean) + (f" ± {one(std, True)}" if math.isfinite(std) else "")
    text += {"units": " units", "points": " points lost"}.get(unit, "")
    return text + (f" (n={row['n']})" if with_n and row["n"] > 1 else "")


@dataclass(frozen=True)
class Section:
    """The scorecard of one run, or of one setting of a sweep (its seeds folded)."""

    title: str
    card: pd.DataFrame
    runs: tuple[str, ...]  # the run directories it was measured on
    first: Mapping[str, float]  # the numbers of the first of them (`measure`)
    absent: tuple[str, ...] = ()  # stages a claim needs that (the first such) run lacks
    command: str = ""  # the command that adds them
    left_out: tuple[str, ...] = ()  # points of the setting that could not be read, with why

    @property
    def missing(self) -> str:
        """How to measure what is not measured, or ""."""
        return f"Not measured: the stage(s) {', '.join(self.absent)}. Add them with: {self.command}" if self.absent else ""


def scorecards(path: str | os.PathLike) -> list[Section]:
    """The scorecard of a run directory, or one per setting of a sweep directory (its complete
    points that differ only in their seed axes, `memloc.grid.seed_axes`). Raises `RunError` for
    a directory that is neither, or a sweep without a complete point."""
    target = Sweep(path)
    if not target.exists():
        run = Run(path)
        numbers = measure_run(run)
        return [Section(f"run {run.name}", scorecard([numbers]), (str(run.path),), numbers, *_missing([run]))]
    record = target.record()
    kept = [k for k in record["keys"] if k not in seed_axes(record["keys"])]
    settings: dict[str, list[str]] = {}
    for name, point in record["points"].items():
        if point.get("status") == "complete":
            settings.setdefault(point_name(point["values"], kept), []).append(name)
    if not settings:
        raise RunError(f"sweep {target.name} has no complete point yet; run the sweep (again) first")
    sections = []
    for setting, names in settings.items():
        runs, numbers, left_out = [], [], []
        for name in names:  # a damaged point is left out of its setting, and said so
            try:
                numbers.append(measure_run(target.run(name)))
                runs.append(target.run(name))
            except RunError as error:
                left_out.append(f"{name} ({error})")
        if not runs:
            continue
        title = f"sweep {target.name}" + (f", {setting}" if kept else "") + f" ({len(runs)} seed{'s' * (len(runs) > 1)})"
        sections.append(Section(title, scorecard(numbers), tuple(str(r.path) for r in runs), numbers[0], *_missing(runs),
                                left_out=tuple(left_out)))
    if not sections:
        raise RunError(f"sweep {target.name}: no point could be read ({'; '.join(left_out)})")
    return sections


def _missing(runs: Sequence[Run]) -> tuple[tuple[str, ...], str]:
    """The stages a claim needs that the first run lacking one lacks, and the command that adds them."""
    needed = list(dict.fromkeys(s for claim in CLAIMS for s in claim.stages))
    for run in runs:
        absent = [s for s in needed if not run.is_complete(s)]
        if absent:
            config = run.manifest()["config"]
            recorded = list(config.get("stages", []))
            command = command_for(config, str(run.path), stages=[*recorded, *[s for s in absent if s not in recorded]])
            return tuple(absent), command
    return (), ""


#: Verdict colours of the HTML form (Okabe-Ito: colour-blind safe).
VERDICT_COLOURS = {"holds": "#009E73", "partly": "#E69F00", "does not hold": "#D55E00", "not measured": "#999999"}


TITLE = "The paper's claims, measured"


def to_markdown(sections: Sequence[Section]) -> str:
    """Scorecards as one Markdown document."""
    lines = [f"# {TITLE}", ""]
    for section in sections:
        lines += [f"## {section.title}", "", "| claim | paper | here | verdict | rule |", "|---|---|---|---|---|"]
        for _, row in section.card.iterrows():
            verdict = f"**{row['verdict']}**" + (f" (holds on {row['holds_on']} seeds)" if row["n"] > 1 else "")
            here = format_number(row) + (f" {row['reads']}" if math.isfinite(row["mean"]) else "")
            lines.append(f"| {row['text']} | {row['paper'] or '—'} | {here} | {verdict} | {row['rule']} |")
        details = [f"- {row['claim']}: {row['detail']}" for _, row in section.card.iterrows() if row["detail"]]
        lines += ["", "What each rule found" + (" (first seed):" if len(section.runs) > 1 else ":"), "", *details]
        lines += ["", section.missing] if section.missing else []
        lines += ["", f"Left out: {'; '.join(section.left_out)}"] if section.left_out else []
        lines.append("")
    return "\n".join(lines)


def to_html(sections: Sequence[Section]) -> str:
    """Scorecards as one self-contained HTML page (no scripts, no external files)."""
    e = html.escape
    body = []
    for section in sections:
        rows = []
        for _, row in section.card.iterrows():
            seeds = f"<br><small>holds on {e(row['holds_on'])} seeds</small>" if row["n"] > 1 else ""
            rows.append(
                f"<tr><td>{e(row['text'])}<br><small>{e(row['detail'])}</small></td><td>{e(row['paper'] or '—')}</td>"
                f"<td><span class=num>{e(format_number(row))}</span><br><small>{e(row['reads'])}</small></td><td><span class=verdict "
                f"style='background:{VERDICT_COLOURS[row['verdict']]}'>{e(row['verdict'])}</span>{seeds}</td>"
                f"<td><small>{e(row['rule'])}</small></td></tr>")
        body.append(f"<h2>{e(section.title)}</h2>\n<table><thead><tr><th>claim</th><th>paper</th><th>here</th>"
                    f"<th>verdict</th><th>rule</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
                    + (f"\n<p>{e(section.missing)}</p>" if section.missing else "")
                    + (f"\n<p>Left out: {e('; '.join(section.left_out))}</p>" if section.left_out else ""))
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{e(TITLE)}</title>
<style>
body {{ font: 18px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ccc; padding: .5em; text-align: left; vertical-align: top; }}
.num {{ font-size: 1.4em; font-weight: 600; white-space: nowrap; }}
.verdict {{ color: #fff; padding: .15em .5em; border-radius: .3em; font-weight: 600; white-space: nowrap; }}
small {{ color: #555; }}
</style></head><body>
<h1>{e(TITLE)}</h1>
{chr(10).join(body)}
</body></html>
"""


__all__ = ["VERDICTS", "Claim", "CLAIMS", "COLUMNS", "measure", "measure_run", "groups_of", "critical_groups", "judge", "scorecard", "format_number",
           "TITLE", "to_markdown", "to_html", "VERDICT_COLOURS", "Section", "scorecards"]
