"""bertkit: bidirectional transformer encoders (the BERT family) for pretraining, fine-tuning and study."""

from .allocator import reuse_freed_memory
from .config import PRESETS, EncoderConfig, preset
from .convert import CheckpointError, load_pretrained, save_pretrained
from .embed import embed
from .heads import MLMHead, NSPHead, add_pretraining_heads, pool
from .model import Encoder, EncoderOutput
from .precision import settle_vector_maths
from .tokenizer import Encoded, Tokenizer

settle_vector_maths()  # before any two threads make a first call of oneMKL's vector maths (precision.py)

__all__ = ["PRESETS", "CheckpointError", "Encoded", "Encoder", "EncoderConfig", "EncoderOutput", "MLMHead",
           "NSPHead", "Tokenizer", "add_pretraining_heads", "embed", "load_pretrained", "pool", "preset", "reuse_freed_memory",
           "save_pretrained"]
__version__ = "0.1.0"
