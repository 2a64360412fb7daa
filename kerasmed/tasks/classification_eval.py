"""Evaluate a classifier run on a split: each image read from its own file and run through the
same serving code a device runs (`serving.tasks.classification`), then scored per output.

Files in `<run_dir>/eval/`:
    predictions.csv     one row per image: case id, truth and probability per output (calibrated
                        when temperature scaling is on), the label(s) at the operating point
    summary.json        AUC with its bootstrap 95% CI, the operating point and the sensitivity,
                        specificity, PPV, NPV and F1 there, ECE before and after temperature
                        scaling, the temperature, the histogram baseline's AUC (HU histograms
                        over the model's HU window on CT, else intensity histograms over the
                        training images' percentiles: `histogram_range`)
    roc.png, pr.png, confusion.png, calibration.png, training_curves.png
    report.md           the figures and links to the plots

The operating point is `evaluation.threshold`, or the highest threshold whose sensitivity on this
split is at least `classification.min_sensitivity` (for a binary or multi-label model); a softmax
model's decision is its arg-max class. Temperature scaling (`classification.temperature_scaling`)
is fitted on the evaluated split, the validation split by default (`summary.json` names it in
`temperature_fitted_on`); the operating point and the figures at it are those of the calibrated
probabilities, which is what the exported bundle outputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.evaluation.calibration import DEFAULT_BOUNDS, bound_reached, fit_temperature
from kerasmed.evaluation.classification_plots import (
    plot_calibration,
    plot_confusion,
    plot_pr,
    plot_roc,
)
from kerasmed.evaluation.metrics import require_finite_predictions
from kerasmed.evaluation.plots import plot_training_curves
from kerasmed.tasks.classification import activation_of, target_names, targets
from serving.atomic import atomic_dir
from serving.errors import DataError
from serving.io import read_image
from serving.metrics import (
    apply_temperature,
    average_precision,
    bootstrap_ci,
    confusion_at,
    expected_calibration_error,
    pr_curve,
    reliability_bins,
    roc_auc,
    roc_curve,
    threshold_for_sensitivity,
    top_label,
)


def run_contract(config, runner, postprocess: dict) -> SimpleNamespace:
    """What the bundle manifest will say about this run's model, before it is exported: the
    runtime task reads its input shape, output activation, threshold and class names."""
    return SimpleNamespace(
        manifest={"input": {"shape": list(runner.input_specs[0].shape)},
                  "output": {"activation": postprocess["activation"]},
                  "postprocessing": postprocess},
        preprocess_spec=config.preprocessing.spec(), threshold=postprocess["threshold"],
        class_names=list(config.model.class_names),
    )


def _predict(task, run_dir, config, cases, split, progress):
    from kerasmed.keras_runner import KerasRunner

    runner = KerasRunner(run_dir / "model.keras")
    contract = run_contract(config, runner, {"threshold": config.evaluation.threshold,
                                             "activation": activation_of(config)})
    probs, inputs = [], []
    for case in tqdm(cases.itertuples(), total=len(cases), desc=f"evaluate {split}",
                     disable=not progress):
        case_inputs = task.runtime.inputs(read_image(case.image_path, options=config.data.read),
                                          contract)
        probs.append(task.runtime.run(runner, case_inputs))
        require_finite_predictions(probs[-1], case.case_id, run_dir / "model.keras")
        inputs.append(case_inputs.batches[0])
    return np.concatenate(probs).astype(np.float64), np.concatenate(inputs)


def _baseline(config, x_eval, y_eval) -> tuple[float | None, str]:
    """The histogram baseline fitted on the training split (from the cache), scored on `x_eval`."""
    from kerasmed.data.cache import load_cache
    from kerasmed.data.manifest import dataset_manifest
    from kerasmed.tasks.classification import case_arrays
    from kerasmed.training.inputs import cache_for

    manifest = dataset_manifest(config)
    x_train, y_train = case_arrays(config, load_cache(cache_for(config, False), "train"), manifest)
    return histogram_baseline_auc(config, x_train, y_train, x_eval, y_eval)


def histogram_range(config, x_train) -> tuple[tuple[float, float], str]:
    """The histogram baseline's intensity range and its name.

    The model's HU window when its first layer is one and fits the training images
    (`kerasmed.data.intensity.hu_window_fits`: CT, or CT shifted as in 16-bit PNGs); else the
    training images' own 0.5 and 99.5 percentiles (z-scored, microscopy, ...), where a HU range
    would clip everything into one bin.

    Returns:
        `((low, high), name)`, e.g. `((-1000.0, 400.0), "logistic regression on HU histograms")`.

    Raises:
        DataError: if `x_train` is empty or holds a single intensity.
    """
    from kerasmed.data.intensity import hu_window_fits
    from kerasmed.evaluation.histogram_baseline import percentile_range

    if hu_window_fits(config, x_train):
        return tuple(config.model.hu_window), "logistic regression on HU histograms"
    low, high = percentile_range(x_train)
    return (low, high), (f"logistic regression on intensity histograms over [{low:.4g}, "
                         f"{high:.4g}], the training images' 0.5-99.5 percentiles")


def histogram_baseline_auc(config, x_train, y_train, x_eval, y_eval) -> tuple[float | None, str]:
    """AUC (macro over outputs) of logistic regression on intensity histograms (over the range of
    `histogram_range`), and what it is."""
    from kerasmed.evaluation.histogram_baseline import HistogramBaseline

    activation = activation_of(config)
    labels = np.argmax(y_train, 1) if activation == "softmax" else (
        y_train if y_train.shape[1] > 1 else y_train[:, 0])
    try:
        intensity_range, name = histogram_range(config, x_train)
        model = HistogramBaseline(intensity_range=intensity_range).fit(x_train, labels)
        scores = model.predict_proba(x_eval)
        if y_eval.shape[1] == 1:
            return roc_auc(y_eval[:, 0], scores[:, -1]), name
        return _macro(y_eval, scores), name
    except (DataError, ValueError) as err:
        return None, f"not available: {err}"


def _macro(y: np.ndarray, scores: np.ndarray) -> float | None:
    aucs = [roc_auc(y[:, c], scores[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else None


def _per_output(config, y, probs, activation, threshold) -> list[dict]:
    """ROC, PR, AUC with CI, and the confusion at the operating point, per output (a softmax
    model: per class, one-vs-rest, at its arg-max decision)."""
    c = config.classification
    out = []
    decided = np.argmax(probs, 1) if activation == "softmax" else None
    for k, name in enumerate(target_names(config)):
        truth, score = y[:, k], probs[:, k]
        if not 0 < truth.sum() < len(truth):
            out.append({"label": name, "auc": None, "ci": None})
            continue
        if activation == "softmax":
            t, called = None, (decided == k).astype(float)
        else:
            t = threshold_for_sensitivity(truth, score, c.min_sensitivity) if c.min_sensitivity else threshold
            called = score
        conf = confusion_at(truth, called, 0.5 if t is None else t)
        fpr, tpr, _ = roc_curve(truth, score)
        precision, recall, _ = pr_curve(truth, score)
        out.append({
            "label": name, "fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall,
            "auc": roc_auc(truth, score), "ap": average_precision(truth, score),
            "ci": bootstrap_ci(roc_auc, truth, score, n=c.bootstrap, seed=config.seed),
            "threshold": t, "confusion": conf,
            "operating_point": (1 - conf["specificity"], conf["sensitivity"]),
        })
    return out


def evaluate_classifier(task, run_dir: Path, config, cases: pd.DataFrame, split: str,
                        progress: bool = True) -> dict:
    """See the module docstring; returns the summary written to `summary.json`."""
    start = time.monotonic()
    activation = activation_of(config)
    y = targets(cases, config).astype(np.float64)
    raw, x = _predict(task, run_dir, config, cases, split, progress)
    truth_for_t = np.argmax(y, 1) if activation == "softmax" else y
    temperature, warnings = None, []
    if config.classification.temperature_scaling:
        temperature = fit_temperature(raw, truth_for_t, activation)
        warnings += _temperature_warnings(temperature, split)
    probs = raw if temperature is None else apply_temperature(raw, temperature, activation)
    threshold = config.evaluation.threshold
    per_output = _per_output(config, y, probs, activation, threshold)
    scored = [o for o in per_output if o["auc"] is not None]
    if not scored:
        raise DataError(f"AUC needs both classes among the {split} cases of some output. "
                        f"Received: {len(cases)} cases, positives per output {y.sum(0).tolist()}")

    def ece(p):
        if activation == "softmax":
            correct, confidence = top_label(np.argmax(y, 1), p)
            return expected_calibration_error(correct, confidence), reliability_bins(correct, confidence)
        return expected_calibration_error(y.ravel(), p.ravel()), reliability_bins(y.ravel(), p.ravel())

    ece_before, bins_before = ece(raw)
    ece_after, bins_after = ece(probs) if temperature is not None else (None, None)
    baseline_auc, baseline = _baseline(config, x, y)
    binary = len(per_output) == 1
    main = per_output[0] if binary else None
    summary = {
        "task": task.name,
        "split": split,
        "cases": len(cases),
        "positives": y.sum(0).astype(int).tolist(),
        "outputs": [o["label"] for o in per_output],
        "activation": activation,
        "auc": main["auc"] if binary else float(np.mean([o["auc"] for o in scored])),
        "auc_ci": list(main["ci"]) if binary else None,
        "per_output": [{k: v for k, v in o.items() if k in ("label", "auc", "ap", "ci", "threshold",
                                                             "confusion")} for o in per_output],
        "operating_threshold": main["threshold"] if binary and main["threshold"] is not None
        else threshold,
        "operating_rule": (f"sensitivity >= {config.classification.min_sensitivity:g}"
                           if config.classification.min_sensitivity and activation != "softmax"
                           else ("arg-max class" if activation == "softmax" else f"p >= {threshold:g}")),
        **({k: main["confusion"][k] for k in ("sensitivity", "specificity", "ppv", "npv", "f1",
                                                "accuracy")} if binary else {}),
        "ece": ece_before,
        "ece_calibrated": ece_after,
        "temperature": temperature,
        "temperature_fitted_on": split if temperature is not None else None,
        "baseline_auc": baseline_auc,
        "baseline": baseline,
        "warnings": warnings,
        "seconds": round(time.monotonic() - start, 1),
    }
    table = pd.DataFrame({"case_id": cases["case_id"].to_numpy()})
    for k, name in enumerate(per_output):
        table[f"truth_{name['label']}"] = y[:, k].astype(int)
        table[f"prob_{name['label']}"] = probs[:, k]
        table[f"raw_prob_{name['label']}"] = raw[:, k]
    with atomic_dir(run_dir / "eval") as out:
        table.to_csv(out / "predictions.csv", index=False, float_format="%.6f")
        plot_roc([_curve(o) for o in scored], out / "roc.png")
        plot_pr([{**_curve(o), "ap": o["ap"]} for o in scored], out / "pr.png")
        _confusion_plot(y, probs, activation, summary, config, out / "confusion.png")
        plot_calibration(bins_before, bins_after, ece_before, ece_after, out / "calibration.png")
        if (run_dir / "training_log.csv").is_file():
            plot_training_curves(run_dir / "training_log.csv", out / "training_curves.png", "auc")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        (out / "report.md").write_text(_report(summary, task.headline(summary)))
    return summary


def _temperature_warnings(temperature: float, split: str) -> list[str]:
    """A warning when the temperature fit stopped at a bound of its search (`bound_reached`)."""
    bound = bound_reached(temperature)
    if bound is None:
        return []
    why = ("carry almost no information about the labels (every calibrated probability ends up "
           "near the same value)" if bound == DEFAULT_BOUNDS[1] else
           "separate the labels perfectly (a few cases are no basis for a calibration)")
    return [f"temperature scaling stopped at its bound T = {bound:g}: the model's {split} "
            f"predictions {why}, so the calibrated probabilities and the operating point are "
            f"unreliable; check the model, or set `classification.temperature_scaling: false`"]


def _curve(o: dict) -> dict:
    return {"label": o["label"], "fpr": o["fpr"], "tpr": o["tpr"], "precision": o["precision"],
            "recall": o["recall"], "auc": o["auc"], "ci": o["ci"],
            "operating_point": o["operating_point"], "threshold": o["threshold"]}


def _confusion_plot(y, probs, activation, summary, config, path) -> None:
    if activation == "softmax":
        truth, pred = np.argmax(y, 1), np.argmax(probs, 1)
        names = list(config.model.class_names)
    else:  # one 2x2 matrix of the first output (binary), at the operating threshold
        truth = y[:, 0].astype(int)
        pred = (probs[:, 0] >= summary["per_output"][0]["threshold"]).astype(int)
        names = ([config.model.class_names[0]] if len(config.model.class_names) == 2
                 else [f"not {summary['outputs'][0]}"]) + [summary["outputs"][0]]
    size = len(names)
    matrix = np.zeros((size, size), int)
    np.add.at(matrix, (truth, pred), 1)
    plot_confusion(matrix, names, path)


def _report(summary: dict, headline: str) -> str:
    rows = "\n".join(
        f"| {o['label']} | {o['auc']:.3f} | {o['ci'][0]:.3f}-{o['ci'][1]:.3f} | {o['ap']:.3f} | "
        + (" | ".join(f"{o['confusion'][k]:.3f}" for k in ("sensitivity", "specificity", "ppv", "npv",
                                                           "f1")))
        + " |" for o in summary["per_output"] if o["auc"] is not None)
    ece_after = summary["ece_calibrated"]
    return (
        f"# Evaluation ({summary['split']}, {summary['cases']} images)\n\n{headline}\n\n"
        f"Operating point: {summary['operating_rule']} (threshold "
        f"{summary['operating_threshold']:.4f}).\n\n"
        "| output | AUC | 95% CI | AP | sensitivity | specificity | PPV | NPV | F1 |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Expected calibration error: {summary['ece']:.4f}"
        + (f" -> {ece_after:.4f} after temperature scaling (T = {summary['temperature']:.3f}, fitted "
           f"on {summary['temperature_fitted_on']})" if ece_after is not None else "") + "\n\n"
        f"Baseline ({summary['baseline']}): AUC "
        + ("n/a" if summary["baseline_auc"] is None else f"{summary['baseline_auc']:.3f}") + "\n\n"
        + "".join(f"**Warning**: {w}.\n\n" for w in summary.get("warnings") or [])
        + "![ROC](roc.png) ![precision-recall](pr.png)\n\n![confusion matrix](confusion.png) "
        "![calibration](calibration.png)\n\n![training curves](training_curves.png)\n"
    )
