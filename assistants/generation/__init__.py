"""Generation: ``base`` (request and adapter types, answer rules, the ``Backend`` protocol), ``engine`` (the
local transformers + peft model and its adapters), ``scheduler`` (continuous batching), ``decoder`` (the
batched decoder and its packed weights), ``remote`` (an OpenAI-compatible server such as vLLM).

Import the module you need; this package itself imports nothing, so reading a type does not load torch.
"""
