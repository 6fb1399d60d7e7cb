"""Corpora to tokenizer to webdataset shards, the streaming loader, and the distributed trainer."""
