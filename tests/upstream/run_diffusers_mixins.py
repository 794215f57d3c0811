"""Run diffusers' own pipeline test mixins, unchanged, against this project's pipelines.

    python tests/upstream/run_diffusers_mixins.py --diffusers-git /path/to/diffusers/.git [--ref COMMIT] [-- -x -k ...]
    python tests/upstream/run_diffusers_mixins.py --tests-dir /path/to/diffusers/tests --no-hub [-- -k ...]

diffusers' `tests/` folder is extracted from the given git directory at `--ref` into a temporary folder (never into
this repository), `sonify_upstream_cases.py` (our test-case classes) is copied next to it, and pytest runs there.
The `from_pipe` mixin loads `hf-internal-testing/tiny-stable-diffusion-torch` from the Hub; with no Hub here, a tiny
`StableDiffusionPipeline` is built locally and served under that id by the loopback Hub of `tests/hub/hub_server.py`
(`HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`), so those tests download it over HTTP as they would from the Hub.
Needs the `upstream-tests` extra (`pip install -c constraints.txt -e '.[all,upstream-tests]'`): diffusers' test
modules import `parameterized`, `requests_mock` and `torchsde`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_GIT_DIR = "/work/.mirror/huggingface+diffusers/repo"
SD_REPO = "hf-internal-testing/tiny-stable-diffusion-torch"
TEST_IMPORTS = ("parameterized", "requests_mock", "torchsde")
# diffusers' `ReturnNameVisitor.get_ast_tree` (used by `test_encode_prompt_works_in_isolation`) reads `encode_prompt`'s
# source through `getattr(diffusers.pipelines, cls.__name__)`, which only finds pipelines that live in diffusers.
# An out-of-tree pipeline is found once it is registered there, as this conftest does; the test is unchanged.
NO_HUB_ENV = "SONIFY_UPSTREAM_NO_HUB"  # set by --no-hub, read by the conftest below
CONFTEST = f"""
import os

import diffusers.pipelines

import diffusers_sonify

for _name in ("AudioToImagePipeline", "AudioToImageImg2ImgPipeline", "AudioToImageInpaintPipeline"):
    setattr(diffusers.pipelines, _name, getattr(diffusers_sonify, _name))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("{NO_HUB_ENV}") == "1":  # --no-hub: nothing serves the Hub repo this test loads
        hub = [item for item in items if item.name == "test_from_pipe_consistent_config"]
        config.hook.pytest_deselected(items=hub)
        items[:] = [item for item in items if item not in hub]
"""


def extract_tests(git_dir: str, ref: str, into: Path) -> str:
    """`tests/` of diffusers at `ref` into `into`; returns the resolved commit id."""
    commit = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", commit, "tests"], capture_output=True, check=True
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def serve_tiny_sd(token: str) -> tuple[object, str]:
    """Start the loopback Hub and upload a tiny `StableDiffusionPipeline` as `SD_REPO`; returns (server, url)."""
    sys.path.insert(0, str(HERE.parent / "hub"))
    from hub_server import serve

    server, _, url = serve()
    os.environ.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0")
    from huggingface_hub import HfApi

    from diffusers_sonify.tiny import stable_diffusion_pipeline, tiny_pipeline_components

    sd = stable_diffusion_pipeline(tiny_pipeline_components(with_text=True))
    with tempfile.TemporaryDirectory() as folder:
        sd.save_pretrained(folder)
        api = HfApi(endpoint=url, token=token)
        api.create_repo(SD_REPO, exist_ok=True)
        api.upload_folder(repo_id=SD_REPO, folder_path=folder)
    return server, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffusers-git", default=DEFAULT_GIT_DIR, help="a diffusers git directory (bare or .git)")
    parser.add_argument("--ref", default="HEAD", help="the diffusers commit, tag or branch whose tests run")
    parser.add_argument(
        "--tests-dir",
        help="an extracted diffusers `tests/` folder, instead of --diffusers-git (for a machine without the clone)",
    )
    parser.add_argument(
        "--no-hub",
        action="store_true",
        help="start no loopback Hub; deselects the one test that loads from it (test_from_pipe_consistent_config)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after `--`)")
    args = parser.parse_args(argv)
    missing = [m for m in TEST_IMPORTS if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"diffusers' test modules import {missing}; install them: "
            "pip install -c constraints.txt -e '.[upstream-tests]'"
        )
    if args.tests_dir and not (Path(args.tests_dir) / "pipelines" / "test_pipelines_common.py").is_file():
        sys.exit(f"--tests-dir {args.tests_dir} has no pipelines/test_pipelines_common.py; pass diffusers' tests/.")
    if not args.tests_dir and not Path(args.diffusers_git).is_dir():
        sys.exit(f"--diffusers-git {args.diffusers_git} is not a directory; pass a diffusers clone's .git folder.")
    token = "hf_UpstreamMixinsLoopbackToken0123456789"
    with tempfile.TemporaryDirectory(prefix="diffusers-mixins-") as tmp:
        root = Path(tmp)
        if args.tests_dir:
            shutil.copytree(args.tests_dir, root / "tests")
            commit = f"the folder {args.tests_dir}"
        else:
            commit = extract_tests(args.diffusers_git, args.ref, root)
        shutil.copy(HERE / "sonify_upstream_cases.py", root / "test_sonify_upstream.py")
        (root / "conftest.py").write_text(CONFTEST)
        os.environ["HF_HOME"] = str(root / "hf_home")  # an empty cache: the tiny SD pipeline comes over HTTP
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore", "test_sonify_upstream.py"]
        env = {**os.environ, "HF_TOKEN": token, "HF_HUB_DISABLE_TELEMETRY": "1"}
        if args.no_hub:  # the conftest deselects the one test that loads from the Hub
            print(f"diffusers tests from {commit}; no loopback Hub", flush=True)
            return subprocess.run(cmd + args.pytest_args, cwd=root, env={**env, NO_HUB_ENV: "1"}).returncode
        server, url = serve_tiny_sd(token)
        print(f"diffusers tests at {commit}; tiny SD pipeline served as {SD_REPO} by {url}", flush=True)
        try:
            return subprocess.run(cmd + args.pytest_args, cwd=root, env=env).returncode
        finally:
            server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
