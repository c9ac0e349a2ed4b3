"""galnb.data: the common on-disk format, splits, standardisation, bad input."""

import json

import numpy as np
import pytest

from galnb import data
from galnb.data import StoreError

from conftest import synthetic_catalog


def test_store_round_trip_reads_images_memory_mapped(tiny_store):
    again = data.load_store(tiny_store.root, verify=True)
    assert isinstance(again.images, np.memmap)
    assert again.images.shape == (240, 16, 16, 3) and again.images.dtype == np.uint8
    assert again.catalog.equals(tiny_store.catalog)


def test_splits_are_80_10_10_disjoint_and_deterministic():
    a, b = data.split_indices(1000, seed=5), data.split_indices(1000, seed=5)
    assert [len(a[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert all((a[k] == b[k]).all() for k in a)
    assert len(np.union1d(np.union1d(a["train"], a["val"]), a["test"])) == 1000
    assert not (data.split_indices(1000, seed=6)["test"] == a["test"]).all()


def test_standardisation_uses_the_training_split(tiny_store):
    std = tiny_store.standardizer(("log_mstar", "mag_r"))
    train = tiny_store.catalog.iloc[tiny_store.splits["train"]][["log_mstar", "mag_r"]].to_numpy()
    z = std.forward(train)
    assert np.allclose(z.mean(0), 0, atol=1e-9) and np.allclose(z.std(0), 1, atol=1e-6)
    assert np.allclose(std.inverse(z), train)


@pytest.mark.parametrize("bad", [np.nan, -9999.0])
def test_catalog_with_missing_values_is_refused_with_the_column_named(tmp_path, bad):
    cat = synthetic_catalog(50)
    cat.loc[7, "oh12"] = bad
    images = np.zeros((50, 16, 16, 3), np.uint8)
    with pytest.raises(StoreError, match=r"1 row\(s\).*'oh12'"):
        data.write_store(tmp_path / "s", cat, images, seed=0, source="user", params={})
    assert not (tmp_path / "s").exists()


def test_missing_column_is_named(tmp_path):
    cat = synthetic_catalog(20).drop(columns="av")
    with pytest.raises(StoreError, match=r"missing column\(s\) \['av'\]"):
        data.write_store(tmp_path / "s", cat, np.zeros((20, 16, 16, 3), np.uint8), seed=0, source="mock", params={})
    with pytest.raises(StoreError, match="no target property column"):
        data.write_store(tmp_path / "s", cat[["objid", "z"]], np.zeros((20, 16, 16, 3), np.uint8), seed=0,
                         source="user", params={})


def test_wrong_image_shape_is_refused(tmp_path):
    with pytest.raises(StoreError, match=r"uint8 \(N, H, H, 3\)"):
        data.write_store(tmp_path / "s", synthetic_catalog(20), np.zeros((20, 16, 16), np.uint8), seed=0,
                         source="user", params={})


def test_truncated_image_cube_names_the_file(tiny_store):
    path = tiny_store.root / "images.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match=r"images\.npy"):
        data.load_store(tiny_store.root)


def test_store_from_an_older_version_is_refused(tiny_store):
    meta = json.loads((tiny_store.root / "meta.json").read_text())
    meta["format_version"] = 0
    (tiny_store.root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format version 0"):
        data.load_store(tiny_store.root)


def test_mock_store_from_another_simulation_version_is_refused_not_overwritten(tmp_path):
    from galnb.runs import SCALES, Run
    from galnb.simulation import SIMULATION_VERSION

    run = Run(chapter="01_data", scale=SCALES["ci"], data="mock", seed=0, device="cpu", dir=tmp_path)
    old = {"n": SCALES["ci"].n_galaxies, "image_size": SCALES["ci"].image_size, "seed": 0,
           "simulation_version": SIMULATION_VERSION - 1}
    cat = synthetic_catalog(50)
    data.write_store(run.data_dir, cat, np.zeros((50, 8, 8, 3), np.uint8), seed=0, source="mock", params=old)
    before = (run.data_dir / "catalog.parquet").read_bytes()
    with pytest.raises(StoreError, match="simulation_version"):
        data.ensure_store(run, progress=False)
    assert (run.data_dir / "catalog.parquet").read_bytes() == before


def test_edited_file_fails_verification(tiny_store):
    cat = tiny_store.catalog.copy()
    cat.loc[0, "av"] += 1
    cat.to_parquet(tiny_store.root / "catalog.parquet", index=False)
    data.load_store(tiny_store.root)  # cheap open still works
    with pytest.raises(StoreError, match="differ from the hash"):
        data.load_store(tiny_store.root, verify=True)


def test_failed_rewrite_keeps_no_half_store_that_loads(tiny_store, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(OSError):
        data.write_store(tiny_store.root, tiny_store.catalog, np.asarray(tiny_store.images), seed=0, source="mock",
                         params={})
    with pytest.raises(StoreError, match="meta.json missing"):
        data.load_store(tiny_store.root)


def test_images_to_tensor_is_channels_first_in_unit_range(tiny_store):
    x = data.images_to_tensor(tiny_store.images[:4])
    assert tuple(x.shape) == (4, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_reader_folder_of_real_sdss_cutouts_loads_through_the_same_path(tmp_path):
    from conftest import REAL_SDSS

    folder = REAL_SDSS / "wu-boada-500"
    if not folder.exists():
        pytest.skip(f"{folder} is absent (real SDSS test data live outside the repository)")
    store = data.import_folder(folder, tmp_path / "store", seed=0, image_size=64)
    assert len(store.catalog) == 500 and store.images.shape == (500, 64, 64, 3)
    assert store.catalog["oh12"].between(7.5, 9.6).all()
    again = data.load_store(tmp_path / "store", verify=True)
    assert again.meta["source"] == "user" and sum(len(v) for v in again.splits.values()) == 500
    with pytest.raises(StoreError, match=r"training the phot CFM model needs column\(s\) \['log_mstar'"):
        again.require_columns(("log_mstar", "mag_r"), "training the phot CFM model")


def test_reader_folder_without_cutouts_names_the_missing_objects(tmp_path):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    synthetic_catalog(3).to_csv(folder / "catalog.csv", index=False)
    with pytest.raises(StoreError, match=r"no cutout for 3 catalog row\(s\)"):
        data.import_folder(folder, tmp_path / "store", seed=0, image_size=16)


def test_corrupt_cutout_names_the_file(tmp_path):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    cat = synthetic_catalog(1)
    cat.to_csv(folder / "catalog.csv", index=False)
    (folder / "images" / f"{cat.objid[0]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(StoreError, match=r"\.jpg: not a readable JPEG cutout"):
        data.import_folder(folder, tmp_path / "store", seed=0, image_size=16)
