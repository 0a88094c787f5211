"""What the in-process CLI tests share: parsing a command line, running ``lamina ARGV`` for its
exit code and printed text, and recognising the PNG files a run writes."""

import sys

from lamina.cli import build_parser, main


def command(*argv):
    """The parsed arguments of ``lamina ARGV``."""
    return build_parser().parse_args(list(argv))


def exit_of(capsys, *argv):
    """(exit code, stdout, stderr) of ``lamina ARGV``: argparse's exit code, or 1 with the message of a refusal."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):  # a message for the user, printed to stderr by the interpreter
            print(exc.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def is_png(path) -> bool:
    return path.exists() and path.read_bytes()[:4] == b"\x89PNG"
