"""Offline simulator of mixed text+image retrieval with a CLIP-like modality gap (numpy only).

CLIP-style encoders put texts and images in one space, but each modality lives in its own narrow
cone: a text query scores every text passage around 0.5 and every image around 0.15, so a plain
cosine merge of a mixed corpus is flooded by texts even when the relevant item is an image. This
module generates seeded, deterministic embedding sets with that geometry, so the standardization
method (and every other fusion method) can be demonstrated, benchmarked and tested without a model
or a dataset.

Generative model
----------------
Each latent item ``i`` has content ``z_i``, uniform on the unit sphere of ``R^d``. Its embedding in
modality ``m`` is::

    normalise(gap_m * g_m + content_m * z_i + noise_m * e + aniso_m * sum_j w_j * c_j * u_m_j)

``g_m`` is a fixed unit "modality direction" (``cos(g_text, g_image) = rho``), ``e`` isotropic
Gaussian noise (expected norm 1), and ``u_m_j`` a few fixed orthonormal directions with Gaussian
coefficients ``c_j`` and decaying weights ``w_j``: much more variance than any other direction
(anisotropy, as in real CLIP embeddings). Queries are views of a target item in the query
modality with their own noise and a per-query content strength (vague queries match worse). Each
query has exactly one relevant corpus row: the target item's row in its target modality (the
other modality for a ``cross_modal_share`` of the queries); a target item has no row in the other
modality. Background items get a text, an image or both; hard distractors are items whose latent
is a perturbation of a target's latent (cosine ``distractor_closeness``), mostly stored in the
target's modality.

Multimodal documents (profile ``clip-like-multimodal``): with ``multimodal_share > 0`` or
``multimodal_background_share > 0`` the corpus gets a third kind, "multimodal": an item's text and
image embeddings (drawn as above) mixed as ``normalise(alpha * t + (1 - alpha) * v)``, the way
GR-CLIP's MixBench builds an image+text document. A ``multimodal_share`` of the query targets
(taken from both of the other kinds) has its relevant row there, and a
``multimodal_background_share`` of the background items is stored only as such a document. A
hard distractor follows its target's kind (a flipped multimodal one is stored as text). With both
shares 0 (every other profile) no extra random number is drawn: those profiles stay bit-identical.

Use :func:`simulate` with a name from :data:`PROFILES` (see :func:`profile_table`) or with a
:class:`SimulatorProfile`; :meth:`SimulatedData.write` writes the files ``mmgap eval`` reads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .simulator_profiles import (  # noqa: F401 - re-exported
    DEFAULT_PROFILE,
    KINDS,
    MODALITIES,
    PROFILES,
    SimulatorProfile,
    _is_number,
)


@dataclass
class SimulatedData:
    """One simulated retrieval set. Row numbers are the ids (``qrels`` and :meth:`write` use them).

    Attributes
    ----------
    profile : str
        The profile's name.
    queries : numpy.ndarray
        ``[Q, d]`` float32 unit rows.
    query_modality : str
        The modality of the queries.
    corpus : numpy.ndarray
        ``[N, d]`` float32 unit rows.
    modalities : numpy.ndarray
        ``[N]`` str, each corpus row's kind.
    qrels : numpy.ndarray
        ``[n, 3]`` int64 rows of (query row, corpus row, relevance > 0).
    target_modality : numpy.ndarray
        ``[Q]`` str, the kind of each query's relevant row.
    corpus_items : numpy.ndarray, optional
        ``[N]`` int64 latent item of each corpus row (not part of the file formats): two rows
        sharing an item are the text and the image of the same thing.
    """

    profile: str
    queries: np.ndarray  # [Q, d] float32, unit rows
    query_modality: str
    corpus: np.ndarray  # [N, d] float32, unit rows
    modalities: np.ndarray  # [N] str
    qrels: np.ndarray  # [n, 3] int64 (query row, corpus row, relevance > 0)
    target_modality: np.ndarray  # [Q] str
    corpus_items: np.ndarray | None = None  # [N] int64

    @property
    def relevant_rows(self) -> np.ndarray:
        """[Q] corpus row of each query's relevant item (the simulator gives exactly one)."""
        rows = np.full(self.queries.shape[0], -1, dtype=np.int64)
        rows[self.qrels[:, 0]] = self.qrels[:, 1]
        return rows

    def score_statistics(self) -> dict[str, float]:
        """Mean raw cosines that characterise the modality gap, by name.

        Returns
        -------
        dict of str to float
            ``query_vs_random_<m>``: queries against the rows of modality ``m`` that are not their
            relevant row; ``query_vs_relevant_<m>``: queries against their relevant row, where it
            has modality ``m``; ``paired_text_image``: the text row against the image row of one
            item. NaN when empty.
        """
        scores = self.queries.astype(np.float64) @ self.corpus.T.astype(np.float64)
        relevant = np.zeros(scores.shape, dtype=bool)
        relevant[self.qrels[:, 0], self.qrels[:, 1]] = True
        out: dict[str, float] = {}
        kinds = [k for k in KINDS if k in MODALITIES or (self.modalities == k).any()]
        for m in kinds:
            cols = self.modalities == m
            rand = scores[:, cols][~relevant[:, cols]]
            out[f"query_vs_random_{m}"] = float(rand.mean()) if rand.size else float("nan")
            rel = scores[relevant & cols[None, :]]
            out[f"query_vs_relevant_{m}"] = float(rel.mean()) if rel.size else float("nan")
        out["paired_text_image"] = float("nan")
        if self.corpus_items is not None:
            # Row of each item's image (-1: none), looked up for every text row.
            image_row = np.full(int(self.corpus_items.max()) + 1, -1, dtype=np.int64)
            is_image = self.modalities == "image"
            image_row[self.corpus_items[is_image]] = np.flatnonzero(is_image)
            text_rows = np.flatnonzero(self.modalities == "text")
            partner = image_row[self.corpus_items[text_rows]]
            has = partner >= 0
            if has.any():
                cos = np.einsum(
                    "ij,ij->i",
                    self.corpus[text_rows[has]].astype(np.float64),
                    self.corpus[partner[has]].astype(np.float64),
                )
                out["paired_text_image"] = float(cos.mean())
        return out

    def write(self, directory) -> dict[str, Path]:
        """Write the ``mmgap eval`` input files into ``directory`` (created if missing).

        ``queries.npy`` (float32 [Q, d]), ``corpus.npy`` (float32 [N, d]), ``modality.txt`` (one
        label per corpus row) and ``qrels.tsv`` (TREC qrels, tab-separated
        ``query_id 0 doc_id relevance``; ids are row numbers).

        Parameters
        ----------
        directory : str or os.PathLike

        Returns
        -------
        dict of str to Path
            The paths by kind: ``queries``, ``corpus``, ``modality``, ``qrels``.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "queries": out / "queries.npy",
            "corpus": out / "corpus.npy",
            "modality": out / "modality.txt",
            "qrels": out / "qrels.tsv",
        }
        np.save(paths["queries"], np.ascontiguousarray(self.queries, dtype=np.float32))
        np.save(paths["corpus"], np.ascontiguousarray(self.corpus, dtype=np.float32))
        paths["modality"].write_text("".join(f"{m}\n" for m in self.modalities), encoding="utf-8")
        paths["qrels"].write_text(
            "".join(f"{int(q)}\t0\t{int(d)}\t{int(r)}\n" for q, d, r in self.qrels),
            encoding="utf-8",
        )
        return paths


def profile_table() -> str:
    """One line per profile: its name and description (for ``mmgap bench --list``)."""
    width = max(len(n) for n in PROFILES)
    lines = []
    for name, p in PROFILES.items():
        default = " [default]" if name == DEFAULT_PROFILE else ""
        lines.append(f"{name:<{width}}  {p.description}{default}")
    return "\n".join(lines)


def _resolve(profile: str | SimulatorProfile) -> SimulatorProfile:
    if isinstance(profile, SimulatorProfile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    raise ValueError(
        f"unknown simulator profile {profile!r}; known profiles: {', '.join(PROFILES)}"
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _World:
    """Fixed geometry of one profile: modality directions and their dominant noise directions."""

    def __init__(self, p: SimulatorProfile, rng: np.random.Generator):
        self.p = p
        d = p.dim
        basis, _ = np.linalg.qr(rng.standard_normal((d, 2 + 2 * p.aniso_rank)))
        g_text = basis[:, 0]
        g_image = p.rho * g_text + math.sqrt(max(1.0 - p.rho * p.rho, 0.0)) * basis[:, 1]
        self.direction = {"text": g_text, "image": g_image}
        r = p.aniso_rank
        own_text, own_image = basis[:, 2 : 2 + r], basis[:, 2 + r : 2 + 2 * r]
        ov = p.aniso_overlap
        self.aniso_dirs = {
            "text": own_text,
            "image": ov * own_text + math.sqrt(1.0 - ov * ov) * own_image,
        }
        # Decaying scales over the dominant directions, normalised to an expected norm of 1.
        w = 1.0 / np.sqrt(np.arange(1, r + 1))
        self.aniso_weights = w / math.sqrt(float((w * w).sum())) if r else w

    def embed(self, modality, latent, content, noise, rng) -> np.ndarray:
        """normalise(gap * g + content * z + isotropic + anisotropic noise); content: scalar/[n]."""
        p, (n, d) = self.p, latent.shape
        x = p.gap(modality) * self.direction[modality][None, :]
        x = x + np.reshape(content, (-1, 1)) * latent
        x = x + rng.standard_normal((n, d)) * (noise / math.sqrt(d))
        if p.aniso_rank:
            coef = rng.standard_normal((n, p.aniso_rank)) * (p.aniso(modality) * self.aniso_weights)
            x = x + coef @ self.aniso_dirs[modality].T
        return _unit_rows(x)


def simulate(profile: str | SimulatorProfile = DEFAULT_PROFILE) -> SimulatedData:
    """Generate the retrieval set of a profile.

    Deterministic: the same profile gives bit-identical arrays. Corpus rows are shuffled so the
    modalities interleave; each query has exactly one relevant row.

    Parameters
    ----------
    profile : str or SimulatorProfile, default "clip-like"
        A name in :data:`PROFILES`, or a profile object.

    Returns
    -------
    SimulatedData

    Raises
    ------
    ValueError
        For an unknown profile name.
    """
    p = _resolve(profile)
    rng = np.random.default_rng(p.seed)
    world = _World(p, rng)
    d, n_q, qm = p.dim, p.n_queries, p.query_modality
    other = "image" if qm == "text" else "text"

    latent = _unit_rows(rng.standard_normal((p.n_items, d)))
    # Items 0..Q-1 are the query targets; next come each target's hard distractors.
    n_cross = round(p.cross_modal_share * n_q)
    target_mod = np.full(n_q, qm, dtype=object)
    target_mod[rng.permutation(n_q)[:n_cross]] = other
    if p.has_multimodal:  # drawn only here, so two-kind profiles keep their random stream
        target_mod[rng.permutation(n_q)[: round(p.multimodal_share * n_q)]] = "multimodal"
    n_dis = p.n_hard_distractors
    dis_items = n_q + np.arange(n_q * n_dis)
    dis_target = np.repeat(np.arange(n_q), n_dis)
    if n_dis:
        c = p.distractor_closeness
        tgt = latent[dis_target]
        # Orthogonal unit perturbation, so cos(latent, target latent) is exactly `closeness`.
        w = latent[dis_items] - np.einsum("ij,ij->i", latent[dis_items], tgt)[:, None] * tgt
        latent[dis_items] = c * tgt + math.sqrt(1.0 - c * c) * _unit_rows(w)

    # Which (item, modality) rows the corpus holds.
    dis_mod = target_mod[dis_target].copy()
    flip = rng.random(dis_items.size) < p.distractor_cross_share
    dis_mod[flip] = np.where(dis_mod[flip] == "text", "image", "text")
    bg = np.arange(n_q * (1 + n_dis), p.n_items)
    u = rng.random(bg.size)
    bg_both = u < p.both_share
    bg_text_only = ~bg_both & (rng.random(bg.size) < 0.5)
    bg_multi = np.zeros(bg.size, dtype=bool)
    if p.has_multimodal:
        bg_multi = rng.random(bg.size) < p.multimodal_background_share
    items_of = {
        "text": np.concatenate(
            [
                np.flatnonzero(target_mod == "text"),
                dis_items[dis_mod == "text"],
                bg[(bg_both | bg_text_only) & ~bg_multi],
            ]
        ),
        "image": np.concatenate(
            [
                np.flatnonzero(target_mod == "image"),
                dis_items[dis_mod == "image"],
                bg[(bg_both | ~bg_text_only) & ~bg_multi],
            ]
        ),
    }
    rows, labels, items = [], [], []
    for m in MODALITIES:
        idx = items_of[m]
        rows.append(world.embed(m, latent[idx], p.content(m), p.noise(m), rng))
        labels.append(np.full(idx.size, m, dtype=object))
        items.append(idx)
    if p.has_multimodal:
        idx = np.concatenate(
            [
                np.flatnonzero(target_mod == "multimodal"),
                dis_items[dis_mod == "multimodal"],
                bg[bg_multi],
            ]
        )
        t = world.embed("text", latent[idx], p.content("text"), p.noise("text"), rng)
        v = world.embed("image", latent[idx], p.content("image"), p.noise("image"), rng)
        rows.append(_unit_rows(p.alpha * t + (1.0 - p.alpha) * v))
        labels.append(np.full(idx.size, "multimodal", dtype=object))
        items.append(idx)
    corpus = np.concatenate(rows)
    modalities = np.concatenate(labels)
    corpus_items = np.concatenate(items).astype(np.int64)
    order = rng.permutation(corpus.shape[0])
    corpus, modalities, corpus_items = corpus[order], modalities[order], corpus_items[order]

    spread = p.query_content_spread
    q_content = p.query_content * rng.uniform(1.0 - spread, 1.0 + spread, n_q)
    queries = world.embed(qm, latent[:n_q], q_content, p.query_noise, rng)

    # Each target item has exactly one corpus row: the one of its target modality.
    is_target = corpus_items < n_q
    rel_rows = np.empty(n_q, dtype=np.int64)
    rel_rows[corpus_items[is_target]] = np.flatnonzero(is_target)
    qrels = np.stack(
        [np.arange(n_q, dtype=np.int64), rel_rows, np.ones(n_q, dtype=np.int64)], axis=1
    )

    return SimulatedData(
        profile=p.name,
        queries=queries.astype(np.float32),
        query_modality=qm,
        corpus=corpus.astype(np.float32),
        modalities=modalities.astype(str),
        qrels=qrels,
        target_modality=target_mod.astype(str),
        corpus_items=corpus_items,
    )


_SIM_TEXT = re.compile(r"^simulated (text|query) #(\d+)$")
_SIM_IMAGE = re.compile(rb"^simulated image #(\d+)$")


class SimulatedEncoder:
    """An offline stand-in for a CLIP model: it "embeds" the named items of one simulated dataset.

    Texts ``"simulated text #R"`` and images given as the bytes ``b"simulated image #R"`` map to
    corpus row ``R`` of :func:`simulate` (``profile``); ``"simulated query #Q"`` maps to query
    ``Q``. Anything else is a failure with a reason. It implements
    :class:`mmgap_core.encoders.Encoder`, so the engine, the CLI and the adapters run unchanged
    where no pretrained weights can be loaded (demo, notebook).

    Parameters
    ----------
    profile : str or SimulatorProfile, default "clip-like"
        The simulated dataset.
    """

    def __init__(self, profile: str | SimulatorProfile = DEFAULT_PROFILE):
        self._profile = _resolve(profile)
        self.data = simulate(self._profile)
        self.model_id = f"simulator:{self.data.profile}"
        self.dim = int(self.data.corpus.shape[1])

    def spec(self) -> dict:
        """How to rebuild this encoder later, as recorded in a store's manifest.

        Returns
        -------
        dict
            ``{"kind": "simulated", "profile": NAME}`` for a profile of :data:`PROFILES`, else
            ``{"kind": "simulated", "profile": {...}}`` with every :class:`SimulatorProfile` field,
            so ``SimulatedEncoder(SimulatorProfile(**spec["profile"]))`` rebuilds it.
        """
        if PROFILES.get(self._profile.name) == self._profile:
            return {"kind": "simulated", "profile": self._profile.name}
        return {"kind": "simulated", "profile": dataclasses.asdict(self._profile)}

    def corpus(self) -> tuple[list[str], list[bytes]]:
        """The simulated corpus, in the forms this encoder reads.

        Returns
        -------
        (list of str, list of bytes)
            The texts and the images.
        """
        rows = np.arange(self.data.corpus.shape[0])
        texts = [f"simulated text #{r}" for r in rows[self.data.modalities == "text"]]
        images = [f"simulated image #{r}".encode() for r in rows[self.data.modalities == "image"]]
        return texts, images

    def queries(self) -> list[str]:
        """The simulated queries, ``"simulated query #Q"``, in row order."""
        return [f"simulated query #{q}" for q in range(self.data.queries.shape[0])]

    def relevant_row(self, query: str) -> int:
        """Corpus row of a simulated query's relevant item.

        Raises
        ------
        ValueError
            When ``query`` is not a simulated query.
        """
        m = _SIM_TEXT.match(query)
        if not m or m.group(1) != "query":
            raise ValueError(f"not a simulated query: {query!r}")
        return int(self.data.relevant_rows[int(m.group(2))])

    def _lookup(self, kind: str, row: int) -> np.ndarray | None:
        table = self.data.queries if kind == "query" else self.data.corpus
        if row >= table.shape[0]:
            return None
        if kind in ("text", "image") and self.data.modalities[row] != kind:
            return None
        return table[row]

    def _embed(self, items, modality: str, strict: bool):
        from .encoders.base import EmbeddingSet

        rows, indices, failures = [], [], {}
        for i, item in enumerate(items):
            if modality == "text":
                m = _SIM_TEXT.match(item) if isinstance(item, str) else None
                key = (m.group(1), int(m.group(2))) if m else None
            else:
                m = _SIM_IMAGE.match(item) if isinstance(item, (bytes, bytearray)) else None
                key = ("image", int(m.group(1))) if m else None
            vec = self._lookup(*key) if key else None
            if vec is None:
                failures[i] = f"not a {modality} of simulated profile {self.data.profile!r}"
                continue
            rows.append(vec)
            indices.append(i)
        if strict and failures:
            raise ValueError(f"cannot embed {len(failures)} {modality}(s): {failures}")
        vectors = np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)
        return EmbeddingSet(
            vectors, self.model_id, modality, np.asarray(indices, dtype=np.int64), failures
        )

    def embed_texts(self, texts, *, batch_size=None, progress=False, strict=False):
        """Embed simulated texts and queries (see the class); other texts are failures."""
        return self._embed(list(texts), "text", strict)

    def embed_images(self, images, *, batch_size=None, progress=False, strict=False):
        """Embed simulated images (see the class); other images are failures."""
        return self._embed(list(images), "image", strict)

    def embed_query_text(self, text: str) -> np.ndarray:
        """One simulated text or query's vector; ``ValueError`` for anything else."""
        out = self._embed([text], "text", strict=True)
        return out.vectors[0]

    def embed_query_image(self, image) -> np.ndarray:
        """One simulated image's vector; ``ValueError`` for anything else."""
        return self._embed([image], "image", strict=True).vectors[0]
