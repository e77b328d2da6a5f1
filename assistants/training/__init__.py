"""Training: SFT data building and LoRA fine-tuning (``sft``); preference tuning comes later (``preferences``)."""
