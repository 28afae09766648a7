"""Does screening the restarts keep what the restarts win? (``RankSearch._screened``)

On networks with more than ``MANY_BONDS`` bonds the structure search refits its 12 random
restarts by ``RESTART_SCREEN_SWEEPS`` (300) ALS sweeps each, and only some of them, the
finalists, by ``final_sweeps`` (1,000). This script measures what a screen loses. It runs
``tnmars.search`` on order-7 tensors (21 bonds, mode size 4) made by sparse random
fully connected networks (a random spanning tree plus each other edge with probability 0.1,
ranks 2 or 3, Gaussian cores), with the restarts **not** screened: every restart is refitted
by the full 1,000 sweeps and its objective recorded after 30, 100, 300 and 1,000 sweeps (a
refit that stalls keeps its last value). A *round* is one restart phase of a search; a round
is *won* when some restart ends below the incumbent (itself refitted by 1,000 sweeps). For
each screen the table gives the won rounds in which its finalists include the start that
wins most, and the share of the gain it keeps where they do not. Any screen can be judged on
the saved rows, since every restart's trajectory is recorded.

Seeds 13-25 (20 dB) showed that the first rule (the best 2 after 300 sweeps) misses starts
still crossing a slow valley, and chose the trend rule; seeds 26-70 were run after that choice
(held out).

    python benchmarks/restart_screen.py --seeds 13,14,15,16,17,18,19,20,21,22,23,24,25   # tuning
    python benchmarks/restart_screen.py --seeds 26,27,28,29,30,31,32,33,34,35,36,37,38,39,40  # held out
    python benchmarks/restart_screen.py --report                       # tables from saved rows

Every round is saved as soon as its search ends (``results/restart_screen_rows.json``); the
tables are ``results/restart_screen.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(_HERE)] + [_HERE]
import structure_search as ss  # noqa: E402  (the suite's random topologies and noise)
from _common import machine_line, markdown_table, write_result  # noqa: E402

import tnmars  # noqa: E402
from tnmars.fitting import search as search_module  # noqa: E402
from tnmars.fitting.graph import degrees_of_freedom  # noqa: E402
from tnmars.fitting.search import RankSearch  # noqa: E402

ORDER, MODE_SIZE = 7, 4
EDGE_PROBABILITY, RANKS = 0.1, (2, 3)
MAX_RANK = 4
CHECKPOINTS = (30, 100, 300, 1000)


def best_by_objective(sweeps: int, keep: int):
    """The screen that keeps the ``keep`` starts of lowest objective after ``sweeps`` sweeps."""
    at = CHECKPOINTS.index(sweeps)

    def pick(restarts: list[list[float]]) -> list[int]:
        return sorted(range(len(restarts)), key=lambda i: restarts[i][at])[:keep]
    return pick


def best_and_trend(keep: int, trend: int):
    """The screen of ``RankSearch._screened``: after 300 sweeps the ``keep`` best by objective,
    then the ``trend`` best others by ``objective(300) - (objective(100) - objective(300))``."""
    def pick(restarts: list[list[float]]) -> list[int]:
        kept = sorted(range(len(restarts)), key=lambda i: restarts[i][2])[:keep]
        by_trend = sorted(range(len(restarts)), key=lambda i: 2 * restarts[i][2] - restarts[i][1])
        return kept + [i for i in by_trend if i not in kept][:trend]
    return pick


#: (label, the screen's choice of finalists, whether it is the rule of ``RankSearch._screened``),
#: and the ALS sweeps it spends on 12 starts (screen sweeps each, then 1,000 per finalist)
SCREENS = (("30 sweeps, best 2", best_by_objective(30, 2), False, 12 * 30 + 2 * 1000),
           ("100 sweeps, best 2", best_by_objective(100, 2), False, 12 * 100 + 2 * 1000),
           ("100 sweeps, best 3", best_by_objective(100, 3), False, 12 * 100 + 3 * 1000),
           ("300 sweeps, best 2 (the rule until 2026-11-29)", best_by_objective(300, 2), False, 12 * 300 + 2 * 1000),
           ("300 sweeps, best 4", best_by_objective(300, 4), False, 12 * 300 + 4 * 1000),
           ("300 sweeps, best 2 + 2 by trend", best_and_trend(2, 2), True, 12 * 300 + 4 * 1000))
# the rule's row reads the checkpoints above: it must be the search's own settings
assert (search_module.RESTART_SCREEN_SWEEPS, search_module.RESTART_TREND_FROM, search_module.RESTART_FINALISTS,
        search_module.RESTART_TREND_FINALISTS) == (300, 100, 2, 2), "update SCREENS to the search's rule"
ROWS = Path(_HERE) / "results" / "restart_screen_rows.json"
#: seeds looked at when the rule was chosen, and seeds run only after
SPLITS = {"tune": range(13, 26), "held out": range(26, 71)}


def _trajectory(search: RankSearch, start: tnmars.Network, sweeps: int) -> tuple[object, list[float]]:
    """``start`` refitted by ``sweeps`` ALS sweeps, with its objective at every checkpoint."""
    seen: dict[int, float] = {}
    dof = degrees_of_freedom(start.spec, start.dims)
    fitted, sse = search_module.als(start, search.data, sweeps=sweeps,
                                    on_sweep=lambda k, s: seen.__setitem__(k, s))
    objectives = [search.criterion.objective(seen.get(c, sse), dof) for c in CHECKPOINTS]  # stalled: its last
    search.evaluations += 1
    cand = search_module.Candidate(fitted, sse, objectives[-1], dof, "restart", sweeps)
    return cand, objectives


def recording_restarts(rounds: list[dict]):
    """``RankSearch._restarted`` without the screen: every start refitted by ``final_sweeps``,
    its objective recorded at the checkpoints; the best start is taken as the full rule would."""
    original = RankSearch._restarted

    def restarted(self: RankSearch, best):
        if self.restarts is None or len(best.network.bonds) <= search_module.MANY_BONDS or self.stopped:
            return original(self, best)
        if best.ranks in self._restarted_at or self._restarted_at:
            return best
        self._restarted_at.add(best.ranks)
        starts = self.restarts(dict(best.network.bonds))
        if not starts:
            return best
        best = self._converged(best)
        t0 = time.perf_counter()
        record = {"ranks": list(best.ranks), "incumbent": best.objective, "restarts": []}
        for start in starts:
            cand, objectives = _trajectory(self, start, self.final_sweeps)
            record["restarts"].append(objectives)
            if cand.objective < best.objective:
                best = cand
                self.path.append(best)
                self.trail.append(best)
        record["seconds"] = time.perf_counter() - t0
        rounds.append(record)
        return best

    return restarted


def screen_outcome(record: dict, pick) -> tuple[bool, float] | None:
    """For a won round: whether the finalists ``pick`` chooses include the start that wins most,
    and the share of the gain they keep. ``None`` when no restart beat the incumbent."""
    final = [r[-1] for r in record["restarts"]]
    gain = record["incumbent"] - min(final)
    if gain <= 0:
        return None
    kept = max(record["incumbent"] - min(final[i] for i in pick(record["restarts"])), 0.0)
    return kept >= gain * (1 - 1e-9), kept / gain


def run(seeds: list[int], snrs: list[float | None]) -> None:
    ss.EDGE_PROBABILITY, ss.RANKS = EDGE_PROBABILITY, RANKS
    for seed in seeds:
        for snr in snrs:
            truth, edges = ss.random_topology(ORDER, MODE_SIZE, seed)
            y = ss.noisy(truth.to_tensor(), snr, seed)
            rounds: list[dict] = []
            RankSearch._restarted, saved = recording_restarts(rounds), RankSearch._restarted
            t0 = time.perf_counter()
            try:
                found = tnmars.search(y, max_rank=MAX_RANK, seed=0, progress=False)
                error = float(found.fit.relative_error)
            finally:
                RankSearch._restarted = saved
            row = {"seed": seed, "snr": snr, "true_edges": len(edges), "rounds": rounds, "error": error,
                   "seconds": time.perf_counter() - t0, "date": datetime.date.today().isoformat(),
                   "commit": ss.COMMIT}
            print(json.dumps({k: v for k, v in row.items() if k != "rounds"} | {"rounds": len(rounds)}), flush=True)
            save(row)


def load() -> list[dict]:
    return json.loads(ROWS.read_text()) if ROWS.exists() else []


def save(row: dict) -> None:
    rows = [r for r in load() if (r["seed"], r["snr"]) != (row["seed"], row["snr"])] + [row]
    ROWS.write_text(json.dumps(sorted(rows, key=lambda r: (r["seed"], str(r["snr"]))), indent=1))


def report(rows: list[dict], command: str) -> str:
    rounds = [(r["seed"], r["snr"], rec) for r in rows for rec in r["rounds"]]
    won = [(seed, snr, rec) for seed, snr, rec in rounds if screen_outcome(rec, SCREENS[0][1]) is not None]
    lines = [f"# Restart screen on many bonds (order {ORDER}, {ORDER * (ORDER - 1) // 2} bonds)", "",
             f"Command: `{command}`", "", f"Date: {datetime.date.today().isoformat()}", "", machine_line(), "",
             f"Cases: seeds {sorted({r['seed'] for r in rows})}, SNR {sorted({str(r['snr']) for r in rows})} dB "
             "(None: no noise); "
             f"mode size {MODE_SIZE}, edge probability {EDGE_PROBABILITY}, ranks {RANKS}, `max_rank={MAX_RANK}`; "
             f"commits {sorted({r['commit'] for r in rows})}. {len(rounds)} restart rounds, {len(won)} won by a "
             "restart (some restart ended below the incumbent after 1,000 sweeps). Rows measured by "
             + ", ".join(f"`python benchmarks/restart_screen.py --seeds {','.join(map(str, seeds))} --snr 20` ({split})"
                         for split, seeds in SPLITS.items())
             + "; the searches ran with every restart refitted fully (no screen), so the search's error below is "
             "the unscreened search's.", ""]
    per_case = [[r["seed"], r["snr"], r["true_edges"], len(r["rounds"]),
                 sum(screen_outcome(rec, SCREENS[0][1]) is not None for rec in r["rounds"]),
                 ", ".join(f"{100 * (rec['incumbent'] - min(x[-1] for x in rec['restarts'])) / abs(rec['incumbent']):.3g}%"
                           for rec in r["rounds"]) or "-",
                 f"{r['error']:.4g}", f"{r['seconds'] / 60:.0f}"] for r in rows]
    lines += [markdown_table(["seed", "SNR dB", "true edges", "restart rounds", "won", "gain of the best restart "
                              "(% of the incumbent's objective; negative: none won)", "search's error", "minutes"],
                             per_case), ""]
    table = []
    for split, seeds in SPLITS.items():
        cases = [(seed, snr, rec) for seed, snr, rec in won if seed in seeds]
        for label, pick, rule, cost in SCREENS:
            outcomes = [screen_outcome(rec, pick) for _, _, rec in cases]
            misses = [f"seed {seed} ({snr} dB): kept {100 * o[1]:.0f}%" for (seed, snr, _), o in zip(cases, outcomes)
                      if not o[0]]
            table.append([f"{split} (seeds {seeds.start}-{seeds.stop - 1})", label + (" (the rule)" if rule else ""),
                          f"{cost:,} ({100 * cost / 12000:.0f}%)", f"{sum(o[0] for o in outcomes)} of {len(cases)}",
                          "; ".join(misses) or "-"])
    lines += [markdown_table(["split", "screen", "sweeps for 12 starts (share of refitting all by 1,000)",
                              "won rounds whose best start it keeps", "misses"], table), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="13,14,15")
    ap.add_argument("--snr", default="20", help="comma-separated SNRs in dB; 'none' for no noise")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables from the saved rows")
    args = ap.parse_args()
    command = "python benchmarks/restart_screen.py " + " ".join(sys.argv[1:])
    if not args.report:
        snrs = [None if s.strip().lower() == "none" else float(s) for s in args.snr.split(",")]
        run([int(s) for s in args.seeds.split(",")], snrs)
    text = report(load(), command)
    print(text)
    write_result("restart_screen.md", text)


if __name__ == "__main__":
    main()
