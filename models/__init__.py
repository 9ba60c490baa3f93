"""models: the GPT and how to sample from it; nothing about generations, files or logging."""
