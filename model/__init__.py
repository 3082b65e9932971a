"""PersonaPlex 7B in MLX: the language model, the Mimi codec and live conversation sessions."""
