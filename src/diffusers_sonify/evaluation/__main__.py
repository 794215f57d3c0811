"""`python -m diffusers_sonify.evaluation --help`."""

from .cli import main

if __name__ == "__main__":
    main()
