"""Training runs: a folder per run with Lightning checkpoints (resume), CSV/TensorBoard logs, the
model file, a loss plot and a montage of predictions on training frames.

    run_dir/checkpoints/last.ckpt   resume point (a killed run continues from it)
    run_dir/logs/                    CSV (and TensorBoard) logs
    run_dir/model.pt                 the trained network (cups_ros model file), written at the end
    run_dir/losses.png, predictions.png
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import cv2
import lightning as L  # noqa: N812
import numpy as np
import torch
from torch.utils.data import DataLoader

from cups_ros.core.config import to_dict, write_config
from cups_ros.core.files import write_png_atomic
from cups_ros.model.model_file import load_model, read_model_file, save_model
from cups_ros.model.network import PanopticTrackingNet
from cups_ros.model.postprocess import PanopticPrediction, postprocess
from cups_ros.train.config import TrainConfig
from cups_ros.train.dataset import LabelSet, NearbyFramePairs, PanopticFrames
from cups_ros.train.module import PanopticTrainingModule

_log = logging.getLogger(__name__)


def _loggers(config: TrainConfig, run_dir: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = []
    for name in config.trainer.loggers:
        if name == "csv":
            # A resumed run logs into the next version folder: earlier metrics are never overwritten.
            loggers.append(CSVLogger(run_dir, name="logs"))
        else:
            try:
                loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
            except ModuleNotFoundError as error:
                raise ValueError(
                    "trainer.loggers has tensorboard, but neither tensorboard nor tensorboardX is installed"
                ) from error
    return loggers


def _trainer(config: TrainConfig, run_dir: Path, max_steps: int) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer_config = config.trainer
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        every_n_train_steps=trainer_config.checkpoint_every_steps,
        save_last=True,
        save_top_k=0,
    )
    return L.Trainer(
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=trainer_config.strategy,
        precision=trainer_config.precision,
        max_steps=max_steps,
        gradient_clip_val=config.bootstrap.gradient_clip,
        logger=_loggers(config, run_dir),
        callbacks=[checkpoint],
        log_every_n_steps=trainer_config.log_every_steps,
        enable_progress_bar=trainer_config.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # NearbyFramePairs draws per rank itself
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )


def _loader(labels: LabelSet, config: TrainConfig, batch_size: int, gap: int, seed: int) -> DataLoader:
    frames = PanopticFrames(labels, config.augmentation, augment=True, seed=seed)
    return DataLoader(
        frames,
        batch_size=batch_size,
        sampler=NearbyFramePairs(labels, gap, seed),
        num_workers=config.trainer.num_workers,
        persistent_workers=config.trainer.num_workers > 0,
        drop_last=True,
    )


def _resume_point(run_dir: Path) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def with_label_classes(config: TrainConfig, labels: LabelSet) -> TrainConfig:
    """The network's classes are those of its training labels."""
    config.network = config.network.with_classes(labels.num_classes, labels.thing_classes)
    return config


def bootstrap(labels: LabelSet, config: TrainConfig, run_dir: str | Path) -> Path:
    """Stage 2 on pseudo-labels (or ground truth for the oracle); resumes from run_dir."""
    run_dir = Path(run_dir)
    config = with_label_classes(config, labels)
    write_config(config, run_dir / "train.yaml", node_name=None)
    L.seed_everything(config.bootstrap.seed, workers=True, verbose=False)
    module = PanopticTrainingModule(to_dict(config), stage="bootstrap")
    loader = _loader(
        labels, config, config.bootstrap.batch_size, config.bootstrap.pair_gap, config.bootstrap.seed
    )
    trainer = _trainer(config, run_dir, config.bootstrap.steps)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=_resume_point(run_dir))
    return _finish(trainer, module, labels, run_dir, {"stage": "bootstrap", "labels": labels.source})


def self_train(model_path: str | Path, labels: LabelSet, config: TrainConfig, run_dir: str | Path) -> Path:
    """Stage 3 from a bootstrap model file on the same frames (their labels are not used)."""
    run_dir = Path(run_dir)
    initial = load_model(model_path)
    config.network = initial.config
    write_config(config, run_dir / "train.yaml", node_name=None)
    settings = config.self_train
    L.seed_everything(settings.seed, workers=True, verbose=False)
    module = PanopticTrainingModule(to_dict(config), stage="self_train", initial_state=initial.state_dict())
    loader = _loader(labels, config, settings.batch_size, settings.pair_gap, settings.seed)
    trainer = _trainer(config, run_dir, settings.rounds * settings.steps_per_round)
    trainer.gradient_clip_val = settings.gradient_clip
    trainer.fit(module, train_dataloaders=loader, ckpt_path=_resume_point(run_dir))
    metadata = {"stage": "self_train", "labels": labels.source, "initial_model": str(model_path)}
    metadata["bootstrap"] = read_model_file(model_path).get("metadata", {})
    return _finish(trainer, module, labels, run_dir, metadata)


def _finish(
    trainer: L.Trainer, module: PanopticTrainingModule, labels: LabelSet, run_dir: Path, metadata: dict
) -> Path:
    model_path = run_dir / "model.pt"
    if trainer.is_global_zero:
        network = module.teacher if module.teacher is not None else module.network  # EMA teacher serves
        metadata = {**metadata, "steps": int(trainer.global_step), "frames": len(labels.records)}
        save_model(network.cpu().eval(), model_path, metadata)
        plot_losses(run_dir / "logs", run_dir / "losses.png")
        write_png_atomic(run_dir / "predictions.png", prediction_montage(network, labels))
    return model_path


def logged_rows(log_dir: Path) -> list[dict[str, str]]:
    """Rows of every CSV log version of a run (a resumed run adds a version), in order."""
    rows: list[dict[str, str]] = []
    versions = sorted(log_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    for path in versions:
        with path.open() as file:
            rows.extend(csv.DictReader(file))
    return rows


def plot_losses(log_dir: Path, output: Path) -> None:
    """Each logged loss over the steps, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for row in logged_rows(log_dir):
        for key, value in row.items():
            if key.startswith("train/") and value:
                series.setdefault(key[6:], []).append((int(row["step"]), float(value)))
    if not series:
        return
    figure, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 2.8))
    for axis, (name, points) in zip(np.atleast_1d(axes), sorted(series.items()), strict=True):
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, lw=0.8)
        axis.set_title(name)
        axis.set_xlabel("step")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=90)
    plt.close(figure)
    temporary.replace(output)


def prediction_overlay(image: np.ndarray, prediction: PanopticPrediction) -> np.ndarray:
    """The image under its pseudo-class colours, instance outlines in white (montages)."""
    overlaid = class_overlay(image, prediction.semantic)
    overlaid[cv2.Canny((prediction.panoptic % 997).astype(np.uint8), 0, 1) > 0] = 255
    return overlaid


def class_overlay(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    from cups_ros.pseudo.pipeline import pseudo_class_colours

    return cv2.addWeighted(image, 0.4, pseudo_class_colours(classes.astype(np.uint8)), 0.6, 0)


def prediction_montage(network: PanopticTrackingNet, labels: LabelSet, count: int = 4) -> np.ndarray:
    """Image | label | prediction (instance outlines in white) for a few frames spread over the set."""
    from cups_ros.features.preprocessing import preprocess
    from cups_ros.geometry.reference import read_rgb
    from cups_ros.train.dataset import read_panoptic_label

    config = network.config
    rows = []
    for record in labels.records[:: max(1, len(labels.records) // count)][:count]:
        image = read_rgb(record.image_path)
        resized = cv2.resize(image, (config.input_width, config.input_height), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            outputs = network(preprocess(resized))
        prediction = postprocess(outputs, config.thing_classes, resized.shape[:2], resized.shape[:2])[0]
        label = cv2.resize(
            read_panoptic_label(record.label_path) // 1000,
            resized.shape[1::-1],
            interpolation=cv2.INTER_NEAREST,
        )
        rows.append(
            np.concatenate(
                [resized, class_overlay(resized, label), prediction_overlay(resized, prediction)], axis=1
            )
        )
    return np.concatenate(rows, axis=0)
