"""Train the linear classifier on CIFAR-10 and report test accuracy.

The defaults are the PyTorch CIFAR-10 lesson's recipe: pixels normalised to
[-1, 1], batches of 64, SGD with learning rate 0.001 and momentum 0.9, 10
epochs, softmax cross-entropy. Files written under --output-dir:

    checkpoints/<epoch>/   one orbax checkpoint per epoch (--resume continues
                           from the newest)
    metrics.json           settings, per-epoch history, test accuracy and
                           per-class accuracy (null for a class with no
                           test examples)
    training_curves.png    loss and accuracy per epoch

Example:

    python scripts/train.py --epochs 10 --output-dir outputs
"""

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_data_arguments,
    check_seed,
    prepare_output_dir,
    require_devices,
    require_non_negative,
    require_positive,
    run_script,
)

from jaxclf.checkpoint import latest_epoch  # noqa: E402
from jaxclf.data import load_cifar10  # noqa: E402
from jaxclf.linear import INITIALIZERS, LOSSES, LinearClassifier  # noqa: E402
from jaxclf.metrics import confusion_matrix, per_class_accuracy  # noqa: E402
from jaxclf.plotting import plot_training_curves  # noqa: E402
from jaxclf.sharding import describe_mesh, make_mesh  # noqa: E402
from jaxclf.training import create_train_state, evaluate, fit, make_optimizer  # noqa: E402

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    # The lesson's recipe.
    parser.add_argument("--epochs", type=int, default=10, help="total epochs to train (default: 10)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="examples per SGD step (default: 64)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=0.001, help="SGD step size (default: 0.001)"
    )
    parser.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum in [0, 1) (default: 0.9)"
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="torch.optim.SGD weight decay, added to the gradient before momentum (default: 0)",
    )

    # Model and loss.
    parser.add_argument(
        "--loss",
        choices=sorted(LOSSES),
        default="cross_entropy",
        help="training loss: softmax cross-entropy or multiclass hinge (default: cross_entropy)",
    )
    parser.add_argument(
        "--l2",
        type=float,
        default=0.0,
        help="strength of the L2 penalty l2 * sum(kernel^2) added to the loss (default: 0)",
    )
    parser.add_argument(
        "--initializer",
        "--init",
        choices=INITIALIZERS,
        default="flax",
        help="initial weights: flax (LeCun normal kernel, zero bias) or torch "
        "(nn.Linear's uniform rule) (default: flax)",
    )

    # Randomness and data.
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial weights, the validation split and the shuffles (default: 0)",
    )
    parser.add_argument(
        "--validation-size",
        type=int,
        default=5000,
        help="training images held out for per-epoch validation; 0 trains on all 50,000 "
        "(default: 5000)",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="devices to train on, data-parallel over the first N of jax.devices(); the batch "
        "size must be divisible by N. On CPU, simulate N devices with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N (default: 1)",
    )

    # Output.
    parser.add_argument(
        "--output-dir", default="outputs", help="folder for checkpoints, metrics and plots (default: outputs)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in <output-dir>/checkpoints",
    )
    parser.add_argument("--verbose", action="store_true", help="log DEBUG messages too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and write files; return 2 after one log line on invalid input."""
    return run_script(train, build_parser().parse_args(argv), logger)


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag of the first out-of-range argument."""
    require_positive("epochs", args.epochs)
    require_positive("batch-size", args.batch_size)
    require_positive("learning-rate", args.learning_rate)
    if not 0 <= args.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    for name in ["weight-decay", "l2", "validation-size"]:
        require_non_negative(name, getattr(args, name.replace("-", "_")))
    for name in ["learning-rate", "weight-decay", "l2"]:
        value = getattr(args, name.replace("-", "_"))
        if not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, got {value}")
    check_seed(args.seed)
    require_devices(args.devices)
    if args.batch_size % args.devices:
        raise ValueError(
            f"--batch-size {args.batch_size} must be divisible by --devices {args.devices}"
        )


def train(args: argparse.Namespace) -> None:
    check_arguments(args)
    output_dir = prepare_output_dir(args.output_dir)
    mesh = make_mesh(args.devices) if args.devices > 1 else None
    if mesh is not None:
        logger.info("data-parallel training on %s", describe_mesh(mesh))
    tx = make_optimizer(args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    checkpoint_dir = (output_dir / "checkpoints").absolute()
    saved_epoch = latest_epoch(checkpoint_dir)
    if saved_epoch is not None and not args.resume:
        raise FileExistsError(
            f"{checkpoint_dir} already contains checkpoints up to epoch {saved_epoch}; pass "
            "--resume to continue that run or another --output-dir to start a new one"
        )
    if args.resume and saved_epoch is not None and args.epochs < saved_epoch:
        raise ValueError(
            f"--epochs {args.epochs} is below the {saved_epoch} epochs the run in "
            f"{checkpoint_dir} already has; pass --epochs {saved_epoch} or more"
        )
    done = (saved_epoch or 0) if args.resume else 0

    data = load_cifar10(
        args.data_dir, source=args.source, validation_size=args.validation_size, seed=args.seed
    )
    logger.info(
        "CIFAR-10: %d train, %d validation, %d test images",
        len(data.train.labels),
        len(data.validation.labels),
        len(data.test.labels),
    )
    if args.batch_size > len(data.train.labels):
        logger.info(
            "--batch-size %d is above the %d training images, so each epoch is one step over all of them",
            args.batch_size,
            len(data.train.labels),
        )

    model = LinearClassifier(num_classes=len(data.class_names), initializer=args.initializer)
    state = create_train_state(jax.random.key(args.seed), model, tx)
    config = {
        "learning_rate": args.learning_rate,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "initializer": args.initializer,
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "validation_size": args.validation_size,
        "epochs": args.epochs,
    }

    with logging_redirect_tqdm(), tqdm(total=args.epochs, initial=done, unit="epoch") as progress:
        clock = {"start": time.perf_counter()}

        def log_epoch(record: dict[str, float]) -> None:
            seconds = time.perf_counter() - clock["start"]
            message = "epoch %d/%d: train loss %.4f accuracy %.4f"
            values = [record["epoch"], args.epochs, record["train_loss"], record["train_accuracy"]]
            if "validation_loss" in record:
                message += ", validation loss %.4f accuracy %.4f"
                values += [record["validation_loss"], record["validation_accuracy"]]
            logger.info(message + " (%.2f s)", *values, seconds)
            progress.update(1)
            clock["start"] = time.perf_counter()

        state, history = fit(
            state,
            data.train.images,
            data.train.labels,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            loss=args.loss,
            l2=args.l2,
            validation=(data.validation.images, data.validation.labels),
            checkpoint_dir=checkpoint_dir,
            resume=args.resume,
            config=config,
            on_epoch_end=log_epoch,
            mesh=mesh,
        )

    test_metrics = test_report(state, data, args.loss)
    write_outputs(output_dir, config, args, history, test_metrics)


def test_report(state, data, loss: str) -> dict:
    """Evaluate on the test split and log overall and per-class accuracy."""
    scores = evaluate(state, data.test.images, data.test.labels, loss=loss)
    num_classes = len(data.class_names)
    per_class = np.asarray(
        per_class_accuracy(data.test.labels, scores["predictions"], num_classes=num_classes)
    )
    matrix = np.asarray(confusion_matrix(data.test.labels, scores["predictions"], num_classes=num_classes))

    logger.info("test accuracy %.4f, loss %.4f", float(scores["accuracy"]), float(scores["loss"]))
    for name, value, count in zip(data.class_names, per_class, matrix.sum(axis=1)):
        accuracy_text = "undefined (no examples)" if np.isnan(value) else f"{value:.4f}"
        logger.info("  %-12s %s over %d images", name, accuracy_text, count)
    return {
        "loss": float(scores["loss"]),
        "accuracy": float(scores["accuracy"]),
        "per_class_accuracy": {
            name: None if np.isnan(value) else float(value)
            for name, value in zip(data.class_names, per_class)
        },
        "confusion_matrix": matrix.tolist(),
    }


def write_outputs(output_dir: Path, config: dict, args, history: list, test_metrics: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "config": {**config, "seed": args.seed, "batch_size": args.batch_size, "loss": args.loss, "l2": args.l2},
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "history": history,
        "test": test_metrics,
    }
    metrics_path = output_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    curves_path = output_dir / "training_curves.png"
    plot_training_curves(history).savefig(curves_path, dpi=100)
    logger.info("wrote %s, %s and checkpoints in %s", metrics_path, curves_path, output_dir / "checkpoints")


if __name__ == "__main__":
    sys.exit(main())
