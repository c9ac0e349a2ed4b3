"""The real SDSS pipeline against a fake SkyServer on 127.0.0.1 (nothing reaches the internet)."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galnb import sdss
from galnb.data import REQUIRED_COLUMNS, load_store

REAL_CUTOUTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sdss" / "wu-boada-500" / "test"
N_ROWS = 20
FAST = dict(timeout=0.5, retries=3, backoff=0.01)  # client settings that keep every test well under a second


def fake_catalog(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like the SQL answer (``sdss.RAW_COLUMNS``), with plausible values."""
    rng = np.random.default_rng(seed)
    mstar = rng.uniform(9.0, 11.0, n)
    r = rng.uniform(16.1, 17.7, n)
    cols = {
        "objid": 1237648700000000000 + np.sort(rng.choice(10**9, n, replace=False)),
        "specobjid": [str(10**18 + 7 * i) for i in range(n)],
        "ra": np.round(rng.uniform(120, 240, n), 6), "dec": np.round(rng.uniform(-5, 60, n), 6),
        "z": rng.uniform(0.02, 0.2, n), "veldisp": rng.uniform(40, 200, n), "veldisperr": rng.uniform(5, 20, n),
        "bptclass": np.ones(n, int), "lgm_tot_p50": mstar, "sfr_tot_p50": 0.7 * (mstar - 10) + rng.normal(0, 0.3, n),
        "oh_p50": 8.9 + 0.1 * (mstar - 10), "d4000_n": rng.uniform(1.1, 1.6, n),
        "h_alpha_flux": rng.uniform(100, 800, n), "h_beta_flux": None, "nii_6584_flux": rng.uniform(30, 300, n),
        "oiii_5007_flux": rng.uniform(10, 200, n),
    }
    cols["h_beta_flux"] = cols["h_alpha_flux"] / rng.uniform(2.7, 5.0, n)
    for k, b in enumerate("ugriz"):
        cols[f"modelmag_{b}"] = r + (1.8, 0.8, 0.0, -0.4, -0.7)[k] + rng.normal(0, 0.05, n)
        cols[f"modelmagerr_{b}"] = rng.uniform(0.005, 0.1, n)
    cols["petror90_r"] = rng.uniform(3, 12, n)
    return pd.DataFrame(cols)[list(sdss.RAW_COLUMNS)]


def jpeg_bytes(size: int, index: int) -> bytes:
    """A real SDSS cutout (centre-cropped/resized) when available, else a noisy blob."""
    real = sorted(REAL_CUTOUTS.glob("*.jpg"))[:N_ROWS] if REAL_CUTOUTS.is_dir() else []
    if real:
        im = Image.open(real[index % len(real)]).convert("RGB").resize((size, size))
    else:
        yy, xx = np.mgrid[:size, :size] - size / 2
        blob = 200 * np.exp(-(xx**2 + yy**2) / (2 * (size / 8) ** 2))
        noise = np.random.default_rng(index).normal(0, 8, (size, size, 3))
        im = Image.fromarray(np.clip(blob[..., None] * (0.8, 0.9, 1.0) + 20 + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class FakeSkyServer:
    """SkyServer-like SQL (astroquery's x_results.aspx, CSV) and ImgCutout endpoints, with faults.

    ``sql_faults``: a list consumed one per SQL request: "500", "timeout", "empty", "missing:<col>".
    ``cutout_faults[objid]``: a list consumed one per request for that object: "500", "timeout",
    "truncated" (a JPEG cut short, correct Content-Length), "dropped" (connection closed mid-body).
    ``die_after``: after this many good cutouts, every cutout request gets HTTP 503.
    ``delay``: seconds each cutout answer waits (so a client can be killed mid-download).
    ``log``: Counter of ("sql" | "cutout", key) requests received.
    """

    def __init__(self, catalog: pd.DataFrame, sleep: float = 1.0):
        self.catalog = catalog
        self.sleep = sleep
        self.sql_faults: list[str] = []
        self.cutout_faults: dict[int, list[str]] = {}
        self.die_after: int | None = None
        self.delay = 0.0
        self.good_cutouts = 0
        self.log: Counter = Counter()
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self._by_ra = {f"{ra:.6f}": (int(o), i) for i, (o, ra) in enumerate(zip(catalog.objid, catalog.ra))}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                try:
                    url = urllib.parse.urlparse(self.path)
                    query = urllib.parse.parse_qs(url.query)
                    if url.path.endswith("/en/tools/search/x_results.aspx"):
                        server._sql(self, query)
                    elif url.path.endswith("/SkyServerWS/ImgCutout/getjpeg"):
                        server._cutout(self, query)
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, kind: str) -> int:
        return sum(v for (k, _), v in self.log.items() if k == kind)

    @staticmethod
    def _send(handler, body: bytes, ctype: str, status: int = 200, length: int | None = None):
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)

    def _sql(self, handler, query):
        cmd = query["cmd"][0]
        with self.lock:
            self.log["sql", len(self.queries)] += 1
            self.queries.append(cmd)
            fault = self.sql_faults.pop(0) if self.sql_faults else None
        if fault == "500":
            return self._send(handler, b"server error", "text/plain", 500)
        if fault == "timeout":
            time.sleep(self.sleep)
        top = int(re.search(r"SELECT TOP (\d+)", cmd).group(1))
        after = int(re.search(r"p\.objID > (\d+)", cmd).group(1))
        rows = self.catalog[self.catalog.objid > after].sort_values("objid").head(top)
        if fault == "empty":
            rows = rows.iloc[:0]
        if fault and fault.startswith("missing:"):
            rows = rows.drop(columns=[fault.split(":", 1)[1]])
        body = ("#Table1\n" + rows.to_csv(index=False)).encode()
        self._send(handler, body, "text/plain")

    def _cutout(self, handler, query):
        objid, index = self._by_ra[query["ra"][0]]
        size = int(query["width"][0])
        assert query["scale"] == ["0.396"] and query["height"] == [str(size)]
        with self.lock:
            self.log["cutout", objid] += 1
            faults = self.cutout_faults.get(objid, [])
            fault = faults.pop(0) if faults else None
            dead = self.die_after is not None and self.good_cutouts >= self.die_after
            if not dead and fault is None:
                self.good_cutouts += 1
        if dead or fault == "500":
            return self._send(handler, b"unavailable", "text/plain", 503 if dead else 500)
        if fault == "timeout":
            time.sleep(self.sleep)
        time.sleep(self.delay)
        body = jpeg_bytes(size, index)
        if fault == "truncated":
            return self._send(handler, body[: len(body) // 2], "image/jpeg")
        if fault == "dropped":
            handler.close_connection = True
            return self._send(handler, body[: len(body) // 2], "image/jpeg", length=len(body))
        self._send(handler, body, "image/jpeg")


@pytest.fixture
def server():
    srv = FakeSkyServer(fake_catalog())
    yield srv
    srv.close()


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.is_file()]


def download(root, server, n=None, **kw):
    kw = {"workers": 3, "image_size": 32, **FAST, **kw}
    return sdss.download_sdss(root, n, seed=0, base_url=server.url, progress=False, **kw)


def test_full_download_gives_a_store_that_load_store_opens_with_the_right_shapes(tmp_path, server):
    store = download(tmp_path / "data", server, image_size=64)
    again = load_store(tmp_path / "data", verify=True)
    assert store.images.shape == again.images.shape == (N_ROWS, 64, 64, 3) and again.images.dtype == np.uint8
    assert (set(REQUIRED_COLUMNS) <= set(again.catalog.columns)
            and set(sdss.CATALOG_COLUMNS) == set(again.catalog.columns))
    assert sum(len(v) for v in again.splits.values()) == N_ROWS and again.meta["source"] == "sdss"
    assert sorted(p.name for p in (tmp_path / "data" / "cutouts").glob("*.jpg")) == \
        sorted(f"{o}.jpg" for o in fake_catalog().objid)
    assert (tmp_path / "data" / "catalog_raw.csv").exists() and not leftovers(tmp_path)


def test_catalog_maps_mpa_jhu_columns_and_derives_av_and_mbh(tmp_path, server):
    store = download(tmp_path / "data", server)
    raw = fake_catalog().set_index("objid")
    cat = store.catalog.set_index("objid").loc[raw.index]
    np.testing.assert_allclose(cat["log_mstar"], raw["lgm_tot_p50"])
    np.testing.assert_allclose(cat["oh12"], raw["oh_p50"])
    np.testing.assert_allclose(cat["mag_r"], raw["modelmag_r"])
    np.testing.assert_allclose(cat["log_mbh"], 8.32 + 5.64 * np.log10(raw["veldisp"] / 200))
    decrement = raw["h_alpha_flux"] / raw["h_beta_flux"]
    ebv_gas = np.clip(2.5 / (3.61 - 2.53) * np.log10(decrement / 2.86), 0, None)  # Cardelli k(Hb), k(Ha)
    np.testing.assert_allclose(cat["av_gas"], 3.1 * ebv_gas)
    np.testing.assert_allclose(cat["av"], 4.05 * 0.44 * ebv_gas)  # Calzetti 2000 stars
    assert (cat["av"][decrement < 2.86] == 0).all() and (cat["av"] >= 0).all()
    assert cat["oh_detectable"].all()


def test_rows_with_sentinels_or_unmeasured_sigma_are_removed():
    raw = fake_catalog()
    raw.loc[3, "veldisp"] = 0.0
    raw.loc[5, "oh_p50"] = -9999.0
    raw.loc[7, "d4000_n"] = np.nan
    raw.loc[9, "veldisperr"] = -1.0  # SDSS: negative error = failed dispersion fit
    cat, n = sdss.clean_catalog(raw)
    assert n == len(cat) == N_ROWS - 4
    assert not set(raw.objid[[3, 5, 7]]) & set(cat.objid)


def test_sql_holds_the_papers_cuts_and_the_mpa_jhu_tables():
    sql = sdss.selection_sql(1000, after=42)
    for fragment in ("e.bptclass = 1", "p.modelMag_r > 16", "p.modelMag_r < 17.78", "s.class = 'GALAXY'",
                     "SpecObj", "galSpecInfo", "galSpecExtra", "galSpecIndx", "PhotoObj",
                     "e.lgm_tot_p50 > 0", "e.sfr_tot_p50 > -99", "e.oh_p50 > 0", "x.d4000_n > 0",
                     "SELECT TOP 1000", "p.objID > 42", "ORDER BY p.objID"):
        assert fragment in sql, fragment
    assert "--" not in sql  # astroquery drops everything after "--" on a line


def test_query_pages_by_objid_and_sends_the_papers_sql(tmp_path, server):
    raw = sdss.query_catalog(tmp_path / "catalog_raw.csv", base_url=server.url, chunk=6, progress=False, **FAST)
    assert len(raw) == N_ROWS and raw.objid.is_monotonic_increasing
    assert server.count("sql") == 4  # 6 + 6 + 6 + 2 rows
    assert all("e.bptclass = 1" in q and "p.modelMag_r > 16" in q and "17.78" in q for q in server.queries)
    again = sdss.query_catalog(tmp_path / "catalog_raw.csv", base_url=server.url, chunk=6, progress=False, **FAST)
    assert server.count("sql") == 4  # the cache answers the second call
    pd.testing.assert_frame_equal(raw, again)


def test_sql_retries_recover_from_500_and_time_out(tmp_path, server):
    server.sql_faults = ["500", "timeout", "500"]
    raw = sdss.query_catalog(None, base_url=server.url, progress=False, **{**FAST, "retries": 3})
    assert len(raw) == N_ROWS and server.count("sql") == 4


def test_empty_result_is_a_clear_error_and_writes_nothing(tmp_path, server):
    server.sql_faults = ["empty"]
    with pytest.raises(sdss.SdssError, match=r"x_results\.aspx: the selection query returned no rows"):
        download(tmp_path / "data", server)
    assert not (tmp_path / "data" / "catalog_raw.csv").exists() and not leftovers(tmp_path)


def test_missing_column_is_a_clear_error_naming_the_url_and_column(tmp_path, server):
    server.sql_faults = ["missing:oh_p50"]
    with pytest.raises(sdss.SdssError, match=r"http://127\.0\.0\.1:\d+/dr17/.*lacks column\(s\) \['oh_p50'\]"):
        download(tmp_path / "data", server)
    assert not (tmp_path / "data" / "catalog_raw.csv").exists()


def test_cutout_retries_recover_from_500_time_out_and_dropped_connection(tmp_path, server):
    objids = list(fake_catalog().objid)
    server.cutout_faults = {objids[0]: ["500", "500"], objids[1]: ["timeout"], objids[2]: ["dropped"]}
    store = download(tmp_path / "data", server)
    assert len(store.catalog) == N_ROWS
    assert server.log["cutout", objids[0]] == 3 and server.log["cutout", objids[1]] == 2
    assert server.log["cutout", objids[2]] == 2 and server.count("cutout") == N_ROWS + 4


def test_truncated_jpeg_is_refetched_and_never_kept(tmp_path, server):
    cat = fake_catalog()
    objid = int(cat.objid[4])
    server.cutout_faults = {objid: ["truncated"]}
    paths = sdss.download_cutouts(cat, tmp_path / "cutouts", base_url=server.url, image_size=32, progress=False, **FAST)
    assert server.log["cutout", objid] == 2
    assert paths[4].read_bytes() == jpeg_bytes(32, 4)


def test_cutout_broken_after_all_retries_raises_naming_url_and_file_and_keeps_nothing_of_it(tmp_path, server):
    cat = fake_catalog()
    objid = int(cat.objid[2])
    server.cutout_faults = {objid: ["truncated"] * 10}
    with pytest.raises(sdss.SdssError, match=rf"getjpeg\?ra=.*-> .*{objid}\.jpg: truncated JPEG .*gave up after 4"):
        download(tmp_path / "data", server)
    assert not (tmp_path / "data" / "cutouts" / f"{objid}.jpg").exists()
    assert not (tmp_path / "data" / "meta.json").exists() and not leftovers(tmp_path)


def test_interrupted_download_leaves_no_partial_files_and_rerun_fetches_only_the_missing(tmp_path, server):
    root = tmp_path / "data"
    server.die_after = 7
    with pytest.raises(sdss.SdssError, match="HTTP 503"):
        download(root, server, retries=1)
    kept = list((root / "cutouts").glob("*.jpg"))
    assert len(kept) == 7 and all(sdss._valid_file(p, 32) for p in kept)
    assert not leftovers(tmp_path) and not (root / "meta.json").exists() and not (root / "images.npy").exists()
    server.die_after, server.log = None, Counter()
    store = download(root, server)
    assert server.count("sql") == 0 and server.count("cutout") == N_ROWS - 7
    assert not any(server.log["cutout", int(p.stem)] for p in kept)
    assert len(store.catalog) == N_ROWS


def test_crash_mid_download_then_rerun_replaces_corrupt_and_stale_files(tmp_path, server, monkeypatch):
    root, cat = tmp_path / "data", fake_catalog()
    real_check, calls = sdss._check_jpeg, []

    def crashing_check(data, size):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("injected crash")
        return real_check(data, size)

    monkeypatch.setattr(sdss, "_check_jpeg", crashing_check)
    with pytest.raises(RuntimeError, match="injected crash"):
        download(root, server, workers=1)
    monkeypatch.setattr(sdss, "_check_jpeg", real_check)
    kept = len(list((root / "cutouts").glob("*.jpg")))  # 4 before the crash, +1 if the worker had started the next
    assert kept == len(calls) - 1 and kept >= 4 and not leftovers(tmp_path)
    # a JPEG cut short by hand and a temporary file of a killed process
    broken = root / "cutouts" / f"{cat.objid[0]}.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    (root / "cutouts" / ".123.jpg.abcd.tmp").write_bytes(b"partial")
    server.log = Counter()
    store = download(root, server)
    assert server.count("cutout") == N_ROWS - kept + 1 and server.log["cutout", int(cat.objid[0])] == 1
    assert sdss._valid_file(broken, 32) and not leftovers(tmp_path) and len(store.catalog) == N_ROWS


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_download_killed_with_sigkill_resumes_fetching_only_what_is_missing(tmp_path, server):
    root = tmp_path / "data"
    server.delay = 0.05
    script = (f"from galnb import sdss; sdss.download_sdss({str(root)!r}, None, seed=0, base_url={server.url!r}, "
              f"progress=False, workers=2, image_size=32, timeout=5, retries=1, backoff=0.01)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((root / "cutouts").glob("*.jpg"))) < 6:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = list((root / "cutouts").glob("*.jpg"))
    assert 6 <= len(kept) < N_ROWS and all(sdss._valid_file(p, 32) for p in kept)
    assert not (root / "meta.json").exists()
    server.delay, server.log = 0.0, Counter()
    store = download(root, server)
    assert server.count("sql") == 0, "the cached catalog answer was reused"
    assert not any(server.log["cutout", int(p.stem)] for p in kept), "finished cutouts were not fetched again"
    assert len(store.catalog) == N_ROWS and not leftovers(tmp_path)


def test_subset_of_n_is_seeded_and_a_finished_store_is_reused(tmp_path, server):
    a = download(tmp_path / "a", server, n=8)
    assert len(a.catalog) == 8 and len(list((tmp_path / "a" / "cutouts").glob("*.jpg"))) == 8
    b = download(tmp_path / "b", server, n=8)
    assert list(a.catalog.objid) == list(b.catalog.objid)
    server.log = Counter()
    download(tmp_path / "a", server, n=8)
    assert server.count("sql") == server.count("cutout") == 0
    with pytest.warns(UserWarning, match="asked for 50 SDSS galaxies but the selection has 20"):
        assert len(download(tmp_path / "c", server, n=50).catalog) == N_ROWS


def test_cli_downloads_into_the_run_directory_layout(tmp_path, server, monkeypatch, capsys):
    monkeypatch.delenv("GALNB_RUN_DIR", raising=False)
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    with pytest.warns(UserWarning, match="asked for 2000"):
        rc = sdss.main(["--run-dir", str(tmp_path / "runs"), "--scale", "ci", "--seed", "3", "--base-url", server.url,
                        "--quiet", "--timeout", "2"])
    store = load_store(tmp_path / "runs" / "ci-sdss-seed3" / "data")
    assert rc == 0 and store.meta["seed"] == 3 and store.image_size == 32 and len(store.catalog) == N_ROWS
    assert "ci-sdss-seed3" in capsys.readouterr().out
