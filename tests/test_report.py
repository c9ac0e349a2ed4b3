"""galnb.report: rules that choose what to show, and sentences that cannot disagree with their numbers."""

import numpy as np
import pandas as pd

from galnb import report
from galnb.properties import QUANTITIES, TARGETS


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


def test_verdict_says_win_loss_or_tie_only_as_far_as_the_interval_allows():
    table = pd.DataFrame([
        {"measure": "mean Δlog p [nats]", "better": "higher", "image": 2.0, "phot": 1.0, "difference": 1.0,
         "low": 0.8, "high": 1.2},
        {"measure": "WD of log M*", "better": "smaller", "image": 0.3, "phot": 0.1, "difference": 0.2,
         "low": 0.1, "high": 0.3},
        {"measure": "mean D_KL [nats]", "better": "higher", "image": 2.1, "phot": 2.0, "difference": 0.1,
         "low": -0.05, "high": 0.25},
    ])
    text = report.verdict(table, n_objects=2400)
    assert text.startswith("The image model beats the photometry model on 1 of 3 measures, loses on 1, "
                           "and cannot be told apart on 1 (95 % bootstrap intervals over 2,400 test galaxies")
    assert "mean Δlog p [nats]: 2.000 vs 1.000, higher is better, difference +1.000 [+0.800, +1.200]: " \
           "the image model wins" in text
    assert r"WD of log M\* : " not in text and r"WD of log M\*: 0.300 vs 0.100" in text
    assert "[+0.100, +0.300]: the image model loses" in text
    assert "[-0.050, +0.250]: they cannot be told apart" in text


def test_paper_columns_sit_beside_our_wasserstein_table():
    long = pd.DataFrame([{"model": m, "measure": QUANTITIES[c].short, "value": v, "low": v - 0.01, "high": v + 0.01}
                         for m, v in (("image", 0.1), ("phot", 0.3)) for c in TARGETS])
    difference = pd.DataFrame({"difference": np.full(5, -0.2), "low": np.full(5, -0.25), "high": np.full(5, -0.15)})
    table = report.wasserstein_with_paper(long, difference)
    assert list(table.index) == [QUANTITIES[c].short for c in TARGETS]
    assert table["image"].iloc[0] == "0.1000 [0.0900, 0.1100]"
    assert table["image − phot"].tolist() == ["-0.2000 [-0.2500, -0.1500]"] * 5
    assert table["paper image"].tolist() == [report.PAPER_CFM["wd"][c][0] for c in TARGETS]
