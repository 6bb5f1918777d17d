"""Bottleneck adapters (Houlsby, Pfeiffer) and AdapterFusion as a small llmkit module.

Why our own: AdapterHub's `adapters` library pins transformers 4.57, and peft's `register_peft_method` accepts only
names already in peft's own `PeftType` enum, so a new peft tuner would mean patching peft.
"""
