"""benchmarks/lever_sweep.py: the exact learning-curve call of each point, the priority order,
continuing a folder without rerunning its finished points, and the margins table (better
baseline, identity excluded). Points are faked by a subprocess that writes an eval summary."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lever_sweep  # noqa: E402

PSNR = {"recommended": 21.0, "no-2.5d": 20.5, "torch-recommended": 21.2, "torch-residual": 20.9}


def fake_point(args, variant, fold, seed):
    """A point that 'scores' PSNR[variant] + seed/10 against linear 19.0, histmatch 18.5, identity
    30.0, written as evaluate writes its summary.csv."""
    summary = lever_sweep.point_dir(args.out, variant, fold, seed) / f"seed-{seed}" / "n-4" / "eval" / "summary.csv"
    means = {("run", "run"): (PSNR[variant] + seed / 10, 0.4), ("identity", "baseline"): (30.0, 0.9),
             ("linear", "baseline"): (19.0, 0.3), ("histmatch", "baseline"): (18.5, 0.35)}
    text = "method,kind,metric,mean\n" + "".join(f"{m},{k},psnr_z,{p}\n{m},{k},ssim_z,{q}\n"
                                                 for (m, k), (p, q) in means.items())
    code = f"import pathlib; p = pathlib.Path({str(summary)!r}); p.parent.mkdir(parents=True); p.write_text({text!r})"
    return [sys.executable, "-c", code]


def sweep(monkeypatch, out: Path, *extra: str) -> list[str]:
    monkeypatch.setattr(lever_sweep, "point_command", fake_point)
    monkeypatch.setattr(lever_sweep, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(sys, "argv", ["lever_sweep.py", "--out", str(out), *extra])
    lever_sweep.main()
    return (out / "progress.log").read_text().splitlines()


def test_points_run_in_priority_order_and_the_table_uses_the_better_baseline(tmp_path, monkeypatch):
    log = sweep(monkeypatch, tmp_path, "--variants", "recommended,no-2.5d", "--folds", "0", "--seeds", "0,1")
    started = [line.split("start ")[1].split(":")[0] for line in log if " start " in line]
    assert started == ["('recommended', 0, 0)", "('no-2.5d', 0, 0)", "('recommended', 0, 1)", "('no-2.5d', 0, 1)"]
    table = (tmp_path / "levers.md").read_text()
    # margins over linear (19.0), never over identity (30.0): 21.0 - 19.0 and 21.1 - 19.0
    assert "| recommended | fold-0-seed-0, fold-0-seed-1 | +2.050 (+2.000, +2.100) | +0.050 (+0.050, +0.050) |" in table
    assert "| no-2.5d | fold-0-seed-0, fold-0-seed-1 | +1.550 (+1.500, +1.600) |" in table
    # paired on the same points: -0.5 dB each, beyond recommended's seed spread (0.1 dB); ssim_z
    # equal (0.000), inside its spread (0.000)
    assert "seed spread (the largest range between seeds of one fold): psnr_z 0.100, ssim_z 0.000" in table
    # the run-level test: equal differences have a zero-width interval, and two points cannot give
    # a sign-flip p below 2 / 2^2 (only all-- and all++ are as extreme)
    assert ("| no-2.5d | fold-0-seed-0, fold-0-seed-1 | -0.500 (-0.500, -0.500), beyond the seed spread; "
            "95% CI [-0.500, -0.500], sign-flip p = 0.500 (at least 0.500 with 2 points) "
            "| +0.000 (+0.000, +0.000), inside the seed spread; 95% CI [+0.000, +0.000], sign-flip p = 1.000 "
            "(at least 0.500 with 2 points) |") in table


def test_a_pytorch_lever_is_measured_against_the_pytorch_reference(tmp_path, monkeypatch):
    """torch-recommended against recommended (the backends, once); torch-residual against
    torch-recommended only (the lever within its backend), never against JAX's recommended."""
    sweep(monkeypatch, tmp_path, "--variants", "recommended,torch-recommended,torch-residual", "--folds", "0",
          "--seeds", "0")
    table = (tmp_path / "levers.md").read_text()
    jax_section, torch_section = table.split("## Against recommended")[1].split("## Against torch-recommended")
    assert "| torch-recommended | fold-0-seed-0 | +0.200 (+0.200)" in jax_section and "torch-residual" not in jax_section
    assert "| torch-residual | fold-0-seed-0 | -0.300 (-0.300)" in torch_section  # 20.9 - 21.2


def test_the_run_level_interval_widens_with_few_points_and_the_sign_flip_p_is_exact():
    text = lever_sweep.run_level_test([0.2, 0.4, 0.6])
    # mean 0.4, sd 0.2, t(0.975, 2) = 4.303: 0.4 -+ 4.303 * 0.2 / sqrt(3); signs: only +++ and ---
    assert text == "; 95% CI [-0.097, +0.897], sign-flip p = 0.250 (at least 0.250 with 3 points)"
    assert lever_sweep.run_level_test([0.3]) == ""


def test_a_lever_that_moves_with_the_seed_more_than_the_reference_is_judged_by_its_own_spread():
    """The reference's seeds 0.1 dB apart, the lever's 0.6 apart on fold 1: its mean difference
    of -0.225 dB is beyond the reference's spread but inside its own, and the table says whose."""
    def rows(*margins):
        names = ["fold-0-seed-0", "fold-0-seed-1", "fold-1-seed-0", "fold-1-seed-1"]
        return {n: {"psnr_z_margin": p, "ssim_z_margin": 0.05} for n, p in zip(names, margins)}
    lines = lever_sweep.paired_lines({"ref": rows(2.0, 2.1, 2.0, 2.1), "lever": rows(1.8, 1.9, 2.1, 1.5)})
    row = next(line for line in lines if line.startswith("| lever |"))
    assert "| -0.225 (-0.200, -0.200, +0.100, -0.600), inside the seed spread (its own, 0.600); 95% CI" in row
    assert lever_sweep.spread_verdict(-0.2, 0.1, None) == ", beyond the seed spread"
    assert lever_sweep.spread_verdict(-0.2, 0.1, 0.05) == ", beyond the seed spread"
    assert lever_sweep.spread_verdict(-0.7, 0.1, 0.6) == ", beyond the seed spread"
    assert lever_sweep.spread_verdict(0.05, 0.1, 0.6) == ", inside the seed spread (its own, 0.600)"
    assert lever_sweep.spread_verdict(0.05, None, 0.6) == ""


def test_without_two_seeds_on_a_fold_no_difference_is_called_a_ranking(tmp_path, monkeypatch):
    sweep(monkeypatch, tmp_path, "--variants", "recommended,no-2.5d", "--folds", "0,1", "--seeds", "0")
    table = (tmp_path / "levers.md").read_text()
    assert "is not measured yet (no fold with two seeds)" in table
    assert "| no-2.5d | fold-0-seed-0, fold-1-seed-0 | -0.500 (-0.500, -0.500); 95% CI" in table


def test_a_second_call_runs_only_the_missing_points(tmp_path, monkeypatch):
    sweep(monkeypatch, tmp_path, "--variants", "recommended", "--folds", "0", "--seeds", "0")
    assert "## Against" not in (tmp_path / "levers.md").read_text()  # nothing to compare with yet
    log = sweep(monkeypatch, tmp_path, "--variants", "recommended,torch-recommended", "--folds", "0", "--seeds", "0")
    assert sum(" start ('recommended', 0, 0)" in line for line in log) == 1
    assert sum(" start ('torch-recommended', 0, 0)" in line for line in log) == 1


def test_the_point_command_is_a_learning_curve_call_with_the_variant_last(tmp_path):
    args = lever_sweep.argparse.Namespace(config="configs/brats_2d.yaml", out=tmp_path, k=5, score_workers=3,
                                          set=["train.steps=1000", "data.bias_field=0.5"])
    jax_cmd = lever_sweep.point_command(args, "no-scanner-aug", 1, 2)
    assert jax_cmd[2:4] == ["learning-curve", "--config"] and jax_cmd[jax_cmd.index("--backend") + 1] == "jax"
    assert jax_cmd[jax_cmd.index("--sizes") + 1] == "all" and jax_cmd[jax_cmd.index("--fold") + 1] == "1"
    assert jax_cmd[jax_cmd.index("--score-workers") + 1] == "3"
    sets = [jax_cmd[i + 1] for i, a in enumerate(jax_cmd) if a == "--set"]
    assert sets.index("data.bias_field=0") > sets.index("data.bias_field=0.5")  # the variant wins
    torch_cmd = lever_sweep.point_command(args, "torch-recommended", 0, 0)
    assert torch_cmd[torch_cmd.index("--backend") + 1] == "torch"
    torch_residual = lever_sweep.point_command(args, "torch-residual", 0, 0)
    assert torch_residual[torch_residual.index("--backend") + 1] == "torch"
    assert "model.residual=true" in torch_residual and "model.residual=true" not in torch_cmd
    torch_3d = lever_sweep.point_command(args, "torch-3d", 0, 0)
    assert torch_3d[torch_3d.index("--config") + 1] == str(ROOT / "configs" / "brats_3d.yaml")
    assert jax_cmd[jax_cmd.index("--config") + 1] == "configs/brats_2d.yaml"
    three_d = lever_sweep.point_command(args, "3d", 0, 0)
    assert three_d[three_d.index("--config") + 1] == str(ROOT / "configs" / "brats_3d.yaml")


def test_every_variant_trains_the_sweeps_budget_unless_it_sets_its_own(tmp_path):
    """The config's default steps (3000 in configs/brats_2d.yaml) do not reach the sweep: its
    points stay the 1000-step runs they were measured as; the last --set of a key wins."""
    args = lever_sweep.argparse.Namespace(config="configs/brats_2d.yaml", out=tmp_path, k=5, score_workers=2, set=[])

    def last(command: list[str], key: str) -> str:
        return [a for a in command if a.startswith(key + "=")][-1]

    for variant in ("recommended", "torch-recommended", "no-2.5d", "3d"):
        command = lever_sweep.point_command(args, variant, 0, 0)
        assert (last(command, "train.steps"), last(command, "train.ckpt_every")) == (
            "train.steps=1000", "train.ckpt_every=250"), variant
    longer = lever_sweep.point_command(args, "steps-3000", 0, 0)
    assert (last(longer, "train.steps"), last(longer, "train.ckpt_every")) == ("train.steps=3000", "train.ckpt_every=1000")
    plain = lever_sweep.point_command(args, "torch-plain-3000", 0, 0)
    assert (last(plain, "train.steps"), last(plain, "data.context_slices"), last(plain, "data.bias_field"),
            last(plain, "data.contrast_range"), last(plain, "data.gamma_range")) == (
        "train.steps=3000", "data.context_slices=0", "data.bias_field=0", "data.contrast_range=0", "data.gamma_range=0")


def test_the_3d_variant_holds_out_the_same_folds_as_the_2d_config():
    """A point's held-out fold comes from the manifest's subjects and sites, its validation subjects
    from the data split settings, the volumes from the mask and normalization: the 3D config must
    match the 2D one in all of them for the two to be compared point by point."""
    from mrsynth.config import load_config

    two, three = (load_config(ROOT / "configs" / f"brats_{d}.yaml") for d in ("2d", "3d"))
    for key in ("source", "manifest", "split_seed", "split_fractions", "mask", "normalization"):
        assert getattr(three.data, key) == getattr(two.data, key), key
    assert (two.model.dims, three.model.dims) == (2, 3)


def test_an_unknown_variant_is_refused(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        sweep(monkeypatch, tmp_path, "--variants", "recommended,bigger")
    with pytest.raises(SystemExit):
        sweep(monkeypatch, tmp_path, "--variants", "torch-bigger")


def fake_evaluation(out: Path, fold: int, seed: int, folds: dict[str, int], psnr: dict[str, float],
                    baseline_offset: float = -2) -> None:
    """A point's evaluation of its fold's held-out subjects, as evaluate writes it: the run's
    psnr_z, and a linear baseline ``baseline_offset`` from it."""
    evaluation = lever_sweep.point_dir(out, "recommended", fold, seed) / f"seed-{seed}" / "n-2" / "eval"
    evaluation.mkdir(parents=True)
    held_out = sorted(s for s, f in folds.items() if f == fold)
    (evaluation / "per_subject.csv").write_text("subject,method,psnr_z,ssim_z\n" + "".join(
        f"{s},jax,{psnr[s]},0.4\n{s},linear,{psnr[s] + baseline_offset},0.3\n" for s in held_out))
    (evaluation / "summary.json").write_text('{"methods": {"jax": {"kind": "run"}, "linear": {"kind": "baseline"}}}')


def test_a_variant_with_a_point_on_every_fold_is_pooled_into_a_cross_validation(tmp_path):
    """Two folds of four subjects from two sites: each fold's evaluation, as evaluate writes it,
    pooled once every fold has one, every subject held out once (and nothing before that)."""
    from mrsynth.experiments.crossval import stratified_folds

    sites = {"s1": "A", "s2": "A", "s3": "B", "s4": "B"}
    for s in sites:  # the manifest's files exist; only their names are read
        for role in ("t1", "t2"):
            (tmp_path / f"{s}_{role}.nii.gz").touch()
    (tmp_path / "manifest.csv").write_text("subject,t1,t2,site\n" + "".join(
        f"{s},{s}_t1.nii.gz,{s}_t2.nii.gz,{site}\n" for s, site in sites.items()))
    config = tmp_path / "cohort.yaml"
    config.write_text(f"data:\n  source: manifest\n  manifest: {tmp_path / 'manifest.csv'}\n")
    out = tmp_path / "sweep"
    folds = stratified_folds(sites, 2, 0)
    psnr = {"s1": 20.0, "s2": 22.0, "s3": 24.0, "s4": 26.0}
    for fold in (0, 1):
        assert lever_sweep.write_cross_validations(out, str(config), ["recommended"], 2) == []
        fake_evaluation(out, fold, 0, folds, psnr)
    assert lever_sweep.run_scores(out, "recommended", 0, 0, ("psnr_z",)) == {
        s: {"psnr_z": psnr[s]} for s, f in folds.items() if f == 0}  # the run's rows, no baseline's
    assert lever_sweep.run_scores(out, "recommended", 0, 1, ("psnr_z",)) is None
    [written] = lever_sweep.write_cross_validations(out, str(config), ["recommended"], 2)
    assert written == out / "recommended" / "cv-seed-0"
    summary = (written / "summary.md").read_text()
    assert "2 folds, 4 subjects, each held out once" in summary and "| jax | 23.0000 [" in summary
    assert "| B | 2 | linear | 23.0000 [" in summary
    assert (written / "folds.csv").read_text().count("\n") == 5
    for fold in (0, 1):  # a second seed, 1 dB better on every subject: pooled over both seeds too
        fake_evaluation(out, fold, 1, folds, {s: v + 1 for s, v in psnr.items()}, baseline_offset=-3)
    written = lever_sweep.write_cross_validations(out, str(config), ["recommended"], 2)
    assert written == [out / "recommended" / f"cv-seed-{s}" for s in (0, 1)] + [out / "recommended" / "cv-seeds"]
    pooled = (out / "recommended" / "cv-seeds" / "summary.md").read_text()
    assert "| 0 | 23.000 | 21.000 (linear) | +2.000 |" in pooled and "| 1 | 24.000 | 21.000 (linear) | +3.000 |" in pooled
    assert "| jax | 23.5000 [" in pooled
