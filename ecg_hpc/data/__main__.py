"""``python -m ecg_hpc.data COMMAND``: data preparation commands (convert, synthesise, prepare).

Each command lives in its own module that defines ``add_arguments(parser)`` and ``run(args) -> None``;
this entry point only dispatches and turns user errors into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ecg_hpc.errors import EcgHpcError, user_error

COMMANDS = {
    "convert-icentia": ("ecg_hpc.data.convert",
                        "convert Icentia11k (pkl.gz, npy/npz or PhysioNet WFDB) into the shard store"),
    "synth-icentia": ("ecg_hpc.data.synth_cli", "write synthetic patients in the Icentia11k published format"),
    "synth-physionet": ("ecg_hpc.data.synth_cli",
                        "write synthetic records in the PhysioNet/CinC 2017 challenge format"),
    "prepare-physionet": ("ecg_hpc.data.prepare",
                          "read, preprocess and split challenge records into a cached .npz"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per entry of ``COMMANDS``.

    Only the ``selected`` command's module is imported (so one command's dependencies never break another).
    """
    parser = argparse.ArgumentParser(prog="python -m ecg_hpc.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name != selected:
            continue
        module = importlib.import_module(module_name)
        adder = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
        adder(cmd)
        cmd.set_defaults(_module=module, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and return 2."""
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected if selected in COMMANDS else None).parse_args(argv)
    runner = getattr(args._module, f"run_{args._name.replace('-', '_')}", None) or args._module.run
    try:
        runner(args)
    except EcgHpcError as exc:
        return user_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
