"""Reject the flags Beam would drop: a misspelt option is an error, not a silent default.

``captioning caption`` and ``captioning features`` hand every flag they do not parse
themselves to Beam. Beam never fails on a flag it does not know: ``PipelineOptions``
ignores it, ``get_all_options`` logs "Discarding unparseable args", and at
``Pipeline.run`` it only warns and forwards it to the runner as an opaque option. So
``--skip-existng`` re-captioned the whole archive and exited 0.

``check_beam_flags`` parses the arguments the way ``PipelineOptions.get_all_options``
does (one ``_BeamArgumentParser(allow_abbrev=False)`` holding the flags of every
``PipelineOptions`` subclass, ``parse_known_args``) and raises ``UserError`` for
whatever is left over. The flags come from the subclasses themselves, so a new option
in ``pipelines.options.CaptionOptions`` (or a new options class) is known at once.

This module imports Beam; the CLI imports it only when a Beam command runs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

# Defines CaptionOptions, so its flags are among the PipelineOptions subclasses' flags.
import pipelines.options  # noqa: F401
from captioning.errors import UserError

# argparse's own test for "a negative number, so a value, not an option".
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class _CheckingParser(_BeamArgumentParser):
    """Beam's parser, but a bad value is a one-line ``UserError`` instead of Beam's whole
    usage text and ``SystemExit``."""

    def error(self, message: str):
        raise UserError(message)


def _options_classes(
    exclude: Iterable[type[PipelineOptions]],
) -> list[type[PipelineOptions]]:
    """Every PipelineOptions subclass defined so far, subclasses of subclasses included
    (``view_as`` parses those through their MRO, so Beam does read their flags), less
    ``exclude`` and its subclasses."""
    excluded = set(exclude)
    seen: dict[str, type[PipelineOptions]] = {}
    pending = list(PipelineOptions.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls in excluded:
            continue
        # Keyed by name as Beam does: a class defined again under the same name (a
        # reloaded module, a restored main session) counts once.
        seen.setdefault(str(cls), cls)
        pending.extend(cls.__subclasses__())
    return list(seen.values())


def beam_parser(exclude: Iterable[type[PipelineOptions]] = ()) -> _BeamArgumentParser:
    """A parser that knows every Beam option, as ``PipelineOptions.get_all_options`` builds
    it: ``allow_abbrev=False``, so ``--run`` is not taken for ``--runner``."""
    # add_help=False: Beam's parser would take "-h..." as its help and exit; --help
    # never reaches here (the subcommand's parser answers it).
    # conflict_handler="resolve": two classes declaring one flag is not ours to report.
    parser = _CheckingParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in _options_classes(exclude):
        # Only a class's own flags: an inherited _add_argparse_args adds its parent's
        # flags, which the parent itself adds.
        if "_add_argparse_args" in cls.__dict__:
            cls._add_argparse_args(parser)
    return parser


def _is_option(arg: str) -> bool:
    """Whether argparse takes ``arg`` for an option (otherwise it is a value)."""
    return (
        arg.startswith("-")
        and arg != "-"
        and arg != "--"
        and not _NEGATIVE_NUMBER.match(arg)
        and " " not in arg
    )


def _suggestion(name: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {matches[0]}?)" if matches else ""


def check_beam_flags(
    argv: Iterable[str],
    own_flags: Iterable[str] = (),
    exclude: Iterable[type[PipelineOptions]] = (),
) -> None:
    """Raise ``UserError`` unless Beam parses every one of ``argv``.

    ``argv`` is what a command passes to ``PipelineOptions`` (for ``caption``, after
    ``normalize_dry_run``). ``own_flags`` are the command's own option strings, already
    parsed out of ``argv``: not accepted here, only offered as "did you mean"
    suggestions. ``exclude`` are options classes whose flags the command does not read
    (``features`` has no use for ``CaptionOptions``), so they count as unknown.

    Unknown options are reported first (a word after one is taken as its value), then
    a stray word, e.g. a value after a flag that takes none. A bad value of a known
    option (``--direct_num_workers two``) is reported with argparse's message.
    """
    parser = beam_parser(exclude)
    _, leftover = parser.parse_known_args(list(argv))
    if not leftover:
        return
    # argparse leaves "--" and everything after it over, options included; Beam ignores
    # them all, so they are reported as one thing, not as unknown options.
    after_dashes = leftover[leftover.index("--") :] if "--" in leftover else []
    leftover = leftover[: len(leftover) - len(after_dashes)]
    unknown = list(dict.fromkeys(arg.split("=", 1)[0] for arg in leftover if _is_option(arg)))
    if unknown:
        known = sorted({*parser._option_string_actions, *own_flags})
        listed = ", ".join(name + _suggestion(name, known) for name in unknown)
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} {listed}")
    if leftover:
        words = " ".join(repr(arg) for arg in leftover)
        raise UserError(f"unexpected argument{'s' if len(leftover) > 1 else ''} {words}")
    if after_dashes:
        ignored = " ".join(after_dashes)
        raise UserError(f"unexpected {ignored!r}: Beam ignores '--' and what follows it")
