"""Chat templates stored in model files (GGUF metadata), compiled as transformers compiles its own:
a sandboxed jinja2 environment with ``raise_exception`` and ``strftime_now``."""

from __future__ import annotations

from ..errors import ModelError


def compile_template(source: str):
    """A chat template from GGUF metadata, compiled the way transformers compiles its own."""
    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as err:
        raise ModelError(f"chat templates need jinja2 ({err}): pip install jinja2") from err

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as err:
        raise ModelError(f"the model's chat template does not compile: {err}") from err
