"""Data for pretraining and fine-tuning: corpora, instances, masking, task files."""
