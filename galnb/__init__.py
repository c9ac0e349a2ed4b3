"""galnb: companion package to the galaxy-posterior book (the CFM and VAE-NF papers).

Module map (module: responsibility; chapters that use it):

=================  ==========================================================================  =========
module             responsibility                                                              chapters
=================  ==========================================================================  =========
``properties``     names, units, LaTeX labels and ranges of every catalog quantity             all
``runs``           scales, notebook parameters, the run directory and its manifest, glue       all
``io``             atomic writes, file hashes, versioned checkpoints, temporary memory maps    (library)
``data``           the on-disk store every source is read into, splits, standardisation        01, 03, 04
``morphology``     b/a, R50 and R90/R50 measured on the 8-bit cutouts, cached in the store     03, 05
``survey``         SDSS survey constants and published relations (pixel scale, MGS, M-sigma)   01
``simulation``     the simulated SDSS-like survey (physics, images, selection)                 01
``validation``     the simulated survey checked against real SDSS                              01
``sdss``           the real SDSS pipeline (SkyServer SQL and cutouts into a store)             01
``analytic``       toy problems with closed-form posteriors                                    02
``cfm``            conditional flow matching as the paper writes it: path, loss, ODE, log p    02, 03
``fast_velocity``  the CFM sampler's engine (folded velocity network, chunk sizes)             02-06
``training``       training the CFM models; the trained model as an estimator                  03, 05
``vaenf``          the VAE-NF paper: ``model``, ``train``, ``ensemble``, ``interpret``          04
``evaluation``     scoring on the test set: the estimator interface, posteriors, timing,       04, 05, 06
                   solver accuracy, the structure probe
``metrics``        the metrics' formulas: Δlog p, D_KL, WD, R², SBC, TARP, degeneracy          05, 06
``report``         the papers' published numbers and the sentences that state a result         04, 05, 06
``plots``          every figure, one function each, returning a ``Figure``                     all
``book``           executing the chapters and rendering the book                               (build)
=================  ==========================================================================  =========
"""

__version__ = "0.1.0"
