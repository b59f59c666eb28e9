"""``faces models build``: convert (or, for dlib's ResNet, build with torch) every registered model's graph."""

from __future__ import annotations

import argparse
import sys

from facecore.errors import ModelError
from facecore.models import REGISTRY, converted_model_path
from faces_settings import get_settings


def build_command(args: argparse.Namespace) -> int:
    cache = get_settings().models_dir
    failures = 0
    unknown = [name for name in args.models if name not in REGISTRY]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    for name in args.models or list(REGISTRY):
        try:
            print(f"{name}: {converted_model_path(REGISTRY[name], cache)}")
        except ModelError as exc:
            failures += 1
            print(f"{name}: error: {exc}", file=sys.stderr)
    return 1 if failures else 0


def add_parsers(subparsers) -> None:
    models = subparsers.add_parser("models", help="the models' runtime graphs under the data dir")
    actions = models.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build the graphs not built yet (dlib-resnet needs the dlib extra)")
    build.add_argument("models", nargs="*", metavar="MODEL",
                       help=f"models to build (default: all of {', '.join(REGISTRY)})")
    build.set_defaults(handler=build_command)
