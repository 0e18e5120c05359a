"""Draw each class's weight row of a trained linear classifier as an image.

Row c of the kernel `[num_classes, 3072]` is reshaped to a 32x32 colour
image (the library's flattening order) and min-max scaled for display, each
template on its own by default or all on one scale with --shared-scale. A
template whose weights are all equal is drawn mid-grey. The 2x5 grid,
titled with the class names, is written to --output as PNG. No display is
needed unless --show opens a window.

Example:

    python scripts/plot_templates.py --checkpoint-dir outputs/checkpoints
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_checkpoint_arguments, prepare_output_file, run_script  # noqa: E402

from jaxclf.checkpoint import read_metadata, restore_params  # noqa: E402
from jaxclf.data import CLASS_NAMES  # noqa: E402
from jaxclf.linear import LinearClassifier, class_templates  # noqa: E402
from jaxclf.plotting import plot_class_templates  # noqa: E402

logger = logging.getLogger("plot_templates")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--shared-scale",
        action="store_true",
        help="scale all templates with one minimum and maximum instead of each on its own",
    )
    parser.add_argument(
        "--output",
        default="outputs/class_templates.png",
        help="PNG file to write, ending in .png; its folder is created (default: "
        "outputs/class_templates.png)",
    )
    parser.add_argument("--show", action="store_true", help="also open the image in a window")
    parser.add_argument("--verbose", action="store_true", help="log DEBUG messages too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the templates; return 2 after one log line on invalid input."""
    return run_script(run, build_parser().parse_args(argv), logger)


def run(args: argparse.Namespace) -> None:
    output = prepare_output_file(args.output, flag="output", suffix=".png")
    metadata = read_metadata(args.checkpoint_dir, epoch=args.epoch)
    class_names = list(metadata.get("config", {}).get("class_names", CLASS_NAMES))

    model = LinearClassifier(num_classes=len(class_names))
    template = model.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3), jax.numpy.uint8))
    params, metadata = restore_params(args.checkpoint_dir, template["params"], epoch=args.epoch)
    logger.info("loaded the checkpoint of epoch %d from %s", metadata["epoch"], args.checkpoint_dir)

    figure = plot_class_templates(class_templates(params), class_names, shared_scale=args.shared_scale)
    figure.savefig(output, dpi=100)
    logger.info("wrote %s", output)

    if args.show:
        show(output)


def show(path: Path) -> None:
    """Open the written PNG in a matplotlib window (needs a display)."""
    import matplotlib
    import matplotlib.pyplot as pyplot

    if matplotlib.get_backend().lower() == "agg":
        logger.warning("no interactive matplotlib backend (no display?); see %s instead", path)
        return
    pyplot.imshow(pyplot.imread(path))
    pyplot.axis("off")
    pyplot.show()


if __name__ == "__main__":
    sys.exit(main())
