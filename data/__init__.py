"""data: text in, token ids out: corpora, the synthetic language, tokenizers, mixing."""
