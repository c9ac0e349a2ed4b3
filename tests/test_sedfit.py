"""galnb.sedfit: the bagpipes fit that chapter 04 times against the flows."""

import numpy as np
import pandas as pd

from galnb import sedfit


def test_a_fit_of_five_magnitudes_gives_a_plausible_mass_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # an r = 16.5 galaxy at z = 0.08 with the colours of a star-forming disk: M* of order 10^10.5
    row = pd.Series({"z": 0.08, **{f"mag_{b}": m for b, m in zip("ugriz", (18.9, 17.2, 16.5, 16.1, 15.8))},
                     **{f"magerr_{b}": 0.02 for b in "ugriz"}})
    fit = sedfit.fit_photometry(row, n_live=50)  # few live points: a quick, rough fit
    assert fit.seconds > 0 and 9.5 < fit.log_mstar < 11.5 and np.isfinite(fit.log_sfr)
    assert list(tmp_path.iterdir()) == []  # bagpipes' pipes/ folder went to a temporary place
