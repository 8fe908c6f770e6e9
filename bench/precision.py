"""What bounds mixed bfloat16 training on this CPU: the matmul rate in float32 and in bfloat16
for MiniLM-L3's shapes, and how much of a float32 training step those matmuls are.

    matmuls   TensorFlow (oneDNN on x86), each of a layer's products at batch 32 x 128 tokens:
              Q/K/V/output (4096 x 384 @ 384 x 384), feed-forward in (4096 x 384 @ 384 x 1536)
              and out (4096 x 1536 @ 1536 x 384), attention scores and context (384 heads of
              128 x 32 @ 32 x 128, and 128 x 128 @ 128 x 32): GFLOP/s, float32 against bfloat16
    step      a training step's matmul work, forward and backward (3x the forward's FLOPs), at
              the float32 rate, as a share of the float32 step bench/train.py measured
              (bench/results/train.json, keras/padded); with bfloat16 speeding up only that share,
              Amdahl's bound on the step's speed-up

    python bench/precision.py [--repeat 20]

Writes bench/results/precision_matmul.{json,md}; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from accuracy import bertflow_commit  # bench/ is this script's first sys.path entry
from accuracy_report import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH, SEQ, HIDDEN, FFN, HEADS, LAYERS = 32, 128, 384, 1536, 12, 3
TOKENS, HEAD = BATCH * SEQ, HIDDEN // HEADS
# (name, batch dims, m, k, n, how many per layer's forward)
SHAPES = (("qkvo", (), TOKENS, HIDDEN, HIDDEN, 4), ("ffn_in", (), TOKENS, HIDDEN, FFN, 1),
          ("ffn_out", (), TOKENS, FFN, HIDDEN, 1),
          ("scores", (BATCH * HEADS,), SEQ, HEAD, SEQ, 1),
          ("context", (BATCH * HEADS,), SEQ, SEQ, HEAD, 1))


def rate(tf, dtype, batch: tuple, m: int, k: int, n: int, repeat: int) -> float:
    """GFLOP/s of `repeat` products (after 3 untimed), in a compiled function."""
    a = tf.random.normal((*batch, m, k), dtype=tf.float32)
    b = tf.random.normal((*batch, k, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    for _ in range(3):
        matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeat):
        out = matmul(a, b)
    out.numpy()
    seconds = (time.perf_counter() - start) / repeat
    count = 1
    for d in batch:
        count *= d
    return 2 * count * m * k * n / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    opts = parser.parse_args()
    from bert_core.backend import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    rows, matmul_s, flops = {}, {"float32": 0.0, "bfloat16": 0.0}, 0.0
    for name, batch, m, k, n, count in SHAPES:
        row = {p: rate(tf, getattr(tf, p), batch, m, k, n, opts.repeat) for p in matmul_s}
        product = 2 * m * k * n * (batch[0] if batch else 1) * count * LAYERS * 3  # fwd + bwd
        for p in matmul_s:
            matmul_s[p] += product / (row[p] * 1e9)
        flops += product
        rows[name] = row
        print(f"{name}: float32 {row['float32']:.1f}, bfloat16 {row['bfloat16']:.1f} GFLOP/s",
              flush=True)
    train = json.loads((RESULTS / "train.json").read_text())["results"]
    step_s = BATCH / train["minilm/keras/padded"]["examples_per_second"]
    share = matmul_s["float32"] / step_s
    speedup = matmul_s["float32"] / matmul_s["bfloat16"]
    bound = 1 / ((1 - share) + share / speedup)
    measured = (train["minilm/keras-bf16/padded"]["examples_per_second"]
                / train["minilm/keras/padded"]["examples_per_second"])
    here = machine()
    figures = {"gflops": rows, "step_matmul_gflop": flops / 1e9, "matmul_s": matmul_s,
               "float32_step_s": step_s, "matmul_share": share, "matmul_speedup": speedup,
               "amdahl_bound": bound, "measured_step_speedup": measured,
               "commit": bertflow_commit(), **here,
               "utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lines = ["| product | float32 GFLOP/s | bfloat16 GFLOP/s | bfloat16 / float32 |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['float32']:.1f} | {r['bfloat16']:.1f} | "
              f"{r['bfloat16'] / r['float32']:.2f}x |" for name, r in rows.items()]
    cpu = here["cpu"]
    lines += ["", f"A float32 training step (train.json, keras/padded): {step_s:.3f} s, of which "
                  f"its matmuls at these rates are {matmul_s['float32']:.3f} s ({share:.0%}); "
                  f"bfloat16 runs them {speedup:.2f}x as fast, so a step can be at most "
                  f"{bound:.2f}x as fast (measured: {measured:.2f}x).",
              "", f"CPU: {cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['flags'])}; commit "
                  f"{figures['commit']}; {opts.repeat} products per shape"]
    text = "\n".join(lines)
    print(text)
    (RESULTS / "precision_matmul.md").write_text(text + "\n")
    (RESULTS / "precision_matmul.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
