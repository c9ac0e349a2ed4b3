"""Doctest namespace for the docstring examples (``pytest`` runs them with ``--doctest-modules``)."""

import numpy as np
import pytest
import torch

collect_ignore = ["__main__.py"]  # importing it would run the command line


@pytest.fixture(autouse=True)
def doctest_namespace_with_seeded_torch(doctest_namespace):
    """Every example sees ``np`` and ``torch``, with torch's generator seeded, as zuko's do."""
    torch.manual_seed(0)
    doctest_namespace.update(np=np, torch=torch)
