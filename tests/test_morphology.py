"""Tests of galnb.morphology: structure measured on 8-bit cutouts, cached in the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.visualization import make_lupton_rgb

from galnb import morphology
from galnb.data import write_store
from galnb.morphology import MEASURED_FILE, MEASURED_STRUCTURE_COLUMNS, measure_cutouts, with_measured_structure
from galnb.simulation import RGB_Q, RGB_STRETCH

SIZE = 48


def _gaussian_cutout(sigma: float, axis_ratio: float, angle: float, peak: float = 2.0, seed: int = 0) -> np.ndarray:
    """An 8-bit cutout of an elliptical Gaussian galaxy with sky noise, stretched like the simulation's."""
    yy, xx = np.indices((SIZE, SIZE)) - (SIZE - 1) / 2
    cos, sin = np.cos(angle), np.sin(angle)
    major, minor = xx * cos + yy * sin, -xx * sin + yy * cos
    flux = peak * np.exp(-0.5 * (major**2 + (minor / axis_ratio) ** 2) / sigma**2)
    flux = flux + np.random.default_rng(seed).normal(0.0, 0.01, flux.shape)
    return make_lupton_rgb(flux, flux, flux, minimum=0.0, stretch=RGB_STRETCH, Q=RGB_Q)


def test_linear_light_inverts_the_stretch_within_8_bit_rounding():
    flux = np.geomspace(0.02, 5.0, 64).reshape(8, 8)
    rgb = make_lupton_rgb(flux, flux, flux, minimum=0.0, stretch=RGB_STRETCH, Q=RGB_Q)
    recovered = morphology.linear_light(rgb[None])[0]

    def counts(x):  # astropy's AsinhMapping, before rounding to 8 bits
        return 25.5 * np.arcsinh(RGB_Q * x / RGB_STRETCH) / np.arcsinh(RGB_Q / 10)

    assert np.abs(counts(recovered) - counts(flux)).max() <= 1.0
    assert np.abs(np.log(recovered / flux))[flux > 0.2].max() < 0.03


def test_gaussian_galaxies_measure_their_known_axis_ratio_radius_and_concentration():
    # A round Gaussian of width sigma holds half its light within 1.177 sigma and 90 % within
    # 2.146 sigma (R90/R50 = 1.82); an elliptical one has b/a its minor-to-major axis ratio.
    sigma = 3.0
    images = np.stack([_gaussian_cutout(sigma, 1.0, 0.0), _gaussian_cutout(sigma, 0.5, 0.6, seed=1),
                       _gaussian_cutout(sigma, 0.3, 2.0, seed=2)])
    table = measure_cutouts(images)
    assert table.axis_ratio_measured.to_numpy() == pytest.approx([1.0, 0.5, 0.3], abs=0.05)
    assert table.r50_measured_px[0] == pytest.approx(1.177 * sigma, rel=0.1)
    assert table.concentration_measured[0] == pytest.approx(1.82, rel=0.1)


def test_a_blank_cutout_is_a_failure_not_a_number():
    blank = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    assert measure_cutouts(blank).isna().all(axis=None)


def test_measurement_is_cached_in_the_store_and_failures_take_the_training_median(tmp_path, monkeypatch):
    from conftest import synthetic_catalog

    n = 40
    images = np.stack([_gaussian_cutout(2.0 + 2.0 * k / n, 0.4 + 0.5 * k / n, k, seed=k) for k in range(n)])
    images[3] = 0  # nothing to measure
    store = write_store(tmp_path / "s", synthetic_catalog(n), images, seed=0, source="mock", params={})
    measured = with_measured_structure(store)
    assert (store.root / MEASURED_FILE).exists() and measured.meta["measured_failures"] == 1
    assert list(store.catalog.columns) == list(measured.catalog.columns[: len(store.catalog.columns)])
    table = measured.catalog[list(MEASURED_STRUCTURE_COLUMNS)]
    train = table.iloc[store.splits["train"]]
    assert table.notna().all(axis=None)
    # the standardisation of the new columns is the training split's, as for every other column
    standard = measured.standardizer(MEASURED_STRUCTURE_COLUMNS)
    assert standard.mean == pytest.approx(train.mean().to_numpy())
    assert np.corrcoef(table.r50_measured_px.drop(index=3), np.arange(n - 1))[0, 1] > 0.9

    def refuse(images):
        raise AssertionError("measured again although the cache holds these images")

    monkeypatch.setattr(morphology, "measure_cutouts", refuse)
    again = with_measured_structure(store)
    pd.testing.assert_frame_equal(again.catalog, measured.catalog)
    # a cache made on other images is not reused
    stale = pd.read_parquet(store.root / MEASURED_FILE)
    stale.attrs["images_hash"] = "of other images"
    stale.to_parquet(store.root / MEASURED_FILE)
    with pytest.raises(AssertionError, match="measured again"):
        with_measured_structure(store)


def test_a_store_measured_in_chunks_on_two_processes_equals_one_pass(tmp_path, monkeypatch):
    images = np.stack([_gaussian_cutout(2.0 + 0.2 * k, 0.4 + 0.02 * k, k, seed=k) for k in range(25)])
    np.save(tmp_path / "images.npy", images)
    monkeypatch.setattr(morphology, "_CHUNK", 10)  # three chunks
    pd.testing.assert_frame_equal(morphology.measure_store(tmp_path / "images.npy", workers=2),
                                  measure_cutouts(images))
