"""Entry point of the ``faces`` console script."""

from __future__ import annotations

import argparse
import logging
import sys

from faces_cli import (cluster_command, enroll_commands, gallery_commands, index_commands, model_commands,
                       pipeline_commands, serve_command, unknown_commands, user_commands, video_commands)
from faces_settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faces", description="Face recognition platform on Ray")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    settings = get_settings()
    pipeline_commands.add_parsers(subparsers, settings.det_prob_threshold)
    serve_command.add_parsers(subparsers)
    index_commands.add_parsers(subparsers)
    video_commands.add_parsers(subparsers, settings.det_prob_threshold)
    enroll_commands.add_parsers(subparsers)
    gallery_commands.add_parsers(subparsers)
    unknown_commands.add_parsers(subparsers)
    cluster_command.add_parsers(subparsers, settings.det_prob_threshold, settings.recognition_threshold)
    model_commands.add_parsers(subparsers)
    user_commands.add_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
