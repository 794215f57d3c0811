"""`python -m diffusers_sonify.build CONFIG.yaml [--field value ...]`: the dataset builder program, from anywhere."""

if __name__ == "__main__":
    from .programs import run_program

    run_program("build")
