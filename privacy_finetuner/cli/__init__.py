"""The ``privacy-finetuner`` command line (Typer + rich)."""
