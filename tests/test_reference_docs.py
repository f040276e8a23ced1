"""The generated references are complete: every config key and every CLI option is described.

The documentation's configuration page is generated from the config dataclasses' ``#:``
comments (``mrsynth.config_reference``) and its CLI page from ``build_parser()``'s help strings
(sphinx-argparse). These tests need neither Sphinx nor a backend, so the plain test install
runs them; the negative cases prove the checkers can fail.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from mrsynth import config_reference
from mrsynth.cli import COMMANDS, build_parser
from mrsynth.config import CHOICES, Config


def undocumented_options(parser: argparse.ArgumentParser, prog: str = "") -> list[str]:
    """``'<command> <option>'`` for every argparse action of ``parser`` and its subcommands
    (the help action excepted) whose help text is empty or suppressed; a subcommand without
    help is reported as well."""
    prog = prog or parser.prog
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helped.get(name):
                    missing.append(f"{prog} {name}")
                missing += undocumented_options(sub, f"{prog} {name}")
            continue
        if not action.help or action.help == argparse.SUPPRESS or not str(action.help).strip():
            missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def documented_options(parser: argparse.ArgumentParser) -> dict[str, int]:
    """Options (actions other than help and the subcommand switch) per command, '' = top level."""
    counts = {"": 0}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                counts[name] = sum(1 for a in sub._actions if not isinstance(a, argparse._HelpAction))
        elif not isinstance(action, argparse._HelpAction):
            counts[""] += 1
    return counts


# -- the real config and CLI --------------------------------------------------------------------

def test_every_config_key_has_a_description():
    assert config_reference.missing_descriptions(Config) == []
    rows = config_reference.reference_rows(Config, CHOICES)
    assert all(row.description.strip() for row in rows)


def test_every_config_dataclass_and_field_is_in_the_reference():
    rows = config_reference.reference_rows(Config, CHOICES)
    keys = [row.key for row in rows]
    expected = [f"{section}.{f.name}" for section, cls in config_reference.sections(Config)
                for f in dataclasses.fields(cls)]
    assert keys == expected
    assert {name for name, _ in config_reference.sections(Config)} == {f.name for f in dataclasses.fields(Config)}
    # every validated choice list belongs to a key of the reference and shows up in its row
    assert set(CHOICES) <= set(keys)
    by_key = {row.key: row for row in rows}
    for key, allowed in CHOICES.items():
        assert by_key[key].choices == tuple(allowed)



def test_descriptions_name_every_allowed_value():
    """A key validated against a list describes each value (the page would append a bare list)."""
    by_key = {row.key: row for row in config_reference.reference_rows(Config, CHOICES)}
    unnamed = {key: [c for c in allowed if f"`{c}`" not in by_key[key].description]
               for key, allowed in CHOICES.items()}
    assert {key: values for key, values in unnamed.items() if values} == {}

def test_reference_defaults_and_types_follow_the_dataclasses():
    by_key = {row.key: row for row in config_reference.reference_rows(Config)}
    assert by_key["data.mask"].default == "given_or_otsu"
    assert by_key["data.phantom_shape"].default == "[96, 112, 80]"
    assert by_key["data.manifest"].type == "str | None" and by_key["data.manifest"].default == "null"
    assert by_key["train.init_weights"].default == '""'
    assert by_key["model.residual"].default == "false"
    assert by_key["train.lr"].default == repr(Config().train.lr)


def test_rendered_markdown_has_a_row_per_key():
    text = config_reference.render_markdown(Config, CHOICES)
    rows = config_reference.reference_rows(Config, CHOICES)
    for row in rows:
        assert f"| `{row.key}` |" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| `") and "." in line.split("|")[1]]
    assert len(table_rows) == len(rows)
    # a pipe inside a cell is escaped, so no row has more than the table's five separators
    assert all(line.replace("\\|", "").count("|") == 5 for line in table_rows)


def test_every_cli_option_of_every_command_has_help():
    parser = build_parser()
    assert undocumented_options(parser) == []
    counts = documented_options(parser)
    assert set(counts) == {"", *COMMANDS}
    assert all(counts[name] > 3 for name in COMMANDS)  # the terminal flags and the command's own


# -- the checkers can fail -----------------------------------------------------------------------

@dataclass
class _FakeSection:
    """A section with one field of each kind."""

    #: Documented above the field,
    #: over two lines.
    documented: int = 1
    inline: str = "x"  #: Documented after the field.
    # A plain comment is not a description.
    plain_comment: float = 0.5
    bare: bool = False
    #: A '#' inside a string is not a comment, and this covers the field below only.
    hashed: str = "#: not a comment"


@dataclass
class _FakeConfig:
    #: The fake section.
    section: _FakeSection = field(default_factory=_FakeSection)
    top: int = 0


def test_field_descriptions_reads_doc_comments_only():
    described = config_reference.field_descriptions(_FakeSection)
    assert described == {
        "documented": "Documented above the field, over two lines.",
        "inline": "Documented after the field.",
        "hashed": "A '#' inside a string is not a comment, and this covers the field below only.",
    }


def test_missing_descriptions_reports_undocumented_fields():
    assert config_reference.missing_descriptions(_FakeConfig) == [
        "top", "section.plain_comment", "section.bare"]
    rows = {row.key: row for row in config_reference.reference_rows(_FakeConfig)}
    assert rows["section.bare"].description == ""
    assert rows["section.documented"].description.startswith("Documented above")


def test_a_class_without_source_has_every_field_missing():
    made = dataclasses.make_dataclass("Made", [("a", int, dataclasses.field(default=0))])
    assert config_reference.field_descriptions(made) == {}
    assert config_reference.missing_descriptions(made) == ["a"]
    with pytest.raises(TypeError):
        config_reference.field_descriptions(int)


def test_undocumented_cli_option_is_reported():
    parser = argparse.ArgumentParser(prog="fake")
    parser.add_argument("--documented", help="has help")
    parser.add_argument("--bare")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="a documented command")
    run.add_argument("--quiet-flag", action="store_true")
    run.add_argument("path", help="documented positional")
    sub.add_parser("silent")
    hidden = parser.add_argument("--hidden", help=argparse.SUPPRESS)
    assert hidden.help == argparse.SUPPRESS
    assert undocumented_options(parser) == ["fake --bare", "fake run --quiet-flag", "fake silent", "fake --hidden"]
