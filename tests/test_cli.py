"""The ``tnmars`` command end to end, in subprocesses like a user would run it."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tnmars
from tnmars import Network
from tnmars.cli import build_parser, main

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tnmars", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = Network.tucker((6, 5, 4), (2, 3, 2), seed=3).to_tensor()
    np.save(folder / "small.npy", data)
    observed = np.random.default_rng(0).random(data.shape) < 0.8
    np.save(folder / "mask.npy", observed)
    return folder, data, observed


def _printed_ranks(stdout: str) -> dict[str, int]:
    line = next(line for line in stdout.splitlines() if "selected ranks" in line)
    return {b: int(r) for b, r, _ in re.findall(r"([A-Z])=(\d+)/(\d+)", line)}


def test_fit_end_to_end(small):
    folder, data, observed = small
    out = folder / "model.npz"
    proc = run("fit", str(folder / "small.npy"), "--format", "tucker", "--max-rank", "3",
               "--observed", str(folder / "mask.npy"), "--seed", "1", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "selected ranks" in proc.stdout and "compression" in proc.stdout and "relative error" in proc.stdout
    saved = tnmars.load(out)
    assert _printed_ranks(proc.stdout) == dict(zip(saved.bonds, saved.ranks))
    # the same fit in-process gives an equal network (the CLI adds nothing and loses nothing)
    ref = tnmars.fit(data, "tucker", max_rank=3, observed=observed, seed=1, progress=False)
    assert saved.network.spec == ref.network.spec and saved.ranks == ref.ranks
    for a, b in zip(saved.network.cores, ref.network.cores):
        np.testing.assert_array_equal(a, b)
    printed = float(re.search(r"relative error\s+(\S+)", proc.stdout).group(1))
    assert printed == pytest.approx(ref.relative_error, rel=1e-3)
    info = run("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "fit result" in info.stdout and "SHA-256 verified" in info.stdout
    assert _printed_ranks(info.stdout) == dict(zip(saved.bonds, saved.ranks))


def test_fit_with_spec_npz_key_default_out_and_nan_as_missing(small):
    folder, data, _ = small
    holey = data.copy()
    holey[0, 0, :] = np.nan
    np.savez(folder / "several.npz", X=holey, other=np.ones(3))
    proc = run("fit", str(folder / "several.npz"), "--key", "X", "--format", "aA,AbB,Bc->abc", "--max-rank", "3,2",
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"{data.size - 4:,} observed" in proc.stdout
    saved = tnmars.load(folder / "several.fit.npz")
    assert saved.network.spec == "aA,AbB,Bc->abc" and saved.max_ranks == (3, 2)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["fit", "{d}/missing.npy"], "not found"),
        (["fit", "{d}/small.npy", "--format", "aA,Ab!"], "neither tucker.*valid einsum spec"),
        (["fit", "{d}/small.npy", "--format", "aA,AbB,Bcd->abcd", "--max-rank", "2"], "4 open modes.*3"),
        (["fit", "{d}/small.npy", "--format", "aA,AbB,Bc->abc"], "--max-rank is required"),
        (["fit", "{d}/small.npy", "--max-rank", "x"], "--max-rank must be an integer"),
        (["fit", "{d}/small.npy", "--pi", "0.9", "--steps", "5"], r"pi must lie in \(0, 0.5\]"),
        (["fit", "{d}/small.npy", "--observed", "{d}/bad_mask.npy", "--steps", "5"], "observed has shape"),
        (["fit", "{d}/notes.txt"], r"\.npy or \.npz"),
        (["fit", "{d}/text.npy"], "not a NumPy array file"),
        (["fit", "{d}/small.npy", "--bogus"], "unrecognized arguments"),
        (["fit", "{d}/small.npy", "--format"], "expected one argument"),
        (["fit", "{d}/small.npy", "--out", "{d}/nowhere/x.npz"], "folder does not exist"),
        (["info", "{d}/small.npy"], "not a tnmars file"),
        (["info", "{d}/missing.npz"], "not found"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(small, args, pattern, capsys):
    """In-process (fast) through main(); the subprocess path is checked in the next test."""
    folder, _, _ = small
    (folder / "notes.txt").write_text("not data")
    (folder / "text.npy").write_text("not data either")
    np.save(folder / "bad_mask.npy", np.ones((2, 2), dtype=bool))
    try:
        code = main([a.format(d=folder) for a in args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    one_line_error(subprocess.CompletedProcess(args, code, "", err), pattern)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["fit", "{d}/missing.npy"], "not found"),
        (["fit", "{d}/small.npy", "--format", "wrong-format"], "neither tucker.*valid einsum spec"),
        (["fit", "{d}/small.npy", "--format", "aA,AbB->abc", "--max-rank", "2"], "valid einsum spec"),
    ],
)
def test_bad_input_in_a_subprocess(small, args, pattern):
    folder, _, _ = small
    one_line_error(run(*[a.format(d=folder) for a in args]), pattern)


def test_tampered_output_file_is_reported(small, tmp_path):
    folder, _, _ = small
    good = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "net.npz")
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    one_line_error(run("info", str(tmp_path / "bad.npz")), "corrupted|integrity|not a tnmars")
    ok = run("info", str(good))
    assert ok.returncode == 0 and "network" in ok.stdout
    js = run("info", "--json", str(good))
    assert js.returncode == 0 and '"spec": "aA,bA->ab"' in js.stdout


def test_demo_runs_and_reports_true_and_found_ranks(tmp_path):
    proc = run("demo", "--quiet", "--out", str(tmp_path / "demo.npz"), "--plot", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "true ranks      A=2, B=3, C=4, D=5" in proc.stdout
    saved = tnmars.load(tmp_path / "demo.npz")
    assert _printed_ranks(proc.stdout) == dict(zip(saved.bonds, saved.ranks))
    assert "error vs truth" in proc.stdout
    assert (tmp_path / "masks.png").stat().st_size > 1000 and (tmp_path / "training.png").stat().st_size > 1000


def test_help_explains_every_option():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"fit", "demo", "info"}
    for name, sub in [("tnmars", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            assert action.help, f"option {action.option_strings or action.dest} of {name} has no help"
    proc = run("fit", "--help")
    assert proc.returncode == 0
    for option in ("--format", "--max-rank", "--observed", "--out", "--steps", "--pi", "--alpha", "--seed",
                   "--backend"):
        assert option in proc.stdout
    assert run("--version").stdout.strip() == f"tnmars {tnmars.__version__}"
    assert run().returncode == 2  # no command: help, and a failing status


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_keeps_the_best_state_and_saves(small, tmp_path):
    import signal

    folder, _, _ = small
    env = {k: v for k, v in ENV.items() if k != "TQDM_DISABLE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tnmars", "fit", str(folder / "small.npy"), "--max-rank", "3", "--prior", "bernoulli",
         "--steps", "1000000",
         "--out", str(tmp_path / "int.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    seen = ""
    while not re.search(r"\d ?(it|step)/s", seen):  # the bar shows a rate: the relaxation is running
        char = proc.stderr.read(1)
        assert char, "the fit ended before it could be interrupted"
        seen += char
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "interrupted     yes" in out
    saved = tnmars.load(tmp_path / "int.npz")
    assert saved.interrupted and saved.steps_run < 1000000


def test_console_script_points_to_main():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("tnmars") == "tnmars.cli:main"
