"""How a text becomes model inputs (conf/prompt, data.truncation, data.long_text)."""
