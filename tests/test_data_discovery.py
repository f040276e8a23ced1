"""Pairing by subject id for every layout, and the subject split."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles, discover_pairs
from mrsynth.data.splits import evenly_spaced, split_subjects, spread_over_sites
from mrsynth.errors import ConfigError, DataError

VOX = np.zeros((4, 4, 4), np.float32)


def _touch_all(root: Path, names: list[str], write) -> None:
    for name in names:
        write(root / name, VOX)


def test_ixi_pairs_by_subject_not_by_sorted_position(tmp_path, write_nifti_file):
    # T1 and T2 in separate folders (as the IXI tarballs unpack), different sites and an extra
    # T2 whose sorted position would shift a positional pairing.
    _touch_all(tmp_path / "IXI-T1", ["IXI012-HH-1211-T1.nii.gz", "IXI002-Guys-0828-T1.nii.gz"], write_nifti_file)
    _touch_all(
        tmp_path / "IXI-T2",
        ["IXI002-Guys-0828-T2.nii.gz", "IXI005-IOP-0001-T2.nii.gz", "IXI012-HH-1211-T2.nii.gz"],
        write_nifti_file,
    )
    _touch_all(tmp_path / "IXI-T1", ["IXI002-Guys-0828-mask.nii.gz", "IXI002-Guys-0828-labels.nii.gz"], write_nifti_file)
    with pytest.warns(UserWarning, match=r"IXI005 \(T2 only\)"):
        pairs = discover_pairs(DataConfig(source="ixi", root=str(tmp_path)))
    assert [p.subject for p in pairs] == ["IXI002", "IXI012"]
    first, second = pairs
    assert first.t1.name == "IXI002-Guys-0828-T1.nii.gz" and first.t2.name == "IXI002-Guys-0828-T2.nii.gz"
    assert first.mask.name.endswith("-mask.nii.gz") and first.labels.name.endswith("-labels.nii.gz")
    assert first.site == "Guys" and second.site == "HH"
    assert second.t2.name == "IXI012-HH-1211-T2.nii.gz" and second.mask is None


def test_unpaired_t1_is_reported_and_duplicates_left_out(tmp_path, write_nifti_file):
    _touch_all(
        tmp_path,
        ["IXI001-Guys-0001-T1.nii.gz", "IXI001-Guys-0001-T2.nii.gz", "IXI003-HH-0003-T1.nii.gz",
         "IXI004-HH-0004-T1.nii.gz", "IXI004-HH-0004-T2.nii.gz", "copy/IXI004-HH-0004-T2.nii.gz"],
        write_nifti_file,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = discover_pairs(DataConfig(source="ixi", root=str(tmp_path)))
    messages = " | ".join(str(w.message) for w in caught)
    assert "IXI003 (T1 only)" in messages
    assert "duplicate" in messages and "IXI004" in messages
    assert [p.subject for p in pairs] == ["IXI001"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1_too = discover_pairs(DataConfig(source="ixi", root=str(tmp_path)), require_t2=False)
    assert [(p.subject, p.t2 is None) for p in t1_too] == [("IXI001", False), ("IXI003", True)]


def test_course_layout(tmp_path, write_nifti_file):
    _touch_all(
        tmp_path,
        ["IXI162-HH-1548-T2_reg_fcm.nii.gz", "IXI162-HH-1548-T1_fcm.nii.gz", "IXI035-IOP-0873-T1_fcm.nii.gz",
         "IXI035-IOP-0873-T2_reg_fcm.nii.gz", "IXI035-IOP-0873-T1.nii.gz"],
        write_nifti_file,
    )
    pairs = discover_pairs(DataConfig(source="course", root=str(tmp_path)))
    assert [(p.subject, p.site, p.t1.name, p.t2.name) for p in pairs] == [
        ("IXI035", "IOP", "IXI035-IOP-0873-T1_fcm.nii.gz", "IXI035-IOP-0873-T2_reg_fcm.nii.gz"),
        ("IXI162", "HH", "IXI162-HH-1548-T1_fcm.nii.gz", "IXI162-HH-1548-T2_reg_fcm.nii.gz"),
    ]


def test_manifest_paths_are_relative_to_the_csv(tmp_path, write_nifti_file):
    _touch_all(tmp_path / "vols", ["b_t1.nii.gz", "b_t2.nii.gz", "a_t1.nii.gz", "a_t2.nii.gz", "a_m.nii.gz"], write_nifti_file)
    manifest = tmp_path / "lists" / "pairs.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "subject,t1,t2,mask\nsubB,../vols/b_t1.nii.gz,../vols/b_t2.nii.gz,\nsubA,../vols/a_t1.nii.gz,../vols/a_t2.nii.gz,../vols/a_m.nii.gz\n"
    )
    pairs = discover_pairs(DataConfig(source="manifest", manifest=str(manifest)))
    assert pairs == [
        SubjectFiles("subA", manifest.parent / "../vols/a_t1.nii.gz", manifest.parent / "../vols/a_t2.nii.gz",
                     mask=manifest.parent / "../vols/a_m.nii.gz"),
        SubjectFiles("subB", manifest.parent / "../vols/b_t1.nii.gz", manifest.parent / "../vols/b_t2.nii.gz"),
    ]
    manifest.write_text("subject,t1,t2\nsubC,../vols/c_t1.nii.gz,../vols/b_t2.nii.gz\n")
    with pytest.raises(DataError, match=r"c_t1\.nii\.gz: file not found.*line 2"):
        discover_pairs(DataConfig(source="manifest", manifest=str(manifest)))


def test_manifest_split_and_site_columns_fix_the_split(tmp_path, write_nifti_file, monkeypatch):
    names = [f"{s}_{r}.nii.gz" for s in "abcd" for r in ("t1", "t2")]
    _touch_all(tmp_path, names, write_nifti_file)
    rows = [("a", "train", "HH"), ("b", "train", "IOP"), ("c", "val", "HH"), ("d", "test", "Guys")]
    (tmp_path / "manifest.csv").write_text("subject,t1,t2,site,split\n" + "".join(
        f"{s},{s}_t1.nii.gz,{s}_t2.nii.gz,{site},{split}\n" for s, split, site in rows))
    monkeypatch.chdir(tmp_path.parent)  # a relative data.manifest is also found under data.root
    cfg = DataConfig(source="manifest", root=str(tmp_path), manifest="manifest.csv")
    pairs = discover_pairs(cfg)
    assert [(p.subject, p.split, p.site) for p in pairs] == [(s, split, site) for s, split, site in rows]
    splits = split_subjects(pairs, cfg)
    assert {k: [p.subject for p in v] for k, v in splits.items()} == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    # An explicit list in the config still wins over the manifest's column.
    override = DataConfig(source="manifest", root=str(tmp_path), manifest="manifest.csv", test_subjects=["a"])
    assert [p.subject for p in split_subjects(pairs, override)["test"]] == ["a"]
    (tmp_path / "manifest.csv").write_text("subject,t1,t2,split\na,a_t1.nii.gz,a_t2.nii.gz,holdout\n")
    with pytest.raises(DataError, match="split 'holdout'"):
        discover_pairs(cfg)


def test_glob_subject_is_the_star_part(tmp_path, write_nifti_file):
    _touch_all(
        tmp_path,
        ["sub-02/anat/sub-02_T1w.nii.gz", "sub-02/anat/sub-02_T2w.nii.gz", "sub-01/anat/sub-01_T2w.nii.gz",
         "sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_mask.nii.gz"],
        write_nifti_file,
    )
    cfg = DataConfig(source="glob", root=str(tmp_path), t1_glob="sub-*/anat/sub-*_T1w.nii.gz",
                     t2_glob="sub-*/anat/sub-*_T2w.nii.gz", mask_glob="sub-*/anat/sub-*_mask.nii.gz")
    pairs = discover_pairs(cfg)
    assert [p.subject for p in pairs] == ["01", "02"]
    assert pairs[0].t2 == tmp_path / "sub-01/anat/sub-01_T2w.nii.gz" and pairs[0].mask is not None
    assert pairs[1].t1 == tmp_path / "sub-02/anat/sub-02_T1w.nii.gz" and pairs[1].mask is None


def test_missing_folder_and_no_pairs_name_the_folder(tmp_path, write_nifti_file):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        discover_pairs(DataConfig(source="ixi", root=str(tmp_path / "nowhere")))
    write_nifti_file(tmp_path / "scan.nii.gz", VOX)
    with pytest.raises(DataError, match=f"{tmp_path}: no T1/T2 pairs found"):
        discover_pairs(DataConfig(source="ixi", root=str(tmp_path)))


def _pairs(n: int) -> list[SubjectFiles]:
    return [SubjectFiles(f"S{i:02d}", Path(f"{i}_t1.nii"), Path(f"{i}_t2.nii")) for i in range(n)]


def test_split_is_deterministic_disjoint_and_order_independent():
    cfg = DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=7)
    pairs = _pairs(10)
    split = split_subjects(pairs, cfg)
    names = {k: [p.subject for p in v] for k, v in split.items()}
    assert [len(names[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum(names.values(), [])) == [p.subject for p in pairs]
    shuffled = [pairs[i] for i in np.random.default_rng(0).permutation(10)]
    assert {k: [p.subject for p in v] for k, v in split_subjects(shuffled, cfg).items()} == names
    other_seed = split_subjects(pairs, DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=8))
    assert {k: [p.subject for p in v] for k, v in other_seed.items()} != names


@pytest.mark.parametrize("n", [3, 4, 5])
def test_few_subjects_still_give_val_and_test(n):
    split = split_subjects(_pairs(n), DataConfig(split_fractions=(0.8, 0.1, 0.1)))
    assert len(split["val"]) >= 1 and len(split["test"]) >= 1 and len(split["train"]) >= 1
    assert sum(len(v) for v in split.values()) == n


def test_explicit_lists_win_and_unknown_names_fail():
    cfg = DataConfig(test_subjects=["S03"], val_subjects=["S00"])
    split = split_subjects(_pairs(5), cfg)
    assert [p.subject for p in split["test"]] == ["S03"]
    assert [p.subject for p in split["val"]] == ["S00"]
    assert [p.subject for p in split["train"]] == ["S01", "S02", "S04"]
    with pytest.raises(ConfigError, match="data.val_subjects: unknown subject 'S99'"):
        split_subjects(_pairs(5), DataConfig(val_subjects=["S99"]))


def test_evenly_spaced_keeps_each_sites_share_where_the_first_by_id_would_not():
    sited = [SubjectFiles(name, Path(f"{name}_t1.nii"), Path(f"{name}_t2.nii"), site=name[0])
             for name in ["C2", "A1", "A2", "A3", "A4", "A5", "A6", "B1", "B2", "C1"]]
    assert [f.subject for f in evenly_spaced(sited, 5)] == ["A1", "A3", "A5", "B2", "C2"]  # first 5: all A
    assert [f.subject for f in evenly_spaced(sited, 2)] == ["A1", "C2"]
    assert [f.subject for f in evenly_spaced(sited, 10)] == sorted(f.subject for f in sited)
    assert [f.subject for f in evenly_spaced(sited, 99)] == sorted(f.subject for f in sited)
    assert [f.subject for f in evenly_spaced(sited, 1)] == ["A1"]
    assert evenly_spaced(sited, 0) == []


def test_spread_over_sites_takes_subjects_in_turn_from_each_site():
    sited = [SubjectFiles(name, Path(f"{name}_t1.nii"), Path(f"{name}_t2.nii"), site=site)
             for name, site in [("A3", "A"), ("B1", "B"), ("A1", "A"), ("A2", "A"), ("C1", "C")]]
    assert [f.subject for f in spread_over_sites(sited, 2)] == ["A1", "B1"]
    assert [f.subject for f in spread_over_sites(sited, 4)] == ["A1", "A2", "B1", "C1"]
    assert [f.subject for f in spread_over_sites(sited, 9)] == ["A1", "A2", "A3", "B1", "C1"]
    assert [f.subject for f in spread_over_sites(_pairs(5), 2)] == ["S00", "S01"]  # no sites: by id
    assert spread_over_sites(sited, 0) == []
