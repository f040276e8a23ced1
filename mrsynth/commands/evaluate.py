"""`run.py evaluate`: metrics, figures and a report for one trained run on held-out subjects."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import add_out_argument, add_score_workers_argument
from mrsynth.inference.volume import PLANES_CHOICES, TTA_CHOICES
from mrsynth.evaluation.views import CONVENTIONS
from mrsynth.subjects import SUBJECT_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="RUN_DIR", help="a training run directory")
    parser.add_argument("--subjects", choices=SUBJECT_CHOICES, default="test",
                        help="which split of the run's subjects to evaluate (default: test)")
    parser.add_argument("--display", choices=CONVENTIONS, default="neurological",
                        help="figures: the patient's left on the image's left (neurological, default) or "
                             "right (radiological)")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="test-time augmentation, as predict --tta (default: none)")
    parser.add_argument("--planes", choices=PLANES_CHOICES,
                        help="as predict --planes (default: the run's eval.planes)")
    add_score_workers_argument(parser)
    add_out_argument(parser, "report directory (default: RUN_DIR/eval_<subjects>)", type=Path)


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: every command's parser is built in every process, and the runner
    # brings matplotlib and scipy.stats, which only evaluating needs.
    from mrsynth.evaluation.runner import evaluate_runs, load_run, print_summary

    run_spec = load_run(args.checkpoint, args.which, args.tta, args.planes)
    out = args.out or Path(args.checkpoint) / f"eval_{args.subjects}"
    result, report = evaluate_runs([run_spec], args.subjects, out, convention=args.display,
                                   score_workers=args.score_workers)
    print_summary(result, report)
    return 0
