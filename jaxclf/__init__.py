"""jaxclf: exact k-nearest neighbours and a linear classifier for CIFAR-10."""

from jaxclf.data import (
    CLASS_NAMES,
    Cifar10,
    DataError,
    Split,
    flatten,
    load_cifar10,
    normalize,
    resolve_data_dir,
    unflatten,
)
from jaxclf.checkpoint import (
    latest_epoch,
    read_metadata,
    restore_checkpoint,
    restore_params,
    save_checkpoint,
)
from jaxclf.knn import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    METRICS,
    nearest_neighbors,
    pairwise_distances,
    predict,
    predict_proba,
    vote,
)
from jaxclf.linear import (
    LinearClassifier,
    class_templates,
    cross_entropy_loss,
    l2_penalty,
    multiclass_hinge_loss,
)
from jaxclf.metrics import accuracy, confusion_matrix, per_class_accuracy
from jaxclf.model_selection import (
    CrossValidationResult,
    accuracy_for_each_k,
    cross_validate,
    kfold_indices,
    validation_split,
)
from jaxclf.sharding import (
    DATA_AXIS,
    QUERY_AXIS,
    describe_mesh,
    make_mesh,
    replicate,
    shard_batch,
)
from jaxclf.training import (
    TrainState,
    create_train_state,
    epoch_key,
    evaluate,
    fit,
    make_optimizer,
    train_epoch,
    train_step,
)
