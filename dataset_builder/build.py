"""Build a sonified image dataset.

    python dataset_builder/build.py dataset_builder/configs/<name>.yaml [--field value]

The YAML holds `BuilderConfig` fields (src/diffusers_sonify/sonification/config.py); flags override them. Under
`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N` the describe stage is split
across the N processes and rank 0 runs the rest.
"""

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from diffusers_sonify.sonification import build_sonified_dataset, parse_build_config, publish

logger = get_logger(__name__)


def main(argv=None):
    config = parse_build_config(sys.argv[1:] if argv is None else argv)
    config.validate_for_build()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    report = build_sonified_dataset(
        config,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        barrier=accelerator.wait_for_everyone,
        device=accelerator.device,
    )
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
