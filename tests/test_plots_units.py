"""Figures pick a time unit that fits the run and label bytes as MiB."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soaklib.report import plots


@pytest.mark.parametrize("span_s,expected", [(0.0, (1.0, "s")), (600.0, (1.0, "s")), (601.0, (60.0, "min")),
                                             (3 * 3600.0, (60.0, "min")), (26 * 3600.0, (3600.0, "h")),
                                             (3 * 86400.0, (3600.0, "h")), (7 * 86400.0, (86400.0, "days"))])
def test_time_unit_fits_the_span(span_s: float, expected: tuple[float, str]) -> None:
    assert plots.time_unit(span_s) == expected


def _samples(span_s: float, n: int = 200) -> pd.DataFrame:
    t = np.linspace(0.0, span_s, n)
    return pd.DataFrame({"t_s": t, "tree_rss_bytes": 100 * 2**20 + t, "rss_bytes": 90 * 2**20 + t})


@pytest.mark.parametrize("span_s,unit,last_tick", [(120.0, "s", 120.0), (7200.0, "min", 120.0),
                                                   (2 * 86400.0, "h", 48.0), (7 * 86400.0, "days", 7.0)])
def test_leak_figure_axis_unit_and_mib(span_s: float, unit: str, last_tick: float) -> None:
    fig = plots.leak_figure(_samples(span_s))
    assert fig is not None
    axes = fig.axes
    assert axes[-1].get_xlabel() == f"time since start ({unit})"
    assert [a.get_ylabel() for a in axes] == ["tree RSS (MiB)", "RSS (MiB)"]
    x = axes[0].lines[0].get_xdata()
    assert x[-1] == pytest.approx(last_tick)
    assert axes[0].lines[0].get_ydata()[0] == pytest.approx(100.0)  # 100 MiB shown as 100
    plots.plt.close(fig)


def test_queue_figure_uses_the_same_unit() -> None:
    samples = pd.DataFrame({"t_s": [0.0, 1800.0, 3600.0], "requests_pending": [3, 1, 0], "requests_archived": [0, 2, 3]})
    requests = pd.DataFrame({"seq": [1, 2], "logical_type": ["selfplay", "learning_loop"],
                             "staged_t_s": [0.0, 60.0], "archived_t_s": [900.0, 2400.0],
                             "first_dispatch_t_s": [30.0, np.nan], "handled_times": [1, 1], "misrouted": [False, False]})
    fig = plots.queue_figure(samples, requests)
    assert fig is not None
    assert fig.axes[1].get_xlabel() == "time since start (min)"
    assert fig.axes[0].lines[0].get_xdata()[-1] == pytest.approx(60.0)
    assert fig.axes[1].lines[0].get_xdata()[-1] == pytest.approx(15.0)  # request 1 archived at 900 s = 15 min
    plots.plt.close(fig)
