"""B'MOJO as a Hugging Face transformers model.

Importing this package registers ``BMojoConfig`` (model type ``"bmojo"``), ``BMojoModel`` and
``BMojoForCausalLM`` with ``AutoConfig``, ``AutoModel`` and ``AutoModelForCausalLM``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from bmojo_hf.cache import BMojoCache
from bmojo_hf.configuration import BMojoConfig
from bmojo_hf.convert import (
    ConversionError,
    convert_hf_model,
    from_hf_llama,
    from_hf_mamba2,
    from_hf_mistral,
)
from bmojo_hf.modeling import BMojoCausalLMOutput, BMojoForCausalLM, BMojoModel, BMojoModelOutput, BMojoPreTrainedModel
from bmojo_hf.tokenizer import byte_level_tokenizer, train_byte_level_tokenizer

AutoConfig.register(BMojoConfig.model_type, BMojoConfig, exist_ok=True)
AutoModel.register(BMojoConfig, BMojoModel, exist_ok=True)
AutoModelForCausalLM.register(BMojoConfig, BMojoForCausalLM, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "BMojoCache",
    "BMojoCausalLMOutput",
    "BMojoConfig",
    "BMojoForCausalLM",
    "BMojoModel",
    "BMojoModelOutput",
    "BMojoPreTrainedModel",
    "ConversionError",
    "__version__",
    "byte_level_tokenizer",
    "convert_hf_model",
    "from_hf_llama",
    "from_hf_mamba2",
    "from_hf_mistral",
    "train_byte_level_tokenizer",
]
