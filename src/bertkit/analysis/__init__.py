"""What an encoder's vectors mean: word vectors in context, their geometry, and post-processing."""
