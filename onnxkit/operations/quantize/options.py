"""The modes, metrics and budgets of quantize, and the configuration one quantizer run takes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from onnxkit.operations.quantize.calibration import _Batches

log = logging.getLogger(__name__)


MODES = ("dynamic", "static", "int4", "fp16")


METRICS = ("cosine", "maxabs", "label")


CALIB_METHODS = ("minmax", "entropy", "percentile")


# The error budget a quantized model must meet unless told otherwise (error = 1 - cosine).
DEFAULT_BUDGET = {"dynamic": 0.01, "static": 0.01, "int4": 0.02, "fp16": 0.001}


# Random inputs overstate int8 error on models fed real data (all-MiniLM-L6-v2, dynamic int8:
# 0.015 on random token ids, 0.009 on real sentences), and nodes kept in float on that
# evidence cost speed for nothing. Without --data the default budget is this much looser; it
# still catches a broken quantization (per-tensor weights on MiniLM: 0.043).
RANDOM_DATA_BUDGET_FACTOR = 2.0


def default_budget(mode: str, *, random_data: bool) -> float:
    """The accuracy budget when the user gave no --max-error."""
    loose = random_data and mode != "fp16"
    return DEFAULT_BUDGET[mode] * (RANDOM_DATA_BUDGET_FACTOR if loose else 1.0)


def random_budget_note(mode: str) -> str:
    return (f"accuracy measured on random inputs, which overstate quantization error: default budget "
            f"{default_budget(mode, random_data=True):g} instead of {DEFAULT_BUDGET[mode]:g}; pass --data with real "
            "samples (or --max-error) for a budget measured on what the model will see")


# Modes where transformer graphs are fused first: their int8/int4 MatMul kernels gain from it.
FUSED_MODES = ("dynamic", "int4")


# Ops whose weights a quantizer rewrites: the candidates for exclusion.
WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "Gather", "LSTM", "EmbedLayerNormalization"}


QUANT_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv", "QGemm",
             "MatMulNBits", "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulIntegerToFloat"}


MAX_BUDGET_ROUNDS = 12


@dataclass
class QuantConfig:
    mode: str
    fmt: str = "qdq"
    per_channel: bool = True
    weight_type: str = "int8"
    activation_type: str = "uint8"
    calib_method: str = "minmax"
    block_size: int = 128
    calib: _Batches | None = None
    reduce_range: bool = False
    # reduce_range chosen for the target (not asked for by flag): MatMul weights may then use
    # the wider pair-safe range (pairsafe.py), which is as safe where reduce_range is needed.
    pair_safe: bool = False
