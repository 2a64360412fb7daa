"""Classification, training side: whole (preprocessed) images in, one label or several out.

Targets come from the manifest: a `label` column (or the ImageFolder class folder), binary when
`model.num_classes` is 1 (the positive class is the last of `model.class_names`) and multi-class
otherwise, or one 0/1 column per finding (`data.columns.findings`, multi-label, sigmoid outputs).
The cached images must share one shape (`preprocessing.size` fixed in y and x); a 2D model takes
the K = `model.context_slices` slices around the centre as channels, a 3D model the volume.

Sampling (`classification.class_balance`): `sampling` draws each class equally often (multi-label:
cases with and without any finding), `weights` weighs the loss by n / (classes x n_class), `none`
draws uniformly. Augmentation: flips and 90-degree turns of square images, intensity jitter in
the units the model sees (`kerasmed.data.intensity`).
Metrics: AUC (monitored on validation), accuracy, sensitivity, specificity.

Evaluation (`kerasmed.tasks.classification_eval`): predictions CSV, ROC and PR with a bootstrap
95% interval of the AUC, confusion matrix at the operating point, calibration before and after
temperature scaling, the histogram baseline beside the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasmed.data.intensity import input_shift
from kerasmed.tasks.base_task import TrainingTask
from serving.errors import ConfigError, DataError
from serving.tasks.classification import model_input


def activation_of(config) -> str:
    """`softmax` for a multi-class label, `sigmoid` for binary and multi-label."""
    multi_label = bool(config.data.columns.findings)
    return "softmax" if config.model.num_classes > 1 and not multi_label else "sigmoid"


def target_names(config) -> list[str]:
    """The names of the model's outputs: the findings, or the class names (binary: the last)."""
    findings = config.data.columns.findings
    if findings:
        return list(findings)
    names = list(config.model.class_names)
    return names[-1:] if config.model.num_classes == 1 else names


def targets(rows, config) -> np.ndarray:
    """`(N, C)` float32 targets of manifest rows (a DataFrame or one row's namedtuple).

    Raises:
        DataError: naming the case, for a label that is no class name.
    """
    # Records, not namedtuples: a finding's column name need not be a Python identifier.
    rows = [rows._asdict()] if hasattr(rows, "_fields") else rows.to_dict("records")
    findings = config.data.columns.findings
    names = list(config.model.class_names)
    out = np.zeros((len(rows), len(target_names(config))), np.float32)
    for i, row in enumerate(rows):
        if findings:
            out[i] = [float(row[f]) for f in findings]
            continue
        label = str(row["label"])
        if label not in names:
            raise DataError(
                f"Case {row['case_id']}: its label must be one of `model.class_names` {names}. "
                f"Received: {label!r}"
            )
        if config.model.num_classes == 1:
            out[i, 0] = float(label == names[-1])
        else:
            out[i, names.index(label)] = 1.0
    return out


def case_arrays(config, cases, manifest) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)`: the cached cases as one model-input array and their targets.

    Raises:
        DataError: if the cases' preprocessed shapes differ or a case has no manifest row.
    """
    if not cases:
        return (np.zeros((0,) + _input_shape(config), np.float32),
                np.zeros((0, len(target_names(config))), np.float32))
    shape = _input_shape(config)
    shapes = {tuple(c.image.shape) for c in cases}
    if len(shapes) > 1:
        raise DataError(
            "A classifier's images must share one preprocessed shape; set `preprocessing.size` "
            f"for every axis that varies. Received: shapes {sorted(shapes)[:4]}"
        )
    x = np.concatenate([model_input(np.asarray(c.image), (None, *shape)) for c in cases])
    rows = manifest.set_index("case_id", drop=False)
    missing = [c.case_id for c in cases if c.case_id not in rows.index]
    if missing:
        raise DataError(f"Cached cases must be rows of the manifest. Received: {missing[:3]} missing")
    return x, targets(rows.loc[[c.case_id for c in cases]], config)


def _input_shape(config) -> tuple:
    m = config.model
    return (None, None, None, 1) if m.spatial_dims == 3 else (None, None, m.context_slices)


def balance_groups(y: np.ndarray, activation: str) -> np.ndarray:
    """The group each case is balanced by: its class (single-label) or whether it has any finding."""
    if activation == "softmax":
        return np.argmax(y, axis=1)
    return (y.max(axis=1) > 0.5).astype(np.int64) if y.shape[1] > 1 else y[:, 0].astype(np.int64)


def class_weights(y: np.ndarray, activation: str) -> np.ndarray:
    """Per-case loss weights n / (groups x n_group), mean 1 over the cases."""
    groups = balance_groups(y, activation)
    values, counts = np.unique(groups, return_counts=True)
    weight = {v: len(groups) / (len(values) * c) for v, c in zip(values, counts)}
    return np.array([weight[g] for g in groups], np.float32)


def index_blocks(groups: np.ndarray, balance: bool, seed: int):
    """Endless case indices, one shuffled block at a time: a permutation of all cases, or (with
    `balance`) equal numbers from each group, each group's cases cycled in shuffled order."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    while True:
        if not balance:
            yield rng.permutation(len(groups))
            continue
        per_group = max(len(m) for m in members)
        block = np.concatenate([np.resize(rng.permutation(m), per_group) for m in members])
        yield rng.permutation(block)


class ClassificationTraining(TrainingTask):
    """See the module docstring."""

    name = "classification"
    monitor = "val_auc"
    explains_class_scores = True

    def check_config(self, config) -> None:
        from kerasmed.config import BACKBONE_MODELS

        size = list(config.preprocessing.size)
        if size[1] is None or size[2] is None:
            raise ConfigError(
                "config key `preprocessing.size` must fix y and x for a classifier (its images are "
                f"batched whole). Received: preprocessing.size={size}"
            )
        c, m = config.data.columns, config.model
        smallest = BACKBONE_MODELS.get(m.name)
        if smallest is not None and min(size[1:]) < smallest:
            raise ConfigError(
                f"config key `preprocessing.size` must be at least {smallest} in y and x for "
                f"model.name={m.name!r} (its keras.applications backbone halves the image 5 "
                f"times). Received: preprocessing.size={size}"
            )
        if not c.findings and c.label is None and config.data.format == "csv":
            raise ConfigError(
                "A classifier needs labels: set `data.columns.label`, `data.columns.findings` "
                "or `data.format: imagefolder`. Received: data.columns.label=None"
            )
        if c.findings and (m.num_classes != len(c.findings) or list(m.class_names) != list(c.findings)):
            raise ConfigError(
                "A multi-label classifier has one output per finding: `model.num_classes` must be "
                "the number of `data.columns.findings` and `model.class_names` those findings. "
                f"Received: data.columns.findings={list(c.findings)}, model.num_classes="
                f"{m.num_classes}, model.class_names={list(m.class_names)}"
            )

    def check_cases(self, config, cases) -> None:
        # One class in a split trains silently and logs "val_auc 0.000" (Keras' AUC of a single
        # class): refused, naming the split and its counts. Multi-label: the groups the sampler
        # balances, cases with and without any finding (a rare finding may miss a small split).
        activation, names = activation_of(config), target_names(config)
        for split, why in (("train", "a model shown one class learns nothing"),
                           ("val", "the validation AUC that checkpoints and early stopping watch "
                                   "needs both (it would read 0.000)")):
            y = targets(cases[cases["split"] == split], config)
            if len(np.unique(balance_groups(y, activation))) >= 2:
                continue
            positives = y.sum(0).astype(int).tolist()
            if activation == "softmax":
                counts = dict(zip(names, positives))
                need = "cases of at least two classes"
            elif len(names) == 1:
                counts = {config.model.class_names[0] if len(config.model.class_names) == 2
                          else f"not {names[0]}": len(y) - positives[0], names[0]: positives[0]}
                need = "cases of both classes"
            else:
                counts = {"with a finding": int((y.max(1) > 0.5).sum()) if len(y) else 0,
                          "without": int((y.max(1) <= 0.5).sum()) if len(y) else 0}
                need = "cases with a finding and cases without"
            received = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise DataError(
                f"A classifier's `{split}` split must hold {need}: {why}. Add cases or change the "
                f"split (`data.split` or the manifest's split column). Received: {len(y)} `{split}` "
                f"cases: {received}"
            )

    def generate(self, config, root, progress=True, overwrite=False, created_by="kerasmed generate"):
        from kerasmed.data.synthetic_patches import generate_patch_dataset

        s = config.synthetic
        return generate_patch_dataset(
            root, num_volumes=s.num_cases, patches_per_volume=s.patches_per_case,
            patch_size=config.preprocessing.size[1], context=config.model.context_slices,
            seed=s.seed, split_fractions=s.split_fractions, shape=s.shape, progress=progress,
            format="png" if config.data.format == "imagefolder" else "nifti",
            overwrite=overwrite, created_by=created_by,
        )

    def model_arguments(self, config) -> dict[str, Any]:
        m = config.model
        extra = {k: getattr(m, k) for k in ("backbone", "weights") if getattr(m, k) is not None}
        return {"input_shape": _input_shape(config), "num_classes": m.num_classes,
                "spatial_dims": m.spatial_dims, "activation": activation_of(config),
                "dropout": m.dropout, **extra}

    def input_signature(self, config):
        import tensorflow as tf

        spec = (tf.TensorSpec((None, *_input_shape(config))),
                tf.TensorSpec((None, len(target_names(config)))))
        if config.classification.class_balance == "weights":
            return (*spec, tf.TensorSpec((None,)))
        return spec

    def train_dataset(self, config, cases, manifest, batch_size=None, skip=0, num_shards=1,
                      shard_index=0):
        import tensorflow as tf

        x, y = case_arrays(config, cases, manifest)
        if not len(x):
            raise DataError("The training split must hold at least one case. Received: none")
        activation, balance = activation_of(config), config.classification.class_balance
        groups = balance_groups(y, activation)
        weights = class_weights(y, activation)
        blocks = tf.data.Dataset.from_generator(
            lambda: index_blocks(groups, balance == "sampling", config.seed),
            output_signature=tf.TensorSpec((None,), tf.int64),
        )
        # One global stream of examples, each with its position as the seed of its augmentation;
        # a resumed run skips what it consumed, and each worker takes its shard of the stream.
        stream = tf.data.Dataset.zip(blocks.unbatch(), tf.data.Dataset.counter())
        stream = stream.skip(skip).shard(num_shards, shard_index)
        x_t, y_t, w_t = tf.constant(x), tf.constant(y), tf.constant(weights)
        a = config.augmentation
        shift = input_shift(config, cases)  # raw input units: a fraction of the intensity unit
        square = x.shape[-3] == x.shape[-2]

        def load(index, position):
            image = tf.gather(x_t, index)
            seed = tf.stack([tf.cast(config.seed, tf.int64), position])
            image = _augment(image, seed, a, shift, square and config.model.spatial_dims == 2)
            example = (image, tf.gather(y_t, index))
            return (*example, tf.gather(w_t, index)) if balance == "weights" else example

        batch = batch_size or config.sampling.batch_size
        return stream.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)

    def val_dataset(self, config, cases, manifest, batch_size):
        import tensorflow as tf

        x, y = case_arrays(config, cases, manifest)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

    def loss(self, config):
        import keras

        if activation_of(config) == "softmax":
            return keras.losses.CategoricalCrossentropy()
        return keras.losses.BinaryCrossentropy()

    def metrics(self, config) -> list:
        import keras

        from kerasmed.losses import Specificity

        softmax = activation_of(config) == "softmax"
        multi = len(target_names(config)) > 1
        return [
            keras.metrics.AUC(name="auc", multi_label=multi and not softmax,
                              num_labels=len(target_names(config)) if multi and not softmax else None),
            (keras.metrics.CategoricalAccuracy if softmax else keras.metrics.BinaryAccuracy)(
                name="accuracy"),
            keras.metrics.Recall(name="sensitivity", thresholds=config.evaluation.threshold),
            Specificity(threshold=config.evaluation.threshold),
        ]

    def evaluate(self, run_dir: Path, config, cases, split: str, progress: bool = True) -> dict:
        from kerasmed.tasks.classification_eval import evaluate_classifier

        return evaluate_classifier(self, run_dir, config, cases, split, progress)

    def headline(self, summary) -> str:
        if summary["auc_ci"] is not None:
            interval = "(95% CI {:.3f}-{:.3f})".format(*summary["auc_ci"])
        else:  # several outputs: the mean of their AUCs (each has its own CI in summary.json)
            interval = f"(macro over {len(summary['outputs'])} outputs)"
        return (f"model AUC ({summary['split']}, {summary['cases']} cases): {summary['auc']:.3f} "
                f"{interval}   histogram baseline AUC: "
                + ("n/a" if summary.get("baseline_auc") is None else f"{summary['baseline_auc']:.3f}"))

    def training_baseline(self, config, train_cases, val_cases, manifest):
        from kerasmed.tasks.classification_eval import histogram_baseline_auc

        x_train, y_train = case_arrays(config, train_cases, manifest)
        x_val, y_val = case_arrays(config, val_cases, manifest)
        auc, what = histogram_baseline_auc(config, x_train, y_train, x_val, y_val)
        return {"name": what, "val_auc": auc}

    def prepare_model(self, model, config) -> None:
        # A pretrained backbone (a local weights file) starts frozen: phase 1 trains the head.
        if _has_backbone(model) and config.model.weights is not None:
            from kerasmed.models.transfer import freeze_backbone

            freeze_backbone(model)

    def second_phase_epochs(self, model, config) -> int:
        return config.classification.fine_tune_epochs if _has_backbone(model) else 0

    def enter_second_phase(self, model, config) -> float:
        from kerasmed.models.transfer import unfreeze_top_blocks

        unfreeze_top_blocks(model, config.classification.fine_tune_blocks)
        return config.classification.fine_tune_learning_rate

    def export_arguments(self, config, run_dir) -> dict[str, Any]:
        from kerasmed.run import read_json

        summary = read_json(Path(run_dir) / "eval" / "summary.json") or {}
        postprocess = {"threshold": summary.get("operating_threshold", config.evaluation.threshold),
                       "activation": activation_of(config)}
        if summary.get("temperature") is not None:
            postprocess["temperature"] = summary["temperature"]
        return {"class_names": list(config.model.class_names), "postprocess": postprocess}

    def export_model(self, model, config, run_dir):
        """The model with its logits divided by the fitted temperature (when there is one)."""
        from kerasmed.run import read_json

        summary = read_json(Path(run_dir) / "eval" / "summary.json") or {}
        temperature = summary.get("temperature")
        return model if temperature in (None, 1.0) else with_temperature(model, temperature,
                                                                          activation_of(config))

    def parity_truth(self, row, config):
        return targets(row, config)[0]


def _has_backbone(model) -> bool:
    return any(layer.name == "backbone" for layer in model.layers)


def _augment(image, seed, a, shift: float, turns: bool):
    """Flips, 90-degree turns (when `turns`) and `image * (1 + U(-s, s)) + U(-shift, shift)`,
    s = `a.intensity_scale`, `shift` in raw input units (`kerasmed.data.intensity.input_shift`)."""
    import tensorflow as tf

    rank = len(image.shape)
    if a.flip:
        flip = tf.random.stateless_uniform((2,), seed) < 0.5
        image = tf.cond(flip[0], lambda: tf.reverse(image, [rank - 2]), lambda: image)
        image = tf.cond(flip[1], lambda: tf.reverse(image, [rank - 3]), lambda: image)
    if a.rot90 and turns:
        k = tf.random.stateless_uniform((), seed + 1, 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    jitter = tf.random.stateless_uniform((2,), seed + 2, -1.0, 1.0)
    return image * (1.0 + a.intensity_scale * jitter[0]) + shift * jitter[1]


def with_temperature(model, temperature: float, activation: str):
    """`model` with `probs = activation(logits / temperature)`, sharing its layers and weights.

    Raises:
        ConfigError: if the model has no layer named `logits` (the pre-activation outputs).
    """
    import keras

    names = [layer.name for layer in model.layers]
    if "logits" not in names:
        raise ConfigError(
            "Temperature scaling divides the logits: the model needs a layer named `logits`. "
            f"Received: layers {names[-4:]}"
        )
    logits = model.get_layer("logits").output
    scaled = keras.layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    probs = keras.layers.Activation(activation, dtype="float32", name="probs")(scaled)
    return keras.Model(model.inputs, probs, name=model.name)
