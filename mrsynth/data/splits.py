"""Deterministic train/val/test split by subject (never by slice, so no subject leaks).

Explicit lists (``data.train_subjects`` / ``val_subjects`` / ``test_subjects``) win; subjects
not named in any list are shared out by ``data.split_fractions`` among the splits that have no
list (all three lists given: the rest is unused, with a warning). The fraction split shuffles
the sorted subject ids with ``data.split_seed``, so it depends neither on file order nor on
anything but the subject set and the seed. A manifest whose every row names its split (the
``split`` column ``prepare-ixi`` writes, possibly stratified by site) is used as it is when no
explicit list is configured.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles
from mrsynth.errors import ConfigError

SPLITS = ("train", "val", "test")
T = TypeVar("T")


def split_subjects(pairs: list[SubjectFiles], cfg: DataConfig) -> dict[str, list[SubjectFiles]]:
    """Split subjects into ``{"train", "val", "test"}``, each sorted by subject id."""
    by_id = {p.subject: p for p in pairs}
    explicit = {name: getattr(cfg, f"{name}_subjects") for name in SPLITS}
    if pairs and all(p.split for p in pairs) and all(v is None for v in explicit.values()):
        return {name: [by_id[s] for s in sorted(by_id) if by_id[s].split == name] for name in SPLITS}
    assigned: dict[str, str] = {}
    for name, listed in explicit.items():
        for subject in listed or []:
            if subject not in by_id:
                raise ConfigError(
                    f"data.{name}_subjects: unknown subject {subject!r} (known: {', '.join(sorted(by_id)[:8])}"
                    f"{', ...' if len(by_id) > 8 else ''})"
                )
            if subject in assigned:
                raise ConfigError(f"data.{name}_subjects: {subject!r} is also in data.{assigned[subject]}_subjects")
            assigned[subject] = name
    rest = sorted(s for s in by_id if s not in assigned)
    open_splits = [name for name in SPLITS if explicit[name] is None]
    if rest and not open_splits:
        warnings.warn(f"{len(rest)} subject(s) are in no explicit split list and are unused: {', '.join(rest)}", stacklevel=2)
    elif rest:
        fractions = np.array([cfg.split_fractions[SPLITS.index(n)] for n in open_splits], dtype=np.float64)
        counts = _split_counts(len(rest), fractions)
        order = np.random.default_rng(cfg.split_seed).permutation(len(rest))
        start = 0
        for name, count in zip(open_splits, counts):
            for i in order[start : start + count]:
                assigned[rest[i]] = name
            start += count
    return {name: [by_id[s] for s in sorted(by_id) if assigned.get(s) == name] for name in SPLITS}


def in_turn(queues: Sequence[Sequence[T]]) -> list[T]:
    """One item from each queue in turn (the first of each, then the second, ...) until all are
    used: how a subset of sites' subjects speaks for as many sites as it can."""
    gap = object()
    return [item for turn in itertools.zip_longest(*queues, fillvalue=gap) for item in turn if item is not gap]


def spread_over_sites(subjects: list[SubjectFiles], limit: int) -> list[SubjectFiles]:
    """At most ``limit`` of ``subjects``, taken in turn from each site (sites, and each site's
    subjects, by id), sorted by subject id: a capped validation then speaks for as many sites as
    it can, not for the site whose ids sort first. Without sites: the first ``limit`` by id."""
    by_site: dict[str, list[SubjectFiles]] = {}
    for files in sorted(subjects, key=lambda f: f.subject):
        by_site.setdefault(files.site or "", []).append(files)
    taken = in_turn([by_site[site] for site in sorted(by_site)])[: max(limit, 0)]
    return sorted(taken, key=lambda f: f.subject)


def evenly_spaced(subjects: list[SubjectFiles], limit: int) -> list[SubjectFiles]:
    """At most ``limit`` of ``subjects``, evenly spaced along their id order (all of them when
    they are no more): a capped sample that keeps each site's share where ids group by site, as
    a pooled fit needs, unlike the first ``limit`` by id (the sites whose ids sort first)."""
    ordered = sorted(subjects, key=lambda f: f.subject)
    if len(ordered) <= limit:
        return ordered
    picks = np.round(np.linspace(0, len(ordered) - 1, max(limit, 0))).astype(int)  # distinct: spacing >= 1
    return [ordered[i] for i in picks]


def _split_counts(n: int, fractions: np.ndarray) -> list[int]:
    """Subjects per split: rounded fractions, at least 1 for every split with a fraction > 0
    when there are enough subjects, the first (train) split taking the remainder."""
    if fractions.sum() <= 0:
        fractions = np.ones_like(fractions)
    fractions = fractions / fractions.sum()
    counts = [int(round(f * n)) for f in fractions]
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            counts[i] = max(counts[i], 1)
    # Give the difference to/take it from the largest split, never below the minimum of 1.
    while sum(counts) != n:
        if sum(counts) < n:
            counts[int(np.argmax(fractions))] += 1
        else:
            floors = [1 if (i in positive and n >= len(positive)) else 0 for i in range(len(counts))]
            candidates = [i for i in range(len(counts)) if counts[i] > floors[i]]
            counts[max(candidates, key=lambda i: counts[i])] -= 1
    return counts
