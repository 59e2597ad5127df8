"""A fast inference engine for sentence-transformers models with mean or CLS pooling.

:class:`EncodingEngine` runs the same computation as ``SentenceTransformer.encode`` (tokenize,
transformer forward, pooling, optional L2 normalisation) but organises it for throughput:

* **Rust tokenization, off the main thread.** Texts are tokenized with the model's fast
  ``tokenizers.Tokenizer`` (``encode_batch``, which releases the GIL) in a background thread, one
  chunk ahead of the forward passes, so tokenizing chunk ``i + 1`` overlaps computing chunk ``i``.
* **Length-sorted, token-budget batches.** Within a chunk, texts are sorted by token count and cut
  into batches of at most ``max_tokens`` padded tokens: many short texts or a few long ones per
  batch, almost no padding, and a predictable memory peak.
* **Reduced precision where the hardware has it.** ``dtype="auto"`` runs the model in
  ``float16`` on CUDA, in ``bfloat16`` on CPUs with native bfloat16 matrix instructions
  (AVX512-BF16 or AMX: twice the multiply-adds per instruction), and in ``float32`` on other CPUs
  (AVX2-only machines emulate bfloat16 several times slower). Pooling and normalisation are
  computed in ``float32``, so vectors match the ``float32`` model (cosine >= 0.999).
* **Pinned-memory, asynchronous transfers.** Batches are built in page-locked host memory and
  copied with ``non_blocking=True``; results come back through pinned buffers and CUDA events,
  collected one batch late so the host never waits on the device it is feeding.
* **Out-of-memory backoff.** A batch that runs out of device memory is split in half (recursively)
  instead of failing, and the token budget is lowered for the batches that follow.
* **Bounded memory.** :meth:`EncodingEngine.encode_stream` consumes any iterable of texts chunk by
  chunk and yields one array per chunk, so a million-item catalog never sits in memory at once.

Models whose pipeline is anything other than ``Transformer -> Pooling(mean|cls) [-> Normalize]``
raise :class:`UnsupportedModel`; callers fall back to ``SentenceTransformer.encode``.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger("embrec")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class UnsupportedModel(ValueError):
    """The model's module pipeline is not one the engine reproduces exactly."""


@dataclass
class _Batch:
    """One padded batch, ready for the device: rows ``index`` of the current chunk."""

    index: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: int


@dataclass
class _Chunk:
    size: int
    batches: list[_Batch]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator failure (CUDA or host) that a smaller batch may avoid."""
    oom_types = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t is not None
    )
    if oom_types and isinstance(exc, oom_types):
        return True
    message = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in message
        or "can't allocate memory" in message
        or isinstance(exc, MemoryError)
    )


def describe_pipeline(model) -> dict:
    """Read the tokenizer, transformer, pooling mode and normalisation of a loaded model.

    Returns a dict with ``tokenizer`` (a Hugging Face fast tokenizer), ``transformer`` (the
    ``transformers`` model), ``max_length``, ``pooling`` (``"mean"`` or ``"cls"``) and
    ``normalize``; raises :class:`UnsupportedModel` for anything else.
    """
    modules = list(model.children()) if hasattr(model, "children") else []
    if len(modules) < 2:
        raise UnsupportedModel("expected a Transformer module followed by a Pooling module")
    first, pooling, rest = modules[0], modules[1], modules[2:]
    transformer = getattr(first, "auto_model", None)
    tokenizer = getattr(first, "tokenizer", None)
    if transformer is None or tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModel("the first module must be a Transformer with a fast tokenizer")
    if getattr(first, "transformer_task", "feature-extraction") != "feature-extraction":
        raise UnsupportedModel(f"transformer task {first.transformer_task!r} is not supported")
    if type(pooling).__name__ != "Pooling":
        raise UnsupportedModel(f"second module is {type(pooling).__name__}, not Pooling")
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None:  # sentence-transformers < 6: one boolean flag per mode
        flags = {
            "mean": getattr(pooling, "pooling_mode_mean_tokens", False),
            "cls": getattr(pooling, "pooling_mode_cls_token", False),
            "other": any(
                getattr(pooling, f"pooling_mode_{name}", False)
                for name in (
                    "max_tokens",
                    "mean_sqrt_len_tokens",
                    "weightedmean_tokens",
                    "lasttoken",
                )
            ),
        }
        active = [name for name, on in flags.items() if on]
        mode = active[0] if len(active) == 1 else tuple(active)
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else tuple(mode)
    if mode not in ("mean", "cls"):
        raise UnsupportedModel(f"pooling mode {mode!r} is not supported (mean or cls only)")
    normalize = False
    for module in rest:
        if type(module).__name__ == "Normalize":
            normalize = True
        else:
            raise UnsupportedModel(f"module {type(module).__name__} after pooling is not supported")
    max_length = getattr(first, "max_seq_length", None) or getattr(
        tokenizer, "model_max_length", 512
    )
    return {
        "tokenizer": tokenizer,
        "transformer": transformer,
        "max_length": int(max_length or 512),
        "pooling": mode,
        "normalize": normalize,
    }


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX tiles)."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # private torch helpers: missing or failing means "no"
            continue
    return False


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``: ``float16`` on CUDA; on CPU ``bfloat16`` where :func:`cpu_has_native_bfloat16`,
    else ``float32`` (see the module docstring)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bfloat16():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16"
        ) from None


class EncodingEngine:
    """Throughput-oriented encoding of texts with a loaded ``SentenceTransformer``.

    ``model`` — a loaded ``SentenceTransformer`` (mean or CLS pooling, optional Normalize).
    ``device`` — where to run (default: the model's device).
    ``dtype`` — ``"auto"`` (default), ``"float32"``, ``"float16"`` or ``"bfloat16"``. With a
    dtype other than the model's, the engine runs its own converted copy of the transformer and
    leaves the model itself untouched.
    ``max_tokens`` — padded tokens per forward pass (default 65,536 on CUDA, 2,048 on CPU, where
    smaller batches stay in cache).
    ``max_batch_size`` — texts per forward pass, whatever their length (default 2,048).
    ``chunk_size`` — texts tokenized and sorted together (default 65,536 on CUDA, 4,096 on CPU):
    a chunk must hold several batches' worth of texts of each length for batches to come out
    nearly padding-free (at 16,384 texts and 65,536-token batches padding is ~13%; at 65,536
    texts ~4%), while smaller chunks bound memory more tightly.
    ``normalize`` — L2-normalise vectors (default: whether the model ends with Normalize).
    ``pin_memory`` — page-locked host buffers (default: on for CUDA).
    """

    def __init__(
        self,
        model,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        max_tokens: int | None = None,
        max_batch_size: int = 2048,
        chunk_size: int | None = None,
        normalize: bool | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        parts = describe_pipeline(model)
        self.device = torch.device(device) if device is not None else torch.device(model.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = resolve_dtype(dtype, self.device)
        cuda = self.device.type == "cuda"
        self.max_tokens = int(max_tokens or (65536 if cuda else 2048))
        self.max_batch_size = int(max_batch_size)
        self.chunk_size = int(chunk_size or (65536 if cuda else 4096))
        self.normalize = parts["normalize"] if normalize is None else bool(normalize)
        self.pooling: str = parts["pooling"]
        self.max_length: int = parts["max_length"]
        self.pin_memory = cuda if pin_memory is None else bool(pin_memory and cuda)
        # Rounding widths up (e.g. to multiples of 8) adds ~8% padding on ~43-token texts;
        # exact widths are the default.
        self.pad_multiple = 1

        hf_tokenizer = parts["tokenizer"]
        # A private copy: the shared tokenizer's padding/truncation state is left alone.
        self.tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = int(hf_tokenizer.pad_token_id or 0)
        self.use_token_type_ids = "token_type_ids" in getattr(
            hf_tokenizer, "model_input_names", ["token_type_ids"]
        )

        transformer = parts["transformer"]
        weights_dtype = next(transformer.parameters()).dtype
        weights_device = next(transformer.parameters()).device
        if weights_dtype != self.dtype or weights_device != self.device:
            transformer = copy.deepcopy(transformer).to(device=self.device, dtype=self.dtype)
        self.transformer = transformer.eval()
        get_dims = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dimensions = int(get_dims())
        # One caller at a time on the device; re-entrant so that a thread may call encode()
        # while one of its own streams is suspended between chunks.
        self._lock = threading.RLock()
        self.oom_splits = 0

    # -- public ---------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into a ``(len(texts), dimensions)`` ``float32`` array, in order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        parts = list(self.encode_stream(texts, chunk_size=self.chunk_size))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def encode_stream(
        self, texts: Iterable[str], *, chunk_size: int | None = None
    ) -> Iterator[np.ndarray]:
        """Encode an iterable of texts chunk by chunk; yield one array per chunk, in order.

        At most three chunks (the one on the device, one prepared and one being tokenized) are
        held in memory, whatever the length of ``texts``. ``texts`` is consumed from a background
        thread: pass strings, or a generator that does not need this thread's state (a Django
        queryset iterated there would open its own database connection).
        """
        chunk_size = int(chunk_size or self.chunk_size)
        with self._lock:
            prepared: queue.Queue = queue.Queue(maxsize=1)
            stop = threading.Event()
            worker = threading.Thread(
                target=self._prepare_chunks,
                args=(iter(texts), chunk_size, prepared, stop),
                name="embrec-tokenize",
                daemon=True,
            )
            worker.start()
            try:
                while True:
                    item = prepared.get()
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield self._run_chunk(item)
            finally:
                stop.set()
                # Unblock a producer waiting on a full queue, then let it finish.
                while worker.is_alive():
                    try:
                        prepared.get(timeout=0.05)
                    except queue.Empty:
                        pass
                worker.join()

    # -- host side: tokenize, sort, pad ---------------------------------------------------------

    def _prepare_chunks(
        self, texts: Iterator[str], chunk_size: int, out: queue.Queue, stop
    ) -> None:
        try:
            while not stop.is_set():
                chunk = []
                for text in texts:
                    if not isinstance(text, str):
                        raise TypeError(f"expected str, got {type(text).__name__}")
                    chunk.append(text)
                    if len(chunk) >= chunk_size:
                        break
                if not chunk:
                    break
                prepared = self._prepare(chunk)
                while not stop.is_set():
                    try:
                        out.put(prepared, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            out.put(None) if not stop.is_set() else None
        except BaseException as exc:  # surfaced in the consuming thread
            if not stop.is_set():
                out.put(exc)

    def _prepare(self, texts: list[str]) -> _Chunk:
        ids: list[list[int]] = []
        # Keep only the ids: an ``Encoding`` also carries offsets, tokens and masks, several
        # kilobytes each, so a whole chunk of them at once would dominate the engine's memory.
        for lo in range(0, len(texts), 8192):
            encodings = self.tokenizer.encode_batch(texts[lo : lo + 8192], add_special_tokens=True)
            ids.extend(e.ids for e in encodings)
        del encodings
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        # Longest first: the biggest allocation comes first, so an OOM shows up early.
        order = np.argsort(-lengths, kind="stable")
        batches = []
        start = 0
        budget = self.max_tokens
        while start < len(order):
            width = self._padded(int(lengths[order[start]]))
            rows = max(1, min(self.max_batch_size, budget // width, len(order) - start))
            index = order[start : start + rows]
            start += rows
            batches.append(self._pad(index, ids, lengths, width))
        return _Chunk(size=len(texts), batches=batches)

    def _padded(self, length: int) -> int:
        m = self.pad_multiple
        return min(max(length, 1) + (-max(length, 1)) % m, max(self.max_length, length))

    def _pad(self, index: np.ndarray, ids: list, lengths: np.ndarray, width: int) -> _Batch:
        rows = len(index)
        input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        row_lengths = lengths[index]
        for row, j in enumerate(index):
            input_ids[row, : row_lengths[row]] = ids[j]
        mask = (np.arange(width)[None, :] < row_lengths[:, None]).astype(np.int64)
        ids_t = torch.from_numpy(input_ids)
        mask_t = torch.from_numpy(mask)
        if self.pin_memory:
            ids_t = ids_t.pin_memory()
            mask_t = mask_t.pin_memory()
        return _Batch(index=index, input_ids=ids_t, attention_mask=mask_t, tokens=rows * width)

    # -- device side ----------------------------------------------------------------------------

    def _run_chunk(self, chunk: _Chunk) -> np.ndarray:
        out = np.empty((chunk.size, self.dimensions), dtype=np.float32)
        pending: list[tuple[np.ndarray, torch.Tensor, object]] = []
        with torch.inference_mode():
            for batch in chunk.batches:
                for index, vectors in self._run_batch(
                    batch.index, batch.input_ids, batch.attention_mask
                ):
                    pending.append(self._to_host(index, vectors))
                # Collect results one batch late: the device keeps working meanwhile.
                while len(pending) > 1:
                    self._collect(pending.pop(0), out)
            for item in pending:
                self._collect(item, out)
        return out

    def _run_batch(self, index: np.ndarray, input_ids: torch.Tensor, mask: torch.Tensor):
        """Forward one batch; on out-of-memory split it and retry the halves."""
        tokens = int(input_ids.shape[0] * input_ids.shape[1])
        if tokens > self.max_tokens and input_ids.shape[0] > 1:
            # The budget was lowered after an earlier OOM: split before trying.
            yield from self._split(index, input_ids, mask)
            return
        try:
            vectors = self._forward(input_ids, mask)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if input_ids.shape[0] == 1:
                raise
            self.oom_splits += 1
            self.max_tokens = max(tokens // 2, int(input_ids.shape[1]))
            logger.warning(
                "embrec: out of memory on a batch of %d x %d tokens; splitting it and lowering "
                "the token budget to %d.",
                input_ids.shape[0],
                input_ids.shape[1],
                self.max_tokens,
            )
            yield from self._split(index, input_ids, mask)
            return
        yield index, vectors

    def _split(self, index, input_ids, mask):
        half = input_ids.shape[0] // 2
        for sl in (slice(0, half), slice(half, None)):
            yield from self._run_batch(index[sl], input_ids[sl], mask[sl])

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        non_blocking = self.pin_memory
        ids_d = input_ids.to(self.device, non_blocking=non_blocking)
        mask_d = mask.to(self.device, non_blocking=non_blocking)
        kwargs = {"input_ids": ids_d, "attention_mask": mask_d}
        if self.use_token_type_ids:
            kwargs["token_type_ids"] = torch.zeros_like(ids_d)
        hidden = self.transformer(**kwargs, return_dict=True).last_hidden_state
        return self._pool(hidden, mask_d)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            vectors = hidden[:, 0].float()
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            # Sum in float32: half-precision sums over long texts lose digits.
            summed = (hidden * weights).float().sum(dim=1)
            vectors = summed / mask.sum(dim=1, keepdim=True).clamp(min=1).float()
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors

    def _to_host(self, index: np.ndarray, vectors: torch.Tensor):
        if vectors.device.type != "cuda":
            return index, vectors, None
        host = torch.empty(vectors.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(vectors, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return index, host, event

    @staticmethod
    def _collect(item, out: np.ndarray) -> None:
        index, host, event = item
        if event is not None:
            event.synchronize()
        out[index] = host.numpy()
