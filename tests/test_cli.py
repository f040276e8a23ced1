"""The command line as users of nnU-Net and MONAI's tools expect it: `mrsynth COMMAND`, --version,
-q/-v, --no-progress and one output option name on every command, a typo answered with the
closest command."""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mrsynth
from mrsynth import console
from mrsynth.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_console_script_is_the_cli_and_usage_names_how_it_was_called(monkeypatch, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"mrsynth": "mrsynth.cli:main"}
    monkeypatch.setattr(sys, "argv", ["/venv/bin/mrsynth"])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: mrsynth predict")
    monkeypatch.setattr(sys, "argv", ["run.py"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python run.py")


def test_building_the_parser_imports_no_framework_and_no_plotting():
    """Every process (each `train`, `predict`, fold or test subprocess) builds the parser of every
    command; what only one command needs is imported in that command's run."""
    code = ("import sys\nfrom mrsynth.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('jax', 'torch', 'matplotlib', 'scipy.stats', 'grain') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"mrsynth {mrsynth.__version__}"


@pytest.mark.parametrize("argv, word, closest", [(["predikt", "--input", "a.nii.gz"], "predikt", "predict"),
                                                 (["-q", "evalute"], "evalute", "evaluate"),
                                                 (["xyzzy"], "xyzzy", None)])
def test_a_mistyped_command_is_an_invalid_choice_with_the_closest_command(argv, word, closest, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"invalid choice: '{word}'" in err and "unrecognized arguments" not in err
    assert (f"did you mean '{closest}'?" in err) if closest else ("did you mean" not in err)


def test_every_command_has_terminal_options_one_output_name_and_no_none_default():
    for name, sub in _subparsers(build_parser()).items():
        options = _options(sub)
        for flag in ("-q", "--quiet", "-v", "--verbose", "--no-progress"):
            assert flag in options, (name, flag)
        if "--out" in options:
            assert options["--output"] is options["--out"], name
        assert "default: None" not in sub.format_help(), name
    for name in set(COMMANDS) - {"train"}:  # train writes a run directory: --run-dir, --out too
        assert "--out" in _options(_subparsers(build_parser())[name]), name
    train = _options(_subparsers(build_parser())["train"])
    assert train["--out"] is train["--run-dir"] is train["--output"]


@pytest.mark.parametrize("argv", [["-q", "--no-progress", "predict"], ["predict", "-q", "--no-progress"]])
def test_terminal_flags_work_before_and_after_the_command(argv):
    args = build_parser().parse_args([*argv, "--weights", "w.safetensors", "--input", "x", "--out", "o"])
    assert args.command == "predict" and args.quiet and args.no_progress and args.verbose == 0


def test_quiet_and_verbose_choose_what_the_terminal_shows(capsys):
    messages = logging.getLogger("mrsynth.test")
    for quiet, verbose, shown in ((True, 0, {"warn"}), (False, 0, {"info", "warn"}),
                                  (False, 1, {"debug", "info", "warn"})):
        with console.terminal(console.console_level(quiet, verbose), progress=not quiet):
            assert console.progress_enabled() is not quiet
            messages.debug("debug")
            messages.info("info")
            messages.warning("warn")
        assert set(capsys.readouterr().err.split()) == shown
    assert console.progress_enabled()  # restored after the command


def test_no_progress_reaches_the_commands(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_phantom(out, subjects, shape, seed, progress):
        seen.append(progress)
        written = Path(out) / "IXI901-Phantom-0001-T1.nii.gz"
        written.parent.mkdir(parents=True)
        written.write_bytes(b"x")
        return [written]

    monkeypatch.setattr("mrsynth.commands.demo_data.regenerate_phantom", fake_phantom)
    assert main(["demo-data", "--no-progress", "--output", str(tmp_path / "p"), "--subjects", "1"]) == 0
    assert main(["-q", "demo-data", "--out", str(tmp_path / "q"), "--subjects", "1"]) == 0
    assert main(["demo-data", "--out", str(tmp_path / "r"), "--subjects", "1"]) == 0
    assert seen == [False, False, True]
