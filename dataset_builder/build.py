"""Build a sonified image dataset: pair an image corpus with an audio corpus, no audio-visual pairs needed.

    python dataset_builder/build.py dataset_builder/configs/<name>.yaml [--field value ...]

The YAML holds `BuilderConfig` fields (the options below); flags override them. A relative `prompt_file` in the
YAML is relative to the YAML file. Under `accelerate launch --multi_gpu --num_processes N` or
`torchrun --nproc_per_node N` the describe stage is split across the N processes and rank 0 runs the rest.

Describers (`--describer module:Class`, arguments in `--describer_kwargs '{...}'`):
  diffusers_sonify.sonification.describe:VLMDescriber (default)
      prompts `--vlm_model` (a Hub id or local folder of an image-text-to-text model) with `--prompt_file`.
      Needs the model in the local Hugging Face cache, a local folder, or the Hub.
  diffusers_sonify.sonification.describe:JSONColumnDescriber   (no model, works offline)
      reads descriptions already in an image-corpus column (`{"column": "description"}`), each the JSON the
      prompt asks for: {"sound_sources": [{"name", "sound", "prominence": 0-1, "distance": near|mid|far}],
      "scene": {"setting": indoor|outdoor, "space": small|medium|large|open}}.
  diffusers_sonify.toyworld.describer:ToySceneDescriber        (no model, works offline)
      reads the toy world's scene metadata (`make demo`, configs/toyworld.yaml).

Offline on your own files (images/ with a metadata.csv of `file_name,description`; sounds/<label>/*.wav|.oga|...):
  python dataset_builder/build.py --image_dataset imagefolder:images --audio_dataset audiofolder:sounds \\
      --describer diffusers_sonify.sonification.describe:JSONColumnDescriber --output_dir out/sonified

Publishing: `--push_to_hub --hub_model_id org/name` uploads the built folder as a dataset repo.
"""

import json
import logging
import sys

from diffusers_sonify.sonification.config import parse_build_config


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:  # parsed before the heavy imports: `--help` and config mistakes answer in a second
        config = parse_build_config(argv, description=__doc__)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"build.py: error: {err}")
    # progress bars and our own results; other libraries' INFO chatter (model paths, HTTP) stays out
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for name in ("diffusers_sonify", "build"):
        logging.getLogger(name).setLevel(logging.INFO)

    import torch
    import transformers
    from accelerate import Accelerator
    from accelerate.logging import get_logger

    transformers.utils.logging.disable_progress_bar()  # per-model "Loading weights" bars inside stage bars

    from diffusers_sonify.sonification import BuildInputError, build_sonified_dataset, check_build, publish

    logger = get_logger("build")
    try:
        check_build(config)  # before any data or model is loaded: one line per mistake, no traceback
    except BuildInputError as err:
        sys.exit(f"build.py: error: {err}")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    try:
        report = build_sonified_dataset(
            config,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            barrier=accelerator.wait_for_everyone,
            device=accelerator.device,
        )
    except BuildInputError as err:
        sys.exit(f"build.py: error: {err}")
    if accelerator.is_main_process:
        summary = {
            "rows": report.num_rows,
            "skipped": report.num_skipped,
            "skip_counts": report.skip_counts(),
            "output_dir": config.output_dir,
        }
        logger.info("build finished: %s", json.dumps(summary))
        if config.push_to_hub:
            logger.info("pushed to %s", publish(config))
    accelerator.end_training()


if __name__ == "__main__":
    main()
