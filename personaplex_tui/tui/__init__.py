"""The Textual chat app; imported lazily by the CLI when the chat runs (`make_app`)."""
