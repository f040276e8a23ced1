"""The 3000-step cross-validation's held-out patients (steps-3000/cv-seed-0/per_subject.csv) with
their sites, read once for the analysis scripts beside it (run from this folder)."""
import collections
import csv

import numpy as np


def load(manifest: str) -> tuple[list[str], np.ndarray, dict[str, dict[str, dict[str, str]]]]:
    """Subjects (sorted), their sites, and each subject's per-method row of the per-patient file."""
    site = {r["subject"]: r["site"] for r in csv.DictReader(open(manifest))}
    methods: dict[str, dict[str, dict[str, str]]] = collections.defaultdict(dict)
    for row in csv.DictReader(open("steps-3000/cv-seed-0/per_subject.csv")):
        methods[row["subject"]][row["method"]] = row
    subjects = sorted(methods)
    return subjects, np.array([site[s] for s in subjects]), methods


def unet_and_baseline(methods: dict, subjects: list[str], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The U-Net's metric per patient, and the better of the two intensity baselines' (per patient)."""
    unet = np.array([float(methods[s]["jax"][metric]) for s in subjects])
    baseline = np.array([max(float(methods[s][b][metric]) for b in ("linear", "histmatch")) for s in subjects])
    return unet, baseline


def site_order(sites: np.ndarray) -> list[str]:
    """Sites by size, largest first, ties by name (not by set order, which changes with the hash seed)."""
    return sorted(set(sites), key=lambda n: (-np.sum(sites == n), n))
