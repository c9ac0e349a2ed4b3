"""Tests of galnb.survey: the constants and relations the simulated and the real survey share."""

from __future__ import annotations

import numpy as np

from galnb import sdss, simulation, survey, validation


def test_mbh_from_sigma_is_mcconnell_ma_2013():
    sigma = np.array([100.0, 200.0, 400.0])
    np.testing.assert_allclose(survey.mbh_from_sigma(sigma), 8.32 + 5.64 * np.log10(sigma / 200.0), rtol=0, atol=0)
    assert float(survey.mbh_from_sigma(np.array([200.0]))[0]) == survey.MM13_ALPHA
    assert not np.isfinite(survey.mbh_from_sigma(np.array([0.0, -5.0]))).any()


def test_real_pipeline_uses_the_shared_constants():
    assert f"scale={survey.PIXEL_SCALE:g}" in sdss.cutout_url(0.0, 0.0)
    sql = sdss.selection_sql(1)
    assert f"p.modelMag_r > {survey.R_MIN:g}" in sql and f"p.modelMag_r < {survey.R_MAX:g}" in sql
    stars, gas = survey.balmer_av(np.array([survey.BALMER_CASE_B * 10 ** 0.2]), np.array([1.0]))
    np.testing.assert_allclose(stars / gas, survey.R_V_CALZETTI * survey.STARS_TO_GAS / survey.R_V_MW)
    assert abs(float(simulation.calzetti(np.array([5500.0]))[0]) - survey.R_V_CALZETTI) < 0.01  # k(V) = R_V


def test_every_name_in_all_exists():
    for module in (survey, validation, simulation, sdss):
        assert len(set(module.__all__)) == len(module.__all__), module.__name__
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, (module.__name__, missing)
