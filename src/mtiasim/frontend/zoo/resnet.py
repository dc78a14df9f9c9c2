"""ResNet-50 v1.5: MLPerf Inference ``resnet50`` (ImageNet, 224x224 RGB).

Architecture (He et al., CVPR'16, Table 1, "50-layer": bottleneck stages of 3, 4, 6, 3 blocks with
widths 64/128/256/512 and expansion 4, 25.6M parameters); "v1.5" puts the stride-2 of a downsampling
block on its 3x3 convolution instead of the first 1x1 (torchvision's ``resnet50``, the MLPerf
reference model). Built from nn.Conv2d / nn.BatchNorm2d (inference: folded into the convolution
epilogue by the compiler's fusion, as TensorRT folds it) / ReLU / max and adaptive-average pooling /
nn.Linear. One item is one image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from . import Workload, ZooModel, register
from ._common import apply_overrides, cache_key, check_positive


@dataclass(frozen=True)
class ResNetConfig:
    blocks: tuple = (3, 4, 6, 3)
    widths: tuple = (64, 128, 256, 512)
    expansion: int = 4
    stem: int = 64
    n_classes: int = 1000
    image: int = 224

    def validate(self, name: str) -> None:
        check_positive(expansion=self.expansion, stem=self.stem, n_classes=self.n_classes, image=self.image)
        if len(self.blocks) != len(self.widths) or not self.blocks:
            raise ValueError(f"{name}: blocks and widths must be non-empty and the same length")
        if any(not isinstance(v, int) or v < 1 for v in (*self.blocks, *self.widths)):
            raise ValueError(f"{name}: blocks and widths must be positive ints")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, width, 1), nn.ReLU(), *_conv_bn(width, width, 3, stride), nn.ReLU(),
                                  *_conv_bn(width, cout, 1))
        self.skip = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """forward(images [B, 3, H, W]) -> logits [B, n_classes]."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, cfg.stem, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = cfg.stem
        for i, (n, w) in enumerate(zip(cfg.blocks, cfg.widths)):
            for j in range(n):
                layers.append(Bottleneck(cin, w, w * cfg.expansion, 2 if j == 0 and i > 0 else 1))
                cin = w * cfg.expansion
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, cfg.n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def resnet_param_count(cfg: ResNetConfig) -> int:
    def conv_bn(cin, cout, k):
        return cin * cout * k * k + 2 * cout  # BN weight and bias (running stats are buffers)

    total, cin = conv_bn(3, cfg.stem, 7), cfg.stem
    for i, (n, w) in enumerate(zip(cfg.blocks, cfg.widths)):
        for j in range(n):
            cout = w * cfg.expansion
            total += conv_bn(cin, w, 1) + conv_bn(w, w, 3) + conv_bn(w, cout, 1)
            if (j == 0 and i > 0) or cin != cout:
                total += conv_bn(cin, cout, 1)
            cin = cout
    return total + cin * cfg.n_classes + cfg.n_classes


class ResNet50Model(ZooModel):
    name = "resnet50"
    family = "vision"
    phases = ("forward",)
    default_batch = 256
    default_seq_len = None
    default_dtype = "int8"  # MLPerf resnet50: INT8 (v4.1 measurements JSON precision column)
    source = "He et al., CVPR'16 Table 1 (50-layer); torchvision resnet50 (v1.5), the MLPerf Inference reference"
    description = ("ResNet-50 v1.5 (25.6M params, ~4.1 GMACs per 224x224 image): bottleneck stages 3-4-6-3, "
                   "BN folded into the convolutions. One item = one image.")

    def __init__(self):
        self.cfg = ResNetConfig()

    def config(self) -> dict:
        return dataclasses.asdict(self.cfg)

    def param_count(self, **overrides) -> int:
        return resnet_param_count(apply_overrides(self.cfg, overrides, self.name))

    def build(self, batch=None, seq_len=None, phase=None, kv_len=None, device="meta", **overrides):
        cfg = apply_overrides(self.cfg, overrides, self.name)
        cfg.validate(self.name)
        batch = self.default_batch if batch is None else batch
        check_positive(batch=batch)
        if phase not in (None, "forward") or seq_len is not None or kv_len is not None:
            raise ValueError(f"{self.name}: a vision model takes only phase='forward' and no seq_len/kv_len")
        with torch.device(device):
            module = ResNet(cfg).eval()
        images = torch.empty((batch, 3, cfg.image, cfg.image), device=device)
        if images.device.type != "meta":
            images = torch.randn((batch, 3, cfg.image, cfg.image), generator=torch.Generator().manual_seed(0))
            images = images.to(device)
        return Workload(
            name=self.name, module=module, example_inputs=(images,), phase="forward", batch=batch, seq_len=None,
            kv_len=None, items=batch, item_unit="sample", default_dtype=self.default_dtype,
            default_act_dtype="int8",
            cache_key=cache_key(self.name, "forward", batch, None, None, dataclasses.asdict(cfg)),
        )


register(ResNet50Model())
