"""``python -m privacy_finetuner`` (and ``torchrun -m privacy_finetuner``) runs the CLI."""

from privacy_finetuner.cli.main import main

if __name__ == "__main__":
    main()
