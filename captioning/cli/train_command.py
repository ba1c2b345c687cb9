"""``captioning train``: train a captioner and export a model bundle."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from captioning import precision
from captioning.model_flags import add_model_flags, apply_model_flags

log = logging.getLogger("captioning.train")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a captioner and export a model bundle",
        description="Train InceptionV3 + attention-GRU on captioned images under a "
        "tf.distribute strategy, with checkpoints (a rerun of the same command resumes), "
        "TensorBoard logs and early stopping, then write a self-contained bundle.",
    )
    parser.add_argument(
        "--captions",
        required=True,
        help="captions file (COCO/Karpathy JSON, Flickr8k token file, or CSV with image,caption)",
    )
    parser.add_argument("--images", help="directory holding the images (optional with --features)")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    add_model_flags(parser)
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--batch-size", type=int, help="batch size per replica")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate")
    parser.add_argument(
        "--trainable-backbone",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the backbone too (else its features are cached)",
    )
    parser.add_argument(
        "--normalization",
        choices=("inception", "dataset"),
        help="InceptionV3 preprocess_input, or mean/std of the training images",
    )
    parser.add_argument(
        "--precision",
        choices=precision.CHOICES,
        help="dtype policy (auto: bf16 where the hardware has it)",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "mirrored", "multiworker", "one"),
        help="tf.distribute strategy (auto: MultiWorkerMirrored when TF_CONFIG describes "
        "several tasks, as Vertex AI and Kubernetes set it; else Mirrored over all GPUs or "
        "CPU devices; one device: the default strategy)",
    )
    parser.add_argument(
        "--cpu-replicas",
        type=int,
        default=1,
        help="split the CPU into N logical devices (N replicas without a GPU)",
    )
    parser.add_argument(
        "--run-dir",
        help="checkpoints, TensorBoard logs, training curves and the resolved config, local "
        "or gs:// (default: OUT.run); rerunning the same command resumes from it",
    )
    parser.add_argument(
        "--feature-cache",
        help="local directory for the example cache (decoded images or backbone features; "
        "default: RUN_DIR/cache, or a temporary one when RUN_DIR is on gs://)",
    )
    parser.add_argument(
        "--features",
        metavar="DIR",
        help="train from the committed run of `captioning features --output DIR` (frozen "
        "backbone; image and backbone settings come from DIR/features.json)",
    )
    parser.add_argument(
        "--example-cache",
        choices=("auto", "memory", "disk"),
        help="where later epochs read the cached examples from: memory, disk (streamed, for "
        "datasets larger than RAM), or auto (default: memory when they fit in a quarter of it)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed for the train/val split, initial weights and shuffling"
    )
    parser.set_defaults(run=run)


def resolve_config(args: argparse.Namespace):
    """The preset with every flag the user gave applied on top."""
    from captioning.errors import UserError
    from captioning.presets import get_preset

    config = get_preset(args.preset)
    captioner = apply_model_flags(config.captioner, args.image_size, args.backbone_weights)
    if args.normalization is not None:
        captioner = dataclasses.replace(
            captioner, image=dataclasses.replace(captioner.image, normalization=args.normalization)
        )
    if args.trainable_backbone is not None:
        encoder = dataclasses.replace(captioner.encoder, trainable=args.trainable_backbone)
        captioner = dataclasses.replace(captioner, encoder=encoder)
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "precision": args.precision,
        "seed": args.seed,
        "image_cache": args.example_cache,
    }
    for name in ("epochs", "batch_size"):
        if overrides[name] is not None and overrides[name] < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(config, captioner=captioner, **given)


def _for_features(args: argparse.Namespace, config):
    """``config`` with a frozen backbone, once the flags are checked against the features."""
    from captioning.errors import UserError
    from captioning.training.feature_spec import read_spec

    if args.trainable_backbone:
        raise UserError("--features means a frozen backbone; drop --trainable-backbone")
    clashes = read_spec(args.features).contradictions(
        args.image_size, args.normalization, args.backbone_weights
    )
    if clashes:
        raise UserError(f"--features {args.features} was made otherwise: {'; '.join(clashes)}")
    encoder = dataclasses.replace(config.captioner.encoder, trainable=False)
    return dataclasses.replace(
        config, captioner=dataclasses.replace(config.captioner, encoder=encoder)
    )


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    if args.features:
        config = _for_features(args, config)
    from captioning.training.strategy import split_cpu

    split_cpu(args.cpu_replicas)
    from captioning.training.trainer import train

    result = train(
        args.captions,
        args.images,
        args.out,
        config,
        format=args.format,
        strategy_kind=args.strategy,
        run_dir=args.run_dir,
        feature_cache_dir=args.feature_cache,
        features=args.features,
    )
    print(
        json.dumps(
            {
                "bundle": result.bundle,
                "model_id": result.model_id,
                "chief": result.is_chief,
                "weights_fingerprint": result.weights_fingerprint,
                "epochs_run": result.epochs_run,
                "resumed_from": result.resumed_from,
                "seconds": round(result.seconds, 1),
                "final_loss": result.history.get("loss", [None])[-1],
                "final_val_loss": result.history.get("val_loss", [None])[-1],
            }
        ),
        file=sys.stdout,
    )
    return 0
