"""Encode throughput: embrec's engine vs ``SentenceTransformer.encode``, same texts, same run.

    python -m benchmarks.bench_encode --n 100000                # GPU machine (H100/H200)
    python -m benchmarks.bench_encode --n 2000 --repeats 3      # 2-core CPU, a sample

Both sides encode the same synthetic item texts (~43 tokens mean, ~96 at p95) with the same
all-MiniLM-L6-v2 weights; runs alternate (encode, engine, encode, engine, ...) so load drift on
a shared machine hits both alike, and the ratio is taken between medians. The engine's vectors
are compared with ``encode``'s float32 vectors (min and mean cosine). ``--stream N`` also
encodes N texts from a generator through the streaming API and reports the process's peak RSS.
``--onnx`` adds a third side: the engine's tokenization thread and length-sorted batches, with the
transformer forward exported once to ONNX (``torch.onnx.export``, TorchScript exporter) and run
by ONNX Runtime on CPU, pooling and normalisation in numpy (needs ``onnxruntime`` and ``onnx``,
not embrec requirements).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402

from benchmarks.common import Timer, peak_rss_mb, save  # noqa: E402
from benchmarks.texts import item_texts, iter_item_texts, length_stats  # noqa: E402


def padded_tokens(texts: list[str], engine, st_batch: int) -> dict:
    """Tokens each side feeds the model, padding included (real tokens = 1.0).

    ``encode`` sorts all texts by character length and cuts fixed-size batches; the engine sorts
    each chunk by token count and cuts token-budget batches.
    """
    lengths = np.array([len(e.ids) for e in engine.tokenizer.encode_batch(texts)])
    real = int(lengths.sum())
    by_chars = lengths[np.argsort([-len(t) for t in texts], kind="stable")]
    st = sum(
        int(b.max()) * len(b)
        for b in np.array_split(by_chars, range(st_batch, len(texts), st_batch))
    )
    ours = 0
    for lo in range(0, len(texts), engine.chunk_size):
        chunk = np.sort(lengths[lo : lo + engine.chunk_size])[::-1]
        i = 0
        while i < len(chunk):
            width = engine._padded(int(chunk[i]))
            rows = max(1, min(engine.max_batch_size, engine.max_tokens // width, len(chunk) - i))
            ours += width * rows
            i += rows
    return {"encode": round(st / real, 3), "engine": round(ours / real, 3)}


def onnx_engine(model, max_tokens: int, cache: str):
    """An :class:`EncodingEngine` whose forward pass runs in ONNX Runtime (benchmark only)."""
    import onnxruntime as ort
    import torch

    from embrec.encoders.engine import EncodingEngine

    path = os.path.join(cache, "model.onnx")
    transformer = model[0].auto_model.eval()
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)

        class Forward(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                    return_dict=True,
                )
                return out.last_hidden_state

        names = ["input_ids", "attention_mask", "token_type_ids"]
        dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
        torch.onnx.export(
            Forward(transformer),
            dummy,
            path,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    class OnnxEngine(EncodingEngine):
        def _forward(self, input_ids, mask):
            ids = input_ids.numpy()
            m = mask.numpy()
            feeds = {"input_ids": ids, "attention_mask": m, "token_type_ids": np.zeros_like(ids)}
            hidden = session.run(None, feeds)[0]
            if self.pooling == "cls":
                vectors = hidden[:, 0]
            else:
                w = m[..., None].astype(np.float32)
                vectors = (hidden * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
            if self.normalize:
                vectors = vectors / np.maximum(
                    np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12
                )
            return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))

    return OnnxEngine(model, device="cpu", dtype="float32", max_tokens=max_tokens)


def current_rss_mb() -> float:
    """Resident set size of this process now (``VmRSS``), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="texts per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="engine dtype (auto, float16, bfloat16...)")
    parser.add_argument("--st-batch-size", type=int, default=None, help="encode()'s batch size")
    parser.add_argument("--max-tokens", type=int, default=None, help="engine token budget")
    parser.add_argument("--stream", type=int, default=0, help="also stream N texts; peak RSS")
    parser.add_argument("--name", default=None, help="results file name")
    parser.add_argument("--onnx", action="store_true", help="third side: ONNX Runtime forward")
    parser.add_argument("--onnx-max-tokens", type=int, default=512, help="its token budget")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from embrec.encoders.engine import EncodingEngine
    from embrec.encoders.sentence_transformer import default_model_path

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    st_batch = args.st_batch_size or (512 if cuda else 32)
    model = SentenceTransformer(default_model_path(), device=device)
    engine = EncodingEngine(model, device=device, dtype=args.dtype, max_tokens=args.max_tokens)
    onnx = None
    if args.onnx:
        onnx = onnx_engine(model, args.onnx_max_tokens, os.path.join(".embrec", "onnx", "bench"))
    texts = item_texts(args.n, seed=7)
    stats = length_stats(texts, model[0].tokenizer)
    padding = padded_tokens(texts, engine, st_batch)
    print(f"{args.n} texts on {device}: {stats}; threads={torch.get_num_threads()}")
    print(f"tokens fed to the model per real token: {padding}")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # Warm-up (kernels, allocator, lazy init) on a slice.
    warm = texts[: min(len(texts), 2000 if cuda else 200)]
    model.encode(warm, batch_size=st_batch, normalize_embeddings=True)
    engine.encode(warm)
    if onnx is not None:
        onnx.encode(warm)
    sync()

    st_times, engine_times, st_cpu, engine_cpu = [], [], [], []
    onnx_times, onnx_cpu = [], []
    reference = vectors = onnx_vectors = None
    for r in range(args.repeats):
        cpu = time.process_time()
        with Timer() as t:
            reference = model.encode(
                texts, batch_size=st_batch, normalize_embeddings=True, show_progress_bar=False
            )
            sync()
        st_times.append(t.seconds)
        st_cpu.append(time.process_time() - cpu)
        cpu = time.process_time()
        with Timer() as t:
            vectors = engine.encode(texts)
            sync()
        engine_times.append(t.seconds)
        engine_cpu.append(time.process_time() - cpu)
        line = (
            f"run {r + 1}: encode {args.n / st_times[-1]:,.0f} texts/s, "
            f"engine {args.n / engine_times[-1]:,.0f} texts/s"
        )
        if onnx is not None:
            cpu = time.process_time()
            with Timer() as t:
                onnx_vectors = onnx.encode(texts)
            onnx_times.append(t.seconds)
            onnx_cpu.append(time.process_time() - cpu)
            line += f", onnx {args.n / onnx_times[-1]:,.0f} texts/s"
        print(line, flush=True)
    cos = (reference * vectors).sum(axis=1)
    st_rate = args.n / statistics.median(st_times)
    engine_rate = args.n / statistics.median(engine_times)
    result = {
        "command": "python -m benchmarks.bench_encode "
        + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in vars(args).items()
            if v not in (None, 0, False)
        ),
        "device": device,
        "n_texts": args.n,
        "lengths": stats,
        "torch_threads": torch.get_num_threads(),
        "padded_tokens_per_real_token": padding,
        "encode_batch_size": st_batch,
        "engine": {
            "dtype": str(engine.dtype).replace("torch.", ""),
            "max_tokens": engine.max_tokens,
            "chunk_size": engine.chunk_size,
        },
        "encode_texts_per_s": round(st_rate, 1),
        "engine_texts_per_s": round(engine_rate, 1),
        "ratio": round(engine_rate / st_rate, 2),
        "runs_s": {"encode": st_times, "engine": engine_times},
        # CPU seconds of this process per run: steadier than wall time on a shared machine.
        "cpu_s": {"encode": st_cpu, "engine": engine_cpu},
        "ratio_cpu_time": round(statistics.median(st_cpu) / statistics.median(engine_cpu), 2),
        "cosine_vs_encode_fp32": {"min": float(cos.min()), "mean": float(cos.mean())},
    }
    print(
        f"\nencode: {st_rate:,.0f} texts/s   engine: {engine_rate:,.0f} texts/s   "
        f"ratio {engine_rate / st_rate:.2f}x   min cosine {cos.min():.6f}"
    )
    if onnx is not None:
        onnx_rate = args.n / statistics.median(onnx_times)
        onnx_cos = (reference * onnx_vectors).sum(axis=1)
        import onnxruntime

        result["onnx"] = {
            "onnxruntime": onnxruntime.__version__,
            "max_tokens": onnx.max_tokens,
            "texts_per_s": round(onnx_rate, 1),
            "ratio_vs_encode": round(onnx_rate / st_rate, 2),
            "ratio_vs_engine": round(onnx_rate / engine_rate, 2),
            "runs_s": onnx_times,
            "cpu_s": onnx_cpu,
            "ratio_cpu_time_vs_encode": round(
                statistics.median(st_cpu) / statistics.median(onnx_cpu), 2
            ),
            "cosine_vs_encode_fp32": {"min": float(onnx_cos.min()), "mean": float(onnx_cos.mean())},
        }
        print(
            f"onnx: {onnx_rate:,.0f} texts/s   ratio {onnx_rate / st_rate:.2f}x vs encode, "
            f"{onnx_rate / engine_rate:.2f}x vs engine   min cosine {onnx_cos.min():.6f}"
        )
    if cuda:
        # Precision check of the other half type, on a slice.
        other = "bfloat16" if engine.dtype == torch.float16 else "float16"
        alt = EncodingEngine(model, device=device, dtype=other).encode(texts[:20000])
        alt_cos = (reference[:20000] * alt).sum(axis=1)
        result["cosine_other_half_dtype"] = {"dtype": other, "min": float(alt_cos.min())}
        result["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    del reference, vectors, onnx_vectors
    if args.stream:
        before = peak_rss_mb()
        count = 0
        samples = []  # (texts so far, current RSS): flat after warm-up means bounded memory
        with Timer() as t:
            for part in engine.encode_stream(iter_item_texts(args.stream, seed=11)):
                count += len(part)
                assert np.isfinite(part).all()
                samples.append((count, round(current_rss_mb(), 1)))
        sync()
        result["stream"] = {
            "n_texts": count,
            "texts_per_s": round(count / t.seconds, 1),
            "peak_rss_mb_before": round(before, 1),
            "peak_rss_mb_after": round(peak_rss_mb(), 1),
            "rss_mb_by_texts": samples,
        }
        step = max(1, len(samples) // 10)
        print("RSS (MiB) by texts streamed:", samples[::step] + samples[-1:])
        print(f"streamed {count} texts: peak RSS {before:.0f} -> {peak_rss_mb():.0f} MiB")
    save(args.name or f"encode-{'gpu' if cuda else 'cpu'}", result)


if __name__ == "__main__":
    main()
