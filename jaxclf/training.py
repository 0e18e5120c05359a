"""Training the linear classifier: optimiser, train state, compiled steps and epochs.

`train_epoch` runs a whole shuffled epoch as one `jax.jit` program: the
permutation, the gathering of each uint8 batch, its normalisation, the
forward and backward pass and the optimiser update all happen inside one
`jax.lax.scan`, which compiles once per data shape. Like PyTorch's
`DataLoader(drop_last=False)`, the last partial batch is kept: it is padded
to the full batch size and masked, so each batch's loss averages exactly its
real examples.

Pass images and labels as `jax.Array`s (`jax.device_put` them once) when
calling `train_epoch` repeatedly: NumPy inputs are copied to the device on
every call.
"""

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax import lax

from jaxclf import sharding
from jaxclf.checkpoint import latest_epoch, restore_checkpoint, save_checkpoint
from jaxclf.linear import LOSSES, check_images, check_labels, l2_penalty

TrainState = train_state.TrainState

# Unrolling two batches per loop iteration lets XLA:CPU gather and normalise
# one batch on a second core while the other batch's matrix products run.
# On a 2-core CPU this cut the epoch by about 10% (docs/benchmarks.md).
_SCAN_UNROLL = 2

# Float images whose largest magnitude exceeds this are rejected as raw
# 0..255 pixels. Normalised pixels lie in [-1, 1], and CIFAR-10 pixels
# standardised per channel (means about 0.48, deviations about 0.25) stay
# below 2.2 in magnitude.
MAX_FLOAT_PIXEL = 10.0

# Rounds of the Feistel network that shuffles each epoch; Luby and Rackoff's
# construction needs 4 for a strong pseudorandom permutation, 8 adds margin.
_FEISTEL_ROUNDS = 8


def make_optimizer(
    learning_rate: float, *, momentum: float = 0.9, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """Build SGD with momentum that updates exactly like `torch.optim.SGD`.

    Each step computes `g = grad + weight_decay * params`, then `buffer =
    momentum * buffer + g` (the buffer starts at zero, so the first buffer is
    `g`, as in PyTorch) and `params = params - learning_rate * buffer`. Weight
    decay therefore enters before the momentum buffer, as in PyTorch's SGD,
    and unlike decoupled (AdamW-style) decay.

    Args:
        learning_rate: step size, > 0.
        momentum: momentum factor in `[0, 1)`; 0 turns momentum off.
        weight_decay: L2 decay coefficient, >= 0; it decays the bias too, as
            PyTorch's SGD does for every parameter it is given.

    Returns:
        An optax transformation; its state is `()` plus a momentum buffer
        shaped like the parameters.

    Raises:
        ValueError: an argument is out of range.
    """
    _check_positive("learning_rate", learning_rate)
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (isinstance(weight_decay, (int, float)) and 0.0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")

    sgd = optax.sgd(learning_rate, momentum=momentum or None)
    if weight_decay == 0.0:
        return sgd
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd)


def create_train_state(
    key: jax.Array,
    model: Any,
    tx: optax.GradientTransformation,
    *,
    image_shape: tuple[int, int, int] = (32, 32, 3),
) -> TrainState:
    """Initialise the model's parameters and the optimiser state.

    Args:
        key: PRNG key from `jax.random.key(seed)` for the initial weights.
        model: a Flax module taking images `[batch, *image_shape]`, such as
            `LinearClassifier`.
        tx: the optimiser, e.g. from `make_optimizer`.
        image_shape: `(height, width, channels)` of one image.

    Returns:
        A `TrainState` at step 0 with `params = variables["params"]`.
    """
    dummy_images = jnp.zeros((1, *image_shape), jnp.uint8)
    params = model.init(key, dummy_images)["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    # An int32 array, not the Python int 0 that `create` stores, so that the
    # first and later calls of a jitted step see the same argument types.
    return state.replace(step=jnp.zeros((), jnp.int32))


def epoch_key(seed: int, epoch: int) -> jax.Array:
    """Return the shuffling key of `epoch`, derived from `(seed, epoch)` alone.

    Deriving each epoch's key afresh, instead of splitting a key carried from
    epoch to epoch, lets a run resumed from a checkpoint shuffle exactly like
    one that never stopped.

    Args:
        seed: run seed, an integer in `[0, 2**32)`.
        epoch: epoch index counted from 0, >= 0.

    Raises:
        ValueError: `seed` or `epoch` is out of range or not an integer.
    """
    _check_int_in_range("seed", seed, 0, 2**32)
    _check_int_in_range("epoch", epoch, 0, 2**31)
    return jax.random.fold_in(jax.random.key(int(seed)), int(epoch))


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    *,
    loss: str = "cross_entropy",
    l2: float = 0.0,
    mask: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Take one SGD step on one batch (compiled with `jax.jit`).

    Args:
        state: the current train state.
        images: `[batch, height, width, channels]` uint8 pixels or normalised
            floats; concrete floats must be finite with magnitude at most
            `MAX_FLOAT_PIXEL`, so float 0..255 pixels are rejected.
        labels: `[batch]` int class indices, any array-like.
        loss: `"cross_entropy"` or `"hinge"`.
        l2: strength of the `l2 * l2_penalty(params)` term added to the loss;
            a Python or NumPy scalar.
        mask: optional `[batch]`, 1 for real examples and 0 for padding.
        mesh: a device mesh for data-parallel training (see
            `jaxclf.sharding`): the batch is split over its devices and the
            state replicated. The batch size must be divisible by the number
            of devices. `None` trains on the default device.

    Returns:
        `(new_state, metrics)`, where metrics contains the batch's mean data
        loss `"loss"` (without the L2 term) and `"accuracy"` over the real
        examples, both computed with the parameters before the step.

    Raises:
        ValueError: bad shapes, dtypes, labels or options (checked before
            anything compiles).
    """
    labels = _as_array(labels)
    num_examples = _check_batch(images, labels, state)
    _check_loss_options(loss, l2)
    if mask is None:
        mask = jnp.ones((num_examples,), jnp.float32)
    elif getattr(mask, "shape", None) != (num_examples,):
        raise ValueError(f"mask must have shape ({num_examples},), got {getattr(mask, 'shape', None)}")
    if mesh is not None:
        state, (images, labels, mask) = sharding.place_data_parallel(state, (images, labels, mask), mesh)

    state, sums = _train_step_jit(state, images, labels, mask, loss=loss, l2=float(l2))
    count = sums["count"]
    return state, {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count}


def train_epoch(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    batch_size: int = 64,
    loss: str = "cross_entropy",
    l2: float = 0.0,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Train one epoch over a fresh permutation of the data, in one compiled call.

    The epoch takes `ceil(N / batch_size)` SGD steps; the last batch contains
    the remaining `N % batch_size` examples (when not zero) and averages its
    loss over them only. The program compiles once per `(N, image shape,
    batch_size, loss, l2)` and is reused for every later epoch.

    The order is a pseudorandom permutation computed from `key` by a Feistel
    network, not a sort of random keys. It is a permutation for every key
    and depends on nothing but `key` and N, but it is drawn from a keyed
    family rather than exactly uniformly from all N! orders.

    Args:
        state: the current train state.
        images: `[N, height, width, channels]` uint8 pixels or normalised
            floats, checked as in `train_step`.
        labels: `[N]` int class indices, any array-like.
        key: PRNG key of this epoch's shuffle, e.g. `epoch_key(seed, epoch)`.
        batch_size: examples per step, > 0. A batch size above N is
            clamped to N (rounded up to a multiple of the mesh's devices),
            so the epoch is one step.
        loss: `"cross_entropy"` or `"hinge"`.
        l2: strength of the L2 penalty on the kernel.
        mesh: a device mesh for data-parallel training (see
            `jaxclf.sharding`): every batch is split over its devices, which
            each hold a copy of the data and the state. `batch_size` must be
            divisible by the number of devices. `None` trains on the default
            device.

    Returns:
        `(new_state, metrics)`: `"loss"`, the mean data loss over the epoch's
        N examples, each taken with the parameters in force when its batch
        ran (the running loss PyTorch scripts print), and `"accuracy"`,
        counted the same way.

    Raises:
        ValueError: bad shapes, dtypes, labels, batch size or options.
    """
    labels = _as_array(labels)
    num_examples = _check_batch(images, labels, state)
    _check_positive_int("batch_size", batch_size)
    _check_loss_options(loss, l2)
    _check_key(key)
    batch_size = _clamp_batch_size(batch_size, num_examples, mesh)
    if mesh is not None:
        sharding.check_batch_divisible(batch_size, mesh)
        state, images, labels = sharding.replicate((state, images, labels), mesh)

    state, sums = _train_epoch_jit(
        state, images, labels, key, batch_size=int(batch_size), loss=loss, l2=float(l2), mesh=mesh
    )
    return state, {
        "loss": sums["loss_sum"] / num_examples,
        "accuracy": sums["correct"] / num_examples,
    }


def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int = 1000,
    loss: str = "cross_entropy",
) -> dict[str, jax.Array]:
    """Score the model on a data set in fixed-size batches, in one compiled call.

    The data is padded to a whole number of batches and scored batch by
    batch inside one `jax.jit` program, so memory for the activations stays
    at one batch. The program compiles once per `(N, image shape,
    batch_size, loss)`; later calls with the same shapes, such as the
    validation after every epoch, reuse it.

    Args:
        state: a train state (only `params` and `apply_fn` are used).
        images: `[N, height, width, channels]` uint8 pixels or normalised
            floats, checked as in `train_step`.
        labels: `[N]` int class indices, any array-like.
        batch_size: examples per batch, > 0; a batch size above N is
            clamped to N.
        loss: the loss reported, `"cross_entropy"` or `"hinge"`.

    Returns:
        `"loss"` (mean over N), `"accuracy"`, `"predictions"` `[N]` int32
        (the argmax of the logits, lowest class on ties) and `"logits"`
        `[N, num_classes]` float32.

    Raises:
        ValueError: bad shapes, dtypes, labels, batch size or loss.
    """
    labels = _as_array(labels)
    num_examples = _check_batch(images, labels, state)
    _check_positive_int("batch_size", batch_size)
    _check_loss_options(loss, 0.0)
    batch_size = min(int(batch_size), num_examples)

    return _evaluate_jit(
        state.params,
        jnp.asarray(images),
        jnp.asarray(labels),
        apply_fn=state.apply_fn,
        batch_size=int(batch_size),
        loss=loss,
    )


def fit(
    state: TrainState,
    images: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    loss: str = "cross_entropy",
    l2: float = 0.0,
    validation: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Train for `epochs` epochs, checkpointing after each, optionally resuming.

    Epoch `e` (counted from 0) shuffles with `epoch_key(seed, e)`, so a run
    resumed from the checkpoint of any epoch ends with the same state, bit
    for bit, as a run that never stopped.

    Args:
        state: the initial train state; with `resume`, the template that the
            newest checkpoint is restored into.
        images: `[N, height, width, channels]` training images; copied to the
            device once.
        labels: `[N]` int training labels.
        epochs: total number of epochs of the run, > 0, counting those
            already done before a resume.
        seed: seed of the per-epoch shuffles.
        batch_size: examples per SGD step.
        loss: `"cross_entropy"` or `"hinge"`.
        l2: strength of the L2 penalty on the kernel.
        validation: optional `(images, labels)` evaluated after every epoch.
        checkpoint_dir: folder for one checkpoint per epoch; None saves none.
        resume: continue from the newest checkpoint in `checkpoint_dir`.
        config: JSON-serialisable settings of the run (learning rate, model
            options and so on), saved with each checkpoint and compared on
            resume. `seed`, `batch_size`, `loss` and `l2` are added to it.
        on_epoch_end: called with each epoch's record, e.g. to log it.
        mesh: a device mesh for data-parallel training, as in `train_epoch`;
            the training images are copied to each of its devices once.

    Returns:
        `(state, history)`. The history has one record per epoch since the
        start of the run, resumed epochs included: `"epoch"` (1-based),
        `"train_loss"`, `"train_accuracy"` and, with `validation`,
        `"validation_loss"` and `"validation_accuracy"`.

    Raises:
        ValueError: bad arguments, a resumed checkpoint written with other
            settings, or `epochs` below the epochs already saved.
        FileNotFoundError: `resume` without a checkpoint to resume from.
        FileExistsError: `checkpoint_dir` already contains checkpoints and
            `resume` is False.
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_loss_options(loss, l2)
    if mesh is not None:
        sharding.check_batch_divisible(batch_size, mesh)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from")
    run_config = {**(config or {}), "seed": seed, "batch_size": batch_size, "loss": loss, "l2": l2}

    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        state, metadata = restore_checkpoint(checkpoint_dir, state)
        _check_same_config(metadata.get("config", {}), run_config, checkpoint_dir)
        history = list(metadata.get("history", []))
        start_epoch = int(metadata["epoch"])
        if epochs < start_epoch:
            raise ValueError(
                f"epochs={epochs} is below the {start_epoch} epochs already saved in "
                f"{checkpoint_dir}; pass epochs >= {start_epoch}"
            )
    elif checkpoint_dir is not None and latest_epoch(checkpoint_dir) is not None:
        raise FileExistsError(
            f"{checkpoint_dir} already contains checkpoints up to epoch "
            f"{latest_epoch(checkpoint_dir)}; resume from them or choose another folder"
        )

    images, labels = jnp.asarray(images), jnp.asarray(labels)
    _check_batch(images, labels, state)
    if mesh is not None:
        images, labels = sharding.replicate((images, labels), mesh)
    if validation is not None:
        validation = (jnp.asarray(validation[0]), jnp.asarray(validation[1]))

    for epoch in range(start_epoch, epochs):
        state, metrics = train_epoch(
            state, images, labels, epoch_key(seed, epoch), batch_size=batch_size, loss=loss, l2=l2,
            mesh=mesh,
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": float(metrics["loss"]),
            "train_accuracy": float(metrics["accuracy"]),
        }
        if validation is not None and validation[1].shape[0] > 0:
            scores = evaluate(state, *validation, loss=loss)
            record["validation_loss"] = float(scores["loss"])
            record["validation_accuracy"] = float(scores["accuracy"])
        history.append(record)

        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir,
                state,
                epoch=epoch + 1,
                metadata={"config": run_config, "history": history},
            )
        if on_epoch_end is not None:
            on_epoch_end(record)
    return state, history


def _check_same_config(saved: dict[str, Any], requested: dict[str, Any], directory) -> None:
    keys = (set(saved) | set(requested)) - {"epochs"}
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, this run {requested.get(key)!r}"
        for key in sorted(keys)
        if saved.get(key) != requested.get(key)
    ]
    if differences:
        raise ValueError(
            f"cannot resume from {directory}: it was written with other settings ("
            + "; ".join(differences)
            + "); rerun with the checkpoint's settings or start a new run in another folder"
        )


def _batch_loss(params, apply_fn, images, labels, mask, loss, l2):
    logits = apply_fn({"params": params}, images)
    per_example = LOSSES[loss](logits, labels)
    loss_sum = jnp.sum(per_example * mask)
    total = loss_sum / jnp.sum(mask)
    if l2:
        total = total + jnp.float32(l2) * l2_penalty(params)
    return total, (loss_sum, logits)


def _apply_batch(state, images, labels, mask, loss, l2):
    """One SGD step; returns the new state and the batch's summed metrics."""
    grad_fn = jax.grad(_batch_loss, has_aux=True)
    grads, (loss_sum, logits) = grad_fn(
        state.params, state.apply_fn, images, labels, mask, loss, l2
    )
    state = state.apply_gradients(grads=grads)

    hits = (jnp.argmax(logits, axis=-1) == labels.astype(jnp.int32)).astype(jnp.float32)
    sums = {"loss_sum": loss_sum, "correct": jnp.sum(hits * mask), "count": jnp.sum(mask)}
    return state, sums


@functools.partial(jax.jit, static_argnames=("loss", "l2"))
def _train_step_jit(state, images, labels, mask, *, loss, l2):
    return _apply_batch(state, images, labels, mask.astype(jnp.float32), loss, l2)


@functools.partial(jax.jit, static_argnames=("batch_size", "loss", "l2", "mesh"))
def _train_epoch_jit(state, images, labels, key, *, batch_size, loss, l2, mesh):
    num_examples = images.shape[0]
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples

    # Padded slots point at example 0 and carry mask 0, so they change nothing.
    order = jnp.concatenate([_permutation(key, num_examples), jnp.zeros((padding,), jnp.int32)])
    batch_indices = order.reshape(num_batches, batch_size)
    masks = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
    masks = masks.reshape(num_batches, batch_size)

    def step(carry, batch):
        state, totals = carry
        indices, mask = batch
        batch_images, batch_labels, mask = sharding.constrain_batch(
            (images[indices], labels[indices], mask), mesh
        )
        state, sums = _apply_batch(state, batch_images, batch_labels, mask, loss, l2)
        totals = {name: totals[name] + sums[name] for name in totals}
        return (state, totals), None

    zero = jnp.zeros((), jnp.float32)
    totals = {"loss_sum": zero, "correct": zero, "count": zero}
    (state, totals), _ = lax.scan(
        step, (state, totals), (batch_indices, masks), unroll=_SCAN_UNROLL
    )
    return state, totals


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size", "loss"))
def _evaluate_jit(params, images, labels, *, apply_fn, batch_size, loss):
    num_examples = images.shape[0]
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples
    batches = (
        _pad_rows(images, padding).reshape(num_batches, batch_size, *images.shape[1:]),
        _pad_rows(labels, padding).reshape(num_batches, batch_size),
    )

    def score(batch):
        batch_images, batch_labels = batch
        logits = apply_fn({"params": params}, batch_images)
        return logits, LOSSES[loss](logits, batch_labels)

    logits, per_example_loss = lax.map(score, batches)
    logits = logits.reshape(num_batches * batch_size, -1)[:num_examples]
    per_example_loss = per_example_loss.reshape(-1)[:num_examples]
    predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    correct = (predictions == labels.astype(jnp.int32)).astype(jnp.float32)
    return {
        "loss": jnp.mean(per_example_loss),
        "accuracy": jnp.mean(correct),
        "predictions": predictions,
        "logits": logits,
    }


def _permutation(key: jax.Array, num_examples: int) -> jax.Array:
    """Return a keyed pseudorandom permutation of `0..num_examples-1`, int32.

    An 8-round Feistel network permutes the smallest index space of `4^h >=
    num_examples` values (two halves of `h` bits each). Each round function
    is a table of random `h`-bit values drawn from `key`, so the network is a
    Luby-Rackoff construction over random functions. Values that land outside
    `[0, num_examples)` are encrypted again ("cycle walking") until they land
    inside, which keeps the result a permutation. It takes O(N) work instead
    of a sort's O(N log N): 3 ms against 10 ms for 50,000 indices on XLA:CPU.
    """
    half_bits = max(1, -(-(num_examples - 1).bit_length() // 2))
    half_mask = jnp.uint32((1 << half_bits) - 1)
    round_tables = jax.random.bits(key, (_FEISTEL_ROUNDS, 1 << half_bits), jnp.uint32) & half_mask

    def encrypt(values):
        left, right = values >> half_bits, values & half_mask
        for table in round_tables:
            left, right = right, left ^ table[right]
        return (left << half_bits) | right

    def walk(values):
        return jnp.where(values >= num_examples, encrypt(values), values)

    values = encrypt(lax.iota(jnp.uint32, num_examples))
    values = lax.while_loop(lambda values: jnp.any(values >= num_examples), walk, values)
    return values.astype(jnp.int32)


def _pad_rows(array: jax.Array, padding: int) -> jax.Array:
    if padding == 0:
        return array
    widths = [(0, padding)] + [(0, 0)] * (array.ndim - 1)
    return jnp.pad(array, widths)


def _as_array(values: Any) -> Any:
    # Lists and tuples become NumPy arrays; arrays and tracers pass unchanged.
    if hasattr(values, "shape") and hasattr(values, "dtype"):
        return values
    return np.asarray(values)


def _clamp_batch_size(batch_size: int, num_examples: int, mesh: jax.sharding.Mesh | None) -> int:
    # A batch larger than the data would only add masked padding, and a huge
    # one would allocate its padded gather before failing.
    if batch_size <= num_examples:
        return int(batch_size)
    num_devices = 1 if mesh is None else mesh.devices.size
    return -(-num_examples // num_devices) * num_devices


def _check_key(key: Any) -> None:
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or key.shape != ():
        raise ValueError(
            f"key must be a scalar PRNG key, got {type(key).__name__} with dtype {dtype}; "
            "pass jax.random.key(seed) or epoch_key(seed, epoch)"
        )


def _check_float_images(images: Any) -> None:
    # Concrete float images only: under jax.jit the values are unknown.
    if images.dtype == np.uint8 or isinstance(images, jax.core.Tracer):
        return
    values = jnp.asarray(images)
    if not bool(jnp.all(jnp.isfinite(values))):
        raise ValueError(
            "images contains NaN or infinite values; pass finite pixels (uint8, or floats "
            "normalised with jaxclf.data.normalize)"
        )
    largest = float(jnp.max(jnp.abs(values)))
    if largest > MAX_FLOAT_PIXEL:
        raise ValueError(
            f"images are floats with magnitude up to {largest:g}, above {MAX_FLOAT_PIXEL:g}, "
            "so they look like raw 0..255 pixels, not normalised ones; pass uint8 pixels or "
            "normalise them with jaxclf.data.normalize"
        )


def _check_batch(images: Any, labels: Any, state: TrainState) -> int:
    check_images(images)
    num_examples = images.shape[0]
    if num_examples == 0:
        raise ValueError("images is empty; pass at least one example")
    if getattr(labels, "shape", None) != (num_examples,):
        raise ValueError(
            f"labels must have shape ({num_examples},) to match images {tuple(images.shape)}, "
            f"got {getattr(labels, 'shape', None)}"
        )

    kernel = state.params["kernel"]
    num_classes, num_features = kernel.shape
    if math.prod(images.shape[1:]) != num_features:
        raise ValueError(
            f"images {tuple(images.shape)} have {math.prod(images.shape[1:])} features per "
            f"example, but the model's kernel expects {num_features}"
        )
    check_labels(labels, num_classes)
    _check_float_images(images)
    return num_examples


def _check_loss_options(loss: str, l2: float) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    is_scalar = isinstance(l2, (int, float, np.integer, np.floating)) and not isinstance(l2, bool)
    if not (is_scalar and 0.0 <= l2 < math.inf):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_int_in_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value < high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}), got {value!r}")
