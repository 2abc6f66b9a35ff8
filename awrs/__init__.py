"""awrs: fast, exact controlled generation from language models.

Adaptive weighted rejection sampling (Lipkin et al., COLM 2025) inside sequential Monte Carlo:
samples follow the model conditioned on a constraint, checking only a few tokens per step.

    >>> import awrs
    >>> model = awrs.load_model()                      # embedded SmolLM2-135M-Instruct
    >>> result = awrs.generate(model, "A date: ", awrs.Regex(r"\\d{4}-\\d{2}-\\d{2}"), seed=0)
    >>> result.posterior                               # {text: probability}

Importing awrs does not import torch; a real model backend loads on first use.
"""

from .constraints import DEAD, All, Constraint, Grammar, JsonSchema, Predicate, Regex, Scored, Smiles, Sql
from .errors import AwrsError, ConfigError, ConstraintError, ModelError
from .generate import METHODS, generate, generate_many
from .models import LanguageModel, TableModel, load_model
from .result import Result, Sample
from .sampling import AWRS, Masking, Rejection, TokenSampler, Unconstrained
from .smc import SMCConfig, run_smc
from .stats import Stats
from .vocab import Vocabulary

__version__ = "0.2.0"

__all__ = [
    "AWRS",
    "All",
    "DEAD",
    "METHODS",
    "AwrsError",
    "ConfigError",
    "Constraint",
    "ConstraintError",
    "Grammar",
    "JsonSchema",
    "LanguageModel",
    "Masking",
    "ModelError",
    "Predicate",
    "Regex",
    "Rejection",
    "Result",
    "SMCConfig",
    "Sample",
    "Scored",
    "Smiles",
    "Sql",
    "Stats",
    "TableModel",
    "TokenSampler",
    "Unconstrained",
    "Vocabulary",
    "generate",
    "generate_many",
    "load_model",
    "run_smc",
]
