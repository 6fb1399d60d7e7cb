"""Fine-tuning and evaluation for NMT and GLGE-style tasks."""
