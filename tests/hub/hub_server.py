"""A small Hub-compatible HTTP server on 127.0.0.1 for wire-level push/pull tests.

It implements only the routes that `huggingface_hub` 2.x (with `HF_HUB_DISABLE_XET=1`), `diffusers`, `datasets`
and `transformers` call to create repos, upload (preupload, LFS batch + basic PUT, NDJSON commit), validate card
metadata and download (repo info, tree, paths-info, refs, commits, resolve with ranges). Everything is kept in
memory; each commit is an immutable snapshot, so revisions resolve by branch name or commit id.

Existing Hub-compatible servers on PyPI were looked at and rejected: `olah` is a read-through mirror of an upstream
Hub (no uploads, needs the network); `hf-local-hub` ships only a client for a server that is not in the package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Files the real Hub stores in LFS by default (its initial .gitattributes), plus anything binary or > 10 MB.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".parquet",
    ".arrow",
    ".png",
    ".jpg",
    ".jpeg",
    ".wav",
    ".flac",
    ".ogg",
    ".mp3",
    ".npy",
    ".npz",
    ".onnx",
    ".msgpack",
    ".h5",
    ".zip",
    ".gz",
    ".tar",
)
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    title: str
    files: dict  # path -> {"data": bytes} or {"lfs": sha256}
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list = field(default_factory=list)
    branches: dict = field(default_factory=dict)


class HubState:
    """The server's storage plus test hooks: `requests` (method, route) log, `headers_seen`, `fail_lfs_put`."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.headers_seen: list[dict] = []
        self.fail_lfs_put = 0  # answer this many LFS PUTs with HTTP 500 (an upload failing mid-push)
        self.lock = threading.Lock()

    def create(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        self.repos[(repo_type, repo_id)] = repo
        self.commit(repo, "initial commit", {".gitattributes": {"data": GITATTRIBUTES}})
        return repo

    def commit(self, repo: Repo, title: str, files: dict, branch: str = "main") -> Commit:
        oid = hashlib.sha1(f"{repo.repo_id}{len(repo.commits)}{title}{time.time_ns()}".encode()).hexdigest()
        commit = Commit(oid, title, files, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.commits.append(commit)
        repo.branches[branch] = commit
        return commit

    def file_bytes(self, entry: dict) -> bytes:
        return entry["data"] if "data" in entry else self.lfs[entry["lfs"]]


# The Hub's licence identifiers this project can produce or meet (a subset of the Hub's list).
KNOWN_LICENSES = {
    "apache-2.0",
    "mit",
    "openrail",
    "openrail++",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc0-1.0",
    "bsd-3-clause",
    "gpl-3.0",
    "other",
    "unknown",
}
SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "n>1M"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def metadata_errors(metadata: dict, repo_type: str) -> list[str]:
    """The checks the Hub applies to card metadata that this project's cards exercise."""
    errors = []
    if "license" in metadata and metadata["license"] not in KNOWN_LICENSES:
        errors.append(f"license {metadata['license']!r} is not a known licence id")
    for key in ("tags", "datasets", "size_categories", "task_categories"):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f"{key} must be a list of strings")
    for key in ("base_model", "datasets"):
        value = metadata.get(key)
        for repo in [value] if isinstance(value, str) else value or []:
            if not HUB_ID.match(str(repo)):
                errors.append(f"{key} {repo!r} is not a Hub repo id")
    if not set(metadata.get("size_categories") or []) <= SIZE_CATEGORIES:
        errors.append("size_categories has an unknown bucket")
    for config in metadata.get("configs") or []:
        if not (isinstance(config, dict) and "config_name" in config and "data_files" in config):
            errors.append("each configs entry needs config_name and data_files")
    if repo_type == "model" and "library_name" in metadata and not isinstance(metadata["library_name"], str):
        errors.append("library_name must be a string")
    return errors


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by `serve`

    def log_message(self, *args):  # quiet: tests read `state.requests`
        pass

    # ------------------------------------------------------------------ plumbing
    @property
    def base(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        for key, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _handle(self):
        path = urlsplit(self.path)
        self.query = parse_qs(path.query)
        route = unquote(path.path)
        with self.state.lock:
            self.state.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        try:
            for method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, route)
                if method == self.command or (method == "GET" and self.command == "HEAD"):
                    if match:
                        with self.state.lock:
                            self.state.requests.append((self.command, handler.__name__))
                        return handler(self, **match.groupdict())
            with self.state.lock:
                self.state.requests.append((self.command, "unhandled " + route))
            raise HubError(404, f"no route {self.command} {route}")
        except HubError as e:
            headers = {"X-Error-Message": " ".join(e.message.split())}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message}, e.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    def _repo(self, plural_or_type: str, repo_id: str) -> Repo:
        repo_type = TYPE_OF_PLURAL.get(plural_or_type, plural_or_type)
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str | None) -> Commit:
        revision = unquote(revision or "main")
        if revision in repo.branches:
            return repo.branches[revision]
        for commit in repo.commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Revision {revision} not found", "RevisionNotFound")

    def _require_token(self):
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _entry(self, commit: Commit, path: str, expand: bool = False) -> dict:
        entry = commit.files[path]
        data = self.state.file_bytes(entry)
        info = {"type": "file", "path": path, "size": len(data)}
        if "lfs" in entry:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry['lfs']}\nsize {len(data)}\n"
            info["oid"] = git_blob_oid(pointer.encode())
            info["lfs"] = {"oid": entry["lfs"], "size": len(data), "pointerSize": len(pointer)}
        else:
            info["oid"] = git_blob_oid(data)
        if expand:
            info["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return info

    def _folders(self, commit: Commit) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)}

    # ------------------------------------------------------------------ routes
    def whoami(self):
        self._require_token()
        self._json({"type": "user", "name": "sonify-tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}})

    def create_repo(self):
        self._require_token()
        payload = json.loads(self._body())
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.base}/{PREFIX[repo_type]}{repo_id}"
        with self.state.lock:
            exists = (repo_type, repo_id) in self.state.repos
            if not exists:
                self.state.create(repo_type, repo_id, payload.get("visibility") == "private")
        if exists:  # the Hub answers 409 with the repo URL; `create_repo(exist_ok=True)` reads it
            return self._json({"error": "You already created this repo", "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def repo_info(self, plural, repo_id, revision=None):
        repo = self._repo(plural, repo_id)
        commit = self._revision(repo, revision)
        metadata = bool(self.query.get("blobs")) or bool(self.query.get("expand"))
        siblings = []
        for path in sorted(commit.files):
            sibling = {"rfilename": path}
            if metadata:
                entry = self._entry(commit, path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    sibling["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 0}
            siblings.append(sibling)
        self._json(
            {
                "id": repo_id,
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "createdAt": repo.commits[0].date,
                "tags": [],
                "siblings": siblings,
            }
        )

    def tree(self, plural, repo_id, revision, path=""):
        repo = self._repo(plural, repo_id)
        commit = self._revision(repo, revision)
        path = (path or "").strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        folders = self._folders(commit)
        if path and path not in folders:
            if path in commit.files:
                return self._json([self._entry(commit, path, expand)])
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        out = []
        for folder in sorted(folders):
            rest = folder[len(prefix) :] if folder.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                out.append({"type": "directory", "path": folder, "oid": git_blob_oid(folder.encode()), "size": 0})
        for file in sorted(commit.files):
            rest = file[len(prefix) :] if file.startswith(prefix) else None
            if rest and (recursive or "/" not in rest):
                out.append(self._entry(commit, file, expand))
        self._json(out)

    def paths_info(self, plural, repo_id, revision):
        repo = self._repo(plural, repo_id)
        commit = self._revision(repo, revision)
        form = parse_qs(self._body().decode())
        expand = form.get("expand", ["False"])[0].lower() == "true"
        folders = self._folders(commit)
        out = []
        for path in form.get("paths", []):
            if path in commit.files:
                out.append(self._entry(commit, path, expand))
            elif path in folders:
                out.append({"type": "directory", "path": path, "oid": git_blob_oid(path.encode()), "size": 0})
        self._json(out)

    def refs(self, plural, repo_id):
        repo = self._repo(plural, repo_id)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c.oid} for n, c in repo.branches.items()]
        self._json({"branches": branches, "tags": [], "converts": []})

    def commits(self, plural, repo_id, revision):
        repo = self._repo(plural, repo_id)
        head = self._revision(repo, revision)
        history = repo.commits[: repo.commits.index(head) + 1][::-1]
        self._json([{"id": c.oid, "title": c.title, "message": "", "authors": [], "date": c.date} for c in history])

    def preupload(self, plural, repo_id, revision):
        self._require_token()
        repo = self._repo(plural, repo_id)
        self._revision(repo, revision)
        files = []
        for f in json.loads(self._body())["files"]:
            sample = base64.b64decode(f["sample"])
            binary = b"\0" in sample or f["path"].lower().endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
            files.append({"path": f["path"], "uploadMode": "lfs" if binary else "regular", "shouldIgnore": False})
        self._json({"files": files, "commitOid": repo.branches["main"].oid})

    def lfs_batch(self, prefix, repo_id):
        self._require_token()
        self._repo((prefix or "").rstrip("/") or "model", repo_id)
        payload = json.loads(self._body())
        objects = []
        for obj in payload["objects"]:
            out = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                out["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(out)
        self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, oid):
        data = self._body()
        with self.state.lock:
            if self.state.fail_lfs_put > 0:
                self.state.fail_lfs_put -= 1
                raise HubError(500, "Internal Error (injected by the test)")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 of the uploaded content does not match the oid")
        with self.state.lock:
            self.state.lfs[oid] = data
        self._send(200, b"")

    def commit(self, plural, repo_id, revision):
        self._require_token()
        repo = self._repo(plural, repo_id)
        head = self._revision(repo, revision)
        files = dict(head.files)
        title = "commit"
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header":
                title = value.get("summary") or title
            elif key == "file":
                files[value["path"]] = {"data": base64.b64decode(value["content"])}
            elif key == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = {"lfs": value["oid"]}
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: e for p, e in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"unsupported commit operation {key}")
        with self.state.lock:
            commit = self.state.commit(repo, title, files, unquote(revision))
        url = f"{self.base}/{PREFIX[repo.repo_type]}{repo_id}/commit/{commit.oid}"
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": url})

    def validate_yaml(self):
        payload = json.loads(self._body())
        front = re.match(r"^\s*---\r?\n(.*?)\r?\n---", payload["content"], re.S)
        if front is None:
            raise HubError(400, "The card has no YAML metadata block between --- lines")
        try:
            metadata = yaml.safe_load(front[1])
        except yaml.YAMLError as e:
            raise HubError(400, f"Invalid YAML: {e}")
        if not isinstance(metadata, dict):
            raise HubError(400, "Card metadata must be a YAML mapping")
        errors = metadata_errors(metadata, payload.get("repoType", "model"))
        if errors:
            raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
        self._json({"errors": [], "warnings": []})

    def resolve(self, prefix, repo_id, revision, path):
        repo = self._repo((prefix or "").rstrip("/") or "model", repo_id)
        commit = self._revision(repo, revision)
        if path not in commit.files:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        entry = self._entry(commit, path)
        data = self.state.file_bytes(commit.files[path])
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": entry["size"]})
        status = 200
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if ranged:
            start = int(ranged[1]) if ranged[1] else max(0, len(data) - int(ranged[2]))
            end = int(ranged[2]) if ranged[1] and ranged[2] else len(data) - 1
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_PLURAL = r"(?P<plural>models|datasets|spaces)"
ROUTES = [
    ("GET", r"/api/whoami-v2", Handler.whoami),
    ("POST", r"/api/repos/create", Handler.create_repo),
    ("POST", r"/api/validate-yaml", Handler.validate_yaml),
    ("GET", rf"/api/{_PLURAL}/{_REPO}", Handler.repo_info),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/revision/(?P<revision>[^/]+)", Handler.repo_info),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", Handler.tree),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/paths-info/(?P<revision>[^/]+)", Handler.paths_info),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/refs", Handler.refs),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/commits/(?P<revision>[^/]+)", Handler.commits),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/preupload/(?P<revision>[^/]+)", Handler.preupload),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/commit/(?P<revision>[^/]+)", Handler.commit),
    ("POST", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", Handler.lfs_put),
    ("GET", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", Handler.resolve),
]


def serve(state: HubState | None = None) -> tuple[ThreadingHTTPServer, HubState, str]:
    """Start the server on a free 127.0.0.1 port in a daemon thread; returns (server, state, endpoint URL)."""
    state = state or HubState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address
    return server, state, f"http://{host}:{port}"
