"""`run.py train` (the default command): train a model, or resume an interrupted run."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import add_backend_argument, add_config_arguments
from mrsynth.config import Config, flat_keys, load_config, with_absolute_paths
from mrsynth.errors import ConfigError
from mrsynth import runs

# Settings a resume may change: how long, how often to log/validate/save, how to evaluate, and
# loader speed. Anything else would make the resumed run a different run than its checkpoints.
RESUME_MAY_CHANGE = ("train.steps", "train.log_every", "train.val_every", "train.ckpt_every",
                     "train.keep_checkpoints", "train.val_subjects_max", "data.workers",
                     "data.prefetch", "data.cache_dir", "eval.", "run.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser, default_text="jax; a resume keeps the run's")
    parser.set_defaults(backend=None)  # None: not given, so a resume can tell it from the default
    add_config_arguments(parser)
    parser.add_argument("--run-dir", "--out", "--output", dest="run_dir", type=Path,
                        help="where to write the run (default: runs/<name>-<backend>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run from its last checkpoint (uses its config.yaml; "
                             "--set may change train.steps, the log/val/checkpoint cadence and eval settings)")


def resume_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The config and backend a resume continues with; a flag that contradicts the run is an
    error before anything is written (a silently ignored --backend or changed model would not be
    the run the user asked for)."""
    info = runs.read_run_info(args.resume)
    backend = info["backend"]
    if args.run_dir is not None:
        raise ConfigError(f"--run-dir: a resumed run stays in {args.resume}; drop --run-dir")
    if args.backend is not None and args.backend != backend:
        raise ConfigError(f"--backend {args.backend}: {args.resume} is a {backend} run; "
                          f"drop --backend (runs cannot change framework)")
    run_cfg = runs.load_run_config(args.resume)
    wanted = with_absolute_paths(load_config(args.config, args.overrides) if args.config
                                 else runs.load_run_config(args.resume, args.overrides))
    old, new = flat_keys(run_cfg.to_dict()), flat_keys(wanted.to_dict())
    for key in old:
        if old[key] != new[key] and not key.startswith(RESUME_MAY_CHANGE):
            raise ConfigError(f"{key}: the run has {old[key]!r}, the flags ask for {new[key]!r}; "
                              f"a resume cannot change it (start a new run instead)")
    return wanted, backend


def run(args: argparse.Namespace) -> int:
    from mrsynth.training.loop import train

    if args.resume is not None:
        cfg, backend = resume_config(args)
        summary = train(cfg, backend, args.resume, resume=True)
    else:
        cfg = load_config(args.config, args.overrides)
        summary = train(cfg, args.backend or "jax", args.run_dir, resume=False)
    print(finished_lines(summary))
    return 0


def finished_lines(summary: dict) -> str:
    """A finished run in a line (the whole summary is in run.json), with validation a second one
    naming the checkpoint the next commands use (it may be older than the last), then those commands."""
    run_dir, last = summary["run_dir"], summary.get("last_val") or {}
    result = f"finished: {run_dir} ({summary['backend']}, {summary['steps']} steps)"
    if last:
        result += ("; validation at the end: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                                                           if k in ("psnr", "ssim", "mae")))
    if summary.get("best_step") is not None:
        from mrsynth.training.loop import VAL_SELECT_METRIC

        result += (f"\nbest checkpoint (evaluate, predict and model.safetensors use it): step {summary['best_step']},"
                   f" validation {VAL_SELECT_METRIC} {summary['best_val_' + VAL_SELECT_METRIC]:.4g}")
    return "\n".join([result, "next:", f"  mrsynth evaluate --checkpoint {run_dir}",
                      f"  mrsynth predict --checkpoint {run_dir} --input T1.nii.gz --out synth/"])
