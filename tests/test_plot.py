"""`mixer plot`: each figure is written, has its panels and lines, and shows the data it
was given (the weight figure: a kernel built here, unit by unit, in its place)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_cli import run_cli

from mixer_cli.figures import curves, fewshot, weights
from mixer_cli.models.mixer_checkpoint import token_kernels
from mixer_cli.models.registry import load_checkpoint
from mixer_cli.weights.arrays import flat_params


def not_blank(path: Path) -> None:
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].std() > 0.05, path


@pytest.fixture
def designed_npz(tmp_path: Path, official_npz) -> tuple[Path, np.ndarray]:
    """The hand-made checkpoint (16 tokens on a 4 x 4 grid, 8 units) with block 0's first
    token-mixing kernel built here: units 0 and 1 a smooth ramp and its negative, the others
    single tokens (a flat spectrum), which oppose nothing."""
    _, flat = official_npz
    ys, xs = np.mgrid[0:4, 0:4]
    ramp = (xs + ys - 3.0).ravel() / 3
    others = [np.eye(16)[token] * (1 + 0.1 * k) for k, token in enumerate((0, 5, 10, 15, 3, 12))]
    kernel = np.stack([ramp, -ramp, *others], axis=1).astype(np.float32)  # [16, 8]
    path = tmp_path / "designed.npz"
    np.savez(path, **{**flat, "MixerBlock_0/token_mixing/Dense_0/kernel": kernel})
    return path, kernel


def test_the_weight_figure_shows_the_kernel_unit_by_unit_and_pairs_opposite_phases(
    capsys, tmp_path: Path, designed_npz
) -> None:
    path, kernel = designed_npz
    kernels = token_kernels(flat_params(load_checkpoint(path).params))
    assert list(kernels) == [0, 1]
    units = weights.block_units(0, kernels[0], count=8)
    assert sorted(units.order[:2]) == [0, 1] and units.pairs == 1  # the ramp pair, lowest first
    assert sorted(units.order) == list(range(8))
    figure = weights.draw_weights([units, weights.block_units(1, kernels[1], 8)], "t")
    axes = figure.axes
    assert len(axes) == 2  # one panel per block
    picture = np.ma.filled(axes[0].get_images()[0].get_array(), np.nan)
    columns = weights.columns_for(8)
    for n, unit in enumerate(units.order):
        want = kernel[:, unit].reshape(4, 4)
        np.testing.assert_allclose(
            weights.tile(picture, 4, columns, n), want / np.abs(want).max(), atol=1e-6
        )
    assert np.isnan(picture[:, 4]).all()  # a gutter between units

    out = tmp_path / "w.png"
    code, stdout, err = run_cli(
        capsys, "plot", "weights", "--init", str(path), "--blocks", "0,1", "--units", "8",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out) and "opposite pairs" in stdout
    not_blank(out)


def test_a_checkpoint_at_twice_its_resolution_shows_each_unit_in_one_part(designed_npz) -> None:
    path, _ = designed_npz
    loaded = load_checkpoint(path, 32)  # K = 2: an 8 x 8 grid, 2 x 2 parts of 4 x 4 tokens
    kernel = token_kernels(flat_params(loaded.params))[0]
    units = weights.block_units(0, kernel, count=32)
    assert units.images.shape == (32, 8, 8)
    for image in units.images:
        parts = image.reshape(2, 4, 2, 4).transpose(0, 2, 1, 3).reshape(4, 16)
        assert (np.abs(parts).max(axis=1) > 0).sum() == 1  # lit in exactly one part


def test_curves_overlay_runs_in_every_panel_against_steps_or_epochs(
    capsys, tmp_path: Path, uninterrupted: Path
) -> None:
    other = tmp_path / "second-run"
    shutil.copytree(uninterrupted, other, ignore=shutil.ignore_patterns("checkpoints"))
    runs = [curves.read_run(uninterrupted), curves.read_run(other)]
    names = curves.metric_names(runs)
    assert names[:2] == ["loss", "lr"] and "test/top1" in names
    assert not any(n.endswith("/examples") for n in names)
    figure = curves.draw_curves(runs, x="epochs", smooth=0.5)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert len(panels) == len(names)
    results = json.loads((uninterrupted / "results.json").read_text())
    per_epoch = results["train_examples"] / results["batch_size"]
    for ax, name in zip(panels, names, strict=True):
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert set(lines) == {uninterrupted.name, other.name}, name
        if name == "test/top1":
            records = [r for r in runs[0].records if name in r]
            line = lines[uninterrupted.name]
            np.testing.assert_allclose(line.get_ydata(), [r[name] for r in records])
            np.testing.assert_allclose(line.get_xdata(), [r["step"] / per_epoch for r in records])
    assert len(panels[0].get_lines()) == 4  # loss: raw (faint) and smoothed, per run

    out = tmp_path / "curves.svg"
    code, _, err = run_cli(capsys, "plot", "curves", str(uninterrupted), str(other),
                                "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()


def test_fewshot_curves_from_real_fewshot_results(capsys, tmp_path: Path, uninterrupted) -> None:
    argv = ["fewshot", "--init", str(uninterrupted), "--shots", "1,2,5", "--seeds", "2"]
    assert run_cli(capsys, *argv, "--workdir", str(tmp_path / "fs"), "--json")[0] == 0
    results = [fewshot.read_result(tmp_path / "fs")] * 2
    figure = fewshot.draw_fewshot(results)
    assert len(figure.axes) == 1  # one dataset: digits
    lines = [ln for ln in figure.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len(lines) == 2
    summary = results[0].datasets["digits"]["shots"]
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 5])
    np.testing.assert_allclose(lines[0].get_ydata(), [summary[k]["mean"] for k in ("1", "2", "5")])

    code, stdout, err = run_cli(capsys, "plot", "fewshot", str(tmp_path / "fs"))
    assert code == 0, err
    written = Path(stdout.strip().splitlines()[-1])
    assert written == tmp_path / "fs" / "fewshot.png"
    not_blank(written)


def test_figure_path_takes_out_as_a_file_or_a_directory(tmp_path: Path) -> None:
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.tasks.plot import figure_path

    assert figure_path(None, tmp_path, "curves", "png") == tmp_path / "curves.png"
    assert figure_path(tmp_path / "figs", tmp_path, "curves", "svg") == tmp_path / "figs/curves.svg"
    assert figure_path(tmp_path / "a.SVG", tmp_path, "curves", "png") == tmp_path / "a.SVG"
    with pytest.raises(ConfigError, match=r"a figure is \.png or \.svg"):
        figure_path(tmp_path / "a.jpg", tmp_path, "curves", "png")
    with pytest.raises(ConfigError, match="--format 'jpg'"):
        figure_path(None, tmp_path, "curves", "jpg")


def transfer_result(path: Path, init: str, tops: dict[str, float], paper: dict | None) -> Path:
    """A `mixer transfer` results.json as run_transfer writes it, its means computed by it."""
    from mixer_cli.data.transfer_tasks import find_task
    from mixer_cli.tasks.transfer import summary

    rows = [
        {"task": name, "suite": find_task(name).suite, "group": find_task(name).group,
         "test_top1": top}
        for name, top in tops.items()
    ]  # fmt: skip
    results = {"command": "transfer", "init": init, "suite": "vtab1k", "tasks": rows,
               "paper": paper, "steps_scale": 1, **summary(rows)}  # fmt: skip
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_transfer_bars_per_task_and_means_beside_the_papers(capsys, tmp_path: Path) -> None:
    from mixer_cli.figures import transfer

    mixer = transfer_result(
        tmp_path / "mixer", "imagenet21k/Mixer-L_16",
        {"vtab:dtd": 0.7, "vtab:eurosat": 0.95, "vtab:dmlab": 0.5}, {"vtab1k": 0.7495},
    )  # fmt: skip
    vit = transfer_result(tmp_path / "vit", "vit.npz", {"vtab:dtd": 0.6, "vtab:dmlab": 0.4}, None)
    figure = transfer.draw_transfer([transfer.read_result(mixer), transfer.read_result(vit)])
    tasks, means = figure.axes
    widths = [round(p.get_width(), 4) for p in tasks.patches if hasattr(p, "get_width")]
    assert [w for w in widths if w < 1] == [0.7, 0.95, 0.5, 0.6, 0.4]  # bars, not the bands
    assert [t.get_text() for t in tasks.get_yticklabels()] == ["dtd", "eurosat", "dmlab"]
    labels = [t.get_text() for t in means.get_yticklabels()]
    assert labels == ["natural", "specialized", "structured", "vtab1k"]
    (tick,) = [ln for ln in means.get_lines() if ln.get_label() == "_paper"]  # only the Mixer's
    assert list(tick.get_xdata()) == [0.7495, 0.7495]

    code, stdout, err = run_cli(capsys, "plot", "transfer", str(mixer), str(vit))
    assert code == 0, err
    written = Path(stdout.strip().splitlines()[-1])
    assert written == mixer / "transfer.png"
    not_blank(written)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.json").write_text(json.dumps({"command": "fewshot"}))
    code, _, err = run_cli(capsys, "plot", "transfer", str(tmp_path / "empty"))
    assert code == 2 and "a `mixer transfer` result" in err and "Traceback" not in err
