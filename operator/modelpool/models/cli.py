"""``modelpool models ...`` commands: train, export, profile, train-scorer."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from modelpool.models.paths import default_dataset

DEFAULT_TRAINED = Path("out/models/trained")
DEFAULT_REPOSITORY = Path("out/models/repository")
DEFAULT_SCORER = Path("out/models/scorer")
DEFAULT_PROFILES = Path("out/models/profiles")


Command = Callable[[argparse.Namespace], int]
_VARIANT_NAMES = frozenset({"small", "quantized", "int8", "large"})  # int8 = quantized (its model suffix)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def _queue_delay(text: str) -> tuple[str | None, int]:
    """An argparse type: ``MICROSECONDS`` (every variant) or ``VARIANT=MICROSECONDS``."""
    variant, _, value = text.rpartition("=")
    if variant and variant not in _VARIANT_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r}: the variant is one of {sorted(_VARIANT_NAMES)}")
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give microseconds (a whole number, 0 or more)")
    return (variant or None), int(value)


def _model_name(text: str) -> str:
    """An argparse type: what Triton takes as a model name (and the ModelPool CRD as model.name)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text) is None:
        raise argparse.ArgumentTypeError(f"{text!r}: use only letters, digits, '_', '.' and '-'")
    return text


def _reports_input_errors(command: Command) -> Command:
    """Input a user can fix (a missing file or folder, a data set that cannot be read) ends the
    command with one line naming it and exit status 2, as argparse does, not with a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from modelpool.models.data import DatasetError
        from modelpool.models.measure import ProfileError

        try:
            return command(args)
        except (DatasetError, ProfileError, FileNotFoundError, NotADirectoryError) as err:
            print(f"modelpool models {args.models_command}: error: {err}", file=sys.stderr)
            return 2

    return run


def _common(parser: argparse.ArgumentParser, out: Path, data: bool = True) -> None:
    if data:
        parser.add_argument(
            "--data", type=Path, default=None, help="data set folder or CSV (default: Banking77)"
        )
        parser.add_argument(
            "--limit",
            type=_positive_int,
            default=None,
            help="about this many training rows, a stratified sample (quick runs)",
        )
    parser.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _train(args: argparse.Namespace) -> int:
    from modelpool.models.train import TrainOptions, train_variants

    report = train_variants(
        TrainOptions(data=args.data or default_dataset(), out=args.out, seed=args.seed, limit=args.limit)
    )
    print(json.dumps(report, indent=1))
    return 0


def _train_scorer(args: argparse.Namespace) -> int:
    from modelpool.models.small import SMALL_META, SMALL_WEIGHTS
    from modelpool.models.train import TrainOptions, train_complexity_scorer

    missing = [name for name in (SMALL_META, SMALL_WEIGHTS) if not (args.trained / name).is_file()]
    if missing:  # checked before minutes of cross-fitting, not after
        raise FileNotFoundError(
            f"--trained {args.trained}: no {' or '.join(missing)}; run `modelpool models train --out "
            f"{args.trained}` first"
        )
    options = TrainOptions(
        data=args.data or default_dataset(), out=args.out, seed=args.seed, limit=args.limit
    )
    print(json.dumps(train_complexity_scorer(options, args.trained), indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from modelpool.models.export import DEFAULT_QUEUE_DELAY_US, export_repository, gpu_available
    from modelpool.models.runtime import Variant

    gpu = args.device == "gpu" or (args.device == "auto" and gpu_available())
    delays = {v: DEFAULT_QUEUE_DELAY_US for v in Variant}
    for name, microseconds in args.queue_delay_us or []:  # later entries win
        for variant in Variant if name is None else [Variant("quantized" if name == "int8" else name)]:
            delays[variant] = microseconds
    versions = export_repository(args.trained, args.out, args.name, gpu=gpu, queue_delay_us=delays)
    for version in versions:
        print(f"{version.name}: digest {version.digest} -> {args.out / version.name}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from modelpool.models.measure import (
        ProfileError,
        ProfileSettings,
        models_label_mismatch,
        profile_repository,
        repository_models,
        write_profiles,
    )
    from modelpool.models.profile import render_table
    from modelpool.models.train import load_limited

    if not args.repository.is_dir():
        raise NotADirectoryError(
            f"--repository {args.repository}: no such folder; run `modelpool models export --out "
            f"{args.repository}` first"
        )
    available = repository_models(args.repository)
    if not available:
        raise NotADirectoryError(
            f"--repository {args.repository}: no models in it (no <model>/config.pbtxt); run "
            f"`modelpool models export --out {args.repository}` first"
        )
    unknown = [m for m in args.models or [] if m not in available]
    if unknown:
        raise FileNotFoundError(
            f"--models {' '.join(unknown)}: not in --repository {args.repository}, which holds "
            f"{' '.join(available)}"
        )
    models = args.models or available
    data = args.data or default_dataset()
    splits = load_limited(data, args.limit, args.seed, training=False)
    for model in models:  # before minutes of tritonserver: accuracy needs the model's own labels
        mismatch = models_label_mismatch(args.repository / model, splits.test.label_names)
        if mismatch:
            raise ProfileError(
                f"--repository {args.repository}: model {model} does not answer with the labels of "
                f"--data {data}: {mismatch}; profile it on the data set it was trained on"
            )
    settings = ProfileSettings(
        latency_requests=args.requests,
        concurrent_requests=2 * args.requests,
        concurrency=args.concurrency,
        client_processes=args.client_processes,
    )
    profiles = profile_repository(
        args.repository, models, splits.test, f"{splits.name}/test", args.scorer, settings
    )
    write_profiles(profiles, args.out)
    print(render_table(profiles))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``models`` and its subcommands to the ``modelpool`` command line."""
    models = subparsers.add_parser("models", help="train, export and profile the model variants")
    sub = models.add_subparsers(dest="models_command", required=True)

    train = sub.add_parser("train", help="train the large head and the distilled small variant")
    _common(train, DEFAULT_TRAINED)
    train.set_defaults(func=_reports_input_errors(_train))

    scorer = sub.add_parser("train-scorer", help="train the complexity scorer (P(small variant is wrong))")
    _common(scorer, DEFAULT_SCORER)
    scorer.add_argument(
        "--trained", type=Path, default=DEFAULT_TRAINED, help="folder written by `models train`"
    )
    scorer.set_defaults(func=_reports_input_errors(_train_scorer))

    export = sub.add_parser("export", help="write the Triton model repository of the three variants")
    _common(export, DEFAULT_REPOSITORY, data=False)
    export.add_argument(
        "--trained", type=Path, default=DEFAULT_TRAINED, help="folder written by `models train`"
    )
    export.add_argument(
        "--name", type=_model_name, default="banking77", help="model name prefix: <name>-small|int8|large"
    )
    export.add_argument(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default="cpu",
        help="gpu: the large model's instances are KIND_GPU; auto: gpu when this machine has CUDA "
        "(the serving pods may not); default: cpu",
    )
    export.add_argument(
        "--queue-delay-us",
        type=_queue_delay,
        action="append",
        metavar="[VARIANT=]US",
        help="dynamic batching max_queue_delay_microseconds, for every variant or one "
        "(small|int8|large; repeatable; default: 0, a lone request runs at once)",
    )
    export.set_defaults(func=_reports_input_errors(_export))

    profile = sub.add_parser("profile", help="measure each variant on a real tritonserver")
    _common(profile, DEFAULT_PROFILES)
    profile.add_argument(
        "--repository", type=Path, default=DEFAULT_REPOSITORY, help="Triton model repository"
    )
    profile.add_argument(
        "--models", nargs="*", default=None, help="model names (default: all in the repository)"
    )
    profile.add_argument("--scorer", type=Path, default=None, help="scorer folder for complexity buckets")
    profile.add_argument(
        "--requests", type=_positive_int, default=200, help="single-item requests for batch-1 latency"
    )
    profile.add_argument(
        "--concurrency", type=_positive_int, default=8, help="requests in flight for the concurrent run"
    )
    profile.add_argument(
        "--client-processes",
        type=_positive_int,
        default=2,
        help="client processes sharing the concurrent run's threads (default: 2)",
    )
    profile.set_defaults(func=_reports_input_errors(_profile))


def main(argv: list[str] | None = None) -> int:
    """Run ``models`` subcommands on their own (``python -m modelpool.models.cli``)."""
    parser = argparse.ArgumentParser(prog="modelpool")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
