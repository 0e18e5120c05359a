"""Time jaxclf against PyTorch on the same data, in one process, side by side.

Workloads (select with --workloads):

- `linear`: one epoch of the linear classifier at batch 64 (SGD, learning
  rate 0.001, momentum 0.9). PyTorch three ways: as the lesson writes it (a
  `Dataset` that converts each image like torchvision's `ToTensor` and
  `Normalize`, a `DataLoader` with 2 workers), with the data preloaded as one
  normalised float tensor, and the preloaded loop under `torch.compile`.
  Against jaxclf's compiled `train_epoch`.
- `evaluate`: logits and predictions of the model trained above over the test
  images, PyTorch (lesson `DataLoader` and preloaded) against jaxclf.
- `knn-l2`, `knn-l1`: k = 10 nearest training images of every test image,
  `torch.cdist` + `torch.topk` over query chunks against
  `jaxclf.knn.nearest_neighbors`. PyTorch's L1 search takes about 10 minutes
  on 2 cores for the full set, so it runs on the first --torch-l1-queries
  test images and its time is extrapolated (labelled so in the table).

Before the workloads the script measures the machine in the same process:
float32 and bfloat16 GEMM rates and memory bandwidth, which give each
workload's roofline bound. Repeats of the variants alternate (A B C, C B A,
...) so that drift of a shared machine hits every variant alike. The first
call of each variant is timed apart as its warm-up (compilation for jaxclf
and `torch.compile`, worker start and caches for the rest).

Outputs under --output-dir: `benchmark.json` (every timing, versions,
machine rates, agreement checks) and `benchmark.png` (bar chart); the table
goes to stdout as Markdown.
"""

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_data_arguments,
    check_seed,
    log_devices,
    prepare_output_dir,
    setup_logging,
)

logger = logging.getLogger("benchmark")

WORKLOADS = ("linear", "evaluate", "knn-l2", "knn-l1")
NUM_CLASSES = 10
BATCH_SIZE = 64
LEARNING_RATE = 0.001
MOMENTUM = 0.9
KNN_K = 10
# One epoch from the same initial weights in another shuffled order moves
# test accuracy by about a percentage point. A larger gap is a disagreement.
ACCURACY_TOLERANCE = 0.02
# Logits that differ more than this between frameworks on the same weights
# are a disagreement (float32 sums over 3072 features in different orders).
LOGITS_ATOL = 1e-4

FULL_SIZES = {"num_train": None, "num_test": None, "torch_l1_queries": 500}
QUICK_SIZES = {"num_train": 2048, "num_test": 512, "torch_l1_queries": 128}


@dataclass
class Variant:
    """One implementation of a workload.

    Attributes:
        name: label in the table.
        framework: "jaxclf" or "torch".
        run: one timed call; returns what the agreement check compares.
        skipped: why the variant did not run, or None.
        scale: factor applied to measured times (an extrapolation from a
            subset); 1 for a full run.
        note: shown in the table beside the times.
    """

    name: str
    framework: str
    run: Callable[[], Any] | None
    skipped: str | None = None
    scale: float = 1.0
    note: str = ""
    warm_up_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    first_result: Any = None


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help=f"workloads to run, in this order (default: all, {' '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes ({QUICK_SIZES['num_train']} training and "
        f"{QUICK_SIZES['num_test']} test images), no torch.compile; under a minute",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="random uint8 images of CIFAR-10's shape instead of the data set "
        "(timings only; accuracies are chance)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per variant (default: 5, 3 with --quick)"
    )
    parser.add_argument(
        "--torch-l1-queries",
        type=int,
        default=None,
        help="test images PyTorch's L1 search runs on; its time is scaled to "
        f"all test images (default: {FULL_SIZES['torch_l1_queries']}, "
        f"{QUICK_SIZES['torch_l1_queries']} with --quick)",
    )
    parser.add_argument(
        "--torch-compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the torch.compile variant of the epoch (auto: on unless --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="PyTorch intra-op threads, set with torch.set_num_threads (default: the "
        f"number of cores, {os.cpu_count()}); JAX uses every core",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initial weights and shuffles (default: 0)")
    parser.add_argument(
        "--output-dir", default="outputs/benchmark", help="folder for benchmark.json and benchmark.png (default: outputs/benchmark)"
    )
    parser.add_argument("--verbose", action="store_true", help="log DEBUG records")
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError naming the argument for values the run cannot use."""
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be 1 or more, got {args.repeats}")
    if args.torch_l1_queries is not None and args.torch_l1_queries < 1:
        raise ValueError(f"--torch-l1-queries must be 1 or more, got {args.torch_l1_queries}")
    if args.threads is None or args.threads < 1:
        raise ValueError(f"--threads must be 1 or more, got {args.threads}")
    check_seed(args.seed)


def import_torch():
    """Import PyTorch, or raise ImportError with the install command."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "PyTorch is not installed, and the benchmark compares jaxclf with it. "
            "Install the torch extra: pip install torch==2.13.0 -e '.[torch]' "
            f"(import failed: {error})"
        ) from error
    return torch


# ---------------------------------------------------------------- environment


def collect_versions(torch) -> dict[str, str]:
    import flax
    import jaxlib
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def describe_source() -> dict[str, Any]:
    """Return the git commit of this checkout and whether files differ from it, when git is there."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified_files": None}
    return {"commit": commit, "modified_files": [line[3:] for line in changed if line.strip()]}


def describe_machine() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in jax.devices()],
    }


def best_time(function: Callable[[], Any], repeats: int) -> float:
    """Return the fastest of `repeats` calls, after one untimed call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_machine(torch, quick: bool) -> dict[str, float]:
    """Measure peak GEMM rates and memory bandwidth with JAX and PyTorch.

    The roofline uses the best rate either framework reaches, since that is
    what this machine demonstrably does.
    """
    size = 1024 if quick else 2048
    depth = 3072
    repeats = 3 if quick else 5
    flops = 2.0 * size * size * depth
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, depth), dtype=np.float32)
    b = rng.standard_normal((depth, size), dtype=np.float32)

    matmul = jax.jit(lambda x, y: x @ y)
    matmul_bf16 = jax.jit(
        lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32)
    )
    a_jax, b_jax = jnp.asarray(a), jnp.asarray(b)
    a_bf16, b_bf16 = a_jax.astype(jnp.bfloat16), b_jax.astype(jnp.bfloat16)
    jax_f32 = flops / best_time(lambda: matmul(a_jax, b_jax).block_until_ready(), repeats)
    jax_bf16 = flops / best_time(lambda: matmul_bf16(a_bf16, b_bf16).block_until_ready(), repeats)

    a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
    torch_f32 = flops / best_time(lambda: torch.mm(a_torch, b_torch), repeats)

    # Bandwidth: a scaled copy reads and writes every byte once.
    elements = (32 if quick else 256) * 2**20 // 4
    source = jnp.ones(elements, jnp.float32)
    scale = jax.jit(lambda x: x * jnp.float32(2.0))
    jax_bandwidth = 2 * 4 * elements / best_time(lambda: scale(source).block_until_ready(), repeats)
    source_torch = torch.ones(elements)
    target_torch = torch.empty(elements)
    torch_bandwidth = 2 * 4 * elements / best_time(
        lambda: torch.mul(source_torch, 2.0, out=target_torch), repeats
    )

    return {
        "gemm_shape": f"[{size}, {depth}] x [{depth}, {size}]",
        "jax_float32_flops": jax_f32,
        "jax_bfloat16_flops": jax_bf16,
        "torch_float32_flops": torch_f32,
        "float32_flops": max(jax_f32, torch_f32),
        "bfloat16_flops": jax_bf16,
        "jax_bandwidth_bytes": jax_bandwidth,
        "torch_bandwidth_bytes": torch_bandwidth,
        "bandwidth_bytes": max(jax_bandwidth, torch_bandwidth),
    }


def best_rates(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Keep the higher of two measurements of each rate; contention only lowers them."""
    return {
        name: max(value, second[name]) if isinstance(value, float) else value
        for name, value in first.items()
    }


def apply_roofline(summary: dict[str, Any], rates: dict[str, float]) -> None:
    """Fill in a workload's roofline bound: the slower of its FLOPs at the float32
    GEMM rate and its bytes at the bandwidth, or none for work that is no GEMM."""
    flops = summary["flops"]
    bytes_moved = summary["bytes_moved"]
    if summary["work"] == "gemm":
        bound = max(flops / rates["float32_flops"], bytes_moved / rates["bandwidth_bytes"])
        note = (
            f"{flops / 1e9:.3g} GFLOP ({summary['work_note']}) at "
            f"{rates['float32_flops'] / 1e9:.0f} GFLOP/s float32 = {format_seconds(flops / rates['float32_flops'])}, "
            f"{format_seconds(flops / rates['bfloat16_flops'])} at {rates['bfloat16_flops'] / 1e9:.0f} "
            f"GFLOP/s bfloat16; {bytes_moved / 1e6:,.0f} MB at {rates['bandwidth_bytes'] / 1e9:.0f} GB/s "
            f"= {format_seconds(bytes_moved / rates['bandwidth_bytes'])}"
        )
    else:
        bound = None
        note = f"none: {summary['work_note']}"
    summary["roofline_bound_s"] = bound
    summary["roofline_note"] = note
    for row in summary["variants"]:
        if "median_s" in row:
            row["fraction_of_roofline"] = bound / row["median_s"] if bound else None


# ---------------------------------------------------------------- data


def load_data(args: argparse.Namespace, sizes: dict[str, Any]):
    """Return train and test splits as (images uint8 [N, 32, 32, 3], labels int32 [N])."""
    from jaxclf.data import load_cifar10

    if args.synthetic:
        num_train = sizes["num_train"] or 50_000
        num_test = sizes["num_test"] or 10_000
        rng = np.random.default_rng(args.seed)

        def random_split(count):
            images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, NUM_CLASSES, size=count).astype(np.int32)
            return images, labels

        return random_split(num_train), random_split(num_test), "synthetic uniform uint8"

    cifar = load_cifar10(args.data_dir, source=args.source, validation_size=0)
    train = (cifar.train.images[: sizes["num_train"]], cifar.train.labels[: sizes["num_train"]])
    test = (cifar.test.images[: sizes["num_test"]], cifar.test.labels[: sizes["num_test"]])
    return train, test, "CIFAR-10"


def normalized_rows(images: np.ndarray) -> np.ndarray:
    """float32 `(x / 255 - 0.5) / 0.5` in the library's NHWC flattening, `[N, 3072]`."""
    pixels = images.reshape(images.shape[0], -1).astype(np.float32)
    return (pixels / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


# ---------------------------------------------------------------- harness


def time_variants(variants: list[Variant], repeats: int, workload: str) -> None:
    """Warm up every variant once, then time `repeats` alternating rounds.

    Round r runs the variants in order when r is even and reversed when odd,
    so a slow drift of the machine weighs on every variant alike.
    """
    runnable = [variant for variant in variants if variant.skipped is None]
    for variant in runnable:
        logger.info("%s: warming up %s", workload, variant.name)
        start = time.perf_counter()
        try:
            variant.first_result = variant.run()
        except Exception as error:  # noqa: BLE001 - a failed variant is a table row
            logger.warning("%s: %s failed: %s: %s", workload, variant.name, type(error).__name__, error)
            variant.skipped = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
            continue
        variant.warm_up_s = (time.perf_counter() - start) * variant.scale

    runnable = [variant for variant in variants if variant.skipped is None]
    rounds = [runnable if r % 2 == 0 else runnable[::-1] for r in range(repeats)]
    calls = [variant for round_variants in rounds for variant in round_variants]
    for variant in tqdm(calls, desc=workload, unit="run", leave=False):
        start = time.perf_counter()
        variant.run()
        variant.times_s.append((time.perf_counter() - start) * variant.scale)


def summarize(
    workload: str,
    variants: list[Variant],
    *,
    items: int,
    item_unit: str,
    flops: float,
    bytes_moved: float,
    work: str,
    work_note: str,
    agreement: list[str],
    agreement_ok: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect medians, spreads, ratios and checks of one workload into a dict."""
    rows = []
    torch_medians = [
        statistics.median(variant.times_s)
        for variant in variants
        if variant.framework == "torch" and variant.times_s
    ]
    fastest_torch = min(torch_medians) if torch_medians else None
    for variant in variants:
        row: dict[str, Any] = {
            "variant": variant.name,
            "framework": variant.framework,
            "skipped": variant.skipped,
            "note": variant.note,
            "extrapolation_factor": variant.scale,
        }
        if variant.times_s:
            median = statistics.median(variant.times_s)
            row |= {
                "median_s": median,
                "min_s": min(variant.times_s),
                "max_s": max(variant.times_s),
                "times_s": variant.times_s,
                "warm_up_s": variant.warm_up_s,
                "throughput_per_s": items / median,
                "speedup_vs_fastest_torch": fastest_torch / median if fastest_torch else None,
            }
        rows.append(row)
    return {
        "workload": workload,
        "items": items,
        "item_unit": item_unit,
        "flops": flops,
        "bytes_moved": bytes_moved,
        "work": work,
        "work_note": work_note,
        "agreement": agreement,
        "agreement_ok": agreement_ok,
        "variants": rows,
        **(extra or {}),
    }


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def markdown_table(summary: dict[str, Any]) -> str:
    """Format a workload's variants as a Markdown table, then its roofline and agreement lines."""
    lines = [
        f"{summary['workload']} ({summary['items']} {summary['item_unit']})",
        "",
        "| variant | median | spread (min-max) | warm-up | throughput | vs fastest PyTorch "
        "| roofline / median | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["variants"]:
        if "median_s" not in row:
            lines.append(f"| {row['variant']} | - | - | - | - | - | - | {row['skipped'] or ''} |")
            continue
        spread = f"{format_seconds(row['min_s'])} - {format_seconds(row['max_s'])}"
        speedup = row["speedup_vs_fastest_torch"]
        fraction = row.get("fraction_of_roofline")
        lines.append(
            f"| {row['variant']} | {format_seconds(row['median_s'])} | {spread} | "
            f"{format_seconds(row['warm_up_s'])} | "
            f"{row['throughput_per_s']:,.0f} {summary['item_unit']}/s | "
            f"{f'{speedup:.2f}x' if speedup else '-'} | "
            f"{f'{fraction:.0%}' if fraction else '-'} | {row['note']} |"
        )
    lines.append("")
    lines.append(
        f"Roofline bound: {format_seconds(summary['roofline_bound_s'])} ({summary['roofline_note']})."
    )
    if summary.get("speedup_vs_lesson"):
        lines.append(f"jaxclf's epoch is {summary['speedup_vs_lesson']:.1f}x faster than the lesson's pipeline.")
    status = "agree" if summary["agreement_ok"] else "DISAGREE"
    lines.append(f"Agreement ({status}): " + "; ".join(summary["agreement"]) + ".")
    return "\n".join(lines)


def plot_summaries(summaries: list[dict[str, Any]], path: Path) -> None:
    """Draw one horizontal bar chart per workload: medians, min-max whiskers, roofline line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(summaries), 1, figsize=(9, 1.2 + 1.6 * len(summaries)), squeeze=False
    )
    for axis, summary in zip(axes[:, 0], summaries):
        rows = [row for row in summary["variants"] if "median_s" in row]
        names = [row["variant"] for row in rows]
        medians = np.array([row["median_s"] for row in rows])
        lower = medians - np.array([row["min_s"] for row in rows])
        upper = np.array([row["max_s"] for row in rows]) - medians
        colors = ["tab:blue" if row["framework"] == "jaxclf" else "tab:orange" for row in rows]
        axis.barh(names, medians, xerr=[lower, upper], color=colors, capsize=3)
        if summary["roofline_bound_s"]:
            axis.axvline(summary["roofline_bound_s"], color="black", linestyle="--", label="roofline bound")
            axis.legend(loc="lower right", fontsize="small")
        axis.set_xscale("log")
        axis.set_xlabel("seconds (log scale; median, whiskers min-max)")
        axis.set_title(f"{summary['workload']} ({summary['items']} {summary['item_unit']})")
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------- linear: PyTorch


def torch_linear_model(torch, initial_kernel: np.ndarray, initial_bias: np.ndarray):
    """`nn.Linear(3072, 10)` holding the given weights; inputs are rows in NHWC order."""
    model = torch.nn.Linear(initial_kernel.shape[1], initial_kernel.shape[0])
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(np.asarray(initial_kernel, np.float32)))
        model.bias.copy_(torch.from_numpy(np.asarray(initial_bias, np.float32)))
    return model


def make_lesson_dataset(torch, images: np.ndarray, labels: np.ndarray):
    """Build a `Dataset` that converts one image per item, as torchvision's CIFAR10 does.

    torchvision is not a dependency, so its three steps are written out with
    the same arithmetic: `PIL.Image.fromarray`, `ToTensor` (HWC uint8 to CHW
    float32 in [0, 1]) and `Normalize(0.5, 0.5)`.
    """
    from PIL import Image

    mean = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)

    class LessonCifar(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, index):
            image = Image.fromarray(images[index])
            tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))
            tensor = tensor.view(image.size[1], image.size[0], len(image.getbands()))
            tensor = tensor.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
            tensor = tensor.sub(mean).div(std)
            return tensor, int(labels[index])

    return LessonCifar()


def lesson_flatten(torch, batch):
    """Flatten CHW tensors in the library's NHWC feature order, so weights mean the same."""
    return batch.permute(0, 2, 3, 1).reshape(batch.shape[0], -1)


def torch_lesson_epoch_variant(torch, train, initial, seed) -> Variant:
    model = torch_linear_model(torch, *initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    criterion = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        make_lesson_dataset(torch, *train),
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=2,
        generator=generator,
    )

    def run():
        running_loss = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            outputs = model(lesson_flatten(torch, inputs))
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        return torch_params(model), running_loss / len(loader)

    return Variant("PyTorch, lesson DataLoader (2 workers)", "torch", run)


def torch_params(model) -> tuple[np.ndarray, np.ndarray]:
    return model.weight.detach().numpy().copy(), model.bias.detach().numpy().copy()


def torch_preloaded_epoch(torch, train_rows, train_labels, initial, seed, compiled: bool):
    """Build the preloaded epoch loop, its step optionally under `torch.compile`."""
    model = torch_linear_model(torch, *initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(seed)
    num_examples = train_rows.shape[0]

    def loss_of(inputs, labels):
        return torch.nn.functional.cross_entropy(model(inputs), labels)

    def optimizer_step():
        optimizer.step()

    if compiled:
        # A cold compile, as on a first run: without this, inductor reuses
        # kernels that an earlier run left on disk.
        torch.compiler.config.force_disable_caches = True
        loss_of = torch.compile(loss_of)
        optimizer_step = torch.compile(optimizer_step)

    def run():
        permutation = torch.randperm(num_examples, generator=generator)
        total_loss = torch.zeros(())
        num_batches = 0
        for start in range(0, num_examples, BATCH_SIZE):
            batch = permutation[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_of(train_rows[batch], train_labels[batch])
            loss.backward()
            optimizer_step()
            total_loss += loss.detach()
            num_batches += 1
        return torch_params(model), float(total_loss) / num_batches

    return run


# ---------------------------------------------------------------- linear: jaxclf


def jaxclf_initial_state(images: np.ndarray, seed: int):
    """Create a train state with PyTorch's initialisation rule and the lesson's optimiser."""
    from jaxclf.linear import LinearClassifier
    from jaxclf.training import create_train_state, make_optimizer

    model = LinearClassifier(num_classes=NUM_CLASSES, initializer="torch")
    tx = make_optimizer(LEARNING_RATE, momentum=MOMENTUM)
    return create_train_state(jax.random.key(seed), model, tx, image_shape=images.shape[1:])


def jaxclf_kernel_bias(state) -> tuple[np.ndarray, np.ndarray]:
    params = state.params
    return np.array(params["kernel"]), np.array(params["bias"])


def jaxclf_epoch_variant(state, images, labels, seed) -> tuple[Variant, Callable[[], Any]]:
    from jaxclf.training import train_epoch

    images = jax.device_put(images)
    labels = jax.device_put(labels)
    holder = {"state": state, "key": jax.random.key(seed)}

    def run():
        holder["key"], epoch_key = jax.random.split(holder["key"])
        holder["state"], metrics = train_epoch(
            holder["state"], images, labels, epoch_key, batch_size=BATCH_SIZE
        )
        jax.block_until_ready(holder["state"])
        return jaxclf_kernel_bias(holder["state"]), float(metrics["loss"])

    return Variant("jaxclf train_epoch (one jit, lax.scan)", "jaxclf", run), lambda: holder["state"]


def jaxclf_step_loop_variant(state, images, labels, seed) -> Variant:
    """Run epochs as a Python loop over the jitted `train_step`, batches gathered on the host."""
    from jaxclf.training import train_step

    rng = np.random.default_rng(seed)
    holder = {"state": state}

    def run():
        order = rng.permutation(labels.shape[0])
        state = holder["state"]
        losses = []
        for start in range(0, order.shape[0], BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            state, metrics = train_step(state, images[batch], labels[batch])
            losses.append(metrics["loss"])
        holder["state"] = jax.block_until_ready(state)
        return jaxclf_kernel_bias(state), float(np.mean(jax.device_get(losses)))

    return Variant("jaxclf train_step per batch (Python loop)", "jaxclf", run)


def accuracy_of_weights(kernel_bias, test_rows: np.ndarray, test_labels: np.ndarray) -> float:
    """Compute the accuracy of weights on normalised rows in float64 NumPy, the same for every framework."""
    kernel, bias = kernel_bias
    logits = test_rows.astype(np.float64) @ kernel.astype(np.float64).T + bias
    return float(np.mean(np.argmax(logits, axis=1) == test_labels))


def run_linear(torch, args, train, test, repeats) -> tuple[dict[str, Any], Any]:
    train_images, train_labels = train
    state = jaxclf_initial_state(train_images, args.seed)
    initial = jaxclf_kernel_bias(state)

    train_rows = torch.from_numpy(normalized_rows(train_images))
    train_labels_torch = torch.from_numpy(train_labels.astype(np.int64))

    jax_variant, final_state = jaxclf_epoch_variant(state, train_images, train_labels, args.seed)
    variants = [
        torch_lesson_epoch_variant(torch, train, initial, args.seed),
        Variant(
            "PyTorch, preloaded tensor",
            "torch",
            torch_preloaded_epoch(torch, train_rows, train_labels_torch, initial, args.seed, False),
        ),
    ]
    compile_variant = Variant("PyTorch, preloaded + torch.compile", "torch", None)
    if args.torch_compile_enabled:
        try:
            compile_variant.run = torch_preloaded_epoch(
                torch, train_rows, train_labels_torch, initial, args.seed, True
            )
            compile_variant.note = "warm-up includes compiling, caches off"
        except Exception as error:  # noqa: BLE001 - reported in the table
            compile_variant.skipped = f"failed: {type(error).__name__}: {error}"
    else:
        compile_variant.skipped = "skipped (--torch-compile off, or --quick)"
    step_loop_variant = jaxclf_step_loop_variant(state, train_images, train_labels, args.seed)
    variants += [compile_variant, step_loop_variant, jax_variant]

    with warnings.catch_warnings():
        # The DataLoader workers fork a process that has started JAX threads.
        # The workers run only NumPy and PyTorch code, so JAX's warning about
        # fork does not apply.
        warnings.filterwarnings("ignore", message=".*os.fork.*")
        time_variants(variants, repeats, "linear")

    test_rows = normalized_rows(test[0])
    accuracies = {}
    losses = {}
    for variant in variants:
        if variant.first_result is not None:
            kernel_bias, loss = variant.first_result
            accuracies[variant.name] = accuracy_of_weights(kernel_bias, test_rows, test[1])
            losses[variant.name] = loss
    reference = accuracies.get(jax_variant.name)
    agreement = [
        f"{name}: first-epoch mean loss {losses[name]:.4f}, test accuracy {accuracy:.2%}"
        for name, accuracy in accuracies.items()
    ]
    ok = reference is not None and all(
        abs(accuracy - reference) <= ACCURACY_TOLERANCE for accuracy in accuracies.values()
    )
    agreement.append(
        f"tolerance: test accuracies within {ACCURACY_TOLERANCE:.0%} of jaxclf's "
        "(same initial weights, different shuffles)"
    )

    num_train = train_images.shape[0]
    flops = 4.0 * num_train * train_rows.shape[1] * NUM_CLASSES
    bytes_moved = float(train_images.nbytes)
    summary = summarize(
        "linear epoch",
        variants,
        items=num_train,
        item_unit="images",
        flops=flops,
        bytes_moved=bytes_moved,
        work="gemm",
        work_note="forward and weight-gradient products; the bytes are the uint8 pixels read once",
        agreement=agreement,
        agreement_ok=ok,
        extra={"test_accuracy_after_first_epoch": accuracies, "first_epoch_mean_loss": losses},
    )
    lesson = summary["variants"][0]
    jax_row = summary["variants"][-1]
    if "median_s" in lesson and "median_s" in jax_row:
        summary["speedup_vs_lesson"] = lesson["median_s"] / jax_row["median_s"]
    return summary, final_state()


# ---------------------------------------------------------------- evaluate


def run_evaluate(torch, args, train, test, repeats, state) -> dict[str, Any]:
    from jaxclf.training import evaluate

    test_images, test_labels = test
    if state is None:
        # Train one jaxclf epoch, untimed, so that the weights are not random.
        state = jaxclf_initial_state(train[0], args.seed)
        variant, final_state = jaxclf_epoch_variant(state, *train, args.seed)
        variant.run()
        state = final_state()
    kernel, bias = jaxclf_kernel_bias(state)

    model = torch_linear_model(torch, kernel, bias)
    model.eval()
    test_rows = torch.from_numpy(normalized_rows(test_images))
    loader = torch.utils.data.DataLoader(
        make_lesson_dataset(torch, test_images, test_labels),
        batch_size=BATCH_SIZE,
        shuffle=False,
        num_workers=2,
    )

    def torch_lesson():
        logits = []
        with torch.no_grad():
            for inputs, _ in loader:
                logits.append(model(lesson_flatten(torch, inputs)))
        return torch.cat(logits).numpy()

    def torch_preloaded():
        with torch.no_grad():
            return model(test_rows).numpy()

    images_device = jax.device_put(test_images)
    labels_device = jax.device_put(test_labels)

    def jaxclf_evaluate():
        metrics = evaluate(state, images_device, labels_device, batch_size=1000)
        jax.block_until_ready(metrics)
        return metrics

    variants = [
        Variant("PyTorch, lesson DataLoader (2 workers)", "torch", torch_lesson),
        Variant("PyTorch, preloaded tensor", "torch", torch_preloaded),
        Variant("jaxclf evaluate", "jaxclf", jaxclf_evaluate),
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*os.fork.*")
        time_variants(variants, repeats, "evaluate")

    agreement, ok = compare_evaluation(variants, test_labels)
    num_test = test_images.shape[0]
    flops = 2.0 * num_test * kernel.shape[1] * NUM_CLASSES
    bytes_moved = float(test_images.nbytes)
    return summarize(
        "evaluate",
        variants,
        items=num_test,
        item_unit="images",
        flops=flops,
        bytes_moved=bytes_moved,
        work="gemm",
        work_note="forward product; the bytes are the uint8 pixels read once",
        agreement=agreement,
        agreement_ok=ok,
    )


def compare_evaluation(variants, test_labels) -> tuple[list[str], bool]:
    """Compare PyTorch's logits and predictions with jaxclf's `evaluate` on the same weights."""
    metrics = variants[-1].first_result
    jax_logits = np.asarray(metrics["logits"])
    jax_predictions = np.asarray(metrics["predictions"])
    lines = [f"jaxclf accuracy {float(metrics['accuracy']):.2%}"]
    ok = True
    for variant in variants[:-1]:
        logits = variant.first_result
        predictions = np.argmax(logits, axis=1)
        differing = int(np.sum(predictions != jax_predictions))
        max_difference = float(np.max(np.abs(logits - jax_logits)))
        lines.append(
            f"{variant.name}: accuracy {np.mean(predictions == test_labels):.2%}, "
            f"max |logit difference| {max_difference:.1e}, "
            f"{differing} of {len(predictions)} predictions differ"
        )
        ok = ok and differing == 0 and max_difference <= LOGITS_ATOL
    return lines, ok


# ---------------------------------------------------------------- kNN


def torch_knn(torch, queries, database, *, k: int, p: float, chunk: int):
    """Indices `[num_queries, k]` of the nearest rows by `torch.cdist` + `torch.topk`."""
    indices = []
    for start in range(0, queries.shape[0], chunk):
        distances = torch.cdist(queries[start : start + chunk], database, p=p)
        indices.append(torch.topk(distances, k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(indices).numpy()


def exact_distances(query: np.ndarray, database: np.ndarray, metric: str) -> np.ndarray:
    """Exact squared L2 or L1 distances `[num_database]` from one integer-pixel query."""
    query = query.reshape(-1)
    database = database.reshape(database.shape[0], -1)
    if metric == "l2":
        # Sums of squared pixel differences stay far below 2^53, so float64 is exact.
        difference = database.astype(np.float64) - query.astype(np.float64)
        return np.einsum("ij,ij->i", difference, difference)
    return np.abs(database.astype(np.int32) - query.astype(np.int32)).sum(axis=1)


def vote(neighbor_labels: np.ndarray) -> np.ndarray:
    """Majority label per row; ties go to the smallest label."""
    counts = np.apply_along_axis(np.bincount, 1, neighbor_labels, minlength=NUM_CLASSES)
    return np.argmax(counts, axis=1)


def run_knn(torch, args, train, test, repeats, metric: str, torch_queries: int) -> dict[str, Any]:
    from jaxclf.knn import nearest_neighbors

    train_images, train_labels = train
    test_images, test_labels = test
    num_test = test_images.shape[0]
    database_torch = torch.from_numpy(train_images.reshape(train_images.shape[0], -1).astype(np.float32))
    torch_queries = min(torch_queries, num_test) if metric == "l1" else num_test
    queries_torch = torch.from_numpy(
        test_images[:torch_queries].reshape(torch_queries, -1).astype(np.float32)
    )
    p = 2.0 if metric == "l2" else 1.0
    chunk = 1000 if metric == "l2" else 100

    queries_device = jax.device_put(test_images)
    database_device = jax.device_put(train_images)

    def jaxclf_search():
        distances, indices = nearest_neighbors(queries_device, database_device, k=KNN_K, metric=metric)
        return np.asarray(jax.block_until_ready(indices))

    torch_variant = Variant(
        f"PyTorch cdist(p={p:g}) + topk",
        "torch",
        lambda: torch_knn(torch, queries_torch, database_torch, k=KNN_K, p=p, chunk=chunk),
        scale=num_test / torch_queries,
    )
    if torch_queries < num_test:
        torch_variant.note = (
            f"extrapolated: timed on {torch_queries} of {num_test} queries, times x{torch_variant.scale:.3g}"
        )
    variants = [torch_variant, Variant(f"jaxclf nearest_neighbors ({metric})", "jaxclf", jaxclf_search)]
    time_variants(variants, repeats, f"knn-{metric}")

    agreement, ok = compare_neighbors(variants, train_images, train_labels, test_images, test_labels, metric)
    num_train = train_images.shape[0]
    features = train_images[0].size
    flops = 2.0 * num_test * num_train * features
    if metric == "l2":
        work = "gemm"
        work_note = "the query-database product; the bytes are both uint8 sets read once"
    else:
        work = "vector"
        work_note = (
            f"L1 has no GEMM form; {1.5 * flops:.3g} subtract, absolute-value and add "
            "operations on the vector units"
        )
    return summarize(
        f"kNN {metric.upper()}, k = {KNN_K}",
        variants,
        items=num_test,
        item_unit="queries",
        flops=flops,
        bytes_moved=float(train_images.nbytes + test_images.nbytes),
        work=work,
        work_note=work_note,
        agreement=agreement,
        agreement_ok=ok,
    )


def compare_neighbors(variants, train_images, train_labels, test_images, test_labels, metric):
    """Compare neighbour lists and k = 10 votes; settle differing rows with an exact search."""
    torch_indices = variants[0].first_result
    jax_indices = variants[1].first_result
    if torch_indices is None or jax_indices is None:
        return ["a variant failed; nothing to compare"], False
    count = torch_indices.shape[0]
    jax_indices = jax_indices[:count]
    queries = test_images[:count]
    labels = test_labels[:count]

    torch_votes = vote(train_labels[torch_indices])
    jax_votes = vote(train_labels[jax_indices])
    differing_rows = np.flatnonzero(np.any(torch_indices != jax_indices, axis=1))
    differing_votes = int(np.sum(torch_votes != jax_votes))
    lines = [
        f"compared on {count} queries",
        f"1-NN accuracy jaxclf {np.mean(train_labels[jax_indices[:, 0]] == labels):.2%}, "
        f"PyTorch {np.mean(train_labels[torch_indices[:, 0]] == labels):.2%}",
        f"{KNN_K}-NN accuracy jaxclf {np.mean(jax_votes == labels):.2%}, "
        f"PyTorch {np.mean(torch_votes == labels):.2%}",
        f"{len(differing_rows)} neighbour lists and {differing_votes} votes differ",
    ]

    # jaxclf promises exact neighbours with ties to the lower index. So each
    # differing list must come from PyTorch's float32 rounding or its order
    # of equal distances, and an exact search settles up to 20 of them.
    checked = differing_rows[:20]
    jax_exact = torch_exact = torch_tie_order = 0
    for row in checked:
        distances = exact_distances(queries[row], train_images, metric)
        exact = np.lexsort((np.arange(distances.shape[0]), distances))[:KNN_K]
        jax_exact += int(np.array_equal(exact, jax_indices[row]))
        torch_exact += int(np.array_equal(exact, torch_indices[row]))
        torch_tie_order += int(
            not np.array_equal(exact, torch_indices[row])
            and np.array_equal(distances[exact], distances[torch_indices[row]])
        )
    if len(checked):
        lines.append(
            f"of {len(checked)} differing lists checked against an exact search, jaxclf matches "
            f"{jax_exact}; PyTorch matches {torch_exact}, has the exact distances in another "
            f"order of ties in {torch_tie_order} and a farther neighbour in "
            f"{len(checked) - torch_exact - torch_tie_order}"
        )
    return lines, jax_exact == len(checked)


# ---------------------------------------------------------------- main


def write_outputs(summaries, output_dir: Path, context: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "benchmark.json"
    with open(json_path, "w") as file:
        json.dump({**context, "workloads": summaries}, file, indent=2, default=str)
    png_path = output_dir / "benchmark.png"
    plot_summaries(summaries, png_path)
    logger.info("wrote %s and %s", json_path, png_path)


def log_rates(when: str, rates: dict[str, Any]) -> None:
    logger.info(
        "%s: float32 GEMM %.0f GFLOP/s (JAX %.0f, PyTorch %.0f), bfloat16 GEMM %.0f GFLOP/s, "
        "bandwidth %.1f GB/s",
        when,
        rates["float32_flops"] / 1e9,
        rates["jax_float32_flops"] / 1e9,
        rates["torch_float32_flops"] / 1e9,
        rates["bfloat16_flops"] / 1e9,
        rates["bandwidth_bytes"] / 1e9,
    )


def run(args: argparse.Namespace, torch, train, test, data_name: str) -> None:
    """Measure the machine, run the selected workloads, print and write the results."""
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    torch_l1_queries = args.torch_l1_queries or sizes["torch_l1_queries"]
    args.torch_compile_enabled = args.torch_compile == "on" or (
        args.torch_compile == "auto" and not args.quick
    )

    versions = collect_versions(torch)
    machine = describe_machine()
    logger.info("versions: %s", versions)
    logger.info("machine: %s; PyTorch threads %d", machine, torch.get_num_threads())
    logger.info("data: %s, %d training and %d test images", data_name, len(train[1]), len(test[1]))

    logger.info("measuring GEMM rates and memory bandwidth")
    rates_before = measure_machine(torch, args.quick)
    log_rates("before the workloads", rates_before)

    summaries = []
    state = None
    for workload in args.workloads:
        if workload == "linear":
            summary, state = run_linear(torch, args, train, test, repeats)
        elif workload == "evaluate":
            summary = run_evaluate(torch, args, train, test, repeats, state)
        else:
            metric = workload.split("-")[1]
            summary = run_knn(torch, args, train, test, repeats, metric, torch_l1_queries)
        summaries.append(summary)

    rates_after = measure_machine(torch, args.quick)
    log_rates("after the workloads", rates_after)
    rates = best_rates(rates_before, rates_after)
    for summary in summaries:
        apply_roofline(summary, rates)
        print("\n" + markdown_table(summary) + "\n", flush=True)
    print(
        f"Machine: float32 GEMM {rates['float32_flops'] / 1e9:.0f} GFLOP/s, bfloat16 GEMM "
        f"{rates['bfloat16_flops'] / 1e9:.0f} GFLOP/s, bandwidth {rates['bandwidth_bytes'] / 1e9:.0f} GB/s "
        "(best of the measurements before and after the workloads).",
        flush=True,
    )

    context = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "source": describe_source(),
        "machine": machine,
        "torch_threads": torch.get_num_threads(),
        "data": data_name,
        "num_train": int(len(train[1])),
        "num_test": int(len(test[1])),
        "repeats": repeats,
        "rates": rates,
        "rates_before": rates_before,
        "rates_after": rates_after,
    }
    write_outputs(summaries, Path(args.output_dir), context)
    disagreements = [summary["workload"] for summary in summaries if not summary["agreement_ok"]]
    if disagreements:
        logger.warning("jaxclf and PyTorch disagree on: %s", ", ".join(disagreements))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 2 after one log line when an input is invalid or missing."""
    args = parse_arguments(argv)
    setup_logging(args.verbose)
    log_devices(logger)
    try:
        check_arguments(args)
        prepare_output_dir(args.output_dir)
        torch = import_torch()
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        train, test, data_name = load_data(args, sizes)
    except (ImportError, ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2

    run(args, torch, train, test, data_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
