"""Torch architectures in plain torch, random weights.

torchvision and timm are not used: torchvision's PyPI wheel does not import beside the pinned
torch 2.13 CPU build (docs/coverage.md says why and what that skips). The building blocks of
their model families are written here instead: residual and bottleneck blocks with
BatchNorm, MobileNet inverted residuals (depthwise conv, ReLU6), squeeze-excitation with SiLU,
ConvNeXt blocks (7x7 depthwise, LayerNorm, GELU), a ViT, a U-Net decoder, DenseNet
concatenation and recurrent layers.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from scripts.zoo.common import SEED, Case

FAMILY = "torch"

# Written to a file and imported from there, as a user's own models.py would be.
MODELS_SOURCE = textwrap.dedent(
    '''\
    import torch
    from torch import nn
    import torch.nn.functional as F


    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))


    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            cout = mid * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return F.relu(self.body(x) + self.down(x))


    class ResNet(nn.Module):
        def __init__(self, bottleneck=False, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            if bottleneck:
                self.layers = nn.Sequential(Bottleneck(16, 8, 1), Bottleneck(32, 16, 2))
                width = 64
            else:
                self.layers = nn.Sequential(Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 64, 2))
                width = 64
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            mid = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.body(x)
            return x + y if self.use_res else y


    class MobileNetV2(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 2, 6), InvertedResidual(24, 24, 1, 6),
                InvertedResidual(24, 32, 2, 6))
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))


    class SqueezeExcite(nn.Module):
        def __init__(self, ch, r=4):
            super().__init__()
            self.fc1 = nn.Conv2d(ch, ch // r, 1)
            self.fc2 = nn.Conv2d(ch // r, ch, 1)

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


    class EfficientNetish(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
            self.mb = nn.Sequential(
                nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU(),
                nn.Conv2d(64, 64, 5, 2, 2, groups=64, bias=False), nn.BatchNorm2d(64), nn.SiLU(),
                SqueezeExcite(64), nn.Conv2d(64, 24, 1, bias=False), nn.BatchNorm2d(24))
            self.fc = nn.Linear(24, classes)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.mb(self.stem(x)), 1), 1))


    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pw1 = nn.Linear(dim, 4 * dim)
            self.pw2 = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(torch.full((dim,), 0.5))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(y))))
            return x + y.permute(0, 3, 1, 2)


    class ConvNeXt(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 4, 4)
            self.blocks = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
            self.norm = nn.LayerNorm(32)
            self.fc = nn.Linear(32, classes)

        def forward(self, x):
            return self.fc(self.norm(self.blocks(self.stem(x)).mean((2, 3))))


    class DenseNetish(nn.Module):
        def __init__(self, classes=10, growth=8):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1)
            self.layers = nn.ModuleList(
                nn.Sequential(nn.BatchNorm2d(16 + i * growth), nn.ReLU(), nn.Conv2d(16 + i * growth, growth, 3, 1, 1))
                for i in range(3))
            self.fc = nn.Linear(16 + 3 * growth, classes)

        def forward(self, x):
            feats = [self.stem(x)]
            for layer in self.layers:
                feats.append(layer(torch.cat(feats, 1)))
            return self.fc(F.adaptive_avg_pool2d(torch.cat(feats, 1), 1).flatten(1))


    class ViT(nn.Module):
        def __init__(self, classes=10, dim=32, patch=8, image=32, depth=2, heads=4):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, patch, patch)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.head = nn.Linear(dim, classes)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
            return self.head(self.encoder(t)[:, 0])


    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.d1 = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
            self.d2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU())
            self.up = nn.ConvTranspose2d(16, 8, 2, 2)
            self.u1 = nn.Sequential(nn.Conv2d(16, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))

        def forward(self, x):
            a = self.d1(x)
            b = self.d2(a)
            up = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
            return self.u1(torch.cat([a, self.up(b) + up[:, :8]], 1))


    class SeqRNN(nn.Module):
        def __init__(self, kind="lstm"):
            super().__init__()
            rnn = nn.LSTM if kind == "lstm" else nn.GRU
            self.rnn = rnn(12, 24, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(48, 5)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])


    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3))

        def forward(self, x):
            return torch.softmax(self.net(x), -1)


    BUILDERS = {
        "resnet_basic": lambda: ResNet(False), "resnet_bottleneck": lambda: ResNet(True),
        "mobilenet_v2": MobileNetV2, "efficientnet_se": EfficientNetish, "convnext": ConvNeXt,
        "densenet": DenseNetish, "vit": ViT, "unet": UNet, "lstm": lambda: SeqRNN("lstm"),
        "gru": lambda: SeqRNN("gru"), "mlp": MLP,
    }


    def build(name="mlp"):
        return BUILDERS[name]()
    ''',
)

# name -> (input shape with batch first, route)
SHAPES = {
    "resnet_basic": ((3, 64, 64), ".pt2"), "resnet_bottleneck": ((3, 64, 64), ".pt2"),
    "mobilenet_v2": ((3, 64, 64), ".pt2"), "efficientnet_se": ((3, 64, 64), ".pt2"),
    "convnext": ((3, 32, 32), ".pt2"), "densenet": ((3, 32, 32), "factory"), "vit": ((3, 32, 32), ".pt2"),
    "unet": ((3, 32, 32), ".pt2"), "lstm": ((10, 12), ".pt2"), "gru": ((10, 12), "factory"),
    "mlp": ((20,), "factory"),
}
CATALOG = list(SHAPES)
FAST = ["resnet_basic", "mlp"]


def _module(workdir: Path):
    import importlib.util

    path = workdir / "zoo_models.py"
    path.write_text(MODELS_SOURCE)
    spec = importlib.util.spec_from_file_location("zoo_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


def build(name: str, workdir: Path) -> Case:
    import torch

    shape, route = SHAPES[name]
    path, mod = _module(workdir)
    torch.manual_seed(SEED)
    model = mod.build(name).eval()
    # BatchNorm with its default statistics is the identity; random ones test the folding.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    example = (torch.randn(2, *shape),)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dyn = ({0: batch},)
    spec = "x:[batch," + ",".join(str(d) for d in shape) + "]:float32"
    if route == ".pt2":
        src = workdir / f"{name}.pt2"
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dyn, strict=False), src)
        args = [str(src)]
    else:
        weights = workdir / f"{name}_state.pt"
        torch.save(model.state_dict(), weights)
        # A factory takes no arguments and stands alone: one file per architecture.
        factory = workdir / f"{name}_factory.py"
        factory.write_text(MODELS_SOURCE.replace('def build(name="mlp")', f"def build(name={name!r})"))
        args = [f"{factory}:build", "--weights", str(weights), "--input", spec]

    def raw_export(out: Path) -> None:
        torch.onnx.export(model, example, str(out), dynamo=True, dynamic_shapes=dyn, input_names=["x"])

    def inputs(b: int) -> list[np.ndarray]:
        rng = np.random.default_rng(SEED + b)
        return [rng.standard_normal((b, *shape)).astype(np.float32)]

    def reference(xs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(*[torch.from_numpy(x) for x in xs])
        return [out.numpy()]

    return Case(FAMILY, name, route, args, raw_export, inputs, reference)


def catalog() -> list[str]:
    return list(CATALOG)
