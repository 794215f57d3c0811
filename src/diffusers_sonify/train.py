"""`accelerate launch -m diffusers_sonify.train CONFIG.yaml [--field value ...]`: the training program."""

if __name__ == "__main__":
    from .programs import run_program

    run_program("train")
