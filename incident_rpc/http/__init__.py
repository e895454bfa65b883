"""The HTTP adapters: each dialect's routes turn a request into commands and back."""
