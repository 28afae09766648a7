"""Paper Table 1: restoring the true rank of a factorized linear classifier with MARS.

Data (paper section 3.1): X (N x D) i.i.d. N(0, 1); U* (D x r*), V* (r* x C) i.i.d. N(0, 1);
Y = one-hot(argmax(X U* V*)). N = 10,000 training rows, D = 128, C = 32. A separate test set
of 10,000 rows comes from the same U*, V*. The model is ``LowRankLinear(128, 32, rank=32)``
(``W = U V``, one mask, no bias) trained with MARS, pi = 1e-2 and alpha = -4 / -3.5 / -3 for
r* = 8 / 12 / 16. Baseline: a dense linear classifier (no bias), as in the paper.

The paper does not give the optimiser settings for this task. The recipe (the same for the
MARS model and the dense baseline) is chosen by a small validation search (``--search``) on
problems with their own data seeds, training on 8,000 of the 10,000 training rows and scoring
on the other 2,000; the final runs then use the recipe the rule in :func:`search_table`
selects (or ``--recipe NAME``). The test set plays no part in the choice.

After the paper-objective runs had missed r* = 16, an Occam step was added: each trained MARS
model is also pruned by :func:`tnmars.nn.occam_prune` (BIC backward elimination of kept rank
indices, ``(1/2) ln N`` nats per parameter, N = the training rows) and reported next to the
plain MARS numbers. ``--occam-validation`` is the check made before that, on the validation
problems of the search only.

Usage: python benchmarks/nn_toy_linear.py --search all   # validation search (about 40 min)
       python benchmarks/nn_toy_linear.py --occam-validation  # Occam step on the validation problems
       python benchmarks/nn_toy_linear.py [--runs 10] [--recipe NAME]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_common as C

import tnmars.nn as tnn

PAPER = {8: (-4.0, "8.4 ± 0.5", "91.8 ± 0.6", "87.3"), 12: (-3.5, "12.6 ± 0.7", "89.5 ± 0.7", "85"),
         16: (-3.0, "18 ± 1.3", "85.4 ± 0.7", "82.8")}


def make_data(r_star: int, seed: int, n: int = 10000, d: int = 128, c: int = 32):
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(d, r_star, generator=g), torch.randn(r_star, c, generator=g)
    x_tr, x_te = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    return x_tr, (x_tr @ u @ v).argmax(1), x_te, (x_te @ u @ v).argmax(1)


# --------------------------------------------------------------------------- recipes
# One recipe = the training settings shared by the MARS model and the dense baseline.
BASE = {"optimizer": "adam", "lr": 1e-2, "lr_schedule": "exp", "lr_end": 1.0, "epochs": 150, "batch": 100,
        "temp_frac": 229.1 / 300, "weight_decay": 0.0, "core_prior": True, "flat_frac": 0.0}


def recipe(**kw) -> dict:
    unknown = set(kw) - set(BASE)
    if unknown:
        raise ValueError(f"unknown recipe keys {sorted(unknown)}")
    return {**BASE, **kw}


def describe(r: dict) -> str:
    sched = ("constant lr" if r["lr_schedule"] == "exp" and r["lr_end"] == 1.0 else
             (f"constant for {r['flat_frac']:.0%}, then cosine to 0" if r["flat_frac"] else "cosine to 0")
             if r["lr_schedule"] == "cosine" else f"ExponentialLR to x{r['lr_end']:g}")
    opt = f"AdamW wd {r['weight_decay']:g}" if r["optimizer"] == "adamw" else "Adam"
    return (f"{opt} lr {r['lr']:g}, {sched}, {r['epochs']} ep, batch {r['batch']}, T floor at "
            f"{r['temp_frac']:.0%} of training" + ("" if r["core_prior"] else ", no core prior"))


def _common(r: dict, run: int) -> dict:
    epochs = r["epochs"]
    return dict(epochs=epochs, batch=r["batch"], lr=r["lr"], lr_decay=r["lr_end"] ** (1.0 / epochs),
                lr_schedule=r["lr_schedule"], optimizer=r["optimizer"], weight_decay=r["weight_decay"],
                flat_frac=r["flat_frac"], seed=run)


def train_mars(r: dict, r_star: int, alpha: float, x, y, run: int):
    """Train the MARS LowRankLinear with recipe ``r`` (initialisation from seed ``run``)."""
    temp_decay = 0.1 ** (1.0 / max(r["temp_frac"] * r["epochs"], 1.0))
    torch.manual_seed(run)
    model = tnn.LowRankLinear(128, 32, rank=32, bias=False, pi=1e-2, alpha=alpha, min_rank=0)
    C.train(model, x, y, temp_decay=temp_decay, core_prior=r["core_prior"], **_common(r, run))
    return model


def train_pair(r: dict, r_star: int, alpha: float, x, y, run: int):
    """Train the MARS LowRankLinear and the dense baseline with recipe ``r``; return both models."""
    model = train_mars(r, r_star, alpha, x, y, run)
    torch.manual_seed(run)
    dense = nn.Linear(128, 32, bias=False)
    C.train(dense, x, y, **_common(r, run))
    return model, dense


def occam(model, x, y):
    """The Occam step after MARS: :func:`tnmars.nn.occam_prune` at strength 1 (the BIC alone:
    ``max_nll_rise=None``, as when the results were measured, before that limit existed),
    N = the training rows, nll = the summed training cross-entropy. Changes ``model``."""
    return tnn.occam_prune(model, tnn.classification_nll(x, y), num_train=len(x), max_nll_rise=None)


# Validation search: every candidate on 3 fresh problems per r* (data seeds disjoint from the
# final runs), trained on the first 8,000 training rows, scored on the other 2,000, with the
# batch scaled by 8,000 / 10,000 so that an epoch has as many optimiser steps as in the final
# runs (the masks open at a rate per step, so the step count matters more than the batch).
# A-G were a first pilot with the unscaled batch (nn_toy_linear.pilot.json); the search proper
# re-runs A and goes on from what the pilot showed.
CANDIDATES = {
    "A: const lr (previous)": recipe(),
    "B: exp decay x0.05": recipe(lr_end=0.05),
    "C: cosine": recipe(lr_schedule="cosine"),
    "D: exp x0.05, 300 ep": recipe(lr_end=0.05, epochs=300),
    "E: exp x0.05, batch 500, 300 ep": recipe(lr_end=0.05, epochs=300, batch=500),
    "F: cosine, AdamW wd 1e-2": recipe(lr_schedule="cosine", optimizer="adamw", weight_decay=1e-2),
    "G: flat 50% then cosine": recipe(lr_schedule="cosine", flat_frac=0.5),
    "H: flat 50% then cosine, 300 ep": recipe(lr_schedule="cosine", flat_frac=0.5, epochs=300),
    "I: flat 50% then cosine, T floor at 50%": recipe(lr_schedule="cosine", flat_frac=0.5, temp_frac=0.5),
    "J: flat 50% then cosine, no core prior": recipe(lr_schedule="cosine", flat_frac=0.5, core_prior=False),
    "K: flat 50% then cosine, AdamW wd 1e-2": recipe(lr_schedule="cosine", flat_frac=0.5, optimizer="adamw",
                                                     weight_decay=1e-2),
    "L: 150 ep flat + 50 ep cosine": recipe(lr_schedule="cosine", flat_frac=0.75, epochs=200),
    "M: 150 ep flat + 75 ep cosine": recipe(lr_schedule="cosine", flat_frac=2 / 3, epochs=225),
    "N: 200 ep flat + 50 ep cosine": recipe(lr_schedule="cosine", flat_frac=0.8, epochs=250),
    "L-noprior: L without the core prior": recipe(lr_schedule="cosine", flat_frac=0.75, epochs=200, core_prior=False),
    "L-adamw: L with AdamW wd 1e-2": recipe(lr_schedule="cosine", flat_frac=0.75, epochs=200, optimizer="adamw",
                                          weight_decay=1e-2),
    "L-T100: L with the T floor at the end": recipe(lr_schedule="cosine", flat_frac=0.75, epochs=200, temp_frac=1.0),
    "O: 125 ep flat + 100 ep cosine": recipe(lr_schedule="cosine", flat_frac=125 / 225, epochs=225),
}
SEARCH_SEEDS = 3
N_VAL = 2000


def search(names: list[str]) -> None:
    path = os.path.join(C.RESULTS, "nn_toy_linear.search.json")
    done = json.load(open(path)) if os.path.exists(path) else {}
    for name in names:
        r = CANDIDATES[name]
        res = {}
        for r_star, (alpha, *_rest) in PAPER.items():
            ranks, accs, base = [], [], []
            for k in range(SEARCH_SEEDS):
                x_tr, y_tr, _, _ = make_data(r_star, seed=1000 * r_star + 500 + k)
                x_fit, y_fit, x_val, y_val = x_tr[:-N_VAL], y_tr[:-N_VAL], x_tr[-N_VAL:], y_tr[-N_VAL:]
                model, dense = train_pair({**r, "batch": max(1, round(r["batch"] * len(x_fit) / len(x_tr)))},
                                          r_star, alpha, x_fit, y_fit, run=100 + k)
                ranks.append(model.selected_ranks()["A"])
                accs.append(C.accuracy(model, x_val, y_val))
                base.append(C.accuracy(dense, x_val, y_val))
                print(f"[{name}] r*={r_star} seed {k}: R={ranks[-1]} val acc={accs[-1]:.4f} dense={base[-1]:.4f}",
                      flush=True)
            res[str(r_star)] = {"ranks": ranks, "acc": accs, "dense_acc": base}
        done[name] = {"recipe": r, "results": res}
        with open(path, "w") as fh:
            json.dump(done, fh, indent=1)


def search_table(path: str) -> tuple[str, str | None]:
    """Markdown table of the validation search and the name of the recipe it selects.

    Rule (fixed before the final runs): the most r* whose mean validation R is within 1 of r*,
    ties broken by the validation MARS accuracy averaged over the three r*.
    """
    if not os.path.exists(path):
        return "(no validation search recorded)", None
    done = json.load(open(path))
    rows, best, best_key = [], None, (-1, -1.0)
    for name, entry in done.items():
        res = entry["results"]
        cells, n_ok, mean_acc = [], 0, []
        for r_star in PAPER:
            d = res[str(r_star)]
            r, a, b = np.mean(d["ranks"]), 100 * np.mean(d["acc"]), 100 * np.mean(d["dense_acc"])
            n_ok += abs(r - r_star) <= 1
            mean_acc.append(a)
            cells.append(f"{r:.1f} / {a:.1f} / {b:.1f}")
        m = float(np.mean(mean_acc))
        if (n_ok, m) > best_key:
            best, best_key = name, (n_ok, m)
        rows.append([name, describe({**BASE, **entry["recipe"]}), *cells, f"{m:.2f}", f"{n_ok} of 3"])
    table = C.markdown_table(["candidate", "recipe (MARS and dense alike)", "r*=8: R / MARS / dense",
                              "r*=12: R / MARS / dense", "r*=16: R / MARS / dense", "mean MARS val acc",
                              "r* with mean R within 1"], rows)
    return table, best


# Occam check on the validation problems (made before the final runs with the Occam step): the
# recipe-M models of the search (same data seeds, split, batch scaling and init seeds 100 + k),
# pruned by occam_prune with N = 8,000; the test set plays no part.
OCCAM_RECIPE = "M: 150 ep flat + 75 ep cosine"
OCCAM_VALIDATION = "nn_toy_linear.occam_validation.json"


def occam_validation() -> None:
    r = CANDIDATES[OCCAM_RECIPE]
    out = {"recipe": OCCAM_RECIPE, "results": {}}
    for r_star, (alpha, *_rest) in PAPER.items():
        rows = []
        for k in range(SEARCH_SEEDS):
            x_tr, y_tr, _, _ = make_data(r_star, seed=1000 * r_star + 500 + k)
            x_fit, y_fit, x_val, y_val = x_tr[:-N_VAL], y_tr[:-N_VAL], x_tr[-N_VAL:], y_tr[-N_VAL:]
            model = train_mars({**r, "batch": max(1, round(r["batch"] * len(x_fit) / len(x_tr)))}, r_star, alpha,
                               x_fit, y_fit, run=100 + k)
            rank, acc = model.selected_ranks()["A"], C.accuracy(model, x_val, y_val)
            rep = occam(model, x_fit, y_fit)
            b = rep.bonds[0]
            rows.append({"seed": 1000 * r_star + 500 + k, "rank": rank, "acc": acc, "occam_rank": b.rank_after,
                         "occam_acc": C.accuracy(model, x_val, y_val), "penalty": b.penalty_before,
                         "first_deltas": sorted(b.first_deltas.values()),
                         "closed": [[c.index, c.delta] for c in b.closures], "evaluations": rep.evaluations})
            print(f"[occam validation] r*={r_star} seed {k}: R {rank} -> {b.rank_after}, val acc {acc:.4f} -> "
                  f"{rows[-1]['occam_acc']:.4f}, penalty/index {b.penalty_before:.0f}, sorted single-closure "
                  f"delta nll {[round(d) for d in rows[-1]['first_deltas']]}", flush=True)
        out["results"][str(r_star)] = rows
    with open(os.path.join(C.RESULTS, OCCAM_VALIDATION), "w") as fh:
        json.dump(out, fh, indent=1)


def occam_validation_table(path: str) -> str:
    if not os.path.exists(path):
        return "(no Occam validation check recorded: run --occam-validation)"
    saved = json.load(open(path))
    rows = []
    for r_star, runs in saved["results"].items():
        for row in runs:
            d = row["first_deltas"]
            surplus = max(0, row["rank"] - int(r_star))
            rows.append([r_star, row["seed"], row["rank"], f"{100 * row['acc']:.1f}", f"{row['penalty']:.0f}",
                         " ".join(f"{v:.0f}" for v in d[:surplus]) or "-",
                         f"{d[surplus]:.0f}" if surplus < len(d) else "-",
                         row["occam_rank"], f"{100 * row['occam_acc']:.1f}", row["evaluations"]])
    return C.markdown_table(["r*", "data seed", "R (MARS)", "val acc % (MARS)", "penalty / index (nats)",
                             "smallest R - r* single-closure delta nll", "next smallest delta nll",
                             "R (+ Occam)", "val acc % (+ Occam)", "nll evaluations"], rows)


# What the validation check showed (written after --occam-validation; the seeds are fixed)
OCCAM_READING = (
    "Reading: at r* = 8 and 12 every true index costs thousands of nats when closed and the one surplus index "
    "(r* = 12, data seed 12502) costs 68, so the step removes exactly it. At r* = 16 the separation is not "
    "clean: on data seed 16500 the second-cheapest index (567 nats) is below the penalty and is closed too "
    "(R 17 -> 15, val acc -1.5 points), and on 16501 two indices cost 50 and 58 nats and the next 1752, "
    "so only two of the three extra indices go (R 19 -> 17). Under arg-max labels some components of a rank-16 teacher barely move the labels, so "
    "a true index can be cheap. The step was kept at strength 1 (no tuning) for the final runs."
)


def occam_section(results: dict, has_occam: bool) -> str:
    """The results file's section on the Occam step: why and when, the validation check, the cost."""
    path = os.path.join(C.RESULTS, OCCAM_VALIDATION)
    summary = ""
    if os.path.exists(path):
        saved = json.load(open(path))["results"]
        parts = []
        for r_star, runs in saved.items():
            r0, r1 = np.mean([w["rank"] for w in runs]), np.mean([w["occam_rank"] for w in runs])
            a0, a1 = 100 * np.mean([w["acc"] for w in runs]), 100 * np.mean([w["occam_acc"] for w in runs])
            parts.append(f"r* = {r_star}: mean R {r0:.1f} -> {r1:.1f}, val acc {a0:.1f} -> {a1:.1f}%")
        n = sum(len(v) for v in saved.values())
        ok0 = sum(w["rank"] == int(r_star) for r_star, v in saved.items() for w in v)
        ok1 = sum(w["occam_rank"] == int(r_star) for r_star, v in saved.items() for w in v)
        summary = (f"Result: {'; '.join(parts)}; R = r* on {ok0} of {n} problems before the step, {ok1} after. ")
    cost = ""
    if has_occam:
        ev = [e for res in results.values() for e in res.get("occam_evaluations", [])]
        if ev:
            cost = (f"In the final runs the step took {min(ev)} to {max(ev)} nll evaluations per model (each one "
                    "pass over the 10,000 training rows), small next to the 225 training epochs. ")
        diffs = [100 * (b - a) for res in results.values() for a, b in zip(res["acc"], res["occam_acc"])]
        if diffs:
            down = [d for d in diffs if d < 0]
            none = sum(not c for res in results.values() for c in res["occam_closed"])
            cost += (f"It raised the test accuracy in {sum(d > 0 for d in diffs)} of {len(diffs)} runs (by up to "
                     f"{max(diffs):.1f} points), left it unchanged in {sum(d == 0 for d in diffs)} ({none} runs closed "
                     "nothing) "
                     f"and lowered it in {len(down)}" + (f" (by up to {-min(down):.1f} points)" if down else "")
                     + ". ")
    return ("\n## The Occam step (added after the paper-objective runs)\n\n"
            "The first final runs with the paper's objective (the MARS columns; commit fd03c38) met 'mean R within 1 "
            "of r*' at r* = 8 and 12 but not at 16 (18.0, as the paper's 18 ± 1.3). `tnmars.fit` had met the same "
            "over-selection (issue 3) and follows its MARS phase by an Occam step, `prior=\"bic\"`. "
            "`tnmars.nn.occam_prune` is that step for networks: after training, it closes kept rank indices one at "
            "a time (greedy backward elimination), each time the one whose closure lowers "
            "nll + (1/2) ln N x (parameters) the most, until no closure lowers it; an index of U V frees "
            "D + C = 160 parameters. The bond's masks are set closed; nothing is retrained. "
            "Before any final run used it, it was checked on the validation problems of the search only (recipe M, "
            "the search's data seeds, 8,000 / 2,000 split and initialisation seeds; N = 8,000, penalty "
            "(1/2) ln 8000 x 160 = 719 nats per index), with "
            f"`python benchmarks/nn_toy_linear.py --occam-validation` (`{OCCAM_VALIDATION}`). " + summary +
            "(These figures were re-made on the current code; the check that decided was the same command on commit "
            "07f9463, with the same ranks before and after the step on every problem.) "
            "Strength 1 (the plain BIC) was fixed before the final runs and not tuned. The final runs were then "
            "repeated with the same command and fixed seeds, on the code that also slices exactly-zero mask "
            "entries out of the cores (`skip_closed`, exact up to float rounding): the MARS columns differ from the "
            "first runs (R 8.5 / 12.6 / 18.0, accuracy 94.4 / 92.1 / 89.6%) only through that rounding, carried "
            "through 225 epochs, and the MARS + Occam columns prune those same models. " + cost + "\n\n"
            "Validation check (single-closure delta nll: the rise of the summed training nll when one kept index "
            "alone is closed, measured on the MARS model before any closure, sorted; if the surplus indices are "
            "the cheap ones, they are the R - r* smallest). The selected ranks (MARS) equal the search's M row; "
            "the validation accuracies differ from it by up to half a point because the search ran on older "
            "mask code.\n\n" + occam_validation_table(path) + "\n\n" + OCCAM_READING + "\n")


def report(results: dict, name: str, runs: int, cmd: str, run_at: str | None = None) -> str:
    """Write the results markdown (+ plot) for final-run ``results`` ({r*: ranks/acc/dense_acc})."""
    rec = CANDIDATES[name]
    has_occam = all("occam_ranks" in res for res in results.values())
    rows = []
    verdicts = []
    for r_star, res in results.items():
        alpha, p_rank, p_acc, p_base = PAPER[r_star]
        r, a, b = np.array(res["ranks"]), 100 * np.array(res["acc"]), 100 * np.array(res["dense_acc"])
        paper_acc = float(p_acc.split()[0])
        variants = [("MARS", r, a)]
        if has_occam:
            variants.append(("MARS + Occam", np.array(res["occam_ranks"]), 100 * np.array(res["occam_acc"])))
        for label, rr, aa in variants:
            ok_rank = abs(rr.mean() - r_star) <= 1
            ok_acc = aa.mean() >= paper_acc
            verdicts.append(f"{label}, r* = {r_star}: mean R within 1 of r*: **{'met' if ok_rank else 'NOT met'}** "
                            f"({rr.mean():.1f}); accuracy >= paper's {paper_acc}%: "
                            f"**{'met' if ok_acc else 'NOT met'}** ({aa.mean():.1f}%)")
        row = [r_star, alpha, f"{r.mean():.1f} ± {r.std():.1f}", p_rank]
        if has_occam:
            ro = np.array(res["occam_ranks"])
            row.append(f"{ro.mean():.1f} ± {ro.std():.1f}")
        row += [f"{a.mean():.1f} ± {a.std():.1f}%", f"{p_acc}%"]
        if has_occam:
            ao = 100 * np.array(res["occam_acc"])
            row.append(f"{ao.mean():.1f} ± {ao.std():.1f}%")
        rows.append(row + [f"{b.mean():.1f} ± {b.std():.1f}%", f"{p_base}%"])
    occ = has_occam
    table = C.markdown_table(["r*", "alpha", "reduced R (ours, MARS)", "R (paper)"]
                             + (["R (ours, MARS + Occam)"] if occ else [])
                             + ["MARS acc (ours)", "MARS acc (paper)"] + (["MARS + Occam acc (ours)"] if occ else [])
                             + ["dense acc (ours)", "dense (paper)"], rows)
    per_run = C.markdown_table(
        ["r*", "selected R per run (MARS)"] + (["R per run (MARS + Occam)"] if occ else [])
        + ["MARS test acc % per run"] + (["MARS + Occam test acc % per run"] if occ else [])
        + ["dense test acc % per run"],
        [[r_star, " ".join(str(v) for v in res["ranks"])]
         + ([" ".join(str(v) for v in res["occam_ranks"])] if occ else [])
         + [" ".join(f"{100 * v:.1f}" for v in res["acc"])]
         + ([" ".join(f"{100 * v:.1f}" for v in res["occam_acc"])] if occ else [])
         + [" ".join(f"{100 * v:.1f}" for v in res["dense_acc"])]
         for r_star, res in results.items()])
    notes = (f"Setting: N = 10,000 train + 10,000 test, D = 128, C = 32, R = 32, pi = 1e-2, alpha per r* as in the "
             f"paper, hard-concrete masks, prior / N with N = 10,000, {runs} runs per r* (the paper: 10). "
             f"Mean ± std over runs; run k of r* draws its data from seed 1000 r* + k and its initialisation from "
             f"seed k.\n\nRecipe **{name}**: {describe(rec)}; temperature 0.1 -> 0.01 (exponential per epoch), "
             "the same optimiser, lr schedule, epochs and batch for the MARS model and the dense baseline "
             "(the paper gives no optimiser settings for this task). The recipe was chosen on validation splits of "
             "the training rows (below), never on the test set."
             + ("\n\n**MARS** columns: the model as MARS training leaves it (the paper's objective). "
                "**MARS + Occam** columns: the same trained model after `tnmars.nn.occam_prune` (BIC backward "
                "elimination of kept rank indices, strength 1, N = 10,000, nll = summed training cross-entropy; "
                "no retraining): see the Occam section below." if occ else ""))
    text = C.header("Paper Table 1: toy linear classification, true-rank recovery", cmd, notes, run_at=run_at)
    text += "\n" + table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\nPer run:\n\n" + per_run + "\n"
    text += ("\nWhat the search showed (see the tables below): with alpha = -4 .. -3 every MAP mask starts closed "
             "and the masks open one by one, at a rate per optimiser step, through the data gradient, which reaches "
             "a logit only while its hard-concrete sample lies strictly between 0 and 1; once open, a mask stays "
             "open. The selected rank is therefore set by how long the lr and temperature stay high: any lr decay "
             "from the start leaves masks closed at r* = 8 (R < r*, a large accuracy loss), while a long constant "
             "phase over-opens at r* = 16. A constant-lr phase long enough for the masks to open, followed by a "
             "cosine decay of the lr to 0, gives the accuracy gain (the decay matters much more than the optimiser "
             "or the epoch count). Dropping the Gaussian core prior (variance 100) opens more masks at every r*. "
             "Over-selection at r* = 16 appears with every recipe tried, as in the paper.\n")
    if has_occam:
        text += occam_section(results, has_occam)
    search_path = os.path.join(C.RESULTS, "nn_toy_linear.search.json")
    search_md, _ = search_table(search_path)
    names = list(json.load(open(search_path))) if os.path.exists(search_path) else []
    search_cmd = "python benchmarks/nn_toy_linear.py --search " + " ".join(f"'{n}'" for n in names)
    text += ("\n## How the recipe was chosen: validation search\n\n"
             f"Every candidate ran on {SEARCH_SEEDS} fresh problems per r* whose data seeds (1000 r* + 500 + k) are "
             f"disjoint from the final runs', trained on the first {10000 - N_VAL:,} training rows (N = "
             f"{10000 - N_VAL:,} in the prior, batch scaled to keep 100 steps per epoch) and scored on the other "
             f"{N_VAL:,}; the test set was never used. "
             "Rule, fixed before the final runs: the most r* whose mean validation R is within 1 of r*, ties broken "
             "by the validation MARS accuracy averaged over the three r* (first written as 'R within 1 for every "
             "r*', which no candidate met at r* = 16: every recipe over-selects there, as the paper does, 18 ± 1.3). "
             f"Command: `{search_cmd}` (raw numbers in `nn_toy_linear.search.json`). "
             "Cells: mean R / MARS val acc % / dense val acc %. The top candidates (M, O, N, L-T100) differ by "
             "far less than the run-to-run spread; the rule still picks one.\n\n" + search_md + "\n")
    pilot_md, _ = search_table(os.path.join(C.RESULTS, "nn_toy_linear.pilot.json"))
    text += ("\nPilot (before the search proper; same seeds and split, but the batch not scaled, so 80 steps per "
             "epoch instead of 100; not used for the selection; `nn_toy_linear.pilot.json`, made by commit ecac011's "
             "script). It showed that any lr decay from the start (B, C, E, F) or a short constant phase (G) leaves "
             "the masks too little time to open at r* = 8 (alpha = -4): under-selection (R < r*) costs far more "
             "accuracy than over-selection.\n\n" + pilot_md + "\n")
    C.write_result("nn_toy_linear.md", text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for i, (r_star, res) in enumerate(results.items()):
            first = i == 0
            axes[0].scatter([r_star] * len(res["ranks"]), res["ranks"], alpha=0.6, color="C0",
                            label="MARS" if first else None)
            axes[1].scatter([r_star] * len(res["acc"]), 100 * np.array(res["acc"]), alpha=0.6, color="C0",
                            label="MARS" if first else None)
            if has_occam:
                axes[0].scatter([r_star + 0.4] * len(res["occam_ranks"]), res["occam_ranks"], alpha=0.6, color="C1",
                                marker="^", label="MARS + Occam" if first else None)
                axes[1].scatter([r_star + 0.4] * len(res["occam_acc"]), 100 * np.array(res["occam_acc"]), alpha=0.6,
                                color="C1", marker="^", label="MARS + Occam" if first else None)
            axes[1].scatter([r_star + 0.8] * len(res["dense_acc"]), 100 * np.array(res["dense_acc"]), marker="x",
                            color="gray", label="dense" if first else None)
        axes[0].plot([6, 18], [6, 18], "k--", lw=0.8, label="R = r*")
        axes[0].set(xlabel="true rank r*", ylabel="selected rank R", title="selected rank (start R = 32)")
        axes[0].legend()
        axes[1].set(xlabel="true rank r*", ylabel="test accuracy %", title=f"test accuracy (recipe {name[0]})")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(C.RESULTS, "nn_toy_linear.png"), dpi=120)
    except ImportError:  # pragma: no cover
        pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--recipe", default=None, help="a CANDIDATES name (default: the one the search selects)")
    ap.add_argument("--search", nargs="*", default=None, help="validation search over CANDIDATES (names or all)")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from nn_toy_linear.json, no training")
    ap.add_argument("--occam-validation", action="store_true",
                    help="the Occam step on the validation problems of the search (recipe M), no test data")
    args = ap.parse_args()
    torch.set_num_threads(1)
    search_path = os.path.join(C.RESULTS, "nn_toy_linear.search.json")
    out_path = os.path.join(C.RESULTS, "nn_toy_linear.json")
    if args.search is not None:
        search(list(CANDIDATES) if not args.search or args.search == ["all"] else args.search)
        return
    if args.occam_validation:
        occam_validation()
        return
    if args.render:
        saved = json.load(open(out_path))
        if "results" not in saved:  # bare {r*: ...} from an older script: needs --recipe
            saved = {"results": saved, "recipe": args.recipe, "runs": args.runs, "command": None, "run_at": None}
        results = {int(k): v for k, v in saved["results"].items()}
        name = saved["recipe"] or args.recipe
        cmd = saved["command"] or "python benchmarks/nn_toy_linear.py"
        print(report(results, name, saved["runs"], cmd, run_at=saved["run_at"]))
        return
    _, selected = search_table(search_path)
    name = args.recipe or selected
    if name is None:
        raise SystemExit("no recipe given and no validation search selects one: run --search first")
    rec = CANDIDATES[name]
    print(f"recipe {name}: {describe(rec)}", flush=True)
    results = {}
    for r_star, (alpha, *_rest) in PAPER.items():
        res = {k: [] for k in ("ranks", "acc", "dense_acc", "occam_ranks", "occam_acc", "occam_closed",
                               "occam_first_deltas", "occam_evaluations")}
        for run in range(args.runs):
            x_tr, y_tr, x_te, y_te = make_data(r_star, seed=1000 * r_star + run)
            model, dense = train_pair(rec, r_star, alpha, x_tr, y_tr, run)
            res["ranks"].append(model.selected_ranks()["A"])
            res["acc"].append(C.accuracy(model, x_te, y_te))
            res["dense_acc"].append(C.accuracy(dense, x_te, y_te))
            rep = occam(model, x_tr, y_tr)  # after the MARS numbers are taken: it changes the masks
            bond = rep.bonds[0]
            res["occam_ranks"].append(bond.rank_after)
            res["occam_acc"].append(C.accuracy(model, x_te, y_te))
            res["occam_closed"].append([[c.index, c.delta] for c in bond.closures])
            res["occam_first_deltas"].append(sorted(bond.first_deltas.values()))
            res["occam_evaluations"].append(rep.evaluations)
            print(f"r*={r_star} run {run}: R={res['ranks'][-1]} acc={res['acc'][-1]:.4f} "
                  f"dense={res['dense_acc'][-1]:.4f} | Occam: R={bond.rank_after} acc={res['occam_acc'][-1]:.4f} "
                  f"closed {[(c.index, round(c.delta, 1)) for c in bond.closures]}", flush=True)
        results[r_star] = res
    cmd = "python benchmarks/nn_toy_linear.py" + "".join(
        f" --{k} {v!r}" for k, v in vars(args).items() if v != ap.get_default(k))
    run_at = f"{datetime.datetime.now():%H:%M}"
    with open(out_path, "w") as fh:
        json.dump({"recipe": name, "runs": args.runs, "command": cmd, "run_at": run_at,
                   "results": {str(k): v for k, v in results.items()}}, fh)
    print(report(results, name, args.runs, cmd, run_at=run_at))


if __name__ == "__main__":
    main()
