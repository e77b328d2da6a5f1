"""Measuring the specialists: ``specialization`` (held-out loss and perplexity of each adapter on each
domain, the citation rate), ``suite`` (the eval: routing, retrieval, key facts, citations, invented
figures, safety, per configuration and adapter version) and ``bench`` (serving, retrieval and load
benchmarks that print ratios against a baseline measured in the same run).

Import the submodule you need (``from assistants.evaluation import suite``): each pulls in the model
stack only when it uses it, so this package itself imports nothing.
"""
