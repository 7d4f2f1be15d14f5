"""Simulator profiles: the parameters of each seeded mixed-modality retrieval world.

:data:`PROFILES` names the built-in ones (``mmgap bench --list``);
:func:`mmgap_core.simulator.simulate` turns a profile into embeddings. The generative model is
described in :mod:`mmgap_core.simulator`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

MODALITIES = ("text", "image")
KINDS = ("text", "image", "multimodal")  # corpus kinds; queries are one of MODALITIES


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SimulatorProfile:
    """Parameters of one simulated retrieval world. All randomness comes from ``seed``.

    Strengths (``gap_*``, ``content_*``, ``noise_*``, ``aniso_*``) are expected norms of each
    component before normalisation; with ``gap^2 + content^2 + noise^2 + aniso^2 ~ 1`` the cosine
    between two embeddings of one modality is roughly ``gap^2`` plus their shared content. The
    comments on the fields say what each one does.

    Parameters
    ----------
    name, description : str
        The profile's name (a key of :data:`PROFILES` for the built-in ones) and one line about it.
    seed : int
        Seed of every random draw (>= 0).
    dim : int
        Embedding dimension (>= 8).
    n_items, n_queries : int
        Latent items (query targets, hard distractors and background) and queries.
    query_modality : {"text", "image"}
        The modality of the queries.
    gap_text, gap_image, rho : float
        Modality gap: offset strength along each modality's direction, and the cosine between
        the two directions.
    content_text, content_image, noise_text, noise_image : float
        Strength of an item's content and of isotropic noise, per modality.
    aniso_text, aniso_image, aniso_rank, aniso_overlap : float, int, float
        Anisotropic noise along ``aniso_rank`` dominant directions per modality, and the cosine
        between each text direction and its image counterpart.
    query_content, query_content_spread, query_noise : float
        Queries' content strength (mean and relative spread) and noise.
    cross_modal_share, both_share : float
        Share of queries whose relevant item is in the other modality; share of background items
        stored in both modalities.
    n_hard_distractors, distractor_closeness, distractor_cross_share : int, float, float
        Hard distractors per query target, the cosine of their latent to the target's, and the
        share stored in the other modality than the target's relevant row.
    multimodal_share, multimodal_background_share, alpha : float
        Multimodal documents (a third corpus kind): share of query targets and of background
        items stored as one, and the text's weight in their mixing.

    Raises
    ------
    ValueError
        Listing every invalid field.
    """

    name: str
    description: str
    seed: int
    dim: int
    n_items: int  # latent items (query targets + hard distractors + background)
    n_queries: int
    query_modality: str  # "text" or "image"
    # Modality gap: offset strength along each modality's direction; cosine between the directions.
    gap_text: float = 0.72
    gap_image: float = 0.72
    rho: float = 0.30
    # How much of an embedding is the item's content (what retrieval can find).
    content_text: float = 0.40
    content_image: float = 0.40
    # Isotropic noise, and anisotropic noise along `aniso_rank` dominant directions per modality.
    noise_text: float = 0.45
    noise_image: float = 0.45
    aniso_text: float = 0.30
    aniso_image: float = 0.30
    aniso_rank: int = 4
    # Cosine between each text dominant direction and its image counterpart (1 = shared directions).
    aniso_overlap: float = 0.0
    # Queries: content strength (mean, and uniform relative spread per query) and noise.
    query_content: float = 0.40
    query_content_spread: float = 0.5
    query_noise: float = 0.45
    # Share of queries whose relevant item is in the other modality than the query's.
    cross_modal_share: float = 0.5
    # Share of background items stored in both modalities (the rest: text-only / image-only 50/50).
    both_share: float = 0.5
    # Hard distractors per query target and the cosine between their latent and the target's.
    n_hard_distractors: int = 2
    distractor_closeness: float = 0.6
    # Share of hard distractors stored in the other modality than their target's relevant row.
    distractor_cross_share: float = 0.0
    # Multimodal documents (a third corpus kind): share of query targets whose relevant row is
    # one, share of background items stored as one, and the text's weight in their mixing.
    multimodal_share: float = 0.0
    multimodal_background_share: float = 0.0
    alpha: float = 0.5

    def __post_init__(self):
        problems = []
        if not isinstance(self.name, str) or not self.name.strip():
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        if self.query_modality not in MODALITIES:
            problems.append(
                f"query_modality must be one of {MODALITIES}, got {self.query_modality!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.dim, int) or self.dim < 8:
            problems.append(f"dim must be an integer >= 8, got {self.dim!r}")
        if not isinstance(self.n_queries, int) or self.n_queries < 1:
            problems.append(f"n_queries must be a positive integer, got {self.n_queries!r}")
        if not isinstance(self.n_hard_distractors, int) or self.n_hard_distractors < 0:
            problems.append(
                "n_hard_distractors must be a non-negative integer, "
                f"got {self.n_hard_distractors!r}"
            )
        max_rank = (self.dim - 2) // 2 if isinstance(self.dim, int) else 0
        if not isinstance(self.aniso_rank, int) or not 0 <= self.aniso_rank <= max_rank:
            problems.append(
                f"aniso_rank must be an integer in [0, (dim - 2) // 2 = {max_rank}], "
                f"got {self.aniso_rank!r}"
            )
        if isinstance(self.n_queries, int) and isinstance(self.n_hard_distractors, int):
            needed = self.n_queries * (1 + self.n_hard_distractors)
            if not isinstance(self.n_items, int) or self.n_items < needed:
                problems.append(
                    "n_items must be an integer >= n_queries * (1 + n_hard_distractors) = "
                    f"{needed}, got {self.n_items!r}"
                )
        if not (_is_number(self.rho) and -1.0 <= self.rho <= 1.0):
            problems.append(
                f"rho (cosine between modality directions) must be in [-1, 1], got {self.rho!r}"
            )
        for field in (
            "cross_modal_share",
            "both_share",
            "query_content_spread",
            "aniso_overlap",
            "distractor_cross_share",
            "multimodal_share",
            "multimodal_background_share",
            "alpha",
        ):
            value = getattr(self, field)
            if not (_is_number(value) and 0.0 <= value <= 1.0):
                problems.append(f"{field} must be in [0, 1], got {value!r}")
        if not (_is_number(self.distractor_closeness) and 0.0 <= self.distractor_closeness < 1.0):
            problems.append(
                f"distractor_closeness must be in [0, 1), got {self.distractor_closeness!r}"
            )
        for field in (
            "gap_text",
            "gap_image",
            "content_text",
            "content_image",
            "noise_text",
            "noise_image",
            "aniso_text",
            "aniso_image",
            "query_content",
            "query_noise",
        ):
            value = getattr(self, field)
            if not (_is_number(value) and value >= 0):
                problems.append(f"{field} must be a finite number >= 0, got {value!r}")
        if problems:
            raise ValueError(f"invalid simulator profile {self.name!r}: " + "; ".join(problems))

    @property
    def has_multimodal(self) -> bool:
        """True when the corpus holds multimodal documents (a third kind)."""
        return self.multimodal_share > 0 or self.multimodal_background_share > 0

    def gap(self, modality: str) -> float:
        """The gap strength of ``modality``."""
        return self.gap_text if modality == "text" else self.gap_image

    def content(self, modality: str) -> float:
        """The content strength of ``modality``."""
        return self.content_text if modality == "text" else self.content_image

    def noise(self, modality: str) -> float:
        """The isotropic noise strength of ``modality``."""
        return self.noise_text if modality == "text" else self.noise_image

    def aniso(self, modality: str) -> float:
        """The anisotropic noise strength of ``modality``."""
        return self.aniso_text if modality == "text" else self.aniso_image


_CLIP_LIKE = SimulatorProfile(
    name="clip-like",
    description="CLIP-like modality gap; text queries, half with an image as the relevant item",
    seed=20250101,
    dim=256,
    n_items=4200,
    n_queries=600,
    query_modality="text",
)

PROFILES: dict[str, SimulatorProfile] = {
    p.name: p
    for p in (
        _CLIP_LIKE,
        dataclasses.replace(
            _CLIP_LIKE,
            name="clip-like-image-queries",
            description="the clip-like world, image queries; half the relevant items are texts",
            seed=20250102,
            query_modality="image",
        ),
        dataclasses.replace(
            _CLIP_LIKE,
            name="small-gap",
            description="almost no gap (rho 0.97, equal scales): standardization barely matters",
            seed=20250103,
            gap_text=0.45,
            gap_image=0.45,
            rho=0.97,
            aniso_overlap=1.0,
        ),
        dataclasses.replace(
            _CLIP_LIKE,
            name="hard-distractors",
            description="clip-like plus 8 near-duplicate distractors (latent cos 0.85) per target",
            seed=20250104,
            n_items=8000,
            n_hard_distractors=8,
            distractor_closeness=0.85,
            distractor_cross_share=0.25,
            both_share=0.3,
        ),
        dataclasses.replace(
            _CLIP_LIKE,
            name="clip-like-multimodal",
            description="clip-like plus multimodal documents (text+image mixed, alpha 0.5): a "
            "third of the relevant items each text, image, multimodal",
            seed=20250105,
            multimodal_share=1 / 3,
            multimodal_background_share=1 / 3,
        ),
    )
}

DEFAULT_PROFILE = "clip-like"
