"""Serving speed of the registered MRPC classifier on this CPU, six ways on the same fine-tuned
weights, all in one invocation, raw text in and probabilities out (tokenization timed in all):

    ours       mlflow.pyfunc.load_model(URI).predict on a pandas frame (text_a, text_b): the
               registered model as it is (FullTokenizer, Keras on TensorFlow)
    ours_onnx  the same, on the version of the same trained model registered with
               registry.runtime onnx (FullTokenizer, bert_core/onnx_export.py's graph on ONNX
               Runtime)
    served     the same URI behind `mlflow models serve --env-manager local -h 127.0.0.1`, a
               child process always stopped; JSON {"dataframe_split": ...} over one keep-alive
               HTTP connection
    hf         transformers' pipeline("text-classification") on PyTorch: the Keras weights
               converted into BertForSequenceClassification (bench/hf_export.py), HF's fast
               tokenizer on the model's vocab.txt, batch_size 64 (each batch padded to its
               longest, as the pipeline does), torch.inference_mode, torch.set_num_threads(cores)
    ort        ONNX Runtime on torch.onnx.export of that model (dynamic batch and sequence),
               every graph optimisation, intra-op threads = cores; HF's fast tokenizer, each
               batch padded to its longest
    ort_int8   the same export after onnxruntime.quantization.quantize_dynamic (int8 weights)

Before timing, the converted models must give the Keras model's logits within 1e-4 on the same
packed ids (and HF's tokenizer our FullTokenizer's ids on every dev pair), or the bench stops.
Throughput: pairs/s over the first --pairs MRPC dev pairs in calls of 64, --passes times
(median); latency: --single one-pair calls after warm-up, p50 / p99. Accuracy of every way on the
pairs timed, and of the int8 model against the float one on all of dev.

    python bench/serve.py --train --home /tmp/serve-bench-home [--epochs 3]  # train once, reuse
    python bench/serve.py --model-uri models:/bertflow-mrpc/1 \
                          --tracking-uri sqlite:////tmp/serve-bench-home/mlflow/mlflow.db
    python bench/serve.py --train --home DIR --pairs 128 --single 20    # a quick look (temp out)

`--train` runs `bertflow run` (MiniLM-L3 from --shared, --epochs, default 3: the recipe) into
--home, then once more with `--rerun register` and a --config of `registry: {runtime: onnx}` (train
and evaluate come from the cache), unless its store already holds a version of bertflow-mrpc of
each runtime from one trained model (a version's runtime: its run's registry.runtime param, keras
when absent; the model: its run's model_sha256 tag), and measures those two. With --model-uri,
--onnx-model-uri names the onnx version (none: no ours_onnx). Needs the `parity` and `bench` extras
(torch, transformers, onnx, onnxruntime, onnxscript).

Writes serve.{json,md} into --out (bench/results only for a full run: every dev pair, 200 single
calls); the last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH, WARMUP, FULL_SINGLE, PARITY_PAIRS, TOLERANCE, TARGET_MS = 64, 5, 200, 16, 1e-4, 10.0
MODEL, DEV_PAIRS = "bertflow-mrpc", 408
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
       "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
os.environ.update(ENV)
LIBRARIES = ("tensorflow", "keras", "torch", "transformers", "tokenizers", "onnx", "onnxruntime",
             "mlflow", "numpy")


def latency_ms(seconds: list[float]) -> dict:
    """p50, p99 and mean of call times, in milliseconds.

    >>> latency_ms([0.001] * 99 + [0.1])["p50_ms"]
    1.0
    """
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "mean_ms": round(float(ms.mean()), 2)}




def throughput(predict, a: list[str], b: list[str], passes: int) -> tuple[list[float], np.ndarray]:
    """pairs/s of each pass over (a, b) in calls of BATCH (one warm-up call first), and the
    probabilities of the last pass."""
    predict(a[:BATCH], b[:BATCH])
    rates = []
    for _ in range(passes):
        start, parts = time.perf_counter(), []
        for i in range(0, len(a), BATCH):
            parts.append(predict(a[i:i + BATCH], b[i:i + BATCH]))
        rates.append(round(len(a) / (time.perf_counter() - start), 1))
    return rates, np.concatenate(parts)


def latencies(predict, a: list[str], b: list[str], calls: int) -> list[float]:
    """Seconds of `calls` one-pair calls, cycling through the pairs, after WARMUP calls."""
    for i in range(WARMUP):
        predict(a[i:i + 1], b[i:i + 1])
    seconds = []
    for i in range(calls):
        j = i % len(a)
        start = time.perf_counter()
        predict(a[j:j + 1], b[j:j + 1])
        seconds.append(time.perf_counter() - start)
    return seconds


def pyfunc_way(pyfunc, columns: list[str], labels: list[str]):
    import pandas as pd

    wanted = [f"probability_{label}" for label in labels]

    def predict(a, b):
        frame = pd.DataFrame({columns[0]: a, columns[1]: b}, dtype=object)
        return pyfunc.predict(frame)[wanted].to_numpy(np.float64)
    return predict


def served_way(url: str, columns: list[str], labels: list[str]):
    import requests

    session, wanted = requests.Session(), [f"probability_{label}" for label in labels]

    def predict(a, b):
        body = {"dataframe_split": {"columns": columns, "data": [list(p) for p in zip(a, b)]}}
        reply = session.post(f"{url}/invocations", json=body, timeout=120)
        if not reply.ok:
            sys.exit(f"{url}/invocations answered {reply.status_code}: {reply.text[:2000]}")
        rows = reply.json()["predictions"]
        return np.array([[row[w] for w in wanted] for row in rows], np.float64)
    return predict






def dev_pairs(shared: Path) -> tuple[list[str], list[str], list[str]]:
    from data_contracts.reader import read_tsv

    frame = read_tsv(shared / "data" / "mrpc" / "dev.tsv")
    return (list(frame["#1 String"]), list(frame["#2 String"]),
            [str(int(x)) for x in frame["Quality"]])


class ModelServer:
    """`mlflow models serve` of `uri` on 127.0.0.1:`port` in its own process group: started on
    enter, ready once /ping answers, always stopped on exit."""

    def __init__(self, uri: str, tracking_uri: str, port: int, log: Path):
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, **ENV, "MLFLOW_TRACKING_URI": tracking_uri,
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", uri, "-p", str(port),
                    "-h", "127.0.0.1", "--env-manager", "local"]
        self.url, self.log = f"http://127.0.0.1:{port}", log

    def __enter__(self) -> ModelServer:
        import subprocess

        import requests

        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                sys.exit(f"mlflow models serve exited {self.proc.returncode}: "
                         f"{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(1)
        self.__exit__()
        sys.exit(f"mlflow models serve not ready in 300 s: {self.log.read_text()[-3000:]}")

    def rss_mb(self) -> int:
        """Resident memory of the server and its workers."""
        import psutil

        root = psutil.Process(self.proc.pid)
        return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                     / 2**20)

    def __exit__(self, *exc) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newest_versions(tracking_uri: str) -> dict[str, tuple[str, str]]:
    """(models:/bertflow-mrpc/<newest version>, its model_sha256) per runtime ("keras", "onnx")
    in the store: a version's runtime is its run's registry.runtime param (keras when absent:
    older runs)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{MODEL}'")
    except mlflow.exceptions.MlflowException:
        return {}
    newest = {}
    for v in sorted(versions, key=lambda v: int(v.version)):
        data = client.get_run(v.run_id).data
        newest[data.params.get("registry.runtime", "keras")] = (
            f"models:/{MODEL}/{v.version}", data.tags.get("model_sha256"))
    return newest


def one_model(found: dict[str, tuple[str, str]]) -> bool:
    """Both runtimes are registered, from the same trained model.

    >>> one_model({"keras": ("models:/m/1", "ab"), "onnx": ("models:/m/2", "ab")})
    True
    >>> one_model({"keras": ("models:/m/1", "ab"), "onnx": ("models:/m/3", "cd")})
    False
    """
    return {"keras", "onnx"} <= found.keys() and found["keras"][1] == found["onnx"][1]


def trained(home: Path, shared: Path, epochs: float) -> tuple[str, str, str]:
    """(model URI, onnx model URI, tracking URI) of MiniLM-L3 fine-tuned on MRPC in `home`:
    `bertflow run`, then the same run with `--rerun register` and runtime onnx (train and
    evaluate from the cache), unless the store holds both of one trained model already."""
    import subprocess

    tracking_uri = f"sqlite:///{(home.resolve() / 'mlflow' / 'mlflow.db').as_posix()}"
    cmd = [sys.executable, "-m", "flows.cli", "run", "--source", str(shared / "data" / "mrpc"),
           "--checkpoint", str(shared / "checkpoints" / "minilm-l3-h384-uncased.zip"),
           "--epochs", str(epochs), "--home", str(home), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    found = newest_versions(tracking_uri) if (home / "mlflow" / "mlflow.db").is_file() else {}
    if not one_model(found):
        subprocess.run(cmd, check=True, env=env)  # cached where the code and data are unchanged
        found = newest_versions(tracking_uri)
    if not one_model(found):
        config = home / "onnx-runtime.yaml"
        config.write_text("registry:\n  runtime: onnx\n")
        subprocess.run([*cmd, "--rerun", "register", "--config", str(config)], check=True,
                       env=env)
        found = newest_versions(tracking_uri)
    if not one_model(found):
        sys.exit(f"the keras and onnx versions are not one trained model: {found}")
    return found["keras"][0], found["onnx"][0], tracking_uri


def checked_parity(text_model, models: dict, a: list[str], b: list[str]) -> dict:
    """hf_export.parity on PARITY_PAIRS dev pairs; exits when a float model is off the Keras
    logits by more than TOLERANCE or HF's tokenizer encodes any dev pair otherwise."""
    from hf_export import parity

    checked = {**parity(text_model, models, a, b, PARITY_PAIRS), "tolerance": TOLERANCE}
    print(f"parity: {json.dumps(checked)}", flush=True)
    gaps = checked["max_logit_gap"]
    if max(gaps["hf"], gaps["ort"]) > TOLERANCE or checked["tokenizer_pairs_differing"]:
        sys.exit(f"the converted models do not compute ours: {json.dumps(checked)}")
    return checked


def measure(ways: dict, a, b, gold, labels, args) -> dict:
    """Throughput, latency, accuracy and the largest probability gap to `ours`, per way."""
    from hf_export import accuracy

    rows, reference = {}, None
    n = args.pairs or len(a)
    for name, predict in ways.items():
        rates, probs = throughput(predict, a[:n], b[:n], args.passes)
        reference = probs if reference is None else reference
        rows[name] = {"pairs_per_s": statistics.median(rates), "passes": rates,
                      **latency_ms(latencies(predict, a, b, args.single)),
                      "accuracy": round(accuracy(probs, gold[:n], labels), 4),
                      "max_prob_gap_vs_ours": float(f"{np.abs(probs - reference).max():.3g}")}
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    return rows




def ratios(rows: dict) -> dict:
    """ours (and ours_onnx) / each anchor: pairs/s (above 1: ours faster) and p50 (below 1: ours
    faster); the p50 of our ways against TARGET_MS."""
    out, ours = {}, [w for w in ("ours", "ours_onnx") if w in rows]
    for way in ours:
        for anchor in ("ort", "hf", "ort_int8"):
            out[f"{way}/{anchor}"] = {
                "pairs_per_s": round(rows[way]["pairs_per_s"] / rows[anchor]["pairs_per_s"], 3),
                "p50": round(rows[way]["p50_ms"] / rows[anchor]["p50_ms"], 3)}
    out["p50_vs_target"] = {w: {"p50_ms": rows[w]["p50_ms"], "target_ms": TARGET_MS,
                                "met": rows[w]["p50_ms"] <= TARGET_MS}
                            for w in (*ours, "served")}
    return out


def machine() -> dict:
    """CPU model, cores and speed flags (as bench/accuracy.py records them), the 1-minute load
    average, the versions of LIBRARIES installed, and the commit measured."""
    import importlib.metadata

    from accuracy import bertflow_commit
    from accuracy_report import cpu

    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return {**cpu(Path("/proc/cpuinfo").read_text()),
            "load_1min_at_start": round(os.getloadavg()[0], 2), "commit": bertflow_commit(),
            "versions": {name: installed.get(name) for name in LIBRARIES}}


def report(result: dict) -> str:
    """serve.md: the table of ways, the ratios, parity and the int8 accuracy change."""
    m, q, p = result["machine"], result["quantized"], result["parity"]
    lines = [f"# Serving MRPC's classifier on {m['model']} ({m['cores']} cores)", "",
             (f"Model {result['model_uri']} (ours_onnx: {result['onnx_model_uri']}); commit "
             f"{m['commit']}; {result['pairs']} dev pairs in calls of {BATCH} (median of "
             f"{result['passes']} passes), {result['single']} one-pair calls; load average "
             f"{m['load_1min_at_start']} at the start. "
             "Raw text in, probabilities out: tokenization included everywhere."), "",
             "| way | pairs/s (batch 64) | p50 ms | p99 ms | accuracy | max prob gap vs ours |",
             "|---|---|---|---|---|---|"]
    for way, r in result["ways"].items():
        lines.append(f"| {way} | {r['pairs_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['accuracy']} | {r['max_prob_gap_vs_ours']} |")
    lines += ["", "| ratio | pairs/s (> 1: ours faster) | p50 (< 1: ours faster) |", "|---|---|---|"]
    lines += [f"| {k} | {v['pairs_per_s']} | {v['p50']} |" for k, v in result["ratios"].items()
              if "/" in k]
    lines += ["", *[f"- p50 of one pair, {w}: {t['p50_ms']} ms against {t['target_ms']} ms: "
                    f"{'met' if t['met'] else 'not met'}"
                    for w, t in result["ratios"]["p50_vs_target"].items()],
              (f"- parity on {p['pairs']} dev pairs, max |logit gap| to Keras: "
              f"{p['max_logit_gap']} (tolerance {p['tolerance']} for the float models); "
              f"HF's tokenizer ids differ from FullTokenizer's on {p['tokenizer_pairs_differing']}"
              f" of {p['tokenizer_pairs_checked']} dev pairs"),
              (f"- int8 (quantize_dynamic) on all {q['pairs']} dev pairs: accuracy {q['int8']} vs "
              f"float {q['float']} ({q['change']:+}), same label on {q['agreement']:.1%}, max prob "
              f"gap {q['max_prob_gap']}; ONNX size {result['onnx_mb']} MB"),
              (f"- accuracy: argmax of the probabilities on the pairs timed; ours serves "
              f"softmax(logits / {result['temperature']}), the others softmax(logits), so the "
              "probability gaps include any calibration"),
              f"- served: {result['served_rss_mb']} MB resident (server and workers)",
              f"- versions: {json.dumps(m['versions'])}", ""]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="a registered model, e.g. models:/bertflow-mrpc/1")
    parser.add_argument("--onnx-model-uri", help="the same model registered with runtime onnx")
    parser.add_argument("--tracking-uri", help="the store --model-uri lives in")
    parser.add_argument("--train", action="store_true",
                        help="fine-tune MiniLM-L3 on MRPC into --home unless it holds a version")
    parser.add_argument("--home", type=Path, default=Path("/tmp/serve-bench-home"))
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--pairs", type=int, default=0, help="dev pairs timed (0: all 408)")
    parser.add_argument("--single", type=int, default=FULL_SINGLE)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, help="default: bench/results for a full run")
    args = parser.parse_args()
    if not args.model_uri and not args.train:
        parser.error("give --model-uri (and --tracking-uri) or --train")
    return args


def run(uri: str, onnx_uri: str | None, tracking_uri: str | None, args) -> dict:
    """Convert, check parity, then time every way on the same dev pairs; the result row."""
    import mlflow
    import torch
    from hf_export import converted, ort_way, pipeline_way, quantized_accuracy

    from tasks.serving import served_inputs

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    here = machine()
    pyfunc = mlflow.pyfunc.load_model(uri)
    text_model = pyfunc.unwrap_python_model()
    labels, columns = text_model.labels, list(served_inputs(pyfunc))  # text_a, text_b
    a, b, gold = dev_pairs(args.shared)
    length = text_model.max_seq_length
    with tempfile.TemporaryDirectory(prefix="bertflow-serve-") as work:
        models = converted(text_model, labels, Path(work), cores)
        checked = checked_parity(text_model, models, a, b)
        with ModelServer(uri, tracking_uri or "", free_port(), Path(work) / "serve.log") as server:
            ways = {"ours": pyfunc_way(pyfunc, columns, labels),
                    **({"ours_onnx": pyfunc_way(mlflow.pyfunc.load_model(onnx_uri), columns,
                                                labels)} if onnx_uri else {}),
                    "served": served_way(server.url, columns, labels),
                    "hf": pipeline_way(models["hf"], models["tokenizer"], labels, length, BATCH),
                    "ort": ort_way(models["ort"], models["tokenizer"], length),
                    "ort_int8": ort_way(models["ort_int8"], models["tokenizer"], length)}
            rows = measure(ways, a, b, gold, labels, args)
            served_rss = server.rss_mb()
    return {"bench": "serve", "model_uri": uri, "onnx_model_uri": onnx_uri, "machine": here, "pairs": args.pairs or len(a),
            "single": args.single, "passes": args.passes, "batch": BATCH, "parity": checked,
            "ways": rows, "ratios": ratios(rows), "served_rss_mb": served_rss,
            "temperature": float(getattr(text_model, "temperature", 1.0)),
            "quantized": quantized_accuracy(models, a, b, gold, labels, length, BATCH),
            "onnx_mb": models["onnx_mb"], "peak_rss_mb_bench": peak_rss_mb()}


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT))  # the package `tasks`, not bench/tasks.py
    uri, onnx_uri, tracking_uri = (
        (args.model_uri, args.onnx_model_uri, args.tracking_uri) if args.model_uri
        else trained(args.home, args.shared, args.epochs))
    result = run(uri, onnx_uri, tracking_uri, args)
    full = result["pairs"] == DEV_PAIRS and args.single >= FULL_SINGLE
    out = args.out or (RESULTS if full else Path(tempfile.mkdtemp(prefix="bertflow-serve-out-")))
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "serve.md").write_text(report(result))
    print(f"wrote {out}/serve.{{json,md}}", file=sys.stderr)
    print(json.dumps(result))


def peak_rss_mb() -> int:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    main()
