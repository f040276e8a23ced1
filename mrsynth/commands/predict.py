"""`run.py predict`: synthesize T2 NIfTI files for T1-only subjects."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from mrsynth import backend as backends
from mrsynth.commands.common import add_backend_argument, add_out_argument
from mrsynth.errors import MrsynthError
from mrsynth.inference.volume import PLANES_CHOICES, TTA_CHOICES
from mrsynth import runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser, default=None, default_text="the run's own; required with --weights")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="RUN_DIR", help="a training run directory")
    source.add_argument("--weights", type=Path, metavar="FILE", help="a portable .safetensors weight file")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--input", type=Path, required=True, help="a T1 NIfTI file or a directory of them")
    add_out_argument(parser, "directory for the synthesized T2 files", type=Path, required=True)
    brain = parser.add_mutually_exclusive_group()
    brain.add_argument("--mask", metavar="FILE|DIR|nonzero|otsu",
                       help="override the mask predict makes itself (the way the training masks were "
                            "made, recorded in the run): a file for one input, a folder paired by subject "
                            "id (<id>-mask.nii.gz, <id>_brainmask.nii.gz, ...), 'nonzero' for inputs that "
                            "are already skull-stripped, or 'otsu' for Otsu head masks")
    brain.add_argument("--skull-strip", action="store_true",
                       help="compute each input's brain mask by brain extraction, whatever the run "
                            "recorded (optional extra: pip install 'mrsynth[skullstrip]')")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="test-time augmentation: 'flip' averages the in-plane flips (4 passes in 2D, "
                             "8 in 3D) (default: none)")
    parser.add_argument("--planes", choices=PLANES_CHOICES,
                        help="2D: synthesize along the training slice axis, or along all three axes and "
                             "average (a model trained with data.planes: all) (default: the run's eval.planes)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <input>_synthT2_std.nii.gz, the voxel-wise spread over the "
                             "passes (needs --tta flip or --planes all)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip an input whose output NIfTI, mask and JSON sidecar (and spread map with "
                             "--uncertainty) are all in --out already: a re-run does only what is missing")


def run(args: argparse.Namespace) -> int:
    from mrsynth.inference.synthesis import (
        exported_checkpoint,
        list_inputs,
        output_folder,
        resolve_mask_policy,
        setup_from_weights,
        synthesize_files,
    )

    if args.uncertainty and args.tta == "none" and args.planes != "all":
        raise MrsynthError("--uncertainty: needs --tta flip or --planes all (the spread over the passes)")
    inputs = list_inputs(args.input)
    if args.checkpoint is not None:
        trained_with = runs.read_run_info(args.checkpoint)["backend"]
        backend_name = args.backend or trained_with
        weights_cm = exported_checkpoint(backends.get_backend(trained_with), args.checkpoint, args.which)
    else:
        if args.backend is None:
            raise MrsynthError("--weights needs --backend jax|torch (either framework reads the file)")
        backend_name = args.backend
        weights_cm = contextlib.nullcontext(args.weights)
    backend = backends.get_backend(backend_name)
    with weights_cm as weights_file:
        setup = setup_from_weights(weights_file, backend_name, run_dir=args.checkpoint)
        if args.planes is not None:
            setup.cfg.eval = dataclasses.replace(setup.cfg.eval, planes=args.planes)
        setup.contract.check_planes(setup.cfg.eval.planes, "--planes" if args.planes else "eval.planes")
        policy = resolve_mask_policy(setup.contract, args.mask, args.skull_strip,
                                     str(args.checkpoint or args.weights))
        with output_folder(args.out) as removed:  # created only once the job can run
            if removed:
                print(f"removed {len(removed)} temporary file(s) a killed job left in {args.out}")
            predictor = backend.load_predictor(weights_file)
            report = synthesize_files(inputs, args.out, predictor, setup, policy, args.tta, args.uncertainty,
                                      args.skip_existing)
    for result in report.results:
        for path in result.written:
            print(f"wrote {path}")
        print(f"  mask: {result.mask}")
        print(f"  grid: {result.grid}")
        print(f"  clipped to the training T2 range: {100 * result.clipped_fraction:.2f}% of brain voxels")
        if result.warning:
            print(f"warning: {result.warning}", file=sys.stderr)
    for _, message in report.failed:
        print(f"error: {message}", file=sys.stderr)
    print(report.summary())
    for path, _ in report.failed:
        print(f"  failed: {path}")
    return 1 if report.failed else 0
