"""The privacy-finetuner HTTP service (FastAPI) and its job runners; needs the ``service`` extra.

Import :func:`privacy_finetuner.service.app.create_app` explicitly; this package imports nothing
heavy so that ``privacy_finetuner.service.migrate`` works without FastAPI.
"""

__all__: list[str] = []
