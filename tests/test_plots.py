"""Plots render to PNG files and reflect their input (bars, curves, points)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from tnmars.plots import plot_mask_probabilities, plot_sweep, plot_training  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


def test_mask_probabilities_png(tmp_path):
    probs = {"A": np.array([0.99, 0.97, 0.4, 0.01]), "B": np.linspace(0, 1, 7), "C": np.array([0.8])}
    fig = plot_mask_probabilities(probs, title="MARS masks", path=tmp_path / "masks.png", ncols=2)
    assert _is_png(tmp_path / "masks.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["bond A: rank 2/4", "bond B: rank 3/7", "bond C: rank 1/1"]
    heights = [p.get_height() for p in visible[0].patches]
    np.testing.assert_allclose(heights, probs["A"])
    # the 0.5 threshold line is drawn in every panel
    assert all(any(np.allclose(line.get_ydata(), 0.5) for line in ax.lines) for ax in visible)


def test_mask_probabilities_from_result_object_and_bad_input():
    class Result:
        probabilities = {"A": [0.9, 0.2]}

    assert plot_mask_probabilities(Result()).axes[0].get_title() == "bond A: rank 1/2"
    with pytest.raises(ValueError, match="non-empty"):
        plot_mask_probabilities({})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_mask_probabilities({"A": [1.5]})


def test_empty_relaxation_probabilities_of_a_default_fit_say_why():
    """An outside probe (2026-12-04): ``plot_mask_probabilities(result.relaxation_probabilities)``
    after a default fit said only "must be a non-empty mapping"; no relaxation ran."""
    import tnmars

    result = tnmars.fit(tnmars.Network.tucker((6, 7, 8), (2, 2, 2), seed=0).to_tensor(), "tucker", progress=False)
    assert result.relaxation_probabilities == {}
    with pytest.raises(ValueError, match=r"only when the MARS relaxation ran \(prior='bernoulli' or proposal='mars'\)"):
        plot_mask_probabilities(result.relaxation_probabilities)
    assert plot_mask_probabilities(result).axes  # (the result itself: its selected masks)


def test_training_png_dict_and_list_forms(tmp_path):
    steps = list(range(0, 100, 10))
    hist = {
        "step": steps,
        "loss": list(np.exp(-np.arange(10) / 3) + 0.1),
        "nll": list(np.exp(-np.arange(10) / 3)),
        "ranks": [(10 - k // 2, 8 - k // 3) for k in range(10)],
        "temperature": list(np.linspace(0.1, 0.01, 10)),
    }
    fig = plot_training(hist, bonds=["A", "B"], path=tmp_path / "train.png")
    assert _is_png(tmp_path / "train.png")
    loss_ax, rank_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["loss", "nll"]
    assert loss_ax.get_yscale() == "log"
    assert [line.get_label() for line in rank_ax.lines] == ["bond A", "bond B"]
    np.testing.assert_array_equal(rank_ax.lines[0].get_ydata(), [r[0] for r in hist["ranks"]])

    records = [{"step": s, "loss": -float(s), "ranks": {"X": 3, "Y": 2}} for s in range(5)]
    fig = plot_training(records, path=tmp_path / "records.png")
    assert _is_png(tmp_path / "records.png")
    assert fig.axes[0].get_yscale() == "linear"  # negative values: no log scale
    assert [line.get_label() for line in fig.axes[1].lines] == ["bond X", "bond Y"]


def test_training_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plot_training({"loss": []})
    with pytest.raises(ValueError, match="different lengths"):
        plot_training({"step": [0, 1], "loss": [1.0]})
    with pytest.raises(ValueError, match="no column"):
        plot_training({"step": [0], "loss": [1.0]}, loss_keys=["val_loss"])
    with pytest.raises(ValueError, match="bond names"):
        plot_training({"step": [0], "loss": [1.0], "ranks": [(1, 2)]}, bonds=["A"])


def test_sweep_png(tmp_path):
    fig = plot_sweep([900, 100, 400], [0.1, 0.5, 0.2], labels=["r=3", "r=1", "r=2"], path=tmp_path / "s.png")
    assert _is_png(tmp_path / "s.png")
    (line,) = fig.axes[0].lines
    np.testing.assert_array_equal(line.get_xdata(), [100, 400, 900])  # sorted by size
    np.testing.assert_array_equal(line.get_ydata(), [0.5, 0.2, 0.1])
    assert fig.axes[0].get_xscale() == "log"
    fig = plot_sweep({"fixed": ([1, 2], [0.3, 0.2]), "MARS": ([1.5], [0.21])}, logx=False, path=tmp_path / "m.png")
    assert _is_png(tmp_path / "m.png")
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="equal length"):
        plot_sweep([1, 2], [0.1])
    with pytest.raises(ValueError, match="errors are missing"):
        plot_sweep([1, 2])


@pytest.mark.parametrize("xs", [[210, 260, 560, 1_000, 2_400, 6_000], [250, 500], [30, 45, 80], [1_200, 90_000]])
def test_sweep_tick_labels_do_not_overlap(xs):
    """A log axis spanning less than a decade or two labelled its minor ticks too, in
    overlapping ``2x10^3``-style labels (the structure-search image figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot_sweep(xs, np.linspace(0.3, 0.1, len(xs)))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    labels = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_text() and lo <= t.get_position()[0] <= hi]
    assert len(labels) >= 2
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
    assert not any("times" in t.get_text() or "^" in t.get_text() for t in labels)


def test_the_extension_picks_the_format(tmp_path):
    """``path="fig.pdf"`` writes a real PDF (it wrote PNG bytes before); no extension: PNG."""
    probs = {"A": [0.9, 0.2]}
    plot_mask_probabilities(probs, path=tmp_path / "fig.pdf")
    assert (tmp_path / "fig.pdf").read_bytes()[:5] == b"%PDF-"
    plot_sweep([1, 2], [0.5, 0.2], path=tmp_path / "sweep.svg")
    assert b"<svg" in (tmp_path / "sweep.svg").read_bytes()[:2000]
    plot_training({"loss": [3.0, 1.0]}, path=tmp_path / "curve")
    assert _is_png(tmp_path / "curve")
    with pytest.raises(ValueError, match="cannot write a figure as"):
        plot_mask_probabilities(probs, path=tmp_path / "fig.docx")
    with pytest.raises(TypeError, match="path must be"):
        plot_mask_probabilities(probs, path=3)


def test_nan_is_refused_not_drawn():
    with pytest.raises(ValueError, match="NaN"):
        plot_mask_probabilities({"A": [0.9, float("nan")]})
    with pytest.raises(ValueError, match="finite"):
        plot_sweep([1, 2], [0.5, float("nan")])


def test_torch_probabilities_of_any_float_dtype():
    """bfloat16 mask probabilities (a bfloat16 layer's) raised torch's "Got unsupported
    ScalarType BFloat16" from .numpy()."""
    torch = pytest.importorskip("torch")
    phi = {"A": torch.tensor([0.9, 0.1, 0.7], dtype=torch.bfloat16, requires_grad=True),
           "B": torch.tensor([0.2, 0.8], dtype=torch.float16)}
    fig = plot_mask_probabilities(phi)
    assert [ax.get_title() for ax in fig.axes] == ["bond A: rank 2/3", "bond B: rank 1/2"]


def test_training_plot_takes_records_with_and_without_ranks():
    """A list of records from one's own loop where only some carry ranks raised "'NoneType'
    object is not iterable"; the rank curves now have gaps there."""
    from tnmars.plots import plot_training
    fig = plot_training([{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5, "ranks": (2, 2)},
                         {"step": 2, "loss": 0.4, "ranks": (2, 1)}])
    line = fig.axes[1].get_lines()[0]
    assert np.isnan(line.get_ydata()[0]) and list(line.get_ydata()[1:]) == [2.0, 2.0]


@pytest.mark.parametrize("rank", [0, -2, 2.7, True])
def test_topology_plot_refuses_a_rank_that_is_not_a_whole_number_of_at_least_one(rank):
    """Ranks 0 and -2 drew edges with -inf / NaN widths labelled "0" and "-2" (NumPy's divide
    warning only); 2.7 was labelled "2"."""
    from tnmars.plots import plot_topology
    with pytest.raises(ValueError, match="a rank is a whole number >= 1"):
        plot_topology({(0, 1): rank, (1, 2): 2})


def test_a_sweep_result_is_plotted_as_given_and_a_zero_sweep_on_a_linear_scale(tmp_path):
    import warnings

    import tnmars

    x = tnmars.Network.tucker((6, 7, 8), (2, 3, 2), seed=0).to_tensor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the fits' notes on the data, not the subject here)
        curve = tnmars.sweep(x, "tucker", budgets=[40, 120], max_rank=3, progress=False)
    fig = plot_sweep(curve, path=tmp_path / "s.png")
    assert _is_png(tmp_path / "s.png") and fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].texts) == 2  # each point labelled with its ranks, as curve.plot() does
    # the result's own labels, as curve.plot() shows them: an interrupted point says so
    curve.results[-1].interrupted = True
    texts = [t.get_text() for t in plot_sweep(curve).axes[0].texts]
    assert texts[-1].endswith("(interrupted)") and not texts[0].endswith("(interrupted)")
    with pytest.raises(ValueError, match="give a sweep result alone"):
        plot_sweep(curve, [0.1, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (all-zero data: the zero network, said by fit)
        zero = tnmars.sweep(np.zeros((4, 5, 6)), "tucker", budgets=[40, 80], max_rank=3, progress=False)
    fig = zero.plot(path=tmp_path / "z.png")  # 0 parameters: no place on a log scale
    assert _is_png(tmp_path / "z.png") and fig.axes[0].get_xscale() == "linear"
    with pytest.raises(ValueError, match="must be positive on a log scale"):
        plot_sweep([0, 10], [0.0, 0.1], logx=True)
    # (found by an outside probe: labels= crashed with "multiple values for keyword argument";
    # a negative relative error was drawn on linear axes)
    fig = curve.plot(labels=["small", "large"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["small", "large"]
    with pytest.raises(ValueError, match="relative errors cannot be negative"):
        plot_sweep([10, 20], [-0.5, 0.2], logy=False)


def test_topology_plot_refuses_an_edge_given_twice_with_two_ranks_and_says_what_an_empty_plot_needs():
    """Found by an outside probe: ``{(0, 1): 2, (1, 0): 3}`` drew rank 3 silently; ``{}`` said
    "order=0 does not cover the cores the edges join"."""
    from tnmars.plots import plot_topology
    with pytest.raises(ValueError, match=r"edge \(0, 1\) is given twice, with ranks 2 and 3"):
        plot_topology({(0, 1): 2, (1, 0): 3})
    with pytest.raises(ValueError, match="give order="):
        plot_topology({})
    assert len(plot_topology({}, order=3).axes[0].get_lines()) == 0


def test_training_plot_of_a_fit_that_trained_nothing_says_why():
    import warnings

    import tnmars

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero = tnmars.fit(np.zeros((4, 5, 6)), "tt", max_rank=2, progress=False)
    with pytest.raises(ValueError, match="ran no relaxation step and no search evaluation.*zero tensor"):
        plot_training(zero)
    with pytest.raises(ValueError, match="history is empty"):
        plot_training({"loss": []})


def test_mask_probabilities_of_a_layer_or_its_masks():
    """Found by an outside probe: a ``BondMasks`` (whose ``probabilities`` is a method) or a
    layer was refused with "must be a non-empty mapping"."""
    tnn = pytest.importorskip("tnmars.nn")
    layer = tnn.TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5))
    want = [ax.get_title() for ax in plot_mask_probabilities(layer.masks.probabilities()).axes if ax.get_visible()]
    for source in (layer, layer.masks):
        got = [ax.get_title() for ax in plot_mask_probabilities(source).axes if ax.get_visible()]
        assert got == want == ["bond A: rank 3/3"]
    with pytest.raises(ValueError, match="no MARS masks"):
        plot_mask_probabilities(tnn.TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5), mars=False))


def test_mask_probabilities_of_a_whole_model_name_its_layers_and_a_selection_is_labelled_as_one():
    """Outside probe: a model (or any module without masks) was called as a function, so the
    user read "forward() missing 1 required positional argument"; and a fit's 0/1 selection was
    drawn under the axis label "phi (keep probability)"."""
    torch = pytest.importorskip("torch")
    tnn = pytest.importorskip("tnmars.nn")
    model = torch.nn.Sequential(torch.nn.Linear(12, 12),
                                tnn.TensorizedLinear(12, 20, rank=3, in_shape=(3, 4), out_shape=(4, 5)))
    with pytest.raises(ValueError, match=r"Sequential has no keep probabilities.*MARS layers are '1'.*get_submodule"):
        plot_mask_probabilities(model)
    with pytest.raises(ValueError, match="Linear has no keep probabilities.*holds no MARS layer"):
        plot_mask_probabilities(torch.nn.Linear(3, 3))
    labels = [ax.get_ylabel() for ax in plot_mask_probabilities({"A": [1.0, 1.0, 0.0]}).axes if ax.get_ylabel()]
    assert labels == ["selected (1: kept)"]
    labels = [ax.get_ylabel() for ax in plot_mask_probabilities({"A": [0.9, 0.6, 0.1]}).axes if ax.get_ylabel()]
    assert labels == [r"$\phi$ (keep probability)"]
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):  # (its line was drawn out of sight)
        plot_mask_probabilities({"A": [0.9, 0.1]}, threshold=2)


@pytest.mark.parametrize("phi, message", [
    (np.full((2, 3), 0.5), r"bond 'A' must be a 1-D array .*shape \(2, 3\)"),
    (np.float64(0.7), r"bond 'A' must be a 1-D array .*shape \(\)"),
    (np.array([0.5 + 0.1j, 0.2]), r"bond 'A' must be real numbers .*complex128"),
    (["a", "b"], r"bond 'A' must be real numbers"),
])
def test_mask_probabilities_refuse_what_is_not_one_phi_per_index(phi, message):
    """Outside probe: a 2-D array, a scalar or complex values were flattened or cast and drawn
    as "rank 6/6", "rank 1/1" (complex with NumPy's cast warning only)."""
    import matplotlib.pyplot as plt
    before = len(plt.get_fignums())
    with pytest.raises(ValueError, match=message):
        plot_mask_probabilities({"B": [0.9, 0.1], "A": phi})
    assert len(plt.get_fignums()) == before  # (checked before a figure exists)


def test_sweep_plot_names_what_it_takes_when_given_a_fit_result():
    """Outside probe: a fit result given to plot_sweep read "errors are missing"."""
    import tnmars
    res = tnmars.fit(tnmars.Network.tucker((4, 5, 6), (2, 2, 2), seed=0).to_tensor(), "tucker", progress=False)
    with pytest.raises(TypeError, match=r"plot_sweep takes a SweepResult .*got a FitResult.*plot_training"):
        plot_sweep(res)


def test_training_plot_draws_each_phase_of_a_fit_on_its_own_panel():
    """Found by an outside probe: a ``prior="bernoulli"`` fit's history holds the relaxation's
    loss (about 1) and the polish's criterion (-18,000) in one column, drawn as one line: the
    relaxation's curve was flat at 0."""
    hist = {"step": list(range(6)), "loss": [1.2, 1.0, 0.9, 0.8, 0.78, -18260.5],
            "phase": ["relaxation"] * 5 + ["polish"], "ranks": [(4, 4)] * 5 + [(2, 3)]}
    fig = plot_training(hist, bonds=["A", "B"])
    assert [ax.get_title() for ax in fig.axes] == ["relaxation", "polish", ""]
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "loss", "selected rank"]
    relaxation, polish = fig.axes[0].lines[0], fig.axes[1].lines[0]
    np.testing.assert_allclose(relaxation.get_ydata(), [1.2, 1.0, 0.9, 0.8, 0.78])
    np.testing.assert_allclose(polish.get_ydata(), [-18260.5])
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"


def test_training_plot_labels_steps_as_whole_numbers_even_for_a_one_step_phase():
    """Outside probe: a phase of one step (a fit's polish) was labelled -0.060 ... 0.060 and the
    ranks' panel of two steps -0.2 ... 1.2: matplotlib's integer locator gives way on so short an
    axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    hist = {"step": [0, 1], "loss": [3.0, -120.0], "phase": ["selection", "polish"], "ranks": [(2, 2), (2, 3)]}
    fig = plot_training(hist, bonds=["A", "B"])
    FigureCanvasAgg(fig).draw()
    labels = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]
    assert labels == [["0"], ["1"], ["0", "1"]]
    long = plot_training({"step": list(range(40)), "loss": list(np.linspace(5, 1, 40))})
    FigureCanvasAgg(long).draw()
    ticks = long.axes[0].get_xticks()
    assert len(ticks) > 3 and np.all(ticks == np.round(ticks))


def test_a_search_result_plots_its_training_and_masks_by_edges():
    """Found by an outside probe: ``plot_training(found)`` and ``plot_mask_probabilities(found)``
    refused a search result without saying to pass ``found.fit``, and on ``found.fit`` named the
    fully connected network's internal bond letters ("bond A" ... "bond O"), with panels for
    the vanished edges."""
    import tnmars

    t = np.asarray(tnmars.Network.tt((4, 5, 4, 3), (2, 3, 2), seed=0).to_tensor())
    found = tnmars.search(t, seed=0, progress=False)
    titles = [ax.get_title() for ax in plot_mask_probabilities(found).axes if ax.get_visible()]
    assert titles == [f"edge {i}-{j}: rank {r}/{len(found.fit.probabilities['A'])}" for (i, j), r in found.edges.items()]
    labels = [line.get_label() for line in plot_training(found).axes[-1].get_lines()]
    assert labels == ["edge 0-1", "edge 0-2", "edge 0-3", "edge 1-2", "edge 1-3", "edge 2-3"]


def test_a_history_of_ranks_alone_draws_no_empty_loss_panel_and_bonds_past_ten_keep_apart():
    """Outside probe: a history without a loss column drew an empty loss panel, and with 11 or
    more bonds bond K's curve took bond A's colour and style."""
    fig = plot_training({"step": [0, 1, 2], "ranks": [(1,) * 12, (2,) * 12, (3,) * 12]})
    assert [ax.get_ylabel() for ax in fig.axes] == ["selected rank"]
    lines = fig.axes[0].lines
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 12 and len(styles) == 12
    with pytest.raises(ValueError, match="neither a loss column nor ranks"):
        plot_training({"step": [0, 1], "other": [1.0, 2.0]})


def test_a_string_is_not_read_as_an_edge_of_its_digits():
    """Outside probe: plot_topology({"01": 2}) drew the edge (0, 1)."""
    from tnmars.plots import plot_topology

    with pytest.raises(ValueError, match="edge '01' must be a pair of core numbers"):
        plot_topology({"01": 2})
    assert plot_topology({(0, 1): 2}) is not None
