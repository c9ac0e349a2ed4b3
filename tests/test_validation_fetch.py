"""Fetching Nair & Abraham (2010) from VizieR, against a fake VizieR on 127.0.0.1 (nothing reaches the internet).

astroquery always speaks https to a VizieR mirror, so the fake server is an HTTPS one with a
certificate made here for 127.0.0.1, trusted through ``REQUESTS_CA_BUNDLE`` (requests' public
setting); ``Vizier(vizier_server=...)`` points astroquery at it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from galnb import validation

N_ROWS = 40
#: VizieR-like columns of the fake table: (label, unit, VOTable datatype).
COLUMNS = [("SDSS", None, "char"), ("z", None, "double"), ("gmag", "mag", "float"), ("rmag", "mag", "float"),
           ("Rp50", "kpc", "float"), ("Rp90", "kpc", "float"), ("logM", "[Msun]", "float"),
           ("Age", "Gyr", "float"), ("g-r", "mag", "float"), ("SFRT", "[Msun/yr]", "float"),
           ("SFRM", "[yr-1]", "float"), ("b/a", None, "float"), ("TT", None, "short"), ("Bar", None, "short")]


def fake_rows(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Plausible Nair & Abraham rows under VizieR-like labels; row 3 has a blank mass, row 5 a sentinel T-type."""
    rng = np.random.default_rng(seed)
    mass = rng.uniform(9.6, 11.0, n)
    sfr = 0.7 * (mass - 10) + rng.normal(0, 0.3, n)
    g_r = rng.uniform(0.3, 0.9, n)
    r = rng.uniform(13.0, 16.0, n)
    rows = pd.DataFrame({
        "SDSS": [f"J1200{i:02d}.00+000000.0" for i in range(n)], "z": rng.uniform(0.02, 0.09, n),
        "gmag": r + g_r, "rmag": r, "Rp50": 10 ** rng.normal(0.5, 0.2, n), "Rp90": None, "logM": mass,
        "Age": rng.uniform(1, 10, n), "g-r": g_r, "SFRT": sfr, "SFRM": sfr - mass - 0.05,
        "b/a": rng.uniform(0.15, 0.95, n), "TT": rng.integers(1, 9, n), "Bar": rng.integers(0, 3, n)})
    rows["Rp90"] = rows["Rp50"] * rng.uniform(2.0, 3.0, n)
    rows.loc[3, "logM"] = np.nan
    rows.loc[5, "TT"] = 999999
    return rows


def votable(rows: pd.DataFrame, columns: list[tuple[str, str | None, str]],
            table: str = validation.NAIR_ABRAHAM_VIZIER) -> bytes:
    """A VOTable as VizieR writes it (blank cells for missing values)."""
    fields = "".join(f'<FIELD name="{escape(n)}" datatype="{d}"' + (' arraysize="*"' if d == "char" else "")
                     + (f' unit="{escape(u)}"' if u else "") + "/>\n" for n, u, d in columns)
    body = "".join("<TR>" + "".join(f"<TD>{'' if pd.isna(row[n]) else escape(str(row[n]))}</TD>" for n, _, _ in columns)
                   + "</TR>\n" for _, row in rows.iterrows())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            f'<INFO name="QUERY_STATUS" value="OK"/>\n<RESOURCE ID="yCat_21860427" name="J/ApJS/186/427">\n'
            f'<TABLE ID="J_ApJS_186_427_table2" name="{table}">\n{fields}<DATA><TABLEDATA>\n{body}'
            f"</TABLEDATA></DATA></TABLE>\n</RESOURCE>\n</VOTABLE>\n").encode()


def vizier_error() -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
            b'<INFO name="Error" value="Catalogue J/ApJS/186/427/table2 not available"/></RESOURCE></VOTABLE>')


def make_certificate(folder):
    """A CA and a 127.0.0.1 server certificate signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "galnb test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(leaf.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "server.pem"


class FakeVizier:
    """VizieR's votable endpoint for one table: honours -out.max, -out and -out.all; logs every request.

    ``faults``: consumed one per request: "500", "html" (not a VOTable), "error" (VizieR's error VOTable).
    """

    def __init__(self, certificate, rows: pd.DataFrame, columns=COLUMNS):
        self.rows, self.columns, self.requests, self.faults = rows, columns, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.answer(self, self.rfile.read(length).decode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler, payload: str):
        query = dict(line.split("=", 1) if "=" in line else (line, "") for line in payload.splitlines())
        self.requests.append({"path": handler.path, **query})
        fault = self.faults.pop(0) if self.faults else None
        status, ctype, body = 200, "text/xml", b""
        if fault == "500":
            status, ctype, body = 500, "text/plain", b"Internal Server Error"
        elif fault == "html":
            ctype, body = "text/html", b"<html><body>VizieR is down for maintenance</body></html>"
        elif fault == "error" or query.get("-source") != validation.NAIR_ABRAHAM_VIZIER:
            body = vizier_error()
        else:
            wanted = query["-out"].split(",") if "-out" in query else [n for n, _, _ in self.columns]
            columns = [c for c in self.columns if c[0] in wanted]
            rows = self.rows if query["-out.max"] == "unlimited" else self.rows.head(int(query["-out.max"]))
            body = votable(rows, columns)
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def vizier(certificate, monkeypatch):
    ca, server_pem = certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv(validation.REAL_SDSS_ENV, raising=False)
    srv = FakeVizier(server_pem, fake_rows())
    yield srv
    srv.close()


def fetch(cache, vizier, **kw):
    return validation.fetch_nair_abraham(cache, server=vizier.host, timeout=5, **kw)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != validation.NAIR_ABRAHAM_CACHE)


def test_fetch_maps_vizier_columns_to_the_books_and_asks_only_for_those_needed(tmp_path, vizier):
    got = fetch(tmp_path, vizier)
    probe, bulk = vizier.requests
    assert probe["path"] == bulk["path"] == "/viz-bin/votable"
    assert probe["-source"] == bulk["-source"] == "J/ApJS/186/427/table2"
    assert probe["-out.max"] == "1" and "-out.all" in probe
    assert bulk["-out.max"] == "unlimited" and "-out.all" not in bulk  # all rows, only the needed columns
    assert set(bulk["-out"].split(",")) == {"z", "logM", "SFRT", "SFRM", "b/a", "Rp50", "Rp90", "gmag", "rmag",
                                             "g-r", "TT"}
    rows = fake_rows().drop(index=[3, 5]).reset_index(drop=True)  # a blank mass, a sentinel T-type
    mld_file(tmp_path / "mld")
    assert list(got.columns) == list(validation.nair_abraham(tmp_path / "mld").columns)
    assert len(got) == N_ROWS - 2
    for book, label in [("z", "z"), ("log_mstar", "logM"), ("log_sfr", "SFRT"), ("log_ssfr", "SFRM"),
                        ("axis_ratio", "b/a"), ("r50_kpc", "Rp50"), ("r90_kpc", "Rp90"), ("mag_g", "gmag"),
                        ("mag_r", "rmag"), ("g_r", "g-r"), ("t_type", "TT")]:
        np.testing.assert_allclose(got[book], rows[label].astype(float), rtol=1e-6, err_msg=book)
    np.testing.assert_allclose(got.concentration, rows.Rp90 / rows.Rp50, rtol=1e-5)
    np.testing.assert_allclose(got.r50_arcsec * validation._kpc_per_arcsec(rows.z), rows.Rp50, rtol=1e-5)
    assert got[["u_g", "mag_u", "mag_i", "mag_z"]].isna().all().all()  # VizieR has no u, i, z photometry
    cache = tmp_path / validation.NAIR_ABRAHAM_CACHE
    assert cache.read_text().startswith("# Nair & Abraham (2010), VizieR J/ApJS/186/427/table2 via https://127.0.0.1")
    assert "log_mstar <- logM" in cache.read_text() and leftovers(tmp_path) == ["mld"]


def test_second_call_reads_the_cache_and_makes_no_request(tmp_path, vizier):
    first = fetch(tmp_path, vizier)
    assert len(vizier.requests) == 2
    vizier.faults = ["500"] * 4  # any request now would fail
    again = fetch(tmp_path, vizier)
    loaded = validation.load_nair_abraham(cache_dir=tmp_path, server=vizier.host, timeout=5)
    assert len(vizier.requests) == 2
    pd.testing.assert_frame_equal(first, again)
    assert loaded.source == "cache" and "no u, i or z" in loaded.note
    pd.testing.assert_frame_equal(first, loaded.data)


def test_radii_in_arcsec_and_linear_masses_are_converted(tmp_path, certificate, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    rows = fake_rows()
    scale = validation._kpc_per_arcsec(rows.z)
    other = rows.rename(columns={"Rp50": "R50", "Rp90": "R90", "logM": "Mass", "b/a": "bOverA", "TT": "TType"})
    other["R50"], other["R90"], other["Mass"] = rows.Rp50 / scale, rows.Rp90 / scale, 10 ** rows.logM
    columns = [(n, u, d) for n, u, d in COLUMNS if n not in ("Rp50", "Rp90", "logM", "b/a", "TT", "g-r")]
    columns += [("R50", "arcsec", "double"), ("R90", "arcsec", "double"), ("Mass", "Msun", "double"),
                ("bOverA", None, "float"), ("TType", None, "int")]
    srv = FakeVizier(certificate[1], other, columns)
    try:
        got = validation.fetch_nair_abraham(tmp_path, server=srv.host, timeout=5)
    finally:
        srv.close()
    rows = rows.drop(index=[3, 5]).reset_index(drop=True)
    np.testing.assert_allclose(got.r50_kpc, rows.Rp50, rtol=1e-6)
    np.testing.assert_allclose(got.r90_kpc, rows.Rp90, rtol=1e-6)
    np.testing.assert_allclose(got.log_mstar, rows.logM, rtol=1e-9)
    np.testing.assert_allclose(got.g_r, rows.gmag - rows.rmag, rtol=1e-5)  # no g-r column: from g and r
    np.testing.assert_allclose(got.t_type, rows.TT)


def test_a_failed_fetch_leaves_the_cache_untouched_and_says_why(tmp_path, vizier):
    fetch(tmp_path, vizier)
    cache = tmp_path / validation.NAIR_ABRAHAM_CACHE
    before = cache.read_bytes()
    for fault, message in [("500", r"https://127\.0\.0\.1:\d+/viz-bin/votable: HTTP 500"),
                           ("html", "not a VOTable"),
                           ("error", "holds no table J/ApJS/186/427/table2; VizieR said .*not available")]:
        vizier.faults = [fault]
        with pytest.raises(validation.CatalogFetchError, match=message):
            fetch(tmp_path, vizier, refresh=True)
        assert cache.read_bytes() == before and leftovers(tmp_path) == []
    vizier.faults = ["ok", "500"]  # the probe succeeds, the full query fails
    with pytest.raises(validation.CatalogFetchError, match="HTTP 500"):
        fetch(tmp_path, vizier, refresh=True)
    assert cache.read_bytes() == before and leftovers(tmp_path) == []


def test_an_unreachable_vizier_gives_none_and_the_how_to_message(tmp_path, vizier):
    vizier.faults = ["500"]
    got = validation.load_nair_abraham(cache_dir=tmp_path / "cache", server=vizier.host, timeout=5)
    assert got.data is None and got.source == "none"
    assert "GALNB_REAL_SDSS" in got.note and "nair-abraham-2010.fits" in got.note
    assert "J/ApJS/186/427/table2" in got.note and "HTTP 500" in got.note
    assert not (tmp_path / "cache" / validation.NAIR_ABRAHAM_CACHE).exists()
    closed = validation.load_nair_abraham(cache_dir=tmp_path / "cache", server="127.0.0.1:9", timeout=2)
    assert closed.data is None and "ConnectionError" in closed.note


def test_a_table_without_a_needed_column_is_a_clear_error_and_no_cache(tmp_path, certificate, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = FakeVizier(certificate[1], fake_rows(), [c for c in COLUMNS if c[0] != "logM"])
    try:
        with pytest.raises(validation.CatalogFetchError, match=r"no column for \['log_mstar'\].*looked for.*logM"):
            validation.fetch_nair_abraham(tmp_path, server=srv.host, timeout=5)
    finally:
        srv.close()
    assert len(srv.requests) == 1 and list(tmp_path.iterdir()) == []


def test_without_folder_cache_or_fetch_the_catalog_is_none_with_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(validation.REAL_SDSS_ENV, raising=False)
    got = validation.load_nair_abraham(cache_dir=tmp_path, fetch=False)
    assert got.data is None and got.source == "none"
    for needed in ("$GALNB_REAL_SDSS", "real_sdss=FOLDER", "nair-abraham-2010.fits", "VizieR",
                   "J/ApJS/186/427/table2", str(tmp_path)):
        assert needed in got.note, needed
    (tmp_path / "real").mkdir()
    monkeypatch.setenv(validation.REAL_SDSS_ENV, str(tmp_path / "real"))
    got = validation.load_nair_abraham(cache_dir=tmp_path, fetch=False)
    assert got.data is None and f"{tmp_path / 'real'} holds no nair-abraham-2010.fits" in got.note


def mld_file(folder, n: int = 30):
    """A small file in the layout of the MLD2019 copy (``nair_abraham``'s input)."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    Table({"Z": rng.uniform(0.02, 0.08, n), "LGM": rng.uniform(9.6, 11, n), "SFRT": rng.uniform(-1, 1, n),
           "SFRM": rng.uniform(-11, -9.5, n), "B_A": rng.uniform(0.2, 0.9, n), "RP50": rng.uniform(2, 6, n),
           "RP90": rng.uniform(6, 15, n), "T_TYPE": rng.integers(1, 8, n), "UG": rng.uniform(1, 1.8, n),
           "GR": rng.uniform(0.4, 0.9, n), "RI": rng.uniform(0.3, 0.5, n), "IZ": rng.uniform(0.2, 0.4, n),
           "RMAG": rng.uniform(13, 16, n)}).write(folder / validation.NAIR_ABRAHAM_FILE)


def test_a_folder_with_the_file_wins_and_asks_nothing(tmp_path, vizier, monkeypatch):
    mld_file(tmp_path)
    got = validation.load_nair_abraham(tmp_path, cache_dir=tmp_path / "cache", server=vizier.host, timeout=5)
    assert got.source == "folder" and len(got.data) == 30 and got.data.u_g.notna().all()
    monkeypatch.setenv(validation.REAL_SDSS_ENV, str(tmp_path))
    assert validation.load_nair_abraham(cache_dir=tmp_path / "cache", server=vizier.host).source == "folder"
    assert vizier.requests == [] and not (tmp_path / "cache").exists()


def test_bad_arguments_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(validation.REAL_SDSS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="real_sdss = .*not a folder"):
        validation.load_nair_abraham(tmp_path / "missing", cache_dir=tmp_path, fetch=False)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="cache_dir = .*file.txt.* is a file, not a folder"):
        validation.load_nair_abraham(cache_dir=tmp_path / "file.txt", fetch=False)
    with pytest.raises(ValueError, match="cache_dir = 3 is not valid"):
        validation.fetch_nair_abraham(3)
    with pytest.raises(ValueError, match="fetch = 'yes' is not valid"):
        validation.load_nair_abraham(cache_dir=tmp_path, fetch="yes")


def test_the_structure_comparison_runs_on_the_fetched_table(tmp_path, vizier):
    real = fetch(tmp_path, vizier)
    out = validation.compare_structure(real, real)
    assert (out.reddening["real u-g"].n == 0).all() and out.reddening["real u-g"].reddening.isna().all()
    assert out.reddening["real g-r"].n.sum() > 0 and np.isfinite(out.reddening["real g-r"].reddening).any()
    assert out.reddening["real g-r"].n.tolist() == out.sizes["real"].n.tolist()  # every galaxy has g - r
