"""An OpenAI-compatible HTTP server for constrained generation (needs fastapi and uvicorn).

    from awrs.server import create_app, serve
    serve()                                   # embedded model on http://127.0.0.1:8000
    app = create_app(model, limits={"max_tokens": 128})   # a FastAPI app, for uvicorn or tests

See :mod:`awrs.server.app` for the endpoints and request fields, :class:`Limits` for the limits,
and :mod:`awrs.server.batcher` for how concurrent requests share batched model calls.
"""

from ..errors import ConfigError
from .limits import Limits


def _app_module():
    try:
        from . import app
    except ImportError as err:
        raise ConfigError(
            f"the server needs fastapi and uvicorn ({err}); pip install 'awrs[server]'"
        ) from None
    return app


def create_app(*args, **kwargs):
    """See :func:`awrs.server.app.create_app` (imported lazily: fastapi loads only when used)."""
    return _app_module().create_app(*args, **kwargs)


def serve(*args, **kwargs):
    """See :func:`awrs.server.app.serve`."""
    module = _app_module()
    try:
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"the server needs uvicorn ({err}); pip install 'awrs[server]'") from None
    return module.serve(*args, **kwargs)


__all__ = ["Limits", "create_app", "serve"]
