"""Language-model testbed: ``models`` (tiny / smollm2 / HF), ``train`` (SFT engine with hooks),
``evaluate`` (greedy exact match, pass@N), ``masked_adamw``, ``sft_format``. See docs/lm_testbed_api.md."""
