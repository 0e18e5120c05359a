"""Logging and argument helpers shared by the command-line scripts."""

import argparse
import logging

import jax


def setup_logging(verbose: bool = False) -> None:
    """Send INFO (or DEBUG when `verbose`) records to stderr with timestamps."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def log_devices(logger: logging.Logger) -> None:
    """Log the JAX backend and the devices this process sees."""
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
