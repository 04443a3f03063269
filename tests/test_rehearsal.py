"""GPU rehearsal: the estimate by hand, the tiny stand-in models, local samples, and a rehearsal run
of every notebook that has a gpu profile."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from epi_utils.workbench import cli, rehearsal
from epi_utils.workbench.params import ParameterError, available_profiles, parse_parameters

REPO = Path(__file__).resolve().parents[1]
GPU_NOTEBOOKS = [nb for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")) if "gpu" in available_profiles(nb)]


def test_estimate_by_hand():
    # gpt2 sizes: hidden 768, 12 layers, 12 heads, vocab 50257; N = 124e6.
    # weights+grads+Adam 16 N = 1.984e9 B; activations 12*10*1*768*(34 + 5*12*10/768) = 3,205,440 B;
    # logits 2*10*1*50257*4 = 4,020,560 B -> 1.991226 GB.
    # training 6 * 124e6 * 1e9 FLOPs / (989e12 * 0.3) = 2507.58 s = 0.696551 h.
    est = rehearsal.estimate(model_id="gpt2", train_tokens=1e9, micro_batch=1, seq_len=10, verbose=False)
    assert est.gpu_memory_gb == pytest.approx(1.991226, rel=1e-6)
    assert est.gpu_hours == pytest.approx(0.696551, rel=1e-5)
    assert est.fits
    # decoding: 1e6 tokens in batches of 100 = 1e4 steps, each 2*124e6 B / (4.8e12 * 0.5) s -> 1.0333 s
    dec = rehearsal.estimate(model_id="gpt2", train_tokens=0, micro_batch=1, seq_len=10, generated_tokens=1e6,
                             generation_batch=100, verbose=False)
    assert dec.breakdown["decode_hours"] * 3600 == pytest.approx(1.033333, rel=1e-5)
    big = rehearsal.estimate(model_id="meta-llama/Llama-2-7b-hf", train_tokens=1, micro_batch=8, seq_len=4096,
                             extra_state_bytes_per_param=43, verbose=False)
    assert not big.fits and "DOES NOT FIT" in big.summary()


def test_estimate_refuses_unknown_sizes_and_gpus():
    with pytest.raises(ValueError, match="n_params"):
        rehearsal.estimate(model_id="someone/qwen-custom", train_tokens=1, micro_batch=1, seq_len=8, verbose=False)
    with pytest.raises(ValueError, match="gpu must be"):
        rehearsal.estimate(model_id="gpt2", train_tokens=1, micro_batch=1, seq_len=8, gpu="TPU", verbose=False)
    with pytest.raises(ValueError, match="no known architecture family"):
        rehearsal.model_spec("acme/widget")


@pytest.mark.parametrize("model_id,cls", [("Qwen/Qwen2.5-0.5B", "Qwen2"), ("HuggingFaceTB/SmolLM2-360M", "Llama"),
                                          ("hfl/chinese-roberta-wwm-ext", "Bert")])
def test_tiny_model_of_the_same_family(model_id, cls):
    import transformers as tf

    config = rehearsal.tiny_model_config(model_id, vocab_size=256)
    assert type(config).__name__ == f"{cls}Config"
    model = (tf.AutoModel if cls == "Bert" else tf.AutoModelForCausalLM).from_config(config)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_local_samples_keep_the_data_set_layout(tmp_path):
    rows = [{"question": "1+1?", "answer": "2 #### 2"}]
    path = rehearsal.write_local_samples("openai/gsm8k", rows, tmp_path)
    assert json.loads(path.read_text().splitlines()[0]) == rows[0]
    with pytest.raises(ValueError, match="layout"):
        rehearsal.write_local_samples("openai/gsm8k", [{"question": "q"}], tmp_path)


def test_rehearse_needs_the_parameter_and_cpu(tmp_path):
    nb = REPO / "notebooks" / "00_environment.ipynb"
    if "rehearse" in parse_parameters(nb):
        assert rehearsal.rehearsal_overrides(nb, {}) == {"rehearse": True, "device": "cpu"}
        with pytest.raises(ParameterError, match="CPU"):
            rehearsal.rehearsal_overrides(nb, {"device": "cuda"})


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", GPU_NOTEBOOKS, ids=lambda p: p.stem)
def test_gpu_profile_rehearses_on_cpu(nb_path, tmp_path, capsys, monkeypatch):
    # `epi run NB --profile gpu --rehearse` through the CLI's own main() in this process (a subprocess
    # would only add an interpreter importing papermill again); the notebook's kernel is its own process
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # PNG only: the smoke runs (tests/test_notebooks.py) check the PDFs; a rehearsal checks the gpu profile's path
    monkeypatch.setenv("EPI_FIGURE_FORMATS", "png")
    code = cli.main(["run", str(nb_path), "--profile", "gpu", "--rehearse", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    record = json.loads(next(tmp_path.glob("*/*/metrics.json")).read_text())
    assert record["status"] == "success" and record["parameters"]["rehearse"] is True
    if nb_path.stem != "00_environment":
        est = record["metrics"]["rehearsal"]
        assert est["gpu_hours"] > 0 and est["gpu_memory_gb"] > 0 and est["host_memory_gb"] > 0
