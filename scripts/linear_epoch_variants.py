"""Time implementation variants of one linear-classifier epoch on XLA:CPU.

Each variant is one jitted epoch over 50,000 random CIFAR-shaped uint8
images at batch 64 (SGD, learning rate 0.001, momentum 0.9). The variants are
written independently of jaxclf, so that one design choice at a time can be
swapped: the kernel layout, the loss formula, the shuffle, the scan
unrolling, where batches are gathered and how the gradient is computed. The
Feistel shuffle is the library's own function. All variants compute
the same float32 loss and gradient up to summation order; each prints the
final loss so that this can be checked. Results go to docs/benchmarks.md.

Example:

    flock /tmp/jaxclf-bench.lock python scripts/linear_epoch_variants.py --repeats 5
"""

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

NUM_EXAMPLES, BATCH_SIZE, NUM_CLASSES, NUM_FEATURES = 50_000, 64, 10, 3072


def normalize(pixels):
    return (pixels.astype(jnp.float32) / jnp.float32(255.0) - jnp.float32(0.5)) / jnp.float32(0.5)


def logits_of(params, rows, layout):
    if layout == "torch":  # kernel [classes, features], like torch.nn.Linear
        scores = lax.dot_general(rows, params["kernel"], (((1,), (1,)), ((), ())))
    else:  # kernel [features, classes], like flax.linen.Dense
        scores = rows @ params["kernel"]
    return scores + params["bias"][None, :]


def mean_loss(logits, labels, mask, loss_form):
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
    if loss_form == "take_along_axis":
        label_logits = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    else:
        one_hot = (labels[:, None] == jnp.arange(NUM_CLASSES)[None, :]).astype(jnp.float32)
        label_logits = jnp.sum(logits * one_hot, axis=-1)
    return jnp.sum((log_normalizer - label_logits) * mask) / jnp.sum(mask)


def manual_gradients(params, rows, labels, mask):
    """Softmax cross-entropy gradient written out: dW = dlogits^T rows."""
    logits = logits_of(params, rows, "torch")
    probabilities = jax.nn.softmax(logits, axis=-1)
    one_hot = (labels[:, None] == jnp.arange(NUM_CLASSES)[None, :]).astype(jnp.float32)
    dlogits = (probabilities - one_hot) * (mask / jnp.sum(mask))[:, None]
    kernel = lax.dot_general(rows, dlogits, (((0,), (0,)), ((), ()))).T
    return {"kernel": kernel, "bias": jnp.sum(dlogits, axis=0)}


def permutation(key, shuffle):
    if shuffle == "random.permutation":
        return jax.random.permutation(key, NUM_EXAMPLES)
    if shuffle == "feistel":
        from jaxclf.training import _permutation  # the library's own shuffle

        return _permutation(key, NUM_EXAMPLES)
    bits = jax.random.bits(key, (2, NUM_EXAMPLES), jnp.uint32)
    return lax.sort((bits[0], bits[1], lax.iota(jnp.int32, NUM_EXAMPLES)), num_keys=2)[2]


def make_epoch(layout, loss_form, shuffle, unroll, gather, gradient):
    tx = optax.sgd(0.001, momentum=0.9)

    def step(params, opt_state, rows, labels, mask):
        if gradient == "manual":
            grads = manual_gradients(params, rows, labels, mask)
        else:
            loss_fn = lambda p: mean_loss(logits_of(p, rows, layout), labels, mask, loss_form)
            grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def epoch(params, opt_state, images, labels, key):
        num_batches = -(-NUM_EXAMPLES // BATCH_SIZE)
        padding = num_batches * BATCH_SIZE - NUM_EXAMPLES
        order = jnp.concatenate([permutation(key, shuffle), jnp.zeros((padding,), jnp.int32)])
        indices = order.reshape(num_batches, BATCH_SIZE)
        masks = (jnp.arange(num_batches * BATCH_SIZE) < NUM_EXAMPLES).astype(jnp.float32)
        masks = masks.reshape(num_batches, BATCH_SIZE)
        flat = images.reshape(NUM_EXAMPLES, NUM_FEATURES)

        if gather == "inside":
            inputs = (indices, masks)
        else:  # copy the whole shuffled data set first, then slice batches
            inputs = (normalize(flat[indices]), labels[indices], masks)

        def body(carry, batch):
            params, opt_state = carry
            if gather == "inside":
                batch_indices, mask = batch
                rows, batch_labels = normalize(flat[batch_indices]), labels[batch_indices]
            else:
                rows, batch_labels, mask = batch
            return step(params, opt_state, rows, batch_labels, mask), None

        (params, opt_state), _ = lax.scan(body, (params, opt_state), inputs, unroll=unroll)
        probe = logits_of(params, normalize(flat[:1000]), layout)
        return params, opt_state, mean_loss(probe, labels[:1000], jnp.ones(1000), "one_hot")

    return epoch, tx


# name: (layout, loss form, shuffle, unroll, gather, gradient)
VARIANTS = {
    "flax-layout": ("flax", "take_along_axis", "random.permutation", 1, "inside", "autodiff"),
    "torch-layout": ("torch", "take_along_axis", "random.permutation", 1, "inside", "autodiff"),
    "torch-layout, gather outside scan": ("torch", "take_along_axis", "random.permutation", 1, "outside", "autodiff"),
    "+ one-hot loss": ("torch", "one_hot", "random.permutation", 1, "inside", "autodiff"),
    "+ one-hot loss, manual gradient": ("torch", "one_hot", "random.permutation", 1, "inside", "manual"),
    "+ one-hot loss, one-sort shuffle": ("torch", "one_hot", "sort", 1, "inside", "autodiff"),
    "+ one-hot loss, one-sort shuffle, unroll 2": ("torch", "one_hot", "sort", 2, "inside", "autodiff"),
    "+ one-hot loss, one-sort shuffle, unroll 4": ("torch", "one_hot", "sort", 4, "inside", "autodiff"),
    "+ one-hot loss, Feistel shuffle, unroll 2 (jaxclf)": ("torch", "one_hot", "feistel", 2, "inside", "autodiff"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (default: 5)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the variants to run (default: all)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (NUM_EXAMPLES, 32, 32, 3), dtype=np.uint8))
    labels = jax.device_put(rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32))
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s)")

    for name, settings in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        epoch, tx = make_epoch(*settings)
        shape = (NUM_CLASSES, NUM_FEATURES) if settings[0] == "torch" else (NUM_FEATURES, NUM_CLASSES)
        params = {"kernel": jnp.zeros(shape, jnp.float32), "bias": jnp.zeros(NUM_CLASSES, jnp.float32)}
        carry = {"params": params, "opt_state": tx.init(params)}

        def run_variant(key, epoch=epoch, carry=carry):
            carry["params"], carry["opt_state"], loss = epoch(
                carry["params"], carry["opt_state"], images, labels, key
            )
            return loss

        report(name, run_variant, args.repeats)

    if not args.only or LIBRARY in args.only:
        report(LIBRARY, library_epoch(images, labels), args.repeats)
    return 0


LIBRARY = "jaxclf.train_epoch itself"


def library_epoch(images, labels):
    """Run epochs through the library's public API, as a user would."""
    from jaxclf.linear import LinearClassifier
    from jaxclf.training import create_train_state, make_optimizer, train_epoch

    model = LinearClassifier(initializer="torch")
    carry = {"state": create_train_state(jax.random.key(0), model, make_optimizer(0.001))}

    def run(key):
        carry["state"], metrics = train_epoch(carry["state"], images, labels, key)
        return metrics["loss"]

    return run


def report(name, run, repeats):
    """Time `repeats` epochs after an untimed first call (which compiles)."""
    seconds = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        loss = jax.block_until_ready(run(jax.random.key(repeat)))
        seconds.append(time.perf_counter() - start)
    timed = seconds[1:]
    print(
        f"{name:55s} median {statistics.median(timed) * 1e3:6.1f} ms  "
        f"min {min(timed) * 1e3:6.1f}  max {max(timed) * 1e3:6.1f}  "
        f"(first call {seconds[0]:.2f} s)  loss {float(loss):.5f}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
