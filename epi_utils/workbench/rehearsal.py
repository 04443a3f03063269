"""GPU rehearsal on the CPU: run a gpu profile's code path at toy scale and estimate its full cost.

``epi run NB --profile gpu --rehearse`` runs the notebook with the profile's parameters plus
``rehearse=True`` and ``device="cpu"``. The study then (1) builds a tiny *random-initialised* model of
the same architecture family as the profile's model (:func:`tiny_model_config`), (2) writes a few
samples per data set locally, in the exact field layout of the data set the profile names
(:func:`write_local_samples`), (3) runs a few steps through the same code as the full profile, timed
by :func:`meter`, and (4) calls :func:`estimate` with the profile's full-scale sizes, which prints
and returns peak GPU memory, host memory and GPU-hours.

The estimate is a model, stated with its assumptions, not a measurement:
- weights + gradients + AdamW state: 16 bytes/parameter with bf16 autocast over fp32 master weights
  (4 weight + 4 grad + 8 moments), plus any method state (e.g. EPI's bytes/parameter);
- activations: ``L * s * b * h * (34 + 5 * a * s / h)`` bytes per micro-batch without recomputation
  (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 2),
  plus fp32 logits ``s * b * V * 4`` twice (logits and their gradient);
- training compute ``6 * N * tokens`` FLOPs, forward-only ``2 * N * tokens`` (Kaplan et al. 2020), at a
  sustained share ``mfu`` of the GPU's dense bf16 peak;
- greedy decoding is bound by memory bandwidth: each decoding step of a batch reads the bf16 weights
  once, so ``steps = generated tokens / generation batch`` and a step takes ``2N / bandwidth``.
"""
from __future__ import annotations

import contextlib
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from epi_utils.workbench.params import ParameterError, parse_parameters

#: public sizes of the models the gpu profiles name (family, parameters, hidden, layers, heads, vocab).
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B": dict(family="qwen2", n_params=494e6, hidden=896, layers=24, heads=14, vocab=151936),
    "Qwen/Qwen2.5-0.5B-Instruct": dict(family="qwen2", n_params=494e6, hidden=896, layers=24, heads=14, vocab=151936),
    "Qwen/Qwen2.5-1.5B": dict(family="qwen2", n_params=1.54e9, hidden=1536, layers=28, heads=12, vocab=151936),
    "HuggingFaceTB/SmolLM2-135M": dict(family="llama", n_params=134.5e6, hidden=576, layers=30, heads=9, vocab=49152),
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(family="llama", n_params=134.5e6, hidden=576, layers=30, heads=9, vocab=49152),
    "HuggingFaceTB/SmolLM2-360M": dict(family="llama", n_params=361.8e6, hidden=960, layers=32, heads=15, vocab=49152),
    "HuggingFaceTB/SmolLM2-360M-Instruct": dict(family="llama", n_params=361.8e6, hidden=960, layers=32, heads=15, vocab=49152),
    "meta-llama/Llama-2-7b-hf": dict(family="llama", n_params=6.74e9, hidden=4096, layers=32, heads=32, vocab=32000),
    "bert-base-uncased": dict(family="bert", n_params=110e6, hidden=768, layers=12, heads=12, vocab=30522),
    "bert-base-chinese": dict(family="bert", n_params=102e6, hidden=768, layers=12, heads=12, vocab=21128),
    "hfl/chinese-roberta-wwm-ext": dict(family="bert", n_params=102e6, hidden=768, layers=12, heads=12, vocab=21128),
    "hfl/chinese-bert-wwm-ext": dict(family="bert", n_params=102e6, hidden=768, layers=12, heads=12, vocab=21128),
    "gpt2": dict(family="gpt2", n_params=124e6, hidden=768, layers=12, heads=12, vocab=50257),
}
#: GPU specs (dense bf16 peak FLOP/s, memory bandwidth bytes/s, memory bytes).
GPUS = {"H200": dict(peak_flops=989e12, bandwidth=4.8e12, memory=141e9),
        "H100": dict(peak_flops=989e12, bandwidth=3.35e12, memory=80e9),
        "A100": dict(peak_flops=312e12, bandwidth=2.0e12, memory=80e9)}
#: column layouts of the Hugging Face data sets the gpu profiles name (``datasets`` features).
HF_LAYOUTS: dict[str, tuple[str, ...]] = {
    "openai/gsm8k": ("question", "answer"),
    "gsm8k": ("question", "answer"),
    "sahil2801/CodeAlpaca-20k": ("instruction", "input", "output"),
    "tatsu-lab/alpaca": ("instruction", "input", "output", "text"),
}


def model_spec(model_id: str) -> dict[str, Any]:
    """Family and full-scale sizes of ``model_id`` (:data:`KNOWN_MODELS`, else a family guessed from
    the id with sizes unknown). Raises ``ValueError`` naming the id when no family fits."""
    if model_id in KNOWN_MODELS:
        return dict(KNOWN_MODELS[model_id], model_id=model_id)
    low = model_id.lower()
    for key, family in (("qwen", "qwen2"), ("smollm", "llama"), ("llama", "llama"), ("roberta", "bert"),
                        ("bert", "bert"), ("gpt2", "gpt2"), ("tiny", "gpt2")):
        if key in low:
            return {"family": family, "model_id": model_id}
    raise ValueError(f"rehearsal: no known architecture family for model {model_id!r}; known models: "
                     f"{sorted(KNOWN_MODELS)}")


def tiny_model_config(model_id: str, *, vocab_size: int | None = None, hidden: int = 64, layers: int = 2,
                      heads: int = 4):
    """A small ``transformers`` config of ``model_id``'s family (Qwen2, Llama, BERT or GPT-2), for a
    random-initialised stand-in (``AutoModelForCausalLM.from_config`` / ``AutoModel.from_config``).

    ``vocab_size`` defaults to the full model's vocabulary when known (so a real tokenizer's ids fit),
    else 1024.
    """
    import transformers as tf

    spec = model_spec(model_id)
    vocab = vocab_size or spec.get("vocab") or 1024
    family = spec["family"]
    if family == "qwen2":
        return tf.Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                              max_position_embeddings=512, tie_word_embeddings=True)
    if family == "llama":
        return tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                              max_position_embeddings=512, tie_word_embeddings=True)
    if family == "bert":
        return tf.BertConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                             num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=512)
    return tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512)


def write_local_samples(name: str, rows: Sequence[Mapping[str, Any]], folder: Path | str, *,
                        split: str = "train") -> Path:
    """Write ``rows`` as ``folder/<name>/<split>.jsonl`` (loadable with
    ``datasets.load_dataset("json", data_files=...)``) and return the file.

    For a data set in :data:`HF_LAYOUTS` every row must have exactly its columns: the rehearsal
    exercises the same field access as the real data set. Raises ``ValueError`` naming the row.
    """
    layout = HF_LAYOUTS.get(name)
    for i, row in enumerate(rows):
        if layout is not None and tuple(sorted(row)) != tuple(sorted(layout)):
            raise ValueError(f"rehearsal sample {i} for {name}: fields {sorted(row)} differ from the data "
                             f"set's layout {sorted(layout)}")
    path = Path(folder) / name.replace("/", "__") / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@dataclass
class Meter:
    """Wall time and peak resident memory of a block (filled when the block exits)."""

    seconds: float = 0.0
    peak_host_bytes: int = 0
    steps: int = 0
    tokens: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps if self.steps else float("nan")


@contextlib.contextmanager
def meter() -> Iterator[Meter]:
    """``with meter() as m: ...; m.steps += 1; m.tokens += n`` -> ``m.seconds``, ``m.peak_host_bytes``."""
    m = Meter()
    start = time.time()
    try:
        yield m
    finally:
        m.seconds = time.time() - start
        m.peak_host_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Estimate:
    """Full-scale cost of a gpu profile, with the assumptions it rests on."""

    model_id: str
    gpu: str
    gpu_memory_gb: float
    host_memory_gb: float
    gpu_hours: float
    fits: bool
    breakdown: dict[str, float] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)
    rehearsal: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        fit = "fits" if self.fits else "DOES NOT FIT"
        parts = ", ".join(f"{k} {v:.3g}" for k, v in self.breakdown.items())
        return (f"GPU rehearsal estimate for {self.model_id} on one {self.gpu}: peak GPU memory "
                f"{self.gpu_memory_gb:.1f} GB ({fit}), host memory {self.host_memory_gb:.1f} GB, "
                f"{self.gpu_hours:.2f} GPU-hours [{parts}]")


def estimate(*, model_id: str, train_tokens: float, micro_batch: int, seq_len: int,
             forward_tokens: float = 0.0, generated_tokens: float = 0.0, generation_batch: int = 64,
             extra_state_bytes_per_param: float = 0.0, extra_host_bytes: float = 0.0,
             n_params: float | None = None, measured: Meter | None = None, gpu: str = "H200",
             mfu: float = 0.3, decode_efficiency: float = 0.5, verbose: bool = True) -> Estimate:
    """Estimate peak GPU memory, host memory and GPU-hours of the full-scale run (module docstring).

    ``train_tokens``: tokens through forward+backward over the whole profile (all runs, seeds, tasks);
    ``forward_tokens``: forward-only tokens (scoring, importance probes without optimizer steps count
    as training tokens if they run backward); ``generated_tokens``: tokens produced by greedy
    decoding; ``extra_state_bytes_per_param``: method state on the GPU (e.g. EPI's masks and EMAs);
    ``extra_host_bytes``: host-side state (snapshots, data). ``measured``: the rehearsal's
    :class:`Meter`, reported beside the estimate.
    """
    if gpu not in GPUS:
        raise ValueError(f"gpu must be one of {sorted(GPUS)}, got {gpu!r}")
    if not 0 < mfu <= 1 or not 0 < decode_efficiency <= 1:
        raise ValueError("mfu and decode_efficiency must be in (0, 1]")
    spec = model_spec(model_id)
    n = float(n_params or spec.get("n_params") or 0)
    if n <= 0:
        raise ValueError(f"rehearsal: parameter count of {model_id!r} unknown; pass n_params=")
    hidden, layers = spec.get("hidden", 1024), spec.get("layers", 24)
    heads, vocab = spec.get("heads", 16), spec.get("vocab", 32000)
    hw = GPUS[gpu]
    weights_state = 16.0 * n
    extra = extra_state_bytes_per_param * n
    activations = layers * seq_len * micro_batch * hidden * (34 + 5 * heads * seq_len / hidden)
    logits = 2 * seq_len * micro_batch * vocab * 4
    gpu_bytes = weights_state + extra + activations + logits
    train_s = 6 * n * train_tokens / (hw["peak_flops"] * mfu)
    forward_s = 2 * n * forward_tokens / (hw["peak_flops"] * mfu)
    decode_steps = generated_tokens / max(1, generation_batch)
    decode_s = decode_steps * (2 * n) / (hw["bandwidth"] * decode_efficiency)
    host = 4 * n + extra_host_bytes + (measured.peak_host_bytes if measured else 2e9)
    out = Estimate(
        model_id=model_id, gpu=gpu, gpu_memory_gb=gpu_bytes / 1e9, host_memory_gb=host / 1e9,
        gpu_hours=(train_s + forward_s + decode_s) / 3600, fits=gpu_bytes < 0.9 * hw["memory"],
        breakdown={"weights_grads_adam_gb": weights_state / 1e9, "method_state_gb": extra / 1e9,
                   "activations_gb": (activations + logits) / 1e9, "train_hours": train_s / 3600,
                   "forward_hours": forward_s / 3600, "decode_hours": decode_s / 3600},
        assumptions={"n_params": n, "train_tokens": train_tokens, "forward_tokens": forward_tokens,
                     "generated_tokens": generated_tokens, "generation_batch": generation_batch,
                     "micro_batch": micro_batch, "seq_len": seq_len, "mfu": mfu,
                     "decode_efficiency": decode_efficiency, "bytes_per_param_optimizer": 16},
        rehearsal=({"seconds": measured.seconds, "steps": measured.steps, "tokens": measured.tokens,
                    "seconds_per_step": measured.seconds_per_step, "peak_host_gb": measured.peak_host_bytes / 1e9}
                   if measured else {}),
    )
    if verbose:
        print(out.summary())
    return out


def rehearsal_overrides(nb_path: Path | str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters ``epi run --rehearse`` adds: ``rehearse=True``, ``device="cpu"``. Raises
    ``ParameterError`` when the notebook declares no ``rehearse`` parameter."""
    specs = parse_parameters(nb_path)
    if "rehearse" not in specs:
        raise ParameterError(f"{Path(nb_path).name} declares no 'rehearse' parameter, so it has no GPU "
                             "rehearsal; add 'rehearse: bool = False  # ...' to its parameters cell")
    if "device" in overrides and str(overrides["device"]) not in ("cpu", "auto"):
        raise ParameterError(f"--rehearse runs on the CPU; drop '-p device {overrides['device']}'")
    return {"rehearse": True, "device": "cpu"}
