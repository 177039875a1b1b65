"""NormsPanel's health tab: the spectrum and effective rank over checkpoints, as the functions."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

import embviz
from embviz.plots.health import plot_health_history, plot_spectrum
from embviz.widgets import NormsPanel

HEALTH_TAB = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from embviz.demo import train_demo

    return train_demo(
        tmp_path_factory.mktemp("health-panel") / "run",
        scale=0.05,
        steps=40,
        checkpoint_every=20,
        progress=False,
    )


def _lines(ax) -> list:
    return [line.get_xydata().tolist() for line in ax.lines]


def test_health_tab_shows_the_functions(run):
    panel = NormsPanel(run.save_dir, config=run.config)
    assert "health" not in panel.data  # computed when the tab opens
    panel.outputs["tabs"].selected_index = HEALTH_TAB
    assert panel.outputs["tabs"].get_title(HEALTH_TAB) == "health"
    now = embviz.health(
        run.save_dir / "40", tables=["user"], initial=run.save_dir / "0", progress=False
    )
    pd.testing.assert_frame_equal(panel.data["health"], now)
    history = embviz.health_history(run.save_dir, tables=["user"], progress=False)
    spectra = embviz.spectrum_history(run.save_dir, tables=["user"], progress=False)
    pd.testing.assert_frame_equal(panel.data["health_history"], history)
    pd.testing.assert_frame_equal(panel.data["spectra"], spectra)
    shown = panel.outputs["health"].value
    assert f"{now.loc['user', 'effective_rank']:.3g}" in shown
    figures = panel.figures
    direct = Figure()
    plot_spectrum(spectra, ax=direct.add_subplot(), table="user")
    assert _lines(figures["spectrum"].axes[0]) == _lines(direct.axes[0])
    direct = Figure()
    plot_health_history(history, ax=direct.add_subplot(), table="user")
    drawn = _lines(figures["rank"].axes[0])
    assert drawn[:-1] == _lines(direct.axes[0])
    assert drawn[-1][0][0] == 40  # the step shown


def test_step_and_table_move_the_health_tab(run):
    panel = NormsPanel(run.save_dir, config=run.config)
    panel.outputs["tabs"].selected_index = HEALTH_TAB
    panel.controls["step"].value = 20
    expected = embviz.health(
        run.save_dir / "20", tables=["user"], initial=run.save_dir / "0", progress=False
    )
    pd.testing.assert_frame_equal(panel.data["health"], expected)
    assert panel.figures["rank"].axes[0].lines[-1].get_xdata()[0] == 20
    panel.controls["table"].value = "tweet"
    assert list(panel.data["health"].index) == ["tweet"]
    assert set(panel.data["spectra"]["table"]) == {"tweet"}
    assert panel.error == ""


def test_single_snapshot_has_a_spectrum_and_no_steps(run):
    panel = NormsPanel(run.save_dir / "40")
    panel.outputs["tabs"].selected_index = HEALTH_TAB
    spectra = embviz.spectrum(run.save_dir / "40", tables=["user"], progress=False)
    pd.testing.assert_frame_equal(panel.data["spectra"], spectra)
    assert "one state" in panel.figures["rank"].axes[0].get_title()
