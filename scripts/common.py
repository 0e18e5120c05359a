"""Logging and argument helpers shared by the command-line scripts."""

import argparse
import logging
from collections.abc import Callable
import os
from pathlib import Path

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


def prepare_output_dir(path: str | os.PathLike, *, flag: str = "output-dir") -> Path:
    """Create the output folder `path` up front, before any work, and return it.

    Raises:
        ValueError: `path` is an existing file, cannot be created or is not
            writable; the message names `--flag`, the path and the fix.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--{flag} {folder} is an existing file, not a folder; pass a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"--{flag} {folder}: cannot create the folder ({error.strerror or error}); "
            "pass a folder you can write to"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--{flag} {folder} is not writable; pass a folder you can write to")
    return folder


def prepare_output_file(path: str | os.PathLike, *, flag: str = "output", suffix: str = ".png") -> Path:
    """Check the output file `path` and create its folder up front; return it.

    Raises:
        ValueError: `path` lacks `suffix`, is an existing folder, or its
            folder cannot be created.
    """
    output = Path(path)
    if output.suffix.lower() != suffix:
        raise ValueError(f"--{flag} {output} must end in {suffix}; pass a {suffix} file path")
    if output.is_dir():
        raise ValueError(f"--{flag} {output} is an existing folder; pass a {suffix} file path")
    if output.parent.exists() and not output.parent.is_dir():
        raise ValueError(
            f"--{flag} {output}: its folder {output.parent} is an existing file; pass a path in a folder"
        )
    prepare_output_dir(output.parent, flag=flag)
    return output


def check_seed(seed: int, *, flag: str = "seed") -> None:
    """Raise ValueError naming `--flag` unless `0 <= seed < 2**32`, the range `epoch_key` accepts."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"--{flag} must be an integer from 0 to {2**32 - 1}, got {seed}")


def require_non_negative(name: str, value: float) -> None:
    """Raise ValueError naming the command-line flag when `value` is not >= 0."""
    if not value >= 0:
        raise ValueError(f"--{name} must be 0 or more, got {value}")


def require_devices(count: int) -> None:
    """Raise ValueError unless --devices is between 1 and the number of JAX devices."""
    available = len(jax.devices())
    if not 1 <= count <= available:
        raise ValueError(
            f"--devices must be between 1 and the {available} devices available, got {count}; "
            "on CPU, simulate more with XLA_FLAGS=--xla_force_host_platform_device_count=N"
        )


# Errors that mean invalid input or missing files: one log line, exit status 2.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def run_script(
    run: Callable[[argparse.Namespace], None],
    args: argparse.Namespace,
    logger: logging.Logger,
) -> int:
    """Set up logging, log the devices and call `run(args)`.

    Returns:
        The exit status: 0, or 2 after one log line when `run` raises one of
        `INPUT_ERRORS`.
    """
    setup_logging(args.verbose)
    log_devices(logger)
    try:
        run(args)
    except INPUT_ERRORS as error:
        logger.error("%s", error)
        return 2
    return 0
