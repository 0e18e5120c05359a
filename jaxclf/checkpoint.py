"""Save and restore a train state with orbax, one checkpoint per epoch.

A checkpoint folder contains one subfolder per saved epoch
(`<directory>/<epoch>/`, orbax's step numbering) with two items. `state`
holds the train state's arrays (step, params and optimiser state).
`metadata` is a JSON object with the epoch, the run's configuration and its
metric history. Saving is
synchronous, so a checkpoint is complete on disk when `save_checkpoint`
returns.

Restoring needs a template state built the same way as the saved one (same
model and optimiser); any difference in structure, shape or dtype raises a
ValueError naming the first differing entry, instead of loading arrays
into the wrong places.
"""

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

_STATE_ITEM = "state"
_METADATA_ITEM = "metadata"


def save_checkpoint(
    directory: str | os.PathLike,
    state: Any,
    *,
    epoch: int,
    metadata: dict[str, Any] | None = None,
    max_to_keep: int | None = None,
) -> Path:
    """Write `state` as the checkpoint of `epoch` (epochs completed so far).

    Args:
        directory: checkpoint folder; created when missing.
        state: a `TrainState` (or any Flax-serialisable pytree).
        epoch: number of completed epochs, >= 0; the subfolder name.
        metadata: JSON-serialisable facts stored beside the arrays, such as
            the configuration and metric history; `"epoch"` is added.
        max_to_keep: keep only this many newest checkpoints; None keeps all.

    Returns:
        The folder of the new checkpoint.

    Raises:
        ValueError: `epoch` is negative or not an integer.
        FileExistsError: a checkpoint of `epoch` already exists.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0 (epochs completed), got {epoch!r}")
    directory = Path(directory).absolute()
    if epoch in _list_epochs(directory):
        raise FileExistsError(
            f"checkpoint of epoch {epoch} already exists in {directory}; "
            "resume from it or write to another folder"
        )
    document = dict(metadata or {})
    document["epoch"] = int(epoch)

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False
    )
    with ocp.CheckpointManager(directory, options=options) as manager:
        manager.save(
            int(epoch),
            args=ocp.args.Composite(
                **{
                    _STATE_ITEM: ocp.args.StandardSave(serialization.to_state_dict(state)),
                    _METADATA_ITEM: ocp.args.JsonSave(document),
                }
            ),
        )
        manager.wait_until_finished()
    return directory / str(epoch)


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """Return the newest saved epoch in `directory`, or None when there is none."""
    epochs = _list_epochs(Path(directory).absolute())
    return max(epochs) if epochs else None


def read_metadata(directory: str | os.PathLike, *, epoch: int | None = None) -> dict[str, Any]:
    """Read the JSON metadata of the checkpoint of `epoch` (default: the newest).

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the epoch's subfolder is not a checkpoint.
    """
    directory, epoch = _resolve(directory, epoch)
    with _reader(directory) as manager:
        restored = manager.restore(
            epoch, args=ocp.args.Composite(**{_METADATA_ITEM: ocp.args.JsonRestore()})
        )
    return dict(restored[_METADATA_ITEM])


def restore_checkpoint(
    directory: str | os.PathLike, state: Any, *, epoch: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Restore the checkpoint of `epoch` (default: the newest) into the shape of `state`.

    Args:
        directory: checkpoint folder written by `save_checkpoint`.
        state: template `TrainState` from the same model and optimiser; its
            values are ignored.
        epoch: which checkpoint; None picks the newest.

    Returns:
        `(restored_state, metadata)`; the arrays are bit-for-bit those saved.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the epoch's subfolder is not a checkpoint, or it does not
            match the template.
    """
    directory, epoch = _resolve(directory, epoch)
    saved = _restore_arrays(directory, epoch)
    template = serialization.to_state_dict(state)
    _check_matches(saved, template, directory / str(epoch))
    return serialization.from_state_dict(state, saved), read_metadata(directory, epoch=epoch)


def restore_params(
    directory: str | os.PathLike, params: Any, *, epoch: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Restore only the model parameters, e.g. for evaluation.

    Args:
        directory: checkpoint folder written by `save_checkpoint`.
        params: template parameters, e.g. `model.init(...)["params"]`.
        epoch: which checkpoint; None picks the newest.

    Returns:
        `(params, metadata)`.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the epoch's subfolder is not a checkpoint, or the saved
            parameters do not match the template.
    """
    directory, epoch = _resolve(directory, epoch)
    saved = _restore_arrays(directory, epoch)
    if "params" not in saved:
        raise ValueError(f"checkpoint {directory / str(epoch)} contains no 'params' entry")
    template = serialization.to_state_dict(params)
    _check_matches(saved["params"], template, directory / str(epoch), prefix="params")
    restored = serialization.from_state_dict(params, saved["params"])
    return restored, read_metadata(directory, epoch=epoch)


def _restore_arrays(directory: Path, epoch: int) -> dict[str, Any]:
    with _reader(directory) as manager:
        restored = manager.restore(
            epoch, args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardRestore()})
        )
    return restored[_STATE_ITEM]


def _reader(directory: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def _list_epochs(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    with _reader(directory) as manager:
        return list(manager.all_steps())


def _resolve(directory: str | os.PathLike, epoch: int | None) -> tuple[Path, int]:
    directory = Path(directory).absolute()
    epochs = _list_epochs(directory)
    if not epochs:
        raise FileNotFoundError(
            f"no checkpoint found in {directory}; train first (scripts/train.py writes "
            "checkpoints under <output-dir>/checkpoints) or pass the right folder"
        )
    if epoch is None:
        epoch = max(epochs)
    elif epoch not in epochs:
        raise FileNotFoundError(
            f"no checkpoint of epoch {epoch} in {directory}; saved epochs: {sorted(epochs)}"
        )

    # orbax lists every subfolder named by a number as a step, so a stray
    # folder such as `3/` would otherwise fail later with orbax's KeyError.
    step_dir = directory / str(epoch)
    missing = [item for item in (_STATE_ITEM, _METADATA_ITEM) if not (step_dir / item).is_dir()]
    if missing:
        raise ValueError(
            f"{step_dir} is not a checkpoint written by save_checkpoint: items missing "
            f"{missing}; remove that folder or pass another checkpoint folder or epoch"
        )
    return directory, int(epoch)


def _check_matches(saved: Any, template: Any, where: Path, prefix: str = "") -> None:
    saved_leaves = dict(_leaves_with_paths(saved, prefix))
    template_leaves = dict(_leaves_with_paths(template, prefix))

    missing = sorted(set(template_leaves) - set(saved_leaves))
    extra = sorted(set(saved_leaves) - set(template_leaves))
    if missing or extra:
        raise ValueError(
            f"checkpoint {where} does not match the model and optimiser: entries missing "
            f"from the checkpoint {missing}, unexpected entries {extra}; restore with the "
            "same model and optimiser settings that wrote it"
        )

    # Parameters first: a wrong kernel shape is the clearest sign of another model.
    for path in sorted(template_leaves, key=lambda name: (not name.startswith("params"), name)):
        template_leaf, saved_leaf = template_leaves[path], saved_leaves[path]
        saved_shape, template_shape = np.shape(saved_leaf), np.shape(template_leaf)
        if saved_shape != template_shape:
            raise ValueError(
                f"checkpoint {where} does not match the model: {path} has shape "
                f"{saved_shape} in the checkpoint but {template_shape} in the model; "
                "restore with the same number of classes and image shape that wrote it"
            )
        saved_dtype, template_dtype = _dtype(saved_leaf), _dtype(template_leaf)
        if saved_shape and saved_dtype != template_dtype:
            raise ValueError(
                f"checkpoint {where} does not match the model: {path} has dtype "
                f"{saved_dtype} in the checkpoint but {template_dtype} in the model"
            )


def _leaves_with_paths(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    named = []
    for path, leaf in leaves:
        name = "/".join(str(getattr(key, "key", key)) for key in path)
        named.append((f"{prefix}/{name}" if prefix else name, leaf))
    return named


def _dtype(leaf: Any) -> np.dtype:
    # Not `leaf.dtype or ...`: a NumPy dtype without fields is falsy.
    dtype = getattr(leaf, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(leaf).dtype
