"""Fusion fixtures: best-first score lists, a fitted background scale, and bit comparisons.

Shared by the tests of the search's shortcuts (``test_search_fast_paths.py``,
``test_search_one_query.py``), which compare them with the general code bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmgap_core.background import BackgroundScale
from mmgap_core.candidates import ModalityCandidates, full_ids

__all__ = ["background_scale"]  # the fixture; tests import the helpers by name

MODS = ("text", "image")
SIZES = {"text": 500, "image": 800}


def bits(a):
    """Float64 values as bit patterns, for exact comparisons (``-0.0`` differs from ``0.0``)."""
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def sorted_lists(rng, n_q, k, shift=0.0):
    """``[n_q, k]`` best-first cosine-like scores around ``0.2 + shift``."""
    return -np.sort(-rng.normal(0.2 + shift, 0.03, size=(n_q, k)), axis=1)


def full_candidates(lists):
    """``{modality: ModalityCandidates}`` of full ``[Q, k]`` lists, ids from the shared table."""
    return {m: ModalityCandidates(full_ids(*v.shape), v) for m, v in lists.items()}


@pytest.fixture(scope="module")
def background_scale():
    """A ``BackgroundScale`` fitted for text queries on text and image lists of ``SIZES`` items."""
    rng = np.random.default_rng(3)
    lists = {m: sorted_lists(rng, 40, 30, 0.1 * j) for j, m in enumerate(MODS)}
    return BackgroundScale().fit(lists, "text", SIZES)
