"""One source of truth for the physical quantities: names, units, labels, ranges."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Quantity",
    "QUANTITIES",
    "TARGETS",
    "BANDS",
    "MAG_COLUMNS",
    "MAGERR_COLUMNS",
    "LINES",
    "VAENF_CORE",
    "label",
    "ALIASES",
]


@dataclass(frozen=True)
class Quantity:
    """A catalog column with its meaning.

    Arguments:
        name: column name in every catalog and glue key.
        short: plain-text name for tables.
        latex: matplotlib label (mathtext), units included.
        unit: unit as plain text ("" when dimensionless).
        range: plotting range (lo, hi).
    """

    name: str
    short: str
    latex: str
    unit: str
    range: tuple[float, float]


_ALL = [
    Quantity("log_mstar", "log M*", r"$\log M_\star\ [M_\odot]$", "dex (Msun)", (8.5, 11.8)),
    Quantity("log_sfr", "log SFR", r"$\log \mathrm{SFR}\ [M_\odot\,\mathrm{yr}^{-1}]$", "dex (Msun/yr)", (-1.8, 1.8)),
    Quantity("oh12", "12+log(O/H)", r"$12+\log(\mathrm{O/H})$", "dex", (8.3, 9.4)),
    Quantity("dn4000", "Dn4000", r"$D_n(4000)$", "", (1.0, 1.9)),
    Quantity("av", "A_V", r"$A_V$ [mag]", "mag", (0.0, 3.0)),
    Quantity("z", "z", r"$z$", "", (0.0, 0.3)),
    Quantity("mag_r", "r", r"$r$ [mag]", "mag", (15.8, 17.9)),
    Quantity("log_mbh", "log M_BH", r"$\log M_\mathrm{BH}\ [M_\odot]$", "dex (Msun)", (5.0, 9.5)),
    Quantity("sigma_v", "sigma", r"$\sigma_v$ [km s$^{-1}$]", "km/s", (30.0, 300.0)),
    Quantity("flux_ha", "Halpha", r"H$\alpha$ flux", "1e-17 erg/s/cm2", (0.0, 2000.0)),
    Quantity("flux_hb", "Hbeta", r"H$\beta$ flux", "1e-17 erg/s/cm2", (0.0, 600.0)),
    Quantity("flux_nii6584", "[NII]6584", r"[N II] 6584 flux", "1e-17 erg/s/cm2", (0.0, 1000.0)),
    Quantity("flux_oiii5007", "[OIII]5007", r"[O III] 5007 flux", "1e-17 erg/s/cm2", (0.0, 600.0)),
    Quantity("inclination", "inclination", r"inclination $i$ [deg]", "deg", (0.0, 90.0)),
    Quantity("axis_ratio", "b/a", r"axis ratio $b/a$", "", (0.0, 1.0)),
    Quantity("bulge_fraction", "B/T", r"bulge fraction $B/T$", "", (0.0, 1.0)),
    Quantity("r_half", "R_50", r"half-light radius $R_{50}$ [arcsec]", "arcsec", (0.0, 10.0)),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _ALL}

#: The five properties the CFM paper infers, in model order.
TARGETS: tuple[str, ...] = ("log_mstar", "log_sfr", "oh12", "dn4000", "av")
BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
MAG_COLUMNS: tuple[str, ...] = tuple(f"mag_{b}" for b in BANDS)
MAGERR_COLUMNS: tuple[str, ...] = tuple(f"magerr_{b}" for b in BANDS)
#: Emission lines of the VAE-NF paper.
LINES: tuple[str, ...] = ("flux_ha", "flux_hb", "flux_nii6584", "flux_oiii5007")
#: Core parameters of the VAE-NF paper's branch 1 (metallicity is branch 2).
VAENF_CORE: tuple[str, ...] = ("log_mstar", "log_sfr", "z", "log_mbh")


def label(name: str) -> str:
    """The axis label of a quantity, e.g. ``label("av") == "$A_V$ [mag]"``."""
    return QUANTITIES[name].latex


#: Column names readers' catalogs may use (MPA-JHU / SkyServer), mapped to the book's.
ALIASES: dict[str, str] = {
    "objID": "objid", "specObjID": "specobjid", "lgm_tot_p50": "log_mstar", "sfr_tot_p50": "log_sfr",
    "oh_p50": "oh12", "d4000_n": "dn4000", "redshift": "z",
    **{f"modelMag_{b}": f"mag_{b}" for b in BANDS}, **{f"modelMagErr_{b}": f"magerr_{b}" for b in BANDS},
}
