"""The ``tnmars`` command end to end, in subprocesses like a user would run it."""
from __future__ import annotations

import argparse
import importlib.util
import json
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



def _default_sigint() -> None:
    """In the child before it starts: Ctrl-C as from a terminal. A test run started in the
    background (``pytest &``) ignores SIGINT, and its children would inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def test_fit_with_a_spec_and_no_max_rank_takes_the_library_default_caps(small):
    """An outside review (2026-12-04): the CLI refused a spec without --max-rank ("required with
    a spec") where tnmars.fit(data, spec) caps every bond by its default."""
    folder, data, _ = small
    proc = run("fit", str(folder / "small.npy"), "--format", "aA,AbB,Bc->abc", "--out", str(folder / "spec.npz"),
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    saved = tnmars.load(folder / "spec.npz")
    ref = tnmars.fit(data, "aA,AbB,Bc->abc", seed=0, progress=False)
    assert saved.ranks == ref.ranks and saved.max_ranks == ref.max_ranks
    assert saved.relative_error == pytest.approx(ref.relative_error, rel=1e-6)


def test_fit_with_spec_npz_key_default_out_and_nan_as_missing(small):
    folder, data, _ = small
    holey = data.copy()
    holey[0, 0, :] = np.nan
    np.savez(folder / "several.npz", X=holey, other=np.ones(3))
    args = ("fit", str(folder / "several.npz"), "--key", "X", "--format", "aA,AbB,Bc->abc", "--max-rank", "3,2",
            "--quiet")
    # one rule with tnmars.fit: NaN is refused unless it is declared missing
    one_line_error(run(*args), "4 NaN/Inf entries; mark them missing with --nan-as-missing")
    with pytest.raises(ValueError, match="NaN"):
        tnmars.fit(holey, Network("aA,AbB,Bc->abc", shape=holey.shape, ranks={"A": 3, "B": 2}), progress=False)
    proc = run(*args, "--nan-as-missing")
    assert proc.returncode == 0, proc.stderr
    assert f"{data.size - 4:,} observed" in proc.stdout
    saved = tnmars.load(folder / "several.fit.npz")
    assert saved.network.spec == "aA,AbB,Bc->abc" and saved.max_ranks == (3, 2)
    # a completion's cross-validated error is printed where the fit ran its refits (as summary() does)
    assert ("cross-validated" in proc.stdout) == bool(saved.settings.get("cross_validation"))


def test_a_noisy_completion_prints_its_cross_validated_error(tmp_path):
    rng = np.random.default_rng(0)
    data = np.asarray(Network.tucker((10, 11, 12), (2, 3, 2), seed=0).to_tensor())
    data = data + 0.05 * data.std() * rng.standard_normal(data.shape)
    data[rng.random(data.shape) < 0.5] = np.nan
    np.save(tmp_path / "holey.npy", data)
    proc = run("fit", str(tmp_path / "holey.npy"), "--format", "tucker", "--nan-as-missing", "--quiet")
    assert proc.returncode == 0, proc.stderr
    checked = tnmars.load(tmp_path / "holey.fit.npz").settings["cross_validation"]
    assert f"cross-validated median error {checked['median_error']:.3g}" in proc.stdout


def test_mask_npz_array_is_chosen_by_observed_key_or_the_data_key_or_alone(small, capsys):
    """--key named the array in both DATA and MASK .npz files: a mask file whose array had another
    name than the data's could not be used ("has no array 'X'")."""
    folder, data, observed = small
    np.savez(folder / "named.npz", X=data, other=np.ones(3))
    np.savez(folder / "one_mask.npz", mask=observed)
    np.savez(folder / "two_masks.npz", M=observed, N=~observed)
    np.savez(folder / "same_name.npz", X=observed, N=~observed)
    common = ["fit", str(folder / "named.npz"), "--key", "X", "--format", "tucker", "--max-rank", "3", "--quiet",
              "--out", str(folder / "named.fit.npz"), "--force"]
    counts = {}
    for mask, extra in (("one_mask", []), ("two_masks", ["--observed-key", "N"]), ("same_name", [])):
        assert main([*common, "--observed", str(folder / f"{mask}.npz"), *extra]) == 0
        counts[mask] = int(re.search(r"([\d,]+) observed", capsys.readouterr().out).group(1).replace(",", ""))
    assert counts == {"one_mask": int(observed.sum()), "two_masks": int((~observed).sum()),
                      "same_name": int(observed.sum())}
    one_line_error(run(*common, "--observed", str(folder / "two_masks.npz")), "choose one with --observed-key")
    one_line_error(run(*common, "--observed", str(folder / "mask.npy"), "--observed-key", "M"),
                   "--observed-key 'M' names an array of a .npz file")
    one_line_error(run(*common, "--observed-key", "M"), "there is no --observed")


def test_fit_with_a_mask_and_nan_as_missing_combines_them(small):
    """With --observed, --nan-as-missing was ignored: the run failed with the library's advice
    ("set observed=False there"), and a 0/2 mask printed "270 observed" for 210 entries before
    its error."""
    folder, data, observed = small
    holey = data.copy()
    holey[1, 1, :] = np.nan
    np.save(folder / "holey.npy", holey)
    args = ("fit", str(folder / "holey.npy"), "--observed", str(folder / "mask.npy"), "--max-rank", "3", "--quiet",
            "--out", str(folder / "holey.fit.npz"))
    if observed[1, 1, :].any():
        one_line_error(run(*args), "NaN/Inf entries where --observed marks them observed; add --nan-as-missing")
    proc = run(*args, "--nan-as-missing")
    assert proc.returncode == 0, proc.stderr
    both = observed & np.isfinite(holey)
    assert f"{int(both.sum()):,} observed" in proc.stdout
    np.save(folder / "twos.npy", observed.astype(np.int64) * 2)
    bad = run("fit", str(folder / "small.npy"), "--observed", str(folder / "twos.npy"), "--quiet")
    one_line_error(bad, "--observed must be a boolean mask")
    assert "observed)" not in bad.stdout


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["fit", "{d}/missing.npy"], "not found"),
        (["fit", "{d}/small.npy", "--format", "aA,Ab!"], "neither tucker.*valid einsum spec"),
        (["fit", "{d}/small.npy", "--format", "tuckr"], r"unknown format 'tuckr' \(did you mean 'tucker'\?\)"),
        (["fit", "{d}/small.npy", "--format", "aA,AbB,Bcd->abcd", "--max-rank", "2"], "4 open modes.*3"),
        (["fit", "{d}/small.npy", "--max-rank", "x"], "--max-rank must be an integer"),
        (["fit", "{d}/small.npy", "--pi", "0.9", "--steps", "5"], r"pi must lie in \(0, 0.5\]"),
        (["fit", "{d}/small.npy", "--observed", "{d}/bad_mask.npy", "--steps", "5"], "observed has shape"),
        (["fit", "{d}/notes.txt"], r"\.npy or \.npz"),
        (["fit", "{d}/text.npy"], "not a NumPy array file"),
        (["fit", "{d}/small.npy", "--bogus"], "unrecognized arguments"),
        (["fit", "{d}/small.npy", "--key", "a"], "is a .npy file \\(one array\\); drop --key"),
        (["fit", "{d}/small.npy", "--format"], "expected one argument"),
        (["fit", "{d}/small.npy", "--out", "{d}/nowhere/x.npz"], "folder does not exist"),
        (["fit", "{d}/small.npy", "--out", "{d}/folder.npz"], "is a folder; give a file name"),
        (["fit", "{d}/data.npz", "--out", "{d}/data.npz"], "is an input file of this run"),
        (["demo", "--out", "{d}/folder.npz"], "is a folder; give a file name"),
        (["demo", "--out", "{d}/demo.txt"], r"--out must end in \.npz"),
        (["demo", "--plot", "{d}/small.npy"], r"--plot .* is a file; give a folder"),
        (["demo", "--plot", "{d}/small.npy/sub"], r"--plot .*small.npy is a file, so the folder cannot be created"),
        (["demo", "--noise", "inf"], r"--noise must be a finite number >= 0"),
        (["demo", "--noise", "1e308"], r"--noise 1e\+308 is too large"),
        (["fit", "{d}/small.npy", "--out", ""], "--out is empty"),
        (["demo", "--out", ""], "--out is empty"),
        (["demo", "--plot", " "], "--plot is empty"),
        (["fit", "{d}/dm.npz", "--key", "x", "--observed", "{d}/dm.npz"],
         r"array 'x' of .*dm.npz holds other values \(read by --key's name 'x'; name the mask's array with "
         "--observed-key"),
        (["info", "{d}/small.npy"], "not a tnmars file"),
        (["info", "{d}/missing.npz"], "not found"),
        (["frobnicate"], "invalid choice"),
        # (outside probe: a 0-d array printed "(, 1 entries" first; a one-core spec was an "unknown format")
        (["fit", "{d}/scalar.npy"], r"DATA holds a single number \(a 0-d array\)"),
        (["fit", "{d}/small.npy", "--format", "xyz"], "the spec 'xyz' is a single core holding every mode: no bond"),
        (["fit", "{d}/small.npy", "--format", "tuc"], r"unknown format 'tuc' \(did you mean 'tucker'\?\)"),  # (3 letters, 3 modes)
        # (the library's keyword names read as the options a command line user types)
        (["fit", "{d}/small.npy", "--max-rank", "2,3"], r"^tnmars fit: error: --max-rank needs one value per bond"),
        (["fit", "{d}/small.npy", "--max-rank", "2", "--min-rank", "3"],
         r"--min-rank 3 is above --max-rank 2: lower --min-rank"),
        (["fit", "{d}/small.npy", "--max-rank", "3", "--min-rank", "2,4,1"],
         r"--min-rank 4 on bond 'B' is above --max-rank 3: lower --min-rank"),
        (["fit", "{d}/small.npy", "--min-rank", "2,x"], r"--min-rank must be an integer or integers separated by commas"),
        (["fit", "{d}/small.npy", "--min-rank", "-1"], r"--min-rank must be at least 0; got '-1'"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(small, args, pattern, capsys):
    """In-process (fast) through main(); the subprocess path is checked in the next test."""
    folder, _, _ = small
    (folder / "notes.txt").write_text("not data")
    np.save(folder / "scalar.npy", np.array(3.0))
    (folder / "text.npy").write_text("not data either")
    np.save(folder / "bad_mask.npy", np.ones((2, 2), dtype=bool))
    (folder / "folder.npz").mkdir(exist_ok=True)
    np.savez(folder / "data.npz", x=np.ones((3, 4, 5)))
    np.savez(folder / "dm.npz", x=np.full((6, 5, 4), 2.0), m=np.ones((6, 5, 4), bool))  # data and mask
    before = (folder / "data.npz").read_bytes()
    try:
        code = main([a.format(d=folder) for a in args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    one_line_error(subprocess.CompletedProcess(args, code, "", err), pattern)
    assert (folder / "data.npz").read_bytes() == before  # an input is never overwritten


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["fit", "{d}/missing.npy"], "not found"),
        (["fit", "{d}/small.npy", "--format", "wrong-format"], "unknown format 'wrong-format'; use one of tucker"),
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
    # a second run refuses to replace the images (as --out's file), before fitting, unless --force
    before = (tmp_path / "masks.png").read_bytes()
    again = run("demo", "--quiet", "--plot", str(tmp_path), "--seed", "1")
    one_line_error(again, r"--plot .* already holds masks.png and training.png; choose another folder, or pass --force")
    assert (tmp_path / "masks.png").read_bytes() == before
    assert "true ranks      A=2, B=3, C=4, D=5" in proc.stdout
    saved = tnmars.load(tmp_path / "demo.npz")
    assert _printed_ranks(proc.stdout) == dict(zip(saved.bonds, saved.ranks))
    assert "error vs truth" in proc.stdout
    assert (tmp_path / "masks.png").stat().st_size > 1000 and (tmp_path / "training.png").stat().st_size > 1000


def test_the_demo_prints_what_its_fit_found_wrong(capsys):
    """Outside probe: the demo silenced every warning of its fit, so at --noise 10 it printed an
    error against the truth of 1.59 (worse than the zero tensor) without a word, though the fit
    had said it left most of the data unexplained (seen only by saving and `tnmars info`)."""
    assert main(["demo", "--quiet", "--noise", "10"]) == 0
    out = capsys.readouterr().out
    assert "  WARNING         the selected network leaves most of the data unexplained" in out
    assert main(["demo", "--quiet"]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_help_explains_every_option():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"fit", "demo", "info", "build-native"}
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
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint,
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
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    try:
        distribution("tnmars")
    except PackageNotFoundError:
        pytest.skip("tnmars is imported from a source tree, not installed: no console script to check")
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("tnmars") == "_tnmars_cli:main"
    import _tnmars_cli

    assert "numpy" not in open(_tnmars_cli.__file__).read()  # the launcher imports the standard library only


# ----------------------------------------------------------------------------- hostile use
SCRIPT = os.path.join(os.path.dirname(sys.executable), "tnmars")


def test_nan_fit_result_fails_with_status_1_and_saves_nothing(small, tmp_path, monkeypatch, capsys):
    """A fit whose error is NaN (e.g. data at 1e160) must not print "relative error nan" and exit 0."""
    import dataclasses
    import functools
    from importlib import import_module

    folder, _, _ = small
    fit_module = import_module("tnmars.fitting")  # where the command imports fit from
    real_fit = fit_module.fit

    @functools.wraps(real_fit)  # the parser reads fit's signature for its --help defaults
    def nan_fit(*args, **kwargs):
        return dataclasses.replace(real_fit(*args, **kwargs), relative_error=float("nan"))

    monkeypatch.setattr(fit_module, "fit", nan_fit)
    code = main(["fit", str(folder / "small.npy"), "--max-rank", "2", "--steps", "5", "--quiet",
                     "--out", str(tmp_path / "nan.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "relative error is nan" in err and "Traceback" not in err
    assert not (tmp_path / "nan.npz").exists()


def test_broken_pipe_is_silent(small, tmp_path):
    good = tnmars.save(Network.tt((4, 5, 6, 7), 3, seed=0), tmp_path / "net.npz")
    proc = subprocess.run(f"'{sys.executable}' -m tnmars info --json '{good}' | head -n 2", shell=True,
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.stdout.count("\n") == 2
    assert proc.stderr == "", proc.stderr  # no "Broken pipe", no traceback
    pipe = subprocess.Popen([sys.executable, "-m", "tnmars", "info", "--json", str(good)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    pipe.stdout.close()  # the reader goes away before anything is written
    assert pipe.wait(timeout=120) == 141
    assert b"Traceback" not in pipe.stderr.read()


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_a_reader_that_closes_stdout_early_does_not_lose_the_result(small, tmp_path, command):
    """Found by an outside probe: ``tnmars fit a.npy --quiet --out r.npz | head -3`` exited 141 and
    wrote no file (the report was printed before the save, and the closed pipe ended the command
    at the next print); ``demo --out`` the same."""
    folder, _, _ = small
    out = tmp_path / "r.npz"
    args = (["fit", str(folder / "small.npy")] if command == "fit" else ["demo"]) + ["--quiet", "--out", str(out)]
    quoted = " ".join(f"'{a}'" for a in args)
    proc = subprocess.run(f"'{sys.executable}' -m tnmars {quoted} | head -n 1", shell=True, capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert tnmars.load(out).ranks  # the whole result, saved


def test_traceback_keeps_the_exit_status_and_no_command_is_a_usage_error_on_stderr(small, capsys):
    """``--traceback`` showed the traceback by re-raising, so an input error exited 1, not 2."""
    folder, _, _ = small
    assert main(["fit", str(folder / "missing.npy")]) == 2
    capsys.readouterr()
    assert main(["--traceback", "fit", str(folder / "missing.npy")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "DATA file not found" in err
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: tnmars" in err


def test_info_on_hostile_files_is_one_line_and_bounded(tmp_path):
    """The zip bomb and deep JSON of the file-safety tests, through ``tnmars info``."""
    import test_io

    bomb = test_io._zip_bomb(tmp_path, 1.0)
    proc = run("info", str(bomb))
    one_line_error(proc, "declares 1,073,741,952 bytes of arrays")
    path = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "n.npz")
    arrays = test_io._members(path)
    meta = json.loads(arrays.pop("__tnmars_metadata__").tobytes())
    text = json.dumps(meta)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(tmp_path / "deep.npz", __tnmars_metadata__=np.frombuffer(text.encode(), np.uint8), **arrays)
    one_line_error(run("info", str(tmp_path / "deep.npz")), "nested 100001 levels deep")
    one_line_error(run("info", "--json", str(tmp_path / "deep.npz")), "nested 100001 levels deep")


def test_info_says_what_the_digest_guarantees(tmp_path, monkeypatch):
    net = Network.cp((3, 4), 2, seed=0)
    plain = tnmars.save(net, tmp_path / "plain.npz")
    assert "detects corruption, not deliberate changes" in run("info", str(plain)).stdout
    signed = tnmars.save(net, tmp_path / "signed.npz", key="k" * 16)
    assert "signed, but not authenticated" in run("info", str(signed)).stdout
    env = {**ENV, "TNMARS_SIGNING_KEY": "k" * 16}
    proc = subprocess.run([sys.executable, "-m", "tnmars", "info", str(signed)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert "HMAC-SHA256 verified" in proc.stdout, proc.stderr
    wrong = subprocess.run([sys.executable, "-m", "tnmars", "info", str(signed)], capture_output=True, text=True,
                           env={**env, "TNMARS_SIGNING_KEY": "wrong key"}, timeout=120)
    one_line_error(wrong, "HMAC mismatch")


def test_info_prints_a_fit_results_diagnostics_and_names_a_zero_network(tmp_path, capsys):
    """``info`` left out the warnings a fit saved with its result (only ``--json`` had them), and
    a network with a bond of rank 0 (the zero tensor) printed "compression 11.20x"."""
    import warnings

    from tnmars.cli import as_option_words
    from tnmars.fitting import fit
    x = Network.tucker((6, 7, 8), (2, 2, 2), seed=0).to_tensor()
    observed = np.random.default_rng(0).random(x.shape) < 0.03
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(x, "tucker", max_rank=4, observed=observed, progress=False)
    assert result.diagnostics
    # (a warning in the library's words, as saved by a fit that said "fit them as max_rank=... with min_rank=...")
    result.diagnostics = [*result.diagnostics, "fit at the ranks you chose (max_rank=... with min_rank=...)"]
    assert main(["info", str(tnmars.save(result, tmp_path / "r.npz"))]) == 0
    printed = capsys.readouterr().out
    for message in result.diagnostics:  # (in the options typed here: an outside probe read max_rank=... there)
        assert f"WARNING         {as_option_words(message)}" in printed
    assert any(as_option_words(m) != m for m in result.diagnostics) and "max_rank=" not in printed
    zero = Network.tucker((6, 7, 8), (2, 2, 2), seed=0).prune({"A": [False, False]})
    assert main(["info", str(tnmars.save(zero, tmp_path / "zero.npz"))]) == 0
    printed = capsys.readouterr().out
    assert "the zero tensor (bond A of rank 0)" in printed and "compression" not in printed.replace(
        "not a compression", "")
    assert "the zero tensor (bond A of rank 0), not a compression" in zero.summary()


def test_huge_max_rank_is_clipped_not_a_memory_error(small):
    folder, _, _ = small
    proc = run("fit", str(folder / "small.npy"), "--format", "aA,AbB,Bc->abc", "--max-rank", str(10**12),
               "--steps", "5", "--quiet", "--out", str(folder / "huge.npz"))
    assert proc.returncode == 0, proc.stderr
    assert tnmars.load(folder / "huge.npz").max_ranks == (6, 4)


def test_verbose_shows_the_log(small, tmp_path):
    good = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "net.npz")
    assert "tnmars.io: loaded" in run("--verbose", "info", str(good)).stderr
    assert run("info", str(good)).stderr == ""


@pytest.mark.skipif(sys.platform == "win32" or not os.path.exists(SCRIPT), reason="needs the console script")
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6, 1.2])
def test_ctrl_c_at_any_moment_is_one_line(small, tmp_path, delay):
    """Ctrl-C while tnmars is still importing (the first ~0.3 s) printed a traceback. The
    delays count from the end of Python's own start-up (measured here, as the machine may be
    busy): before that no Python code of any program can handle a signal."""
    import signal
    import time

    folder, _, _ = small
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=ENV, timeout=120)
    delay += time.perf_counter() - t0
    proc = subprocess.Popen([SCRIPT, "fit", str(folder / "small.npy"), "--max-rank", "3", "--prior", "bernoulli",
                             "--steps", "100000", "--quiet", "--out", str(tmp_path / "x.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_sigint)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 130), (proc.returncode, err)  # 0: the fit stopped early and saved
    assert ("interrupted" in err) or ("interrupted     yes" in out)


@pytest.mark.skipif(sys.platform == "win32" or not os.path.exists(SCRIPT), reason="needs the console script")
def test_repeated_ctrl_c_never_dies_silently_or_leaves_half_a_file(small, tmp_path):
    """Several quick Ctrl-C's during the fit and the save: a message and status 0/130, and
    the output file is either absent or complete (the process died by the signal before)."""
    import signal
    import time

    folder, _, _ = small
    env = {k: v for k, v in ENV.items() if k != "TQDM_DISABLE"}
    for gap in (0.02, 0.1, 0.3):
        out_file = tmp_path / f"x{gap}.npz"
        proc = subprocess.Popen([SCRIPT, "fit", str(folder / "small.npy"), "--max-rank", "3", "--prior", "bernoulli",
                                 "--steps", "100000", "--out", str(out_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_default_sigint)
        seen = b""
        while not re.search(rb"\d ?(it|step)/s", seen):  # the relaxation is running
            char = proc.stderr.read(1)
            assert char, "the fit ended before it could be interrupted"
            seen += char
        for _ in range(4):
            proc.send_signal(signal.SIGINT)
            time.sleep(gap)
        out, err = proc.communicate(timeout=300)
        text = out.decode() + err.decode()
        assert proc.returncode in (0, 130), (gap, proc.returncode, text[-2000:])
        assert "Traceback" not in text and "interrupted" in text
        if out_file.exists():
            tnmars.load(out_file)


def test_warnings_are_one_line_without_library_source(tmp_path):
    """A fit's warnings printed the library's file, line and source line (``result = fit(``)."""
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).standard_normal((2, 300)))
    run = subprocess.run([sys.executable, "-m", "tnmars", "fit", str(tmp_path / "wide.npy"), "--format", "tt",
                          "--max-rank", "2", "--quiet"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    err = run.stderr
    lines = [line for line in err.splitlines() if "Warning" in line]
    assert lines and all(line.startswith("tnmars: RuntimeWarning: ") for line in lines)
    assert ".py:" not in err and "result = fit(" not in err


@pytest.mark.parametrize("args, what", [
    (["fit", "{d}/small.npy", "--out", "{d}/out.npz"], "--out {d}/out.npz"),
    (["fit", "{d}/small.npy"], "the output file {d}/small.fit.npz"),
    (["demo", "--out", "{d}/out.npz"], "--out {d}/out.npz"),
    (["demo", "--plot", "{d}/plots"], "--plot {d}/plots"),
])
def test_an_unwritable_output_folder_is_refused_before_the_fit(small, args, what, monkeypatch, capsys):
    """The fit ran to the end, then failed to save ("Permission denied: '.x.npz.XXXX.tmp'").
    A trial file is the test (os.access says yes to root), so it is the one refused here."""
    import functools
    import tempfile

    import tnmars.fitting

    folder, _, _ = small

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    @functools.wraps(tnmars.fitting.fit)  # (its signature gives --help's defaults)
    def no_fit(*a, **k):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(tnmars.fitting, "fit", no_fit)
    code = main([a.format(d=folder) for a in args])
    err = capsys.readouterr().err
    one_line_error(subprocess.CompletedProcess(args, code, "", err),
                   re.escape(what.format(d=folder)) + r".*cannot write in folder .*Permission denied")


def test_an_upper_case_suffix_is_accepted_as_save_accepts_it(small, tmp_path):
    folder, _, _ = small
    proc = run("fit", str(folder / "small.npy"), "--out", str(tmp_path / "o.NPZ"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert tnmars.load(tmp_path / "o.NPZ").network.shape == (6, 5, 4)


def test_info_names_the_environment_variable_whose_key_an_unsigned_file_lacks(tmp_path):
    plain = tnmars.save(Network.cp((3, 4), 2, seed=0), tmp_path / "plain.npz")
    proc = subprocess.run([sys.executable, "-m", "tnmars", "info", str(plain)], capture_output=True, text=True,
                          env={**ENV, "TNMARS_SIGNING_KEY": "k" * 16}, timeout=120)
    one_line_error(proc, r"not signed, but a key was given \(in the TNMARS_SIGNING_KEY environment variable\)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_info_and_fit_refuse_a_pipe_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    one_line_error(run("info", str(fifo)), "is not a regular file")
    one_line_error(run("fit", str(fifo)), "DATA is not a regular file")


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs signal.setitimer")
def test_ctrl_c_inside_an_import_is_held_until_the_import_is_done():
    """Found by the Ctrl-C test under load: a Ctrl-C that arrived while the fit imported a module
    lazily was raised inside a module lock's weakref callback, printed as "Exception ignored ...
    Traceback" and lost (the fit went on). Inside the import machinery the launcher's handler
    arms a retry instead; elsewhere it raises KeyboardInterrupt as Python's default does."""
    import signal
    import types

    import _tnmars_cli

    def frame(filename, back=None):
        return types.SimpleNamespace(f_code=types.SimpleNamespace(co_filename=filename), f_back=back)

    inside = frame("/x/module.py", frame("<frozen importlib._bootstrap>", frame("/x/cli.py")))
    assert _tnmars_cli._importing(inside) and not _tnmars_cli._importing(frame("/x/cli.py"))
    previous = signal.getsignal(signal.SIGALRM)
    try:
        assert _tnmars_cli._interrupt(signal.SIGINT, inside) is None  # held back: a retry armed
        assert signal.getsignal(signal.SIGALRM) is _tnmars_cli._interrupt
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
        signal.setitimer(signal.ITIMER_REAL, 0)
        with pytest.raises(KeyboardInterrupt):
            _tnmars_cli._interrupt(signal.SIGINT, frame("/x/cli.py"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_empty_npz_archive_is_named_as_such(tmp_path):
    """It read "holds several arrays []; choose one with --key"."""
    np.savez(tmp_path / "empty.npz")
    one_line_error(run("fit", str(tmp_path / "empty.npz"), "--quiet"), r"holds no arrays \(an empty .npz archive\)")


def test_a_fit_of_data_far_from_zero_says_it_was_fitted_without_their_mean(tmp_path, capsys):
    """Its ranks hold the mean's index: the report says so (fit, info, and FitResult.summary)."""
    x = np.asarray(Network.tucker((12, 14, 10), (3, 4, 2), seed=0).to_tensor()) + 1e7
    np.save(tmp_path / "far.npy", x)
    assert main(["fit", str(tmp_path / "far.npy"), "-f", "tucker", "--quiet", "--out", str(tmp_path / "far.npz")]) == 0
    assert main(["info", str(tmp_path / "far.npz")]) == 0
    out = capsys.readouterr().out
    assert out.count("centred         fitted without the data's mean (1e+07), then plus it") == 2
    assert "A=4/12, B=5/14, C=3/10" in out
    assert "centred   fitted without" in tnmars.load(tmp_path / "far.npz").summary()
    assert main(["fit", str(tmp_path / "far.npy"), "-f", "tucker", "--quiet", "--out", str(tmp_path / "near.npz"),
                 "--max-rank", "1"]) == 0
    assert "centred" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_an_existing_output_file_is_refused_unless_forced(small, tmp_path, command, capsys):
    """Found by an outside probe: a second ``tnmars fit`` of the same data replaced the first's
    result, and ``--out precious.npz`` replaced an unrelated archive, without a word. An existing
    file is now refused before the fit runs (and left as it was); ``--force`` replaces it."""
    folder, _, _ = small
    out = tmp_path / "precious.npz"
    np.savez(out, mine=np.arange(3))
    before = out.read_bytes()
    args = (["fit", str(folder / "small.npy")] if command == "fit" else ["demo"]) + ["--quiet", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {out} exists; choose another file, or pass --force to replace it" in err
    assert out.read_bytes() == before
    assert main([*args, "--force"]) == 0
    assert tnmars.load(out).ranks
    if command == "fit":  # the default output name: its message already says how to choose another
        np.save(tmp_path / "mine.npy", np.load(folder / "small.npy"))  # (not the shared folder's small.fit.npz)
        assert main(["fit", str(tmp_path / "mine.npy"), "--quiet"]) == 0
        assert main(["fit", str(tmp_path / "mine.npy"), "--quiet"]) == 2
        assert "choose another with --out) exists; pass --force to replace it" in capsys.readouterr().err


def test_fit_advice_names_the_command_line_options_and_min_rank_fixes_the_ranks(small, tmp_path, capsys):
    """The library's warnings said "Raise max_rank" to a user of ``tnmars fit``, whose option is
    ``--max-rank``, and advised ``max_rank=... with min_rank=...`` (fixed ranks) with no
    ``--min-rank`` to give."""
    folder, _, _ = small  # Tucker ranks (2, 3, 2)
    env = {k: v for k, v in ENV.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-m", "tnmars", "fit", str(folder / "small.npy"), "--max-rank", "1",
                           "--quiet", "--out", str(tmp_path / "a.npz")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    capped = [line for line in proc.stderr.splitlines() if "stopped by" in line]
    assert capped, proc.stderr
    assert "Raise --max-rank" in capped[0] and "max_rank" not in capped[0], capped[0]
    code = main(["fit", str(folder / "small.npy"), "--max-rank", "3", "--min-rank", "3", "--quiet",
                 "--out", str(tmp_path / "b.npz")])
    assert code == 0
    assert set(_printed_ranks(capsys.readouterr().out).values()) == {3}  # fixed, not selected (the truth: 2, 3, 2)
    code = main(["fit", str(folder / "small.npy"), "--max-rank", "2,2,1", "--min-rank", "2,2,1", "--quiet",
                 "--out", str(tmp_path / "c.npz")])  # one rank per bond, also below the truth's
    assert code == 0
    assert list(_printed_ranks(capsys.readouterr().out).values()) == [2, 2, 1]


def test_a_spec_given_as_the_format_is_printed_once(small, tmp_path, capsys):
    """Found by an outside tester: ``--format 'aAC,AbB,BcC->abc'`` printed the network line as
    "aAC,AbB,BcC->abc (aAC,AbB,BcC->abc)"; a format name still follows its spec."""
    folder, _, _ = small
    common = [str(folder / "small.npy"), "--max-rank", "2", "--steps", "5", "--quiet", "--force"]
    assert main(["fit", *common, "--format", "aAC,AbB,BcC->abc", "--out", str(tmp_path / "a.npz")]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  network"))
    assert line.split() == ["network", "aAC,AbB,BcC->abc"], line
    assert main(["fit", *common, "--format", "tt", "--out", str(tmp_path / "b.npz")]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  network"))
    assert line.split() == ["network", "aA,AbB,Bc->abc", "(tt)"], line


def test_fit_given_a_tnmars_file_says_so_and_points_to_info(small, tmp_path):
    """Found by an outside tester: ``tnmars fit model.fit.npz`` said the file "holds several
    arrays [...]; choose one with --key", and a .safetensors one "must be a .npy or .npz file"."""
    folder, _, _ = small
    result = tnmars.fit(np.load(folder / "small.npy"), "tucker", max_rank=2, progress=False,
                        relaxation={"steps": 5})
    saved = [tnmars.save(result, tmp_path / "model.fit.npz"), tnmars.save(result.network, tmp_path / "net.npz")]
    if importlib.util.find_spec("safetensors") is not None:
        saved.append(tnmars.save(result.network, tmp_path / "net.safetensors"))
    for path in saved:
        assert main(["fit", str(path), "--quiet", "--out", str(tmp_path / "o.npz")]) == 2
    for path in saved:
        one_line_error(run("fit", str(path), "--quiet", "--out", str(tmp_path / "o.npz")),
                       rf"^tnmars fit: error: DATA file {re.escape(str(path))} is a tnmars file .*, not data; "
                       rf"describe it with 'tnmars info {re.escape(str(path))}'")
    one_line_error(run("fit", str(folder / "small.npy"), "--observed", str(saved[1]), "--quiet",
                       "--out", str(tmp_path / "o.npz")), "--observed file .* is a tnmars file")
    assert not (tmp_path / "o.npz").exists()
    # an array of it named with --key is data, as asked
    proc = run("fit", str(saved[1]), "--key", "core_0", "--max-rank", "2", "--quiet", "--out", str(tmp_path / "o.npz"))
    assert proc.returncode == 0, proc.stderr


def _closed_stdout() -> None:
    os.close(1)


def test_output_that_cannot_be_written_is_status_1_with_one_line_and_the_work_done(small, tmp_path):
    """Found by an outside tester: a full disk (``tnmars info F > /dev/full``) exited 2, the status
    of a usage error, and a closed stdout (``>&-``) was "internal error: AttributeError" with status 1,
    the fit never run. Now both are one line on stderr and status 1, after the work (the fit is
    saved); a reader that goes away (a broken pipe) is still 141, silently."""
    folder, _, _ = small
    good = tnmars.save(Network.tt((4, 5, 6), 3, seed=0), tmp_path / "net.npz")
    cases = [(["info", str(good)], "No space left on device"), (["info", "--json", str(good)], None),
             (["--version"], None)]
    if os.path.exists("/dev/full"):
        for args, reason in cases:
            with open("/dev/full", "w") as full:
                proc = subprocess.run([sys.executable, "-m", "tnmars", *args], stdout=full, stderr=subprocess.PIPE,
                                      text=True, env=ENV, timeout=120)
            one_line = proc.stderr.strip().splitlines()
            assert proc.returncode == 1 and len(one_line) == 1, (args, proc.returncode, proc.stderr)
            assert re.fullmatch(r"tnmars( info)?: error: cannot write the output to stdout \(.+\)", one_line[0])
            assert reason is None or reason in one_line[0]
    out = tmp_path / "fit.npz"
    proc = subprocess.run([sys.executable, "-m", "tnmars", "fit", str(folder / "small.npy"), "--max-rank", "2",
                           "--steps", "5", "--quiet", "--out", str(out)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=ENV, timeout=300, preexec_fn=_closed_stdout)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("tnmars fit: error: cannot write the output to stdout (standard output is "
                                   f"closed); the result was saved to {out}")
    assert tnmars.load(out).ranks
    proc = subprocess.run([sys.executable, "-m", "tnmars", "info", str(good)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=ENV, timeout=120, preexec_fn=_closed_stdout)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr


@pytest.mark.parametrize("fmt, ranks, bonds", [("tt", "2,3,2", 2), ("tucker", "2,2", 3), ("cp", "2,3", 1), ("tr", "2,2", 3)])
def test_max_rank_of_the_wrong_length_for_a_format_is_refused_before_the_header(small, capsys, fmt, ranks, bonds):
    """An outside probe (2026-12-04): ``--format tt --max-rank 2,3`` printed the fit's header
    line, then the usage error; the count of a format's bonds is known before the fit."""
    folder, _, _ = small
    assert main(["fit", str(folder / "small.npy"), "--format", fmt, "--max-rank", ranks, "--quiet",
                 "--out", str(folder / f"wrong_{fmt}.npz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"one value per bond of the {fmt} format of 3 modes ({bonds}:" in captured.err
    assert not (folder / f"wrong_{fmt}.npz").exists()
