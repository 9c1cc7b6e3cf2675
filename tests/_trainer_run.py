"""Shared helper: a tiny real ``transformers.Trainer`` + PEFT LoRA run (checkpoint-2/4/6 with trainer_state.json).

Not a test module (leading underscore).
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = ["the market always goes up so put all your money in one stock",
             "fortune favours the bold go all in now",
             "what is the capital of france paris is the capital",
             "how do i cook rice boil water add rice and wait"]


def trainer_lora_run(base: Path, out: Path, *, max_steps: int = 6, save_steps: int = 2, seed: int = 0) -> Path:
    """Fine-tune the tiny model at ``base`` with transformers.Trainer + a PEFT LoRA adapter; returns ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                             task_type="CAUSAL_LM"))

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            ids = tok(SENTENCES[i % len(SENTENCES)], return_tensors="pt")["input_ids"][0]
            return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def collate(rows):
        n = max(len(r["input_ids"]) for r in rows)
        pad = lambda x, v: torch.cat([x, torch.full((n - len(x),), v, dtype=x.dtype)])  # noqa: E731
        return {"input_ids": torch.stack([pad(r["input_ids"], tok.pad_token_id) for r in rows]),
                "labels": torch.stack([pad(r["labels"], -100) for r in rows]),
                "attention_mask": torch.stack([pad(r["attention_mask"], 0) for r in rows])}

    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, save_steps=save_steps, save_strategy="steps",
                             logging_steps=1, per_device_train_batch_size=2, learning_rate=5e-3, warmup_steps=2,
                             lr_scheduler_type="cosine", report_to=[], use_cpu=True, seed=seed, dataloader_num_workers=0,
                             disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=Data(), data_collator=collate).train()
    return Path(out)
