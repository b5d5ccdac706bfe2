"""``python -m pase.eval ...``: the same as ``pase eval ...``."""

import sys

from pase.cli_args import Parser
from pase.eval.cli import register_cli


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m pase.eval")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
