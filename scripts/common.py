"""Logging and argument helpers shared by the command-line scripts."""

import argparse
import logging

import jax


def setup_logging(verbose: bool = False) -> None:
    """Send INFO (or DEBUG when `verbose`) records to stderr with timestamps."""
    # force: importing orbax or TensorFlow already gives the root logger a
    # handler, which would make a plain basicConfig do nothing.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # orbax logs every checkpoint step through absl at INFO, and JAX logs
    # each accelerator plugin it fails to load; the devices are logged anyway.
    quiet_level = logging.DEBUG if verbose else logging.WARNING
    logging.getLogger("absl").setLevel(quiet_level)
    logging.getLogger("jax._src.xla_bridge").setLevel(quiet_level)


def log_devices(logger: logging.Logger) -> None:
    """Log the JAX backend and the devices visible to this process."""
    logger.info("JAX backend: %s", jax.default_backend())
    logger.info("JAX devices: %s", jax.devices())


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --data-dir and --source, which every script passes to `load_cifar10`."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding CIFAR-10 (default: $JAXCLF_DATA_DIR, else ./data "
        "when it holds a local layout, else the tfds default)",
    )
    parser.add_argument(
        "--source",
        default="auto",
        choices=["auto", "python", "binary", "tfds"],
        help="where to read CIFAR-10 from (default: auto, which tries the local "
        "layouts first and tfds last)",
    )


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --checkpoint-dir and --epoch, which pick a checkpoint written by train.py."""
    parser.add_argument(
        "--checkpoint-dir",
        default="outputs/checkpoints",
        help="checkpoint folder written by scripts/train.py (default: outputs/checkpoints)",
    )
    parser.add_argument(
        "--epoch",
        type=int,
        default=None,
        help="epoch of the checkpoint to load (default: the newest saved)",
    )


def require_positive(name: str, value: float) -> None:
    """Raise ValueError naming the command-line flag when `value` is not > 0."""
    if not value > 0:
        raise ValueError(f"--{name} must be greater than 0, got {value}")
