"""A corpus of bad inputs: every user mistake must end in one ``error:`` line, exit 1, no output.

``make_corpus(home, cases)`` trains two tiny runs (torch and JAX, in-process) in ``home``, or
reuses them, and writes each case's files into ``cases/<name>``; each ``Case`` says the command
line and what its error line must mention. ``tests/test_bad_inputs.py`` runs them; the cases are also
a checklist for anyone adding a command. Cases marked ``newer`` cover fixes that landed after
the first corpus (they name the fix so a failure points at it).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from test_training_loop import tiny_overrides, train_tiny_run


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # for mrsynth.cli.main
    mentions: tuple[str, ...]  # what the one error line must contain
    watch: Path  # a folder in which the command must leave no new file and no temporary
    marker: Path | None = None  # a file that hostile input would create: must never exist
    newer: str = ""  # the fix this case waits for, where it is newer than the first corpus


@dataclass
class Corpus:
    """The shared material of the cases: two trained runs and a readable phantom T1 in ``home``
    (read, or copied before a case changes them); the cases' own files go under ``cases``."""

    home: Path
    cases: Path
    torch_run: Path
    jax_run: Path
    t1: Path
    mask: Path
    built: list[Case] = field(default_factory=list)

    def folder(self, name: str) -> Path:
        path = self.cases / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def tiny_sets(root: Path) -> list[str]:
    """``--set`` arguments of the tiny run's settings (test_training_loop's ``tiny_overrides``)."""
    return [a for o in tiny_overrides(root) for a in ("--set", o)]


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def copy_run(corpus: Corpus, run: Path, name: str) -> Path:
    target = corpus.folder(name) / run.name
    if not target.exists():
        shutil.copytree(run, target)
    return target


class WritesMarker:
    """Unpickling this object opens ``marker`` for writing: proof that a loader ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def predict_case(corpus: Corpus, name: str, t1: Path, mentions: tuple[str, ...], newer: str = "") -> Case:
    """predict of one bad T1 with a usable torch run and mask policy: only the input is wrong."""
    out = corpus.folder(name) / "out"
    argv = ["predict", "--checkpoint", str(corpus.torch_run), "--input", str(t1), "--out", str(out),
            "--mask", "nonzero"]
    return Case(name, argv, mentions, corpus.folder(name), newer=newer)


def train_case(corpus: Corpus, name: str, extra: list[str], mentions: tuple[str, ...], marker: Path | None = None,
               newer: str = "") -> Case:
    """train with one bad setting on top of the tiny settings; the run folder must not appear."""
    folder = corpus.folder(name)
    argv = ["train", "--backend", "torch", "--run-dir", str(folder / "run"), *tiny_sets(corpus.home), *extra]
    return Case(name, argv, mentions, folder, marker, newer)


def weights_case(corpus: Corpus, name: str, weights: Path, marker: Path | None = None) -> Case:
    """predict --weights of a bad weight file; the error must name the file."""
    folder = corpus.folder(name)
    argv = ["predict", "--weights", str(weights), "--backend", "torch", "--input", str(corpus.t1), "--out",
            str(folder / "out"), "--mask", "nonzero"]
    return Case(name, argv, (weights.name,), folder, marker)


CASES: dict[str, Callable[[Corpus], Case]] = {}


def case(build: Callable[[Corpus], Case]) -> Callable[[Corpus], Case]:
    CASES[build.__name__] = build
    return build


@case
def missing_file(c: Corpus) -> Case:
    return predict_case(c, "missing_file", c.folder("missing_file") / "IXI999-HH-0001-T1.nii.gz",
                        ("IXI999-HH-0001-T1.nii.gz", "not found"))


@case
def truncated_gz(c: Corpus) -> Case:
    path = c.folder("truncated_gz") / "truncated-T1.nii.gz"
    data = c.t1.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return predict_case(c, "truncated_gz", path, ("truncated-T1.nii.gz",))


@case
def not_nifti(c: Corpus) -> Case:
    path = c.folder("not_nifti") / "notes-T1.nii.gz"
    path.write_text("this is a text file, not an image\n")
    return predict_case(c, "not_nifti", path, ("notes-T1.nii.gz",))


@case
def volume_4d(c: Corpus) -> Case:
    path = save_nifti(c.folder("volume_4d") / "fmri-T1.nii.gz", np.ones((8, 8, 8, 3), np.float32))
    return predict_case(c, "volume_4d", path, ("fmri-T1.nii.gz", "3D"))


@case
def nan_voxels(c: Corpus) -> Case:
    image = nib.load(str(c.t1))
    data = np.asarray(image.dataobj, np.float32).copy()
    data[5, 5, 5] = np.nan
    path = save_nifti(c.folder("nan_voxels") / "nan-T1.nii.gz", data, image.affine)
    return predict_case(c, "nan_voxels", path, ("nan-T1.nii.gz", "NaN"))


@case
def constant_volume(c: Corpus) -> Case:
    path = save_nifti(c.folder("constant_volume") / "flat-T1.nii.gz", np.full((32, 32, 24), 7.0, np.float32))
    return predict_case(c, "constant_volume", path, ("flat-T1.nii.gz",))


@case
def huge_header(c: Corpus) -> Case:
    """A header claiming 30000^3 float32 voxels (108 TB) over 64 bytes: refuse before allocating."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    header.set_data_offset(352)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    path = c.folder("huge_header") / "huge-T1.nii"
    path.write_bytes(header.binaryblock + bytes(4) + bytes(64))
    return predict_case(c, "huge_header", path, ("huge-T1.nii",), newer="predict refuses oversized headers")


@case
def grids_not_aligned(c: Corpus) -> Case:
    """A T2 whose field of view is 10 km from its T1's: the pair cannot be aligned by affines."""
    data = c.folder("grids_not_aligned") / "data"
    data.mkdir(exist_ok=True)
    for path in sorted((c.home / "phantom").glob("IXI*-T[12].nii.gz")) + sorted((c.home / "phantom").glob("IXI*-mask.nii.gz")):
        shutil.copyfile(path, data / path.name)
    t2 = data / "IXI901-Phantom-0001-T2.nii.gz"
    image = nib.load(str(t2))
    affine = image.affine.copy()
    affine[:3, 3] += 10_000.0
    save_nifti(t2, np.asarray(image.dataobj), affine)
    return train_case(c, "grids_not_aligned", ["--set", "data.source=ixi", "--set", f"data.root={data}",
                                                "--set", f"data.cache_dir={c.folder('grids_not_aligned') / 'cache'}"],
                      ("IXI901-Phantom-0001-T2.nii.gz", "overlap"))


@case
def unknown_config_key(c: Corpus) -> Case:
    return train_case(c, "unknown_config_key", ["--set", "model.widht=8"], ("model.widht",))


@case
def wrong_config_type(c: Corpus) -> Case:
    return train_case(c, "wrong_config_type", ["--set", "train.steps=many"], ("train.steps",))


@case
def yaml_python_tag(c: Corpus) -> Case:
    folder = c.folder("yaml_python_tag")
    marker = folder / "MARKER"
    config = folder / "evil.yaml"
    config.write_text(f'train:\n  steps: !!python/object/apply:os.system ["touch {marker}"]\n')
    return train_case(c, "yaml_python_tag", ["--config", str(config)], ("evil.yaml",), marker)


@case
def in_channels(c: Corpus) -> Case:
    return train_case(c, "in_channels", ["--set", "model.in_channels=3"], ("model.in_channels",))


@case
def pickle_as_weights(c: Corpus) -> Case:
    folder = c.folder("pickle_as_weights")
    marker = folder / "MARKER"
    evil = folder / "model.pt"
    torch.save({"model": WritesMarker(marker)}, evil)
    return weights_case(c, "pickle_as_weights", evil, marker)


@case
def pickle_in_checkpoints(c: Corpus) -> Case:
    folder = c.folder("pickle_in_checkpoints")
    marker = folder / "MARKER"
    run = copy_run(c, c.torch_run, "pickle_in_checkpoints")
    for path in (run / "checkpoints").glob("*.pt"):
        torch.save({"format": "mrsynth-torch-checkpoint", "model": WritesMarker(marker)}, path)
    argv = ["export", "--checkpoint", str(run), "--out", str(folder / "out" / "model.safetensors")]
    return Case("pickle_in_checkpoints", argv, ("best.pt",), folder, marker)


@case
def corrupt_safetensors(c: Corpus) -> Case:
    folder = c.folder("corrupt_safetensors")
    path = folder / "model.safetensors"
    data = bytearray((c.torch_run / "model.safetensors").read_bytes())
    data[8:40] = b"\xff" * 32  # inside the JSON header
    path.write_bytes(bytes(data[: len(data) // 2]))
    return weights_case(c, "corrupt_safetensors", path)


@case
def not_a_run(c: Corpus) -> Case:
    folder = c.folder("not_a_run")
    fake = folder / "holiday_photos"
    fake.mkdir(exist_ok=True)
    (fake / "beach.jpg").write_bytes(b"\xff\xd8\xff")
    argv = ["predict", "--checkpoint", str(fake), "--input", str(c.t1), "--out", str(folder / "out"),
            "--mask", "nonzero"]
    return Case("not_a_run", argv, ("holiday_photos",), folder)


@case
def predict_without_mask(c: Corpus) -> Case:
    folder = c.folder("predict_without_mask")
    argv = ["predict", "--checkpoint", str(c.torch_run), "--input", str(c.t1), "--out", str(folder / "out")]
    return Case("predict_without_mask", argv, ("--mask", "--skull-strip"), folder)


@case
def uncertainty_without_tta(c: Corpus) -> Case:
    folder = c.folder("uncertainty_without_tta")
    argv = ["predict", "--checkpoint", str(c.torch_run), "--input", str(c.t1), "--out", str(folder / "out"),
            "--mask", str(c.mask), "--uncertainty"]
    return Case("uncertainty_without_tta", argv, ("--uncertainty", "--tta flip"), folder)


@case
def predict_out_is_a_file(c: Corpus) -> Case:
    folder = c.folder("predict_out_is_a_file")
    target = folder / "results.txt"
    target.write_text("keep me\n")
    argv = ["predict", "--checkpoint", str(c.torch_run), "--input", str(c.t1), "--out", str(target),
            "--mask", "nonzero"]
    return Case("predict_out_is_a_file", argv, ("results.txt",), folder, newer="--out onto a regular file")


@case
def export_parent_is_a_file(c: Corpus) -> Case:
    folder = c.folder("export_parent_is_a_file")
    (folder / "weights").write_text("a file where a folder should be\n")
    argv = ["export", "--checkpoint", str(c.torch_run), "--out", str(folder / "weights" / "model.safetensors")]
    return Case("export_parent_is_a_file", argv, ("weights",), folder, newer="export --out under a file")


@case
def resume_with_other_backend(c: Corpus) -> Case:
    run = copy_run(c, c.jax_run, "resume_with_other_backend")
    argv = ["train", "--resume", str(run), "--backend", "torch"]
    return Case("resume_with_other_backend", argv, ("jax", "torch"), run.parent,
                newer="resume refuses a different --backend")


@case
def resume_without_checkpoint(c: Corpus) -> Case:
    run = copy_run(c, c.torch_run, "resume_without_checkpoint")
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    (run / "model.safetensors").unlink(missing_ok=True)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running", "steps_done": 0}))  # killed early
    return Case("resume_without_checkpoint", ["train", "--resume", str(run)], ("checkpoint",), run.parent,
                newer="resume of a run without a checkpoint")


def prepare(home: Path, cases: Path) -> Corpus:
    """The two tiny runs the cases share, trained in ``home`` unless they are there (the test
    passes the session's ``tiny_run`` home, so they are trained once per worker)."""
    home = Path(home)
    torch_run = train_tiny_run(home, "torch")
    jax_run = train_tiny_run(home, "jax")
    phantom = home / "phantom"
    return Corpus(home, Path(cases), torch_run, jax_run, phantom / "IXI901-Phantom-0001-T1.nii.gz",
                  phantom / "IXI901-Phantom-0001-mask.nii.gz")


def make_corpus(home: Path, cases: Path) -> list[Case]:
    """Every case, its files written under ``cases``."""
    corpus = prepare(home, cases)
    return [build(corpus) for build in CASES.values()]
