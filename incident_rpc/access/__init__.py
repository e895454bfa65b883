"""Who the caller is and what it may do: tokens, API keys, throttling, policy."""
