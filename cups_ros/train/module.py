"""Lightning modules of stage 2 (bootstrap on pseudo-labels) and stage 3 (self-training).

Plain PyTorch network and losses; Lightning brings devices, DDP, precision, checkpoints, resume
and logs. Both stages share one training step: labels -> copy-paste -> network -> losses.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import lightning as L  # noqa: N812
import numpy as np
import torch
from torch import Tensor

from cups_ros.core.config import from_dict, to_dict
from cups_ros.features.preprocessing import preprocess
from cups_ros.model.losses import make_targets, panoptic_losses
from cups_ros.model.network import PanopticTrackingNet, output_size
from cups_ros.model.postprocess import PostProcessConfig, group_instances, upsample_outputs
from cups_ros.train.config import TrainConfig
from cups_ros.train.copy_paste import PasteObject, cut_objects, paste_objects
from cups_ros.train.self_labels import self_labels

OWN_OBJECT_BANK = 64


class PanopticTrainingModule(L.LightningModule):
    """``stage`` "bootstrap": pseudo-labels as targets, whole configured network trains.
    ``stage`` "self_train": EMA-teacher TTA self-labels as targets, heads only; ``initial_state`` is
    the bootstrap network (None only when Lightning restores a self-training checkpoint)."""

    def __init__(
        self, config: dict[str, Any], stage: str = "bootstrap", initial_state: dict | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["initial_state"])
        self.train_config: TrainConfig = from_dict(TrainConfig, config)
        if stage not in ("bootstrap", "self_train"):
            raise ValueError(f"unknown training stage {stage!r} (bootstrap or self_train)")
        self.stage = stage
        network_config = self.train_config.network
        if stage == "self_train":
            network_config.backbone_trainable = "frozen"  # heads only (CUPS)
            self.network = PanopticTrackingNet(network_config)
        else:
            self.network = PanopticTrackingNet.with_pretrained_backbone(network_config)
        if initial_state is not None:
            self.network.load_state_dict(initial_state)
        self.network.set_backbone_trainable()
        self.teacher: PanopticTrackingNet | None = None
        if stage == "self_train":
            self.teacher = copy.deepcopy(self.network).eval()
            for parameter in self.teacher.parameters():
                parameter.requires_grad = False
        self.own_objects: list[PasteObject] = []
        self._rng = np.random.default_rng(self.settings["seed"])

    @property
    def settings(self) -> dict[str, Any]:
        part = self.train_config.bootstrap if self.stage == "bootstrap" else self.train_config.self_train
        return to_dict(part)

    @property
    def thing_classes(self) -> list[int]:
        return self.train_config.network.thing_classes

    def forward(self, images: Tensor):  # type: ignore[no-untyped-def]
        return self.network(preprocess(images))

    def _targets_from_teacher(self, images: Tensor) -> tuple[Tensor, Tensor]:
        assert self.teacher is not None
        config = self.train_config.self_train
        return self_labels(
            self.teacher,
            images,
            self.thing_classes,
            config.tta_scales,
            config.tta_flip,
            config.instance_score,
            config.semantic_factor,
            self.train_config.postprocess,
            config.instance_score_relative,
        )

    def _paste_sources(self, images: Tensor, semantic: Tensor, instance: Tensor) -> list[PasteObject]:
        paste = self.train_config.copy_paste
        own_turn = self.stage == "self_train" or self.global_step >= paste.own_predictions_after
        if own_turn and self.own_objects:
            return self.own_objects
        return cut_objects(images, instance, semantic, paste.min_area)

    def _remember_own_objects(self, images: Tensor, outputs: Any) -> None:
        """Confident predicted objects of this step, for pasting once pseudo-label objects retire."""
        paste = self.train_config.copy_paste
        if not paste.enabled or not self.thing_classes:
            return
        if self.stage == "bootstrap" and self.global_step + 1 < paste.own_predictions_after:
            return
        grouping = PostProcessConfig(
            centre_threshold=self.train_config.postprocess.centre_threshold,
            nms_kernel=self.train_config.postprocess.nms_kernel,
            min_instance_area=paste.min_area,
            min_score=paste.own_score,
        )
        with torch.no_grad():
            up = upsample_outputs(
                type(outputs)(*(o.detach().float() for o in outputs)), tuple(images.shape[1:3])
            )
            probabilities = torch.softmax(up.semantic_logits, dim=1)
            for index in range(images.shape[0]):
                dense = group_instances(
                    probabilities[index],
                    up.centre_heatmap[index],
                    up.centre_offsets[index],
                    self.thing_classes,
                    grouping,
                )
                classes = torch.zeros_like(dense.instance)
                for position, class_id in enumerate(dense.classes.tolist()):
                    classes[dense.instance == position + 1] = class_id
                self.own_objects.extend(
                    cut_objects(
                        images[index : index + 1], dense.instance[None], classes[None], paste.min_area
                    )
                )
        self.own_objects = self.own_objects[-OWN_OBJECT_BANK:]

    def training_step(self, batch: dict[str, Tensor], batch_index: int) -> Tensor:
        images, semantic, instance = batch["image"], batch["semantic"], batch["instance"]
        if self.stage == "self_train":
            semantic, instance = self._targets_from_teacher(images)
            track_keys: list[dict[int, int]] = [{} for _ in range(images.shape[0])]  # ids per image only
        else:  # pseudo-track ids: one key per (sequence, track) across the frames of the batch
            track_keys = [
                {int(i): int(sequence) * 1000 + int(i) for i in torch.unique(instance[b]).tolist() if i}
                for b, sequence in enumerate(batch["sequence"].tolist())
            ]
        sources = self._paste_sources(images, semantic, instance)
        images, semantic, instance, _ = paste_objects(
            images, semantic, instance, sources, self.train_config.copy_paste, self._rng
        )
        outputs = self(images)
        targets = make_targets(
            semantic,
            instance,
            track_keys,
            output_size(images.shape[1], images.shape[2]),
            self.train_config.loss.centre_sigma,
        )
        loss_config = self.train_config.loss
        if self.stage == "self_train":
            # Self-labels carry no tracks: the embedding head keeps what the pseudo-tracks taught it.
            loss_config = dataclasses.replace(loss_config, embedding_weight=0.0)
        losses = panoptic_losses(outputs, targets, self.thing_classes, loss_config)
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in losses.items()},
            prog_bar=False,
            batch_size=images.shape[0],
            sync_dist=False,
        )
        self.log("loss", losses["loss"].detach(), prog_bar=True, batch_size=images.shape[0])
        self._remember_own_objects(images, outputs)
        return losses["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_index: int) -> None:
        if self.teacher is None:
            return
        momentum = self.train_config.self_train.ema_momentum
        with torch.no_grad():
            for teacher, student in zip(
                self.teacher.heads.parameters(), self.network.heads.parameters(), strict=True
            ):
                teacher.mul_(momentum).add_(student.detach(), alpha=1.0 - momentum)

    def configure_optimizers(self) -> Any:
        settings = self.settings
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
        )
        total = (
            settings["steps"]
            if self.stage == "bootstrap"
            else settings["rounds"] * settings["steps_per_round"]
        )
        warmup = settings.get("warmup_steps", 0)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup)) ** 0.9  # poly

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["own_objects"] = [(o.image, o.mask, o.class_id) for o in self.own_objects]
        checkpoint["rng_state"] = self._rng.bit_generator.state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.own_objects = [PasteObject(*entry) for entry in checkpoint.get("own_objects", [])]
        if "rng_state" in checkpoint:
            self._rng.bit_generator.state = checkpoint["rng_state"]
