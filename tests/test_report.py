"""galnb.report: rules that choose what to show, and sentences that cannot disagree with their numbers."""

import numpy as np
import pandas as pd

from galnb import report
from galnb.properties import TARGETS


def test_select_box_members_lie_inside():
    pts = np.random.default_rng(7).normal(size=(500, 2))
    (x0, x1, y0, y1), members = report.select_box(pts, (0.3, 0.3))
    assert len(members) == 3
    assert np.all((pts[members, 0] >= x0) & (pts[members, 0] <= x1) & (pts[members, 1] >= y0) & (pts[members, 1] <= y1))


def test_dust_age_examples_pick_opposite_corners():
    rng = np.random.default_rng(8)
    theta = rng.normal(size=(500, len(TARGETS)))
    picks = report.dust_age_examples(theta)
    old, young = theta[picks["old, dust-poor"]], theta[picks["young, dust-rich"]]
    assert old[3] > young[3] and old[4] < young[4]


def test_verdict_says_who_wins_each_measure_with_the_numbers():
    text = report.verdict({"mean Δlog p": (2.0, 1.0), "WD of log M*": (-0.3, -0.1)}, better="smaller")
    assert text.startswith("The image model does not win on every measure")
    assert "mean Δlog p favours the image model (2.000 vs 1.000" in text
    assert r"WD of log M\* does not favour the image model (0.300 vs 0.100" in text


def test_paper_columns_sit_beside_our_wasserstein_table():
    ours = pd.DataFrame({"property": list(TARGETS), "image": np.full(5, 0.1), "phot": np.full(5, 0.3)})
    table = report.wasserstein_with_paper(ours)
    assert table["difference (phot − image)"].tolist() == [0.3 - 0.1] * 5
    assert table["paper image"].tolist() == [report.PAPER_CFM["wd"][c][0] for c in TARGETS]
