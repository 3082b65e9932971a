"""Conversations with a loaded model: the prompt plan, step graphs, sessions and their settings,
replies, the `PersonaPlex` facade (`model.load`), the tokenizer and the plain results that leave
`model`.

Uses every other package of `model` (`lm`, `mimi`, `checkpoints`, and `cuda` only through
`lm`); nothing in `model` uses it but `model/__init__.py`'s public names.
"""
