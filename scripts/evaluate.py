"""Evaluate a checkpoint written by scripts/train.py on CIFAR-10.

Logs the overall accuracy and the accuracy of each class, and writes under
--output-dir:

    evaluation.json        accuracy, loss, per-class accuracy (null for a
                           class with no examples) and the confusion matrix
    confusion_matrix.png   rows true classes, columns predicted classes

Example:

    python scripts/evaluate.py --checkpoint-dir outputs/checkpoints
"""

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_checkpoint_arguments,
    add_data_arguments,
    prepare_output_dir,
    require_positive,
    run_script,
)

from jaxclf.checkpoint import read_metadata, restore_params  # noqa: E402
from jaxclf.data import CLASS_NAMES, load_cifar10  # noqa: E402
from jaxclf.linear import LinearClassifier  # noqa: E402
from jaxclf.metrics import confusion_matrix, per_class_accuracy  # noqa: E402
from jaxclf.plotting import plot_confusion_matrix  # noqa: E402
from jaxclf.training import create_train_state, evaluate  # noqa: E402

logger = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="split to evaluate; validation is carved as in the training run, with its "
        "--validation-size and --seed read from the checkpoint (default: test)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="images per compiled call (default: 1000)"
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--output-dir",
        default="outputs/evaluation",
        help="folder for evaluation.json and confusion_matrix.png (default: outputs/evaluation)",
    )
    parser.add_argument("--verbose", action="store_true", help="log DEBUG messages too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and write files; return 2 after one log line on invalid input."""
    return run_script(run, build_parser().parse_args(argv), logger)


def run(args: argparse.Namespace) -> None:
    require_positive("batch-size", args.batch_size)
    output_dir = prepare_output_dir(args.output_dir)
    metadata = read_metadata(args.checkpoint_dir, epoch=args.epoch)
    config = metadata.get("config", {})
    class_names = list(config.get("class_names", CLASS_NAMES))

    model = LinearClassifier(num_classes=len(class_names))
    state = create_train_state(jax.random.key(0), model, optax.identity())
    params, metadata = restore_params(args.checkpoint_dir, state.params, epoch=args.epoch)
    state = state.replace(params=params)
    # The optimiser state is skipped, so a checkpoint of any optimiser loads.
    logger.info(
        "loaded the weights of the checkpoint of epoch %d from %s (the optimiser state is not restored)",
        metadata["epoch"],
        args.checkpoint_dir,
    )

    data = load_cifar10(
        args.data_dir,
        source=args.source,
        validation_size=config.get("validation_size", 0) if args.split == "validation" else 0,
        seed=config.get("seed", 0),
    )
    split = getattr(data, args.split)
    if len(split.labels) == 0:
        raise ValueError(f"the {args.split} split is empty; the run used --validation-size 0")

    scores = evaluate(
        state, split.images, split.labels, batch_size=args.batch_size, loss=config.get("loss", "cross_entropy")
    )
    matrix = np.asarray(confusion_matrix(split.labels, scores["predictions"], num_classes=len(class_names)))
    per_class = np.asarray(
        per_class_accuracy(split.labels, scores["predictions"], num_classes=len(class_names))
    )

    logger.info(
        "%s accuracy %.4f, loss %.4f over %d images",
        args.split,
        float(scores["accuracy"]),
        float(scores["loss"]),
        len(split.labels),
    )
    for name, value, count in zip(class_names, per_class, matrix.sum(axis=1)):
        accuracy_text = "undefined (no examples)" if np.isnan(value) else f"{value:.4f}"
        logger.info("  %-12s %s over %d images", name, accuracy_text, count)

    write_outputs(output_dir, args, metadata, scores, per_class, matrix, class_names)


def write_outputs(output_dir, args, metadata, scores, per_class, matrix, class_names) -> None:
    report = {
        "checkpoint_dir": str(args.checkpoint_dir),
        "epoch": metadata["epoch"],
        "split": args.split,
        "accuracy": float(scores["accuracy"]),
        "loss": float(scores["loss"]),
        "per_class_accuracy": {
            name: None if np.isnan(value) else float(value) for name, value in zip(class_names, per_class)
        },
        "confusion_matrix": matrix.tolist(),
    }
    report_path = output_dir / "evaluation.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")

    figure_path = output_dir / "confusion_matrix.png"
    title = f"Confusion matrix, {args.split} split, epoch {metadata['epoch']}"
    plot_confusion_matrix(matrix, class_names, title=title).savefig(figure_path, dpi=100)
    logger.info("wrote %s and %s", report_path, figure_path)


if __name__ == "__main__":
    sys.exit(main())
